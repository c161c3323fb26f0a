"""Undoing an unsubscribe: for a while, the reader's own links bring their lessons back.

Unsubscribing stays immediate and total (every course, the address suppressed); a click in
error, or a change of mind, is undone from the unsubscribed page for ``RESUBSCRIBE_DAYS``.
Only the suppression that unsubscribing made is lifted: an address that bounced, complained
or that an operator suppressed stays so, and the page tells the reader to ask the programme.
The course carries on where it stopped: the next lesson at the next send time, never the
lessons missed meanwhile, and never a second lesson on a local day that already had one.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dripcourse import schedule
from dripcourse.courses.course import Course
from dripcourse.models import Delivery, DeliveryStatus, Enrollment, EnrollmentStatus, Suppression
from dripcourse.people.pausing import unpaused_due

RESUBSCRIBE_DAYS = 30
UNSUBSCRIBED_REASON = "unsubscribed"  # the suppression reason ``enrollment.unsubscribe`` writes


class Answer(enum.StrEnum):
    """Whether the reader of an unsubscribed enrollment can come back by themselves."""

    CAN = "can"
    TOO_LATE = "too-late"  # RESUBSCRIBE_DAYS have passed: the programme can enroll them again
    BLOCKED = "blocked"  # suppressed for another reason (a bounce, a complaint, an operator)
    NOT_LEFT = "not-left"  # the enrollment is not unsubscribed


@dataclass(frozen=True)
class Standing:
    answer: Answer
    unsubscribed_at: dt.datetime | None = None
    until: dt.datetime | None = None  # the last moment resubscribing works


@dataclass(frozen=True)
class Back:
    """One enrollment brought back: its course, and when its next lesson is due (None when
    the course had already reached its last lesson)."""

    enrollment_id: int
    course_slug: str
    next_day: int
    due: dt.datetime | None


def standing(session: Session, enrollment: Enrollment, now: dt.datetime) -> Standing:
    """Whether ``enrollment``'s reader may resubscribe at ``now``, and until when."""
    if enrollment.status != EnrollmentStatus.UNSUBSCRIBED:
        return Standing(Answer.NOT_LEFT)
    row = _suppression(session, enrollment)
    if row is not None and row.reason != UNSUBSCRIBED_REASON:
        return Standing(Answer.BLOCKED)
    # The suppression unsubscribing made says when; without one (an operator lifted it), the
    # enrollment's own last change.
    left = row.created_at if row is not None else enrollment.updated_at
    until = left + dt.timedelta(days=RESUBSCRIBE_DAYS)
    if now > until:
        return Standing(Answer.TOO_LATE, left, until)
    return Standing(Answer.CAN, left, until)


def resubscribe(
    session: Session,
    enrollment: Enrollment,
    course_for: Callable[[str], Course],
    now: dt.datetime,
) -> list[Back]:
    """Undo the unsubscribe that stopped ``enrollment``: lift its suppression and bring back
    every enrollment of the reader it stopped. Returns them; [] when the reader may not
    (see ``standing``) or another request did it first."""
    found = standing(session, enrollment, now)
    if found.answer != Answer.CAN:
        return []
    assert found.unsubscribed_at is not None
    row = _suppression(session, enrollment)
    if row is not None:
        session.delete(row)
    subscriber = enrollment.subscriber
    # The ones that unsubscribe stopped: it stopped them all at once, at the suppression's time.
    stopped = [
        each
        for each in subscriber.enrollments
        if each.status == EnrollmentStatus.UNSUBSCRIBED
        and (each is enrollment or each.updated_at >= found.unsubscribed_at)
    ]
    back = []
    for each in stopped:
        again = _bring_back(session, each, course_for(each.cohort.course_slug), now)
        if again is not None:
            back.append(again)
    session.flush()
    return back


def _suppression(session: Session, enrollment: Enrollment) -> Suppression | None:
    email = enrollment.subscriber.email
    return session.scalar(select(Suppression).where(Suppression.email == email))


def next_morning(course: Course, timezone: str, now: dt.datetime) -> dt.datetime:
    """The first send time after ``now`` on a sending day, on the reader's clock: later today
    if it is still ahead, else the next sending day's."""
    tz = schedule.zone(timezone)
    cadence = course.cadence
    today = schedule.local_date(now, tz)
    due = schedule.at_local_time(schedule.next_sending_day(today, cadence), cadence.send_time, tz)
    if due <= now:
        following = schedule.next_sending_day(today + dt.timedelta(days=1), cadence)
        due = schedule.at_local_time(following, cadence.send_time, tz)
    return due


def _bring_back(
    session: Session, enrollment: Enrollment, course: Course, now: dt.datetime
) -> Back | None:
    """Make one stopped enrollment active again (completed, if its last lesson had gone);
    a compare-and-set on its status, so two presses bring it back once."""
    finished = enrollment.day >= course.length
    due = None
    if not finished:
        tz = schedule.zone(enrollment.subscriber.timezone)
        # When it was due anyway (after the last lesson's day, or the cohort's start), but
        # never before the next send time: the next lesson, not a backlog.
        due = max(
            unpaused_due(session, enrollment, course),
            next_morning(course, enrollment.subscriber.timezone, now),
        )
        if enrollment.paused_until is not None and enrollment.paused_until > now:
            due = schedule.resume_due(
                course.cadence, tz, due=due, paused_until=enrollment.paused_until
            )
    # The next lesson, if it was on its way when they left, was cancelled then: that same row
    # goes out again (a delivery per enrollment and day is unique), as after a claim.
    cancelled = session.scalar(
        select(Delivery).where(
            Delivery.enrollment_id == enrollment.id,
            Delivery.day == enrollment.day + 1,
            Delivery.status == DeliveryStatus.CANCELLED,
        )
    )
    revive = due is not None and cancelled is not None
    changed = session.execute(
        update(Enrollment)
        .where(Enrollment.id == enrollment.id, Enrollment.status == EnrollmentStatus.UNSUBSCRIBED)
        .values(
            status=EnrollmentStatus.COMPLETED if finished else EnrollmentStatus.ACTIVE,
            next_send_at=None if revive else due,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    if changed != 1:
        return None
    if revive:
        assert cancelled is not None
        cancelled.status = DeliveryStatus.WAITING
        cancelled.next_attempt_at = due
        cancelled.attempts = 0
        cancelled.created_at = now  # a fresh retry budget
        cancelled.updated_at = now
        cancelled.last_error = None
        cancelled.queued_at = None
    session.refresh(enrollment)
    return Back(enrollment.id, course.slug, enrollment.day + 1, due)
