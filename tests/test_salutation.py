"""A lesson opens by the reader's local time when it is sent ("Good evening", "Hello" at night),
or neutrally when the course says so; never "Good morning" at 01:37."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re
import shutil
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest
from freezegun import freeze_time

from dripcourse import links
from dripcourse.courses.course_folder import read_course
from dripcourse.courses.greeting import salutation, set_greeting
from dripcourse.courses.preview import lesson_message, sample_reader
from dripcourse.courses.wire import wire_bytes
from dripcourse.db import transaction
from dripcourse.people import enrollment
from dripcourse.people.signup import check_signup
from dripcourse.runtime import Runtime
from tests.conftest import EMAILS, make_settings, utc
from tests.test_web_support import Clock, make_app, path, tick

COURSE = "white-coat"


@pytest.fixture
def emails(tmp_path: Path) -> Path:
    copy = tmp_path / "emails"
    shutil.copytree(EMAILS, copy)
    return copy


@pytest.fixture
def rt(tmp_path: Path, sqlite_url: str, emails: Path) -> Iterator[Runtime]:
    runtime = Runtime(make_settings(tmp_path, database_url=sqlite_url, emails_dir=str(emails)))
    yield runtime
    runtime.close()


def set_mode(emails: Path, mode: str) -> None:
    toml = emails / COURSE / "course.toml"
    text = toml.read_text(encoding="utf-8")
    toml.write_text(re.sub(r'(?m)^salutation = ".*"$', f'salutation = "{mode}"', text), "utf-8")


def start_now(rt: Runtime, zone: str, now: dt.datetime, email_address: str) -> int:
    """A cohort started "now" at ``now`` with one reader in ``zone``: Day 1 goes at once,
    whatever the hour there (the operator's choice)."""
    course = rt.catalog.course(COURSE)
    with transaction(rt.sessions) as session:
        cohort = enrollment.create_cohort(session, f"c-{email_address}", course, "now", now)
        signup = check_signup(email_address, "Dr. Amara Okafor", zone)
        return enrollment.enroll(session, cohort, course, signup, now).id


def opening(outbox: Path, to: str) -> str:
    """The first line of the lesson's text in the one message sent to ``to``."""
    for eml in outbox.glob("*.eml"):
        msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        if msg["To"].addresses[0].addr_spec == to:
            text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
            found = re.search(r"^(Good \w+|Hello), Dr\. Okafor\.\r?$", text, re.M)
            assert found, text
            return found.group(1)
    raise AssertionError(f"nothing sent to {to}")


def plain_text(msg: Message) -> str:
    parsed = email.message_from_bytes(wire_bytes(msg), policy=email.policy.default)
    return parsed.get_body(("plain",)).get_content()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("hour", "minute", "expected"),
    [
        (0, 0, "Hello"),
        (1, 37, "Hello"),
        (4, 59, "Hello"),
        (5, 0, "Good morning"),
        (11, 59, "Good morning"),
        (12, 0, "Good afternoon"),
        (17, 59, "Good afternoon"),
        (18, 0, "Good evening"),
        (21, 59, "Good evening"),
        (22, 0, "Hello"),
    ],
)
def test_the_salutation_follows_the_local_hour(hour: int, minute: int, expected: str) -> None:
    assert salutation("time-of-day", dt.time(hour, minute)) == expected
    assert salutation("neutral", dt.time(hour, minute)) == "Hello"


def test_a_lesson_sent_at_01_37_in_auckland_says_hello_and_one_at_19_00_good_evening(
    rt: Runtime, outbox: Path
) -> None:
    # 12:37 UTC is 01:37 the next day in Auckland (NZDT, +13); 06:00 UTC is 19:00 there.
    night, evening = utc(2026, 11, 25, 12, 37), utc(2026, 11, 25, 6, 0)
    start_now(rt, "Pacific/Auckland", night, "night@example.org")
    tick(rt, night)
    start_now(rt, "Pacific/Auckland", evening, "evening@example.org")
    tick(rt, evening)
    assert opening(outbox, "night@example.org") == "Hello"
    assert opening(outbox, "evening@example.org") == "Good evening"


def test_a_lesson_sent_on_time_says_good_morning(rt: Runtime, outbox: Path) -> None:
    seven = utc(2026, 11, 25, 18)  # 07:00 on the 26th in Auckland
    start_now(rt, "Pacific/Auckland", seven, "morning@example.org")
    tick(rt, seven)
    assert opening(outbox, "morning@example.org") == "Good morning"


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        # New York springs forward at 02:00 on 8 March 2026: 09:30 UTC is 05:30 EDT, morning
        # (read with the winter offset it would be 04:30, night).
        (utc(2026, 3, 8, 9, 30), "Good morning"),
        # and falls back on 1 November 2026: 09:30 UTC is 04:30 EST, night (05:30 in summer).
        (utc(2026, 11, 1, 9, 30), "Hello"),
        # The day before each change, the same instant reads the other way.
        (utc(2026, 3, 7, 9, 30), "Hello"),
        (utc(2026, 10, 31, 9, 30), "Good morning"),
    ],
    ids=["spring-forward", "fall-back", "before-spring", "before-fall"],
)
def test_the_salutation_reads_the_clock_of_the_day_across_dst(
    rt: Runtime, outbox: Path, sent: dt.datetime, expected: str
) -> None:
    start_now(rt, "America/New_York", sent, "ny@example.org")
    tick(rt, sent)
    assert opening(outbox, "ny@example.org") == expected


def test_a_neutral_course_says_hello_at_any_hour(rt: Runtime, emails: Path, outbox: Path) -> None:
    set_mode(emails, "neutral")
    morning = utc(2026, 11, 25, 18)  # 07:00 in Auckland
    start_now(rt, "Pacific/Auckland", morning, "neutral@example.org")
    tick(rt, morning)
    assert opening(outbox, "neutral@example.org") == "Hello"
    course = rt.catalog.course(COURSE)
    msg = lesson_message(
        rt.catalog.renderer, course, 1, rt.sample_links, sample_reader(), now=morning
    )
    assert "Hello, Dr. Reader." in plain_text(msg)


def test_the_lesson_page_shows_the_salutation_it_was_sent_with(rt: Runtime) -> None:
    night = utc(2026, 11, 25, 12, 37)  # 01:37 in Auckland
    enrollment_id = start_now(rt, "Pacific/Auckland", night, "page@example.org")
    tick(rt, night)
    client = make_app(rt, Clock(utc(2026, 11, 26, 1))).test_client()  # 14:00 there, a day on
    page = client.get(path(rt, links.LESSON, enrollment_id, 1)).get_data(as_text=True)
    assert "Hello, Dr. Okafor." in page
    assert "Good morning" not in page and "Good afternoon" not in page


def test_the_lesson_page_greets_a_reader_as_the_email_did_by_the_greeting_set_for_them(
    rt: Runtime, outbox: Path
) -> None:
    night = utc(2026, 11, 25, 12, 37)  # 01:37 in Auckland
    enrollment_id = start_now(rt, "Pacific/Auckland", night, "amara@example.org")
    with transaction(rt.sessions) as session:
        set_greeting(session, "amara@example.org", "Amara")
    tick(rt, night)
    (eml,) = outbox.glob("*.eml")
    msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert "Hello, Amara." in msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    client = make_app(rt, Clock(utc(2026, 11, 26, 1))).test_client()
    page = client.get(path(rt, links.LESSON, enrollment_id, 1)).get_data(as_text=True)
    assert "Hello, Amara." in page and "Dr. Okafor" not in page


@pytest.mark.parametrize("hour", [2, 14, 23])
def test_a_preview_shows_the_send_time_salutation_whatever_the_hour(rt: Runtime, hour: int) -> None:
    """Staff see what a lesson sent at the course's send time (07:00) says, at any hour."""
    course = rt.catalog.course(COURSE)
    with freeze_time(utc(2026, 11, 25, hour)):
        msg = lesson_message(
            rt.catalog.renderer,
            course,
            1,
            rt.sample_links,
            sample_reader(),
            now=utc(2026, 11, 25, hour),
        )
    assert "Good morning, Dr. Reader." in plain_text(msg)


@pytest.mark.parametrize("value", ['"cheerful"', "3", '"Time-of-day"'])
def test_check_names_the_line_of_a_bad_salutation(emails: Path, value: str) -> None:
    toml = emails / COURSE / "course.toml"
    text = toml.read_text(encoding="utf-8")
    toml.write_text(re.sub(r'(?m)^salutation = ".*"$', f"salutation = {value}", text), "utf-8")
    line = 1 + toml.read_text(encoding="utf-8").splitlines().index(f"salutation = {value}")
    errors = read_course(emails, COURSE).errors
    assert [(e.path.name, e.line) for e in errors] == [("course.toml", line)], errors
    assert "salutation must be 'time-of-day' or 'neutral'" in errors[0].message
