"""The pure scheduling rules: local send time, DST, weekends, pauses."""

from __future__ import annotations

import datetime as dt

import pytest

from dripcourse import schedule
from dripcourse.errors import InputError
from dripcourse.schedule import Cadence
from tests.conftest import utc

DAILY_7AM = Cadence(send_time=dt.time(7, 0))
WEEKDAYS_7AM = Cadence(send_time=dt.time(7, 0), skip_weekends=True)


@pytest.mark.parametrize(
    ("zone", "day", "expected_utc"),
    [
        # New York: EDT (UTC-4) before 1 Nov 2026, EST (UTC-5) after.
        ("America/New_York", dt.date(2026, 10, 31), utc(2026, 10, 31, 11)),
        ("America/New_York", dt.date(2026, 11, 2), utc(2026, 11, 2, 12)),
        # London: BST until 25 Oct 2026.
        ("Europe/London", dt.date(2026, 10, 24), utc(2026, 10, 24, 6)),
        ("Europe/London", dt.date(2026, 10, 26), utc(2026, 10, 26, 7)),
        # Kolkata has no DST and a half-hour offset.
        ("Asia/Kolkata", dt.date(2026, 10, 26), utc(2026, 10, 26, 1, 30)),
        # Adelaide: ACDT (UTC+10:30) from 4 Oct 2026: 07:00 local is 20:30 the day before in UTC.
        ("Australia/Adelaide", dt.date(2026, 10, 5), utc(2026, 10, 4, 20, 30)),
        ("Pacific/Auckland", dt.date(2026, 10, 5), utc(2026, 10, 4, 18)),
    ],
)
def test_send_time_is_local_wall_clock_time(
    zone: str, day: dt.date, expected_utc: dt.datetime
) -> None:
    assert schedule.at_local_time(day, dt.time(7), schedule.zone(zone)) == expected_utc


def test_send_time_skipped_by_spring_forward_goes_out_after_the_gap() -> None:
    # 02:30 does not exist in New York on 8 March 2026; the lesson is late by the gap, not early.
    tz = schedule.zone("America/New_York")
    due = schedule.at_local_time(dt.date(2026, 3, 8), dt.time(2, 30), tz)
    assert due.astimezone(tz).replace(tzinfo=None) == dt.datetime(2026, 3, 8, 3, 30)


def test_ambiguous_autumn_send_time_takes_the_first_occurrence() -> None:
    tz = schedule.zone("America/New_York")
    due = schedule.at_local_time(dt.date(2026, 11, 1), dt.time(1, 30), tz)
    assert due == utc(2026, 11, 1, 5, 30)  # 01:30 EDT, the first of the two


def test_next_lesson_is_due_at_send_time_on_the_next_local_day() -> None:
    tz = schedule.zone("Pacific/Auckland")
    sent = utc(2026, 10, 4, 18, 0)  # 07:00 Monday 5 Oct in Auckland
    assert schedule.next_due(DAILY_7AM, tz, last_sent_at=sent) == utc(2026, 10, 5, 18)


def test_a_lesson_sent_late_in_the_local_evening_still_waits_for_tomorrow_morning() -> None:
    tz = schedule.zone("Europe/London")
    sent = utc(2026, 6, 1, 22, 59)  # 23:59 BST
    assert schedule.next_due(DAILY_7AM, tz, last_sent_at=sent) == utc(2026, 6, 2, 6)


@pytest.mark.parametrize(
    ("sent_local", "expected_local"),
    [
        (dt.datetime(2026, 11, 27, 7), dt.datetime(2026, 11, 30, 7)),  # Friday -> Monday
        (dt.datetime(2026, 11, 28, 9), dt.datetime(2026, 11, 30, 7)),  # Saturday -> Monday
        (dt.datetime(2026, 11, 25, 7), dt.datetime(2026, 11, 26, 7)),  # Wednesday -> Thursday
    ],
)
def test_weekday_courses_skip_the_local_weekend(
    sent_local: dt.datetime, expected_local: dt.datetime
) -> None:
    tz = schedule.zone("Asia/Tokyo")
    due = schedule.next_due(WEEKDAYS_7AM, tz, last_sent_at=sent_local.replace(tzinfo=tz))
    assert due.astimezone(tz).replace(tzinfo=None) == expected_local


def test_cohort_started_now_sends_day_one_at_once() -> None:
    now = utc(2026, 11, 25, 15, 3)
    due = schedule.first_due(
        DAILY_7AM, schedule.zone("Asia/Kolkata"), start_date=None, started_at=now, enrolled_at=now
    )
    assert due == now


def test_cohort_with_a_start_date_sends_day_one_at_local_send_time_that_day() -> None:
    tz = schedule.zone("America/New_York")
    due = schedule.first_due(
        DAILY_7AM, tz, start_date=dt.date(2027, 3, 10), started_at=None, enrolled_at=utc(2027, 1, 1)
    )
    assert due == utc(2027, 3, 10, 12)


def test_a_weekday_course_starting_on_saturday_begins_on_monday() -> None:
    tz = schedule.zone("Europe/London")
    due = schedule.first_due(
        WEEKDAYS_7AM,
        tz,
        start_date=dt.date(2026, 11, 28),
        started_at=None,
        enrolled_at=utc(2026, 11, 1),
    )
    assert due == utc(2026, 11, 30, 7)


@pytest.mark.parametrize(
    ("enrolled_at", "expected"),
    [
        # 12:00 in London: today's window is open, Day 1 at once.
        (utc(2026, 11, 25, 12), utc(2026, 11, 25, 12)),
        # 05:00: before today's send time, so 07:00 today.
        (utc(2026, 11, 25, 5), utc(2026, 11, 25, 7)),
        # 22:30: the window closed at 21:00, so 07:00 tomorrow, never in the night.
        (utc(2026, 11, 25, 22, 30), utc(2026, 11, 26, 7)),
    ],
    ids=["midday-at-once", "early-morning-waits-for-7", "late-evening-waits-for-tomorrow"],
)
def test_late_joiner_starts_on_their_own_first_day_inside_the_window(
    enrolled_at: dt.datetime, expected: dt.datetime
) -> None:
    tz = schedule.zone("Europe/London")
    due = schedule.first_due(
        DAILY_7AM, tz, start_date=dt.date(2026, 11, 1), started_at=None, enrolled_at=enrolled_at
    )
    assert due == expected


def test_a_paused_lesson_comes_at_the_first_send_time_after_the_pause() -> None:
    tz = schedule.zone("Europe/London")
    due = schedule.resume_due(
        DAILY_7AM, tz, due=utc(2026, 11, 26, 7), paused_until=utc(2026, 12, 2, 9, 30)
    )
    assert due == utc(2026, 12, 3, 7)
    unaffected = schedule.resume_due(
        DAILY_7AM, tz, due=utc(2026, 12, 5, 7), paused_until=utc(2026, 12, 2, 9, 30)
    )
    assert unaffected == utc(2026, 12, 5, 7)


@pytest.mark.parametrize("bad", ["Mars/Olympus", "", "EST5EDT ", "../../etc/passwd"])
def test_unknown_time_zones_are_rejected_by_name(bad: str) -> None:
    with pytest.raises(InputError, match="time zone"):
        schedule.zone(bad)
