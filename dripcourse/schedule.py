"""When is the next lesson due? Pure functions over dates, zones and a course's rules.

The rules users rely on:
- a lesson goes out at or after the course's send time, in the subscriber's own IANA zone;
- at most one lesson per subscriber per local calendar day;
- a course may skip Saturdays and Sundays (in the subscriber's local calendar);
- after downtime, the next lesson goes out at once and the one after it on the next sending
  day: the schedule slides, it never bursts and never skips.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dripcourse.errors import InputError

SATURDAY = 5


@dataclass(frozen=True)
class Cadence:
    """A course's sending rules."""

    send_time: dt.time
    skip_weekends: bool = False

    def is_sending_day(self, day: dt.date) -> bool:
        return not (self.skip_weekends and day.weekday() >= SATURDAY)


def zone(name: str) -> ZoneInfo:
    """Return the IANA zone, or an InputError naming the bad value."""
    if not name or name != name.strip():
        raise InputError(f"unknown time zone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(
            f"unknown time zone {name!r} (use an IANA name such as Europe/London)"
        ) from None


def local_date(moment: dt.datetime, tz: ZoneInfo) -> dt.date:
    return moment.astimezone(tz).date()


def at_local_time(day: dt.date, time: dt.time, tz: ZoneInfo) -> dt.datetime:
    """The UTC instant of ``time`` on ``day`` in ``tz``.

    A wall time that does not exist (skipped by a spring-forward change) resolves to the same
    distance past the change, so the lesson is late by the gap, never early; an ambiguous time
    (autumn) takes its first occurrence.
    """
    # zoneinfo reads a skipped wall time with the offset from before the change, which lands
    # after the intended moment: late by the gap, as "at or after" allows.
    return dt.datetime.combine(day, time, tzinfo=tz).astimezone(dt.UTC)


def next_sending_day(on_or_after: dt.date, cadence: Cadence) -> dt.date:
    day = on_or_after
    while not cadence.is_sending_day(day):
        day += dt.timedelta(days=1)
    return day


def first_due(
    cadence: Cadence,
    tz: ZoneInfo,
    *,
    start_date: dt.date | None,
    started_at: dt.datetime | None,
    enrolled_at: dt.datetime,
) -> dt.datetime:
    """When Day 1 is due for someone who enrolled at ``enrolled_at``.

    A cohort started "now" sends Day 1 at once (a late joiner gets it when they join). A cohort
    with a start date sends it at the send time of the first sending day on or after that date;
    someone who joins after that date starts on their own first sending day, today included.
    """
    if started_at is not None:
        return max(started_at, enrolled_at)
    assert start_date is not None
    day = max(start_date, local_date(enrolled_at, tz))
    return at_local_time(next_sending_day(day, cadence), cadence.send_time, tz)


def next_due(cadence: Cadence, tz: ZoneInfo, *, last_sent_at: dt.datetime) -> dt.datetime:
    """When the lesson after one sent at ``last_sent_at`` is due: the next local sending day."""
    following = local_date(last_sent_at, tz) + dt.timedelta(days=1)
    return at_local_time(next_sending_day(following, cadence), cadence.send_time, tz)


def resume_due(
    cadence: Cadence, tz: ZoneInfo, *, due: dt.datetime, paused_until: dt.datetime
) -> dt.datetime:
    """The due time of a lesson held back by a pause: the first send time at or after it ends."""
    if due >= paused_until:
        return due
    day = next_sending_day(local_date(paused_until, tz), cadence)
    candidate = at_local_time(day, cadence.send_time, tz)
    if candidate < paused_until:
        candidate = at_local_time(
            next_sending_day(day + dt.timedelta(days=1), cadence), cadence.send_time, tz
        )
    return candidate


def resumed_due(
    cadence: Cadence, tz: ZoneInfo, *, unpaused_due: dt.datetime, now: dt.datetime
) -> dt.datetime:
    """The due time of the next lesson when a pause is ended early at ``now``.

    ``unpaused_due`` is when it would have been due had there been no pause: the send time of
    the first sending day after the last lesson (so at least the day after it).

    - still ahead: it keeps that time;
    - passed, and today (locally) is a sending day whose send time is still ahead: today's
      send time (resumed at 02:00, it comes at 07:00, not in the night);
    - passed, and today's send time has passed too: at once, as the subscriber asked; still
      the only lesson that local day, since the unpaused time is after the last lesson's day;
    - passed, and today is not a sending day: the next sending day's send time.
    """
    if unpaused_due >= now:
        return unpaused_due
    today = local_date(now, tz)
    if cadence.is_sending_day(today):
        return max(at_local_time(today, cadence.send_time, tz), now)
    return at_local_time(next_sending_day(today, cadence), cadence.send_time, tz)


def parse_send_time(value: str) -> dt.time:
    """Parse a local "HH:MM" send time."""
    try:
        parsed = dt.datetime.strptime(value, "%H:%M").time()
    except (TypeError, ValueError):
        raise ValueError(f'send_time must be local "HH:MM", got {value!r}') from None
    return parsed
