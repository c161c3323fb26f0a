"""Cohorts and enrollments: creating them, enrolling people, leaving and suppressing.

Sending and inbound mail stop an enrollment or suppress an address through here, so the
rules for leaving live in one place whoever acts. A person's details are checked in ``signup``
before they are enrolled; pausing and resuming are in ``pausing``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from dripcourse import schedule, zones
from dripcourse.courses.course import Course
from dripcourse.errors import InputError, NotFound
from dripcourse.models import (
    Cohort,
    Delivery,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Subscriber,
    Suppression,
)
from dripcourse.people.signup import Signup, differences

DEFAULT_TIMEZONE = "UTC"
# A start date this far ahead is more likely a typo than a plan.
FAR_AHEAD = dt.timedelta(days=366)


class NeedsConfirmation(InputError):
    """The request is valid but probably a mistake: the operator must confirm it (--yes)."""


@dataclass(frozen=True)
class Start:
    """How a cohort starts: on a date, "today" in each subscriber's own zone, or now."""

    date: dt.date | None = None
    today: bool = False
    now: dt.datetime | None = None


def parse_start(value: str, now: dt.datetime) -> Start:
    """Read a cohort start: ``YYYY-MM-DD``, ``today`` or ``now``.

    ``today`` is each subscriber's own local today at the moment the cohort is created: Day 1
    at the course's send time there, at once if that has passed but the day's window is still
    open, or the next morning if it has closed (in Auckland it may already be tomorrow).
    """
    if value == "now":
        return Start(now=now)
    if value == "today":
        return Start(today=True)
    try:
        return Start(date=dt.date.fromisoformat(value))
    except ValueError:
        raise InputError(f"--start: expected YYYY-MM-DD, today or now, got {value!r}") from None


def check_start(start_date: dt.date | None, course: Course, now: dt.datetime) -> None:
    """Refuse, unless confirmed, a start date in the past or more than a year ahead, saying
    what would happen."""
    if start_date is None:
        return
    # The earliest date it still is anywhere (UTC-12): before that, the date has passed for all.
    if start_date < (now - dt.timedelta(hours=12)).date():
        raise NeedsConfirmation(
            f"--start {start_date} is in the past: each person would get Day 1 at their next "
            f"local {course.cadence.send_time:%H:%M}, with no backlog of missed lessons; "
            "add --yes to create it anyway"
        )
    if start_date > now.date() + FAR_AHEAD:
        raise NeedsConfirmation(
            f"--start {start_date} is more than a year ahead: nobody gets anything until then; "
            "add --yes if that is what you mean"
        )


def create_cohort(
    session: Session,
    name: str,
    course: Course,
    start: str,
    now: dt.datetime,
    *,
    timezone: str | None = None,
    confirmed: bool = False,
) -> Cohort:
    """Create a cohort; ``timezone`` is the zone of people enrolled without one."""
    name = name.strip()
    if not name:
        raise InputError("cohort name is empty")
    if session.scalar(select(Cohort).where(Cohort.name == name)) is not None:
        raise InputError(f"cohort {name!r} already exists")
    parsed = parse_start(start, now)
    if not confirmed:
        check_start(parsed.date, course, now)
    if timezone is not None:
        try:
            timezone = zones.check_zone(timezone)
        except InputError as exc:
            raise InputError(f"--timezone: {exc}") from None
    cohort = Cohort(
        name=name,
        course_slug=course.slug,
        start_date=parsed.date,
        started_at=parsed.now,
        start_today=parsed.today,
        timezone=timezone,
        created_at=now,
    )
    session.add(cohort)
    session.flush()
    return cohort


def get_cohort(session: Session, name: str) -> Cohort:
    cohort = session.scalar(select(Cohort).where(Cohort.name == name))
    if cohort is None:
        raise NotFound(f"no cohort named {name!r} (see: dripcourse cohort list)")
    return cohort


def suppressed_reason(reason: str, when: dt.datetime) -> str:
    """Why an address may not be mailed, in the words an operator needs."""
    kind, _, detail = reason.partition(":")
    day = f"{when:%Y-%m-%d}"
    if kind == "unsubscribed":
        return f"unsubscribed on {day}"
    if kind == "forgotten":
        return f"forgotten on {day} at their request"
    if kind in ("bounced", "complained"):
        return f"{kind} on {day}" + (f" ({detail.strip()})" if detail.strip() else "")
    return f"suppressed by an operator on {day}: {detail.strip() or reason}"


def enroll(
    session: Session, cohort: Cohort, course: Course, signup: Signup, now: dt.datetime
) -> Enrollment:
    """Enroll one person in a cohort; their Day 1 is scheduled at once in the database.

    Someone already on record keeps their details: if ``signup`` differs from them this
    refuses, naming the difference (``people.enroll_person`` can update them first).
    """
    suppression = session.scalar(select(Suppression).where(Suppression.email == signup.email))
    if suppression is not None:
        why = suppressed_reason(suppression.reason, suppression.created_at)
        raise InputError(f"email: {signup.email} is suppressed: {why}")
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email == signup.email))
    if subscriber is None:
        subscriber = Subscriber(
            email=signup.email,
            name=signup.name,
            greeting=signup.greeting,
            timezone=signup.timezone,
            country=signup.country,
            created_at=now,
        )
        session.add(subscriber)
        session.flush()
    elif changes := differences(subscriber, signup):
        raise InputError(
            f"email: {signup.email} is already on record; this would change "
            f"{', '.join(changes)} for every cohort they are in (add --update to change it)"
        )
    existing = session.scalar(
        select(Enrollment).where(
            Enrollment.subscriber_id == subscriber.id, Enrollment.cohort_id == cohort.id
        )
    )
    if existing is not None:
        raise InputError(f"email: {signup.email} is already enrolled in cohort {cohort.name!r}")
    tz = schedule.zone(subscriber.timezone)
    due = schedule.first_due(
        course.cadence,
        tz,
        start_date=cohort.start_date_in(tz),
        started_at=cohort.started_at,
        enrolled_at=now,
    )
    enrollment = Enrollment(
        subscriber=subscriber,
        cohort=cohort,
        day=0,
        next_send_at=due,
        status=EnrollmentStatus.ACTIVE,
        created_at=now,
        updated_at=now,
    )
    session.add(enrollment)
    session.flush()
    return enrollment


def enroll_all(
    session: Session, cohort: Cohort, course: Course, signups: list[Signup], now: dt.datetime
) -> None:
    """Enroll everyone in ``signups``; the first refusal names the address and stops them all
    (the caller's transaction then rolls back, so nothing is half-written)."""
    for signup in signups:
        try:
            enroll(session, cohort, course, signup, now)
        except InputError as exc:
            raise InputError(f"{signup.email}: {exc}") from None


def suppress(session: Session, email: str, reason: str, now: dt.datetime) -> None:
    """Put an address on the list that is never mailed again (idempotent)."""
    if session.scalar(select(Suppression.id).where(Suppression.email == email)) is None:
        session.add(Suppression(email=email, reason=reason, created_at=now))


def stop_enrollment(
    session: Session, enrollment: Enrollment, status: EnrollmentStatus, now: dt.datetime
) -> None:
    """End an enrollment early and cancel its lessons still waiting to go out."""
    enrollment.status = status
    enrollment.next_send_at = None
    # Written even when it already reads None here: the enrollment may have been read while
    # its lesson was on its way (claimed: no next lesson), and the record of that lesson,
    # committed before this write got the row, gave it one.
    flag_modified(enrollment, "next_send_at")
    enrollment.updated_at = now
    session.execute(
        update(Delivery)
        .where(
            Delivery.enrollment_id == enrollment.id,
            # Queued, or waiting for a retry or a pause's end; one being sent is cancelled by
            # the sender's last look (sending.last_look).
            Delivery.status.in_((DeliveryStatus.PENDING, DeliveryStatus.WAITING)),
        )
        .values(
            status=DeliveryStatus.CANCELLED,
            next_attempt_at=None,
            updated_at=now,
            last_error=str(status),
        )
    )


def unsubscribe(session: Session, enrollment: Enrollment, now: dt.datetime) -> bool:
    """Stop every lesson to this person, in every cohort, for good.

    Pending deliveries are cancelled and the address is suppressed, so no later enrollment
    can mail it either. Returns False when they had already left.
    """
    subscriber = enrollment.subscriber
    if enrollment.status == EnrollmentStatus.UNSUBSCRIBED:
        return False
    for each in subscriber.enrollments:
        if each.status == EnrollmentStatus.ACTIVE or each is enrollment:
            stop_enrollment(session, each, EnrollmentStatus.UNSUBSCRIBED, now)
    suppress(session, subscriber.email, "unsubscribed", now)
    return True
