"""When is the next lesson due? Pure functions over dates, zones and a course's rules.

The rules users rely on:
- a lesson goes out only inside the course's local window [send_time, latest_send_time] on a
  sending day, in the subscriber's own IANA zone; whatever made it late (downtime, a retry, a
  pause, a late enrollment, a zone change), outside that window it waits for the next sending
  day's send time;
- at most one lesson per subscriber per local calendar day;
- a course may skip Saturdays and Sundays (in the subscriber's local calendar);
- after downtime, the next lesson goes out at the first moment inside the window and the one
  after it on the next sending day: the schedule slides, it never bursts and never skips.

The one exception is a cohort started ``now``: its Day 1 goes out at once, whatever the hour,
because the operator asked for exactly that. Every later lesson keeps to the window.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dripcourse.errors import InputError

SATURDAY = 5


@dataclass(frozen=True)
class Cadence:
    """A course's sending rules."""

    send_time: dt.time
    skip_weekends: bool = False
    # The last local time a lesson may still go out on a sending day.
    latest_send_time: dt.time = dt.time(21, 0)

    def __post_init__(self) -> None:
        if self.latest_send_time <= self.send_time:
            raise ValueError(
                f"latest_send_time ({self.latest_send_time:%H:%M}) must be later than "
                f"send_time ({self.send_time:%H:%M}) on the same day"
            )

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

    A wall time that does not exist (skipped by a spring-forward change) comes late by the
    length of the gap, never early: 02:30 on the night New York jumps from 02:00 to 03:00 is
    03:30. An ambiguous time (autumn) takes its first occurrence.
    """
    # zoneinfo reads a skipped wall time with the offset from before the change, which lands
    # after the intended moment: late by the gap, as "at or after" allows.
    return dt.datetime.combine(day, time, tzinfo=tz).astimezone(dt.UTC)


def next_sending_day(on_or_after: dt.date, cadence: Cadence) -> dt.date:
    day = on_or_after
    while not cadence.is_sending_day(day):
        day += dt.timedelta(days=1)
    return day


@functools.lru_cache(maxsize=4096)
def _window(day: dt.date, cadence: Cadence, tz: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    """The UTC instants that open and close ``day``'s sending window in ``tz``: the same for
    every reader in a zone on a day, worked out once (a batch asks for each of its readers)."""
    return (
        at_local_time(day, cadence.send_time, tz),
        at_local_time(day, cadence.latest_send_time, tz),
    )


def in_window(cadence: Cadence, tz: ZoneInfo, moment: dt.datetime) -> bool:
    """Whether a lesson may go out at ``moment``: inside [send_time, latest_send_time] of a
    sending day, on the subscriber's wall clock."""
    day = local_date(moment, tz)
    if not cadence.is_sending_day(day):
        return False
    opens, closes = _window(day, cadence, tz)
    return opens <= moment <= closes


def window_start(cadence: Cadence, tz: ZoneInfo, at_or_after: dt.datetime) -> dt.datetime:
    """The first moment at or after ``at_or_after`` when a lesson may go out.

    Inside the window that is ``at_or_after`` itself; before today's window opens, today's send
    time; after it closes (or on a day that is not a sending day), the next sending day's send
    time. Every path that plans a lesson passes its wish through this.
    """
    day = local_date(at_or_after, tz)
    while True:
        if cadence.is_sending_day(day):
            opens, closes = _window(day, cadence, tz)
            if at_or_after <= closes:
                return max(opens, at_or_after)
        day = next_sending_day(day + dt.timedelta(days=1), cadence)


def first_due(
    cadence: Cadence,
    tz: ZoneInfo,
    *,
    start_date: dt.date | None,
    started_at: dt.datetime | None,
    enrolled_at: dt.datetime,
) -> dt.datetime:
    """When Day 1 is due for someone who enrolled at ``enrolled_at``.

    A cohort started "now" sends Day 1 at once, whatever the hour (a late joiner gets it when
    they join): the operator's explicit choice. A cohort with a start date sends it at the send
    time of the first sending day on or after that date; someone who joins after that date
    starts on their own first day, today included if today's window is still open (joining at
    10:00, Day 1 comes at once; at 23:00, tomorrow at the send time).
    """
    if started_at is not None:
        return max(started_at, enrolled_at)
    assert start_date is not None
    day = next_sending_day(start_date, cadence)
    return window_start(cadence, tz, max(at_local_time(day, cadence.send_time, tz), enrolled_at))


def at_once(day: int, started_at: dt.datetime | None) -> bool:
    """Whether lesson ``day`` goes out whatever the hour: Day 1 of a cohort started "now"."""
    return day == 1 and started_at is not None


def next_due(cadence: Cadence, tz: ZoneInfo, *, last_sent_at: dt.datetime) -> dt.datetime:
    """When the lesson after one sent at ``last_sent_at`` is due: the next local sending day."""
    following = local_date(last_sent_at, tz) + dt.timedelta(days=1)
    return window_start(cadence, tz, at_local_time(following, cadence.send_time, tz))


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
    return window_start(cadence, tz, candidate)


def resumed_due(
    cadence: Cadence, tz: ZoneInfo, *, unpaused_due: dt.datetime, now: dt.datetime
) -> dt.datetime:
    """The due time of the next lesson when a pause is ended early at ``now``.

    ``unpaused_due`` is when it would have been due had there been no pause: the send time of
    the first sending day after the last lesson (so at least the day after it).

    - still ahead: it keeps that time;
    - passed, and today (locally) is a sending day whose send time is still ahead: today's
      send time (resumed at 02:00, it comes at 07:00, not in the night);
    - passed, and today's window is open: at once, as the subscriber asked; still the only
      lesson that local day, since the unpaused time is after the last lesson's day;
    - passed, and today's window has closed or today is not a sending day: the next sending
      day's send time.
    """
    if unpaused_due >= now:
        return unpaused_due
    return window_start(cadence, tz, now)


def parse_send_time(value: str, name: str = "send_time") -> dt.time:
    """Parse a local "HH:MM" time of day."""
    try:
        parsed = dt.datetime.strptime(value, "%H:%M").time()
    except (TypeError, ValueError):
        raise ValueError(f'{name} must be local "HH:MM", got {value!r}') from None
    return parsed
