"""Helpers for the web, reflection and pause tests: enroll someone, send their lessons, browse.

No tests here. Lessons are sent by ticking the scheduler at an explicit ``now`` and sending each
claimed delivery in this process, so days pass without sleeping.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from click.testing import CliRunner, Result
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.exc import SQLAlchemyError

from dripcourse import links
from dripcourse.cli import cli
from dripcourse.db import transaction
from dripcourse.errors import NotFound
from dripcourse.models import MAX_ID, Enrollment
from dripcourse.people import enrollment
from dripcourse.people.signup import check_signup
from dripcourse.runtime import Runtime
from dripcourse.sending import batch as sending
from dripcourse.sending import claim as delivery
from dripcourse.settings import Settings
from dripcourse.web import create_app
from tests.conftest import utc
from tests.workers import settings_env

COURSE = "white-coat"  # seven lessons, 07:00 local, every day
MONDAY = dt.date(2025, 3, 3)
DAY = dt.timedelta(days=1)
DAY_1_UTC = utc(2025, 3, 3, 7)  # 07:00 on MONDAY for a subscriber in UTC


def enroll(
    rt: Runtime,
    email: str = "ana@example.org",
    *,
    timezone: str = "UTC",
    cohort: str = "spring",
    start: dt.date = MONDAY,
    now: dt.datetime | None = None,
) -> int:
    """Enroll one subscriber (creating the cohort if needed); returns the enrollment id."""
    now = now or utc(2025, 3, 1)
    course = rt.catalog.course(COURSE)
    with transaction(rt.sessions) as session:
        try:
            the_cohort = enrollment.get_cohort(session, cohort)
        except NotFound:
            the_cohort = enrollment.create_cohort(session, cohort, course, str(start), now)
        signup = check_signup(email, email.split("@")[0].title(), timezone)
        return enrollment.enroll(session, the_cohort, course, signup, now).id


def tick(rt: Runtime, now: dt.datetime) -> list[int]:
    """One scheduler pass at ``now``, each claimed lesson sent at once; returns delivery ids."""
    sent: list[int] = []

    def send(ids: list[int]) -> None:
        for delivery_id in ids:
            if sending.send_delivery(rt, delivery_id, now) == sending.Outcome.SENT:
                sent.append(delivery_id)

    delivery.tick(rt, now, send)
    return sent


def send_days(rt: Runtime, days: int, first: dt.datetime = DAY_1_UTC) -> None:
    """Tick once a day from ``first`` (Day 1's send time in UTC) for ``days`` days."""
    for i in range(days):
        tick(rt, first + i * DAY)


def load(rt: Runtime, enrollment_id: int) -> Enrollment:
    with transaction(rt.sessions) as session:
        found = session.get(Enrollment, enrollment_id)
        assert found is not None
        found.subscriber  # noqa: B018 - load it while the session is open
        return found


@dataclass
class Clock:
    """The web app's clock in tests: set ``now`` to travel."""

    now: dt.datetime

    def __call__(self) -> dt.datetime:
        return self.now


def make_app(rt: Runtime, clock: Clock, **config: object) -> Flask:
    return create_app(rt, {"TESTING": True, "CLOCK": clock, **config})


def linked(rt: Runtime, page: str, purpose: str) -> list[list[int]]:
    """The ids behind every link of ``purpose`` on a page.

    Tokens carry the second they were made, so a token made here differs from the page's one
    made a moment earlier: compare what they hold, not their text.
    """
    found = re.findall(rf"/{links.PATHS[purpose]}/([A-Za-z0-9_.-]+)", page)
    return [rt.links.load(purpose, token) for token in found]


def key_of(rt: Runtime, enrollment_id: int) -> str:
    """The enrollment's link key; a made-up one for an id no row has (or no table yet)."""
    try:
        with rt.sessions() as session:
            found = session.get(Enrollment, enrollment_id) if 1 <= enrollment_id <= MAX_ID else None
    except SQLAlchemyError:
        found = None
    return found.link_key if found is not None else "nobodyskey"


def token(rt: Runtime, purpose: str, *ids: int) -> str:
    """A token for a subscriber's link, as in their lesson email (bound to their row)."""
    return rt.links.token(purpose, *ids, key=key_of(rt, ids[0]) if ids else "")


def path(rt: Runtime, purpose: str, *ids: int) -> str:
    """The path of a subscriber's link, as in their lesson email."""
    return f"/{links.PATHS[purpose]}/{token(rt, purpose, *ids)}"


def address(rt: Runtime, purpose: str, enrollment_id: int, day: int, domain: str) -> str:
    """A subscriber's reply or bounce address, as in their lesson email."""
    return rt.links.address(purpose, enrollment_id, day, domain, key_of(rt, enrollment_id))


def form_token(page: str) -> str:
    """The hidden form token out of a page we served."""
    match = re.search(r'name="form_token" value="([^"]+)"', page)
    assert match, "the page has no form token"
    return match.group(1)


def post_form(client: FlaskClient, url: str, **fields: str):  # type: ignore[no-untyped-def]
    """Load the page, then post its form with ``fields`` as a browser would."""
    page = client.get(url).get_data(as_text=True)
    return client.post(url, data={"form_token": form_token(page), **fields})


def run_cli(settings: Settings, *args: str) -> Result:
    """The dripcourse command as an operator runs it, on these settings."""
    return CliRunner().invoke(cli, list(args), env=settings_env(settings), catch_exceptions=False)
