"""Pausing and resuming one enrollment: when its next lesson comes, and the one on its way.

The reader's pause page and the operator's ``pause`` and ``resume`` both come here. Every
write to the schedule is a compare-and-set (``reschedule``), because a tick may claim the
lesson between our read and our write; ``changes`` moves the next lesson through the same
step.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dripcourse import schedule
from dripcourse.courses.course import Course
from dripcourse.errors import InputError
from dripcourse.models import Delivery, DeliveryStatus, Enrollment, EnrollmentStatus

PAUSE = dt.timedelta(days=7)


def reschedule(
    session: Session, enrollment: Enrollment, seen: dt.datetime | None, **values: object
) -> bool:
    """Compare-and-set the schedule columns: only if next_send_at is still ``seen``.

    A tick may claim the lesson between our read and our write; overwriting its
    ``next_send_at = NULL`` would let a second claim of the same day through.
    """
    same_due = (
        Enrollment.next_send_at.is_(None) if seen is None else Enrollment.next_send_at == seen
    )
    query = (
        update(Enrollment)
        .where(Enrollment.id == enrollment.id, Enrollment.status == EnrollmentStatus.ACTIVE)
        .where(same_due)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    changed = session.execute(query).rowcount == 1
    session.refresh(enrollment)
    return changed


def pause(
    session: Session,
    enrollment: Enrollment,
    course: Course,
    now: dt.datetime,
    length: dt.timedelta = PAUSE,
) -> bool:
    """Hold an active enrollment's lessons for ``length`` (a week) from ``now``; False if it is
    not active.

    The lesson that was next stays next: it moves to the first send time after the pause, and
    the course carries on from there. A lesson already on its way (queued, or waiting for a
    retry) waits for that time too; one a worker has taken is held by the sender's last look,
    its attempt given back (sending.last_look). Only the one message being handed to the mail
    server at this very moment is not recalled: on PostgreSQL the pause waits for it. Pausing
    again while paused runs the new length from ``now``, but never shortens a longer pause.
    """
    if length <= dt.timedelta(0):
        raise InputError(f"pause length: must be more than nothing, got {length}")
    for _ in range(3):
        if enrollment.status != EnrollmentStatus.ACTIVE:
            return False
        paused_until = max(
            _start_of_local_day(now + length, enrollment.subscriber.timezone),
            enrollment.paused_until or now,
        )
        seen = due = enrollment.next_send_at
        if due is not None and due < paused_until:
            due = schedule.resume_due(
                course.cadence,
                schedule.zone(enrollment.subscriber.timezone),
                due=due,
                paused_until=paused_until,
            )
        if reschedule(
            session, enrollment, seen, paused_until=paused_until, next_send_at=due, updated_at=now
        ):
            _hold_on_its_way(session, enrollment, course, paused_until, now)
            return True
    raise RuntimeError(f"enrollment {enrollment.id} kept changing while being paused")


def _start_of_local_day(moment: dt.datetime, timezone: str) -> dt.datetime:
    """The start of the subscriber's local day that ``moment`` falls in. A pause of N days
    ends there, so a reader is back on the morning N days later whatever the hour they paused
    at: a week from Monday 07:38 brings the next lesson on Monday morning, not Tuesday."""
    tz = schedule.zone(timezone)
    return schedule.at_local_time(moment.astimezone(tz).date(), dt.time(0, 0), tz)


def next_lesson_at(session: Session, enrollment: Enrollment) -> dt.datetime | None:
    """When the next lesson is due to go out: its planned time, or, for one already claimed
    and waiting (for a pause's end, a retry, the morning), the time it waits for."""
    if enrollment.next_send_at is not None:
        return enrollment.next_send_at
    return session.scalar(
        select(Delivery.next_attempt_at).where(
            Delivery.enrollment_id == enrollment.id, Delivery.status == DeliveryStatus.WAITING
        )
    )


def _hold_on_its_way(
    session: Session,
    enrollment: Enrollment,
    course: Course,
    paused_until: dt.datetime,
    now: dt.datetime,
) -> None:
    """The lesson on its way (queued, or waiting for a retry) waits for the pause's end: the
    first send time after it. Its queued task, when it comes, finds it not free and leaves
    it; the sweep queues it again then. No attempt is spent."""
    until = schedule.resume_due(
        course.cadence,
        schedule.zone(enrollment.subscriber.timezone),
        due=now,
        paused_until=paused_until,
    )
    session.execute(
        update(Delivery)
        .where(
            Delivery.enrollment_id == enrollment.id,
            Delivery.status.in_((DeliveryStatus.PENDING, DeliveryStatus.WAITING)),
            Delivery.next_attempt_at < until,
        )
        .values(
            status=DeliveryStatus.WAITING, next_attempt_at=until, queued_at=None, updated_at=now
        )
        .execution_options(synchronize_session=False)
    )


def resume(session: Session, enrollment: Enrollment, course: Course, now: dt.datetime) -> bool:
    """End a pause early; the next lesson comes back to when it would have been due.

    If that time has passed, it comes at today's local send time if that is still ahead, at
    once if today's send time has passed too, or on the next sending day's send time if today
    is not one (see ``schedule.resumed_due``). It never brings two lessons on one local day
    and never skips one. False if the enrollment is not active or not paused (a pause whose
    week has run out is over already).
    """
    for _ in range(3):
        paused = enrollment.paused_until is not None and enrollment.paused_until > now
        if enrollment.status != EnrollmentStatus.ACTIVE or not paused:
            return False
        was_paused_until = enrollment.paused_until
        seen = due = enrollment.next_send_at
        # None: a lesson is in flight; recording it schedules the next, now without the pause.
        if due is not None:
            due = schedule.resumed_due(
                course.cadence,
                schedule.zone(enrollment.subscriber.timezone),
                unpaused_due=unpaused_due(session, enrollment, course),
                now=now,
            )
        if reschedule(
            session, enrollment, seen, paused_until=None, next_send_at=due, updated_at=now
        ):
            # A lesson held for the pause comes back now (in the window) instead of at its end.
            tz = schedule.zone(enrollment.subscriber.timezone)
            session.execute(
                update(Delivery)
                .where(
                    Delivery.enrollment_id == enrollment.id,
                    Delivery.status == DeliveryStatus.WAITING,
                    Delivery.next_attempt_at >= was_paused_until,
                )
                .values(next_attempt_at=schedule.window_start(course.cadence, tz, now))
                .execution_options(synchronize_session=False)
            )
            return True
    raise RuntimeError(f"enrollment {enrollment.id} kept changing while being resumed")


def unpaused_due(session: Session, enrollment: Enrollment, course: Course) -> dt.datetime:
    """When the next lesson would be due had there been no pause."""
    tz = schedule.zone(enrollment.subscriber.timezone)
    last_sent_at = session.scalar(
        select(Delivery.sent_at)
        .where(Delivery.enrollment_id == enrollment.id, Delivery.status == DeliveryStatus.SENT)
        .order_by(Delivery.sent_at.desc())
        .limit(1)
    )
    if last_sent_at is not None:
        return schedule.next_due(course.cadence, tz, last_sent_at=last_sent_at)
    cohort = enrollment.cohort
    return schedule.first_due(
        course.cadence,
        tz,
        start_date=cohort.start_date_in(tz),
        started_at=cohort.started_at,
        enrolled_at=enrollment.created_at,
    )
