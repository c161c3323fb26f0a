"""A dry run of the scheduler: at a given instant, who would get which lesson, and why the
others would not. Nothing is claimed or sent.

It reads the same columns the claim reads (status, next_send_at, paused_until, day, the
suppression list), so its answer is the claim's answer at that instant.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import asdict, dataclass
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from dripcourse import schedule
from dripcourse.courses.course import Course
from dripcourse.errors import InputError
from dripcourse.models import (
    Cohort,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Subscriber,
    Suppression,
)


@dataclass(frozen=True)
class Verdict:
    email: str
    cohort: str
    lesson: int | None  # the lesson they would get now, or None
    reason: str  # "due", or why not: paused, weekend, before send time, finished, ...
    detail: str
    next_send_at: str | None
    next_send_at_local: str | None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def parse_at(value: str | None, now: dt.datetime) -> dt.datetime:
    """``--at``: ISO 8601; without an offset it is UTC."""
    if value is None:
        return now
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InputError(
            f"--at: expected a date and time such as 2027-03-10T07:00, got {value!r}"
        ) from None
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


def due_at(
    session: Session,
    at: dt.datetime,
    course_for: Callable[[str], Course],
    cohort: str | None = None,
) -> list[Verdict]:
    """One verdict per enrollment at the instant ``at``."""
    query = (
        select(Enrollment, Subscriber, Cohort, Suppression.reason)
        .join(Subscriber, Enrollment.subscriber_id == Subscriber.id)
        .join(Cohort, Enrollment.cohort_id == Cohort.id)
        .outerjoin(Suppression, Suppression.email == Subscriber.email)
        .order_by(Cohort.name, Subscriber.email)
    )
    if cohort is not None:
        query = query.where(Cohort.name == cohort)
    verdicts = []
    for enrollment, person, group, suppressed in session.execute(query):
        course = course_for(group.course_slug)
        reason, detail, lesson = _why(enrollment, person.timezone, course, suppressed, at)
        due = enrollment.next_send_at
        verdicts.append(
            Verdict(
                email=person.email,
                cohort=group.name,
                lesson=lesson,
                reason=reason,
                detail=detail,
                next_send_at=None if due is None else due.isoformat().replace("+00:00", "Z"),
                next_send_at_local=None
                if due is None
                else due.astimezone(schedule.zone(person.timezone)).isoformat(),
            )
        )
    return verdicts


def _claimed(enrollment: Enrollment, tz: ZoneInfo, following: int) -> tuple[str, str, None]:
    """A lesson already claimed: on its way (queued or being sent), or waiting (for a retry,
    the morning, the relay, the end of a pause) until the time the detail gives."""
    waiting = next((d for d in enrollment.deliveries if d.status == DeliveryStatus.WAITING), None)
    if waiting is None or waiting.next_attempt_at is None:
        return "on its way", f"Day {following} is queued or being sent", None
    detail = f"Day {following} at {waiting.next_attempt_at.astimezone(tz):%Y-%m-%d %H:%M} {tz.key}"
    if waiting.last_error:
        detail += f" (last error: {waiting.last_error})"
    return "waiting", detail, None


def _why(
    enrollment: Enrollment, zone: str, course: Course, suppressed: str | None, at: dt.datetime
) -> tuple[str, str, int | None]:
    tz = schedule.zone(zone)
    following = enrollment.day + 1
    if enrollment.status != EnrollmentStatus.ACTIVE:
        reason = "finished" if enrollment.status == EnrollmentStatus.COMPLETED else "stopped"
        return reason, f"{enrollment.status} after Day {enrollment.day}", None
    if suppressed is not None:
        return "suppressed", suppressed, None
    if enrollment.day >= course.length:
        return "finished", f"had all {course.length} lessons", None
    due = enrollment.next_send_at
    if due is None:
        return _claimed(enrollment, tz, following)
    if enrollment.paused_until is not None and enrollment.paused_until > at:
        until = enrollment.paused_until.astimezone(tz)
        return "paused", f"until {until:%Y-%m-%d %H:%M} {tz.key}", None
    if (
        due <= at
        and not schedule.at_once(following, enrollment.cohort.started_at)
        and not schedule.in_window(course.cadence, tz, at)
    ):
        # Overdue, but it is night (or a skipped weekend) where they are: the claim would
        # move it to the window's next opening, not send it.
        opens = schedule.window_start(course.cadence, tz, at).astimezone(tz)
        reason = (
            "weekend"
            if not course.cadence.is_sending_day(at.astimezone(tz).date())
            else ("outside the sending window")
        )
        return reason, f"Day {following} at {opens:%Y-%m-%d %H:%M} {tz.key}", None
    if due <= at:
        return "due", f"Day {following}", following
    local_at, local_due = at.astimezone(tz), due.astimezone(tz)
    if not course.cadence.is_sending_day(local_at.date()):
        reason = "weekend"
    elif local_due.date() == local_at.date():
        reason = "before send time"
    else:
        reason = "not yet"
    return reason, f"Day {following} at {local_due:%Y-%m-%d %H:%M} {tz.key}", None
