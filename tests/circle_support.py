"""Helpers for the cohort circle's tests: three people in two cohorts, and how they share,
read and post. No tests here."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from flask.testing import FlaskClient
from itsdangerous import URLSafeTimedSerializer

from dripcourse import links
from dripcourse.db import transaction
from dripcourse.reader import circle
from dripcourse.runtime import Runtime
from tests.test_web_support import (
    DAY,
    DAY_1_UTC,
    Clock,
    enroll,
    load,
    make_app,
    path,
    post_form,
    send_days,
)

NOW = DAY_1_UTC + 2 * DAY + dt.timedelta(hours=5)  # after Day 3 went out


@pytest.fixture(name="clock")
def clock_fixture() -> Clock:
    return Clock(NOW)


@pytest.fixture(name="client")
def client_fixture(rt: Runtime, clock: Clock) -> FlaskClient:
    return make_app(rt, clock).test_client()


@pytest.fixture(name="people")
def people_fixture(rt: Runtime) -> dict[str, int]:
    """Ana and Ben in the cohort "spring", Cleo in "summer"; all have had Days 1-3."""
    found = {
        "ana": enroll(rt, "ana.ruiz@example.org"),
        "ben": enroll(rt, "ben@example.org"),
        "cleo": enroll(rt, "cleo@example.org", cohort="summer"),
    }
    with transaction(rt.sessions) as session:
        subscriber = load(rt, found["ana"]).subscriber
        session.merge(subscriber).name = "Ana Ruiz"
    send_days(rt, 3)
    return found


def share(client: FlaskClient, rt: Runtime, who: int, day: int, words: str, **fields: str):  # type: ignore[no-untyped-def]
    fields = {"circle": "1", "share": "yes", "shown_as": "name", **fields}
    return post_form(client, path(rt, links.REFLECT, who, day), reflection=words, **fields)


def lesson_page(client: FlaskClient, rt: Runtime, who: int, day: int) -> str:
    return client.get(path(rt, links.LESSON, who, day)).get_data(as_text=True)


def act(client: FlaskClient, rt: Runtime, who: int, day: int, **fields: str):  # type: ignore[no-untyped-def]
    """Post to the circle under a lesson with the reader's own form token for it (as their
    page holds it when there is something to act on)."""
    url = path(rt, links.LESSON, who, day)
    page = client.get(url).get_data(as_text=True)
    if 'name="form_token"' in page.partition('id="circle"')[2]:
        return client.post(url + "/circle", data={"form_token": circle_form_token(page), **fields})
    own = URLSafeTimedSerializer(rt.links.secret_key, salt="dripcourse.form").dumps(
        ["circle", who, day]
    )
    return client.post(url + "/circle", data={"form_token": own, **fields})


def circle_form_token(page: str) -> str:
    """The form token of the circle's forms on a lesson page."""
    match = re.search(r'id="circle".*?name="form_token" value="([^"]+)"', page, re.S)
    assert match, "the page has no circle form"
    return match.group(1)


def post_id(rt: Runtime, who: int, day: int) -> int:
    with transaction(rt.sessions) as session:
        found = circle.post_of(session, who, day)
        assert found is not None
        return found.id
