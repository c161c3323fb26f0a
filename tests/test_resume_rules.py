"""When the next lesson comes after someone resumes a pause early: the pure rule.

The lesson keeps its unpaused time if that is still ahead. If it has passed, it comes at
today's local send time if that is still ahead, at once if today's send time has passed too,
and on the next sending day's send time if today is not a sending day. Never before the local
send time of the day it goes out on (unless that day's send time has already passed when the
subscriber resumes), never two lessons on one local day, never a lesson skipped.
"""

from __future__ import annotations

import datetime as dt

import pytest

from dripcourse import schedule
from dripcourse.schedule import Cadence

DAILY_7AM = Cadence(send_time=dt.time(7, 0))
WEEKDAYS_7AM = Cadence(send_time=dt.time(7, 0), skip_weekends=True)


def local(zone: str, *args: int) -> dt.datetime:
    """A wall-clock moment in ``zone``, as an aware datetime."""
    return dt.datetime(*args, tzinfo=schedule.zone(zone))


def resumed(
    cadence: Cadence, zone: str, unpaused_due: dt.datetime, now: dt.datetime
) -> dt.datetime:
    """The rule's answer, read back on the subscriber's wall clock."""
    tz = schedule.zone(zone)
    due = schedule.resumed_due(cadence, tz, unpaused_due=unpaused_due, now=now)
    return due.astimezone(tz)


# Day 2 went out Tuesday 4 March 2025, so Day 3 was due Wednesday 5 March at 07:00 local.
LONDON = "Europe/London"
WEDNESDAY_7AM = local(LONDON, 2025, 3, 5, 7)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        # Tuesday evening: Wednesday morning is still ahead, so Day 3 keeps it.
        (local(LONDON, 2025, 3, 4, 21), WEDNESDAY_7AM),
        # Wednesday 07:00 exactly: the unpaused time is now.
        (WEDNESDAY_7AM, WEDNESDAY_7AM),
        # Thursday 02:00, Wednesday missed: not in the night, at 07:00 that morning.
        (local(LONDON, 2025, 3, 6, 2), local(LONDON, 2025, 3, 6, 7)),
        # Thursday 06:59: still waits the minute for the send time.
        (local(LONDON, 2025, 3, 6, 6, 59), local(LONDON, 2025, 3, 6, 7)),
        # Thursday 10:00, after Thursday's send time: at once, the only lesson that day.
        (local(LONDON, 2025, 3, 6, 10), local(LONDON, 2025, 3, 6, 10)),
        # Thursday 20:59: the window is still open until 21:00, so at once.
        (local(LONDON, 2025, 3, 6, 20, 59), local(LONDON, 2025, 3, 6, 20, 59)),
        # Thursday 23:30: the window has closed; Friday at 07:00, never in the night.
        (local(LONDON, 2025, 3, 6, 23, 30), local(LONDON, 2025, 3, 7, 7)),
    ],
    ids=[
        "unpaused-time-ahead",
        "unpaused-time-is-now",
        "at-night-after-a-missed-morning",
        "a-minute-before-send-time",
        "after-todays-send-time",
        "a-minute-before-the-window-closes",
        "late-evening-waits-for-the-morning",
    ],
)
def test_a_daily_course_resumes_at_the_send_time_or_at_once_inside_the_window(
    now: dt.datetime, expected: dt.datetime
) -> None:
    assert resumed(DAILY_7AM, LONDON, WEDNESDAY_7AM, now) == expected


# A weekday course in Tokyo: Day 3 was due Friday 28 November 2025 at 07:00.
TOKYO = "Asia/Tokyo"
FRIDAY_7AM = local(TOKYO, 2025, 11, 28, 7)
MONDAY_7AM = local(TOKYO, 2025, 12, 1, 7)


@pytest.mark.parametrize(
    "now",
    [
        local(TOKYO, 2025, 11, 29, 2),  # Saturday at night
        local(TOKYO, 2025, 11, 29, 10),  # Saturday after the send time
        local(TOKYO, 2025, 11, 30, 23),  # Sunday late evening
        local(TOKYO, 2025, 12, 1, 2),  # Monday at night
    ],
    ids=["saturday-02:00", "saturday-10:00", "sunday-23:00", "monday-02:00"],
)
def test_a_weekday_course_resumed_at_the_weekend_or_in_the_night_waits_for_monday_morning(
    now: dt.datetime,
) -> None:
    assert resumed(WEEKDAYS_7AM, TOKYO, FRIDAY_7AM, now) == MONDAY_7AM


def test_a_weekday_course_resumed_on_monday_after_the_send_time_sends_at_once() -> None:
    now = local(TOKYO, 2025, 12, 1, 9, 15)
    assert resumed(WEEKDAYS_7AM, TOKYO, FRIDAY_7AM, now) == now


def test_today_is_the_subscribers_local_day_not_utcs() -> None:
    # 03:00 Monday in Auckland is still Sunday in UTC: the lesson comes at 07:00 Monday there.
    auckland = "Pacific/Auckland"
    now = local(auckland, 2026, 10, 5, 3)
    assert now.astimezone(dt.UTC).date() == dt.date(2026, 10, 4)
    missed = local(auckland, 2026, 10, 3, 7)
    assert resumed(DAILY_7AM, auckland, missed, now) == local(auckland, 2026, 10, 5, 7)


def test_resumed_in_the_night_of_the_spring_forward_comes_at_the_new_07_00() -> None:
    # New York skips 02:00-03:00 on Sunday 9 March 2025; 01:30 EST is before the change.
    new_york = "America/New_York"
    now = local(new_york, 2025, 3, 9, 1, 30)
    due = resumed(DAILY_7AM, new_york, local(new_york, 2025, 3, 7, 7), now)
    assert (due.date(), due.time(), due.utcoffset()) == (
        dt.date(2025, 3, 9),
        dt.time(7),
        dt.timedelta(hours=-4),
    )


@pytest.mark.parametrize(
    ("cadence", "zone"),
    [
        (DAILY_7AM, "Europe/London"),
        (WEEKDAYS_7AM, "Europe/London"),
        (DAILY_7AM, "Australia/Adelaide"),
        (WEEKDAYS_7AM, "Asia/Kolkata"),
    ],
    ids=["daily-london", "weekdays-london", "daily-adelaide", "weekdays-kolkata"],
)
def test_whenever_someone_resumes_the_lesson_comes_on_the_first_day_it_may_and_never_early(
    cadence: Cadence, zone: str
) -> None:
    """Resume at every quarter hour of the two weeks after a Friday lesson.

    The fortnight spans London's spring-forward (30 March) and Adelaide's fall-back (6 April).
    """
    tz = schedule.zone(zone)
    last_sent = schedule.at_local_time(dt.date(2025, 3, 28), cadence.send_time, tz)  # a Friday
    last_day = schedule.local_date(last_sent, tz)
    unpaused_due = schedule.next_due(cadence, tz, last_sent_at=last_sent)
    now = last_sent
    while now < last_sent + dt.timedelta(days=14):
        due = schedule.resumed_due(cadence, tz, unpaused_due=unpaused_due, now=now)
        due_local, now_local = due.astimezone(tz), now.astimezone(tz)
        # Not in the past, not before the lesson was due anyway.
        assert due >= max(now, unpaused_due)
        # One lesson a local day: never on the day of the last one; only on a sending day.
        assert due_local.date() > last_day and cadence.is_sending_day(due_local.date())
        # Always inside the local window [send_time, latest_send_time] of a sending day.
        assert schedule.in_window(cadence, tz, due)
        assert cadence.send_time <= due_local.time() <= cadence.latest_send_time
        # On the first sending day it may: nothing held back a day longer than the rules say
        # (today if today's window is still open, else the next sending day).
        first_day = max(now_local.date(), unpaused_due.astimezone(tz).date())
        if now_local.date() == first_day and now_local.time() > cadence.latest_send_time:
            first_day += dt.timedelta(days=1)
        assert due_local.date() == schedule.next_sending_day(first_day, cadence)
        now += dt.timedelta(minutes=15)
