"""One person's details as an operator types them: normalised, or refused field by field.

``enroll`` and the CSV import both take a Signup checked here, and ``differences`` says how it
differs from the person on record. A line of a CSV file is fixed once, not once per field:
every field that is wrong is named in one FieldErrors.
"""

from __future__ import annotations

from dataclasses import dataclass

from dripcourse import validate, zones
from dripcourse.courses.greeting import check_greeting
from dripcourse.errors import FieldErrors, InputError
from dripcourse.models import Subscriber
from dripcourse.validate import check_address

MISSING_ZONE = (
    "missing; give each person's zone, or a default with --timezone ZONE "
    "(or `cohort create --timezone ZONE`)"
)


@dataclass(frozen=True)
class Signup:
    email: str
    name: str
    timezone: str
    greeting: str = ""  # "" derives it from the name
    country: str = ""  # "" shows the places to turn of their time zone's country


def check_signup(
    email: str,
    name: str | None,
    timezone: str | None,
    greeting: str | None = None,
    country: str | None = None,
) -> Signup:
    """Normalise one person's details, or raise FieldErrors naming every field that is wrong
    (so a CSV line is fixed once, not once per field)."""
    problems: list[str] = []
    address = clean_name = zone_name = clean_greeting = clean_country = ""
    try:
        address = check_address(email)
    except ValueError as exc:
        problems.append(f"email: {exc}")
    try:
        clean_name = validate.check_name(name)
    except ValueError as exc:
        problems.append(f"name: {exc}")
    # A missing zone is refused: UTC by default would mean 02:00 lessons in New York.
    if not (timezone or "").strip():
        problems.append(f"timezone: {MISSING_ZONE}")
    else:
        try:
            zone_name = zones.check_zone(timezone or "")
        except InputError as exc:
            problems.append(f"timezone: {exc}")
    try:
        clean_greeting = check_greeting(greeting or "")
    except InputError as exc:
        problems.append(str(exc))  # it names its field already
    if (country or "").strip():
        try:
            clean_country = zones.check_country(country or "")
        except InputError as exc:
            problems.append(f"country: {exc}")
    if problems:
        raise FieldErrors(problems)
    return Signup(
        email=address,
        name=clean_name,
        timezone=zone_name,
        greeting=clean_greeting,
        country=clean_country,
    )


def differences(subscriber: Subscriber, signup: Signup) -> list[str]:
    """How ``signup`` differs from the person on record (a blank name is no difference)."""
    changes = []
    if signup.name and signup.name != subscriber.name:
        changes.append(f"name {subscriber.name!r} -> {signup.name!r}")
    if signup.timezone != subscriber.timezone:
        changes.append(f"timezone {subscriber.timezone} -> {signup.timezone}")
    if signup.greeting and signup.greeting != subscriber.greeting:
        changes.append(f"greeting {subscriber.greeting!r} -> {signup.greeting!r}")
    if signup.country and signup.country != subscriber.country:
        changes.append(f"country {subscriber.country or '(from the zone)'} -> {signup.country}")
    return changes
