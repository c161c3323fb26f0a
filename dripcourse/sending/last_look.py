"""The last look before a message goes out: is the delivery still ours, its reader still there,
still in the course, not paused, their address still mailable?

The batch looks again at its readers every few seconds (``batch._look_again``), which is cheap
but leaves a gap: a reader who asks to be forgotten or paused one second before their lesson
would still get it after the page said "done". This look closes the gap, one compare-and-set
per message. On PostgreSQL it first locks the reader's enrollment row and keeps both rows
locked until the message is recorded (``record.Recorder``), so a forget, pause or unenroll of
that reader waits out the one SMTP exchange under way and then finds the lesson sent; one
that came first finds the lesson not sent, and the look settles it. Every change to a person
locks the enrollment before its deliveries, and so does this look: the two can never wait for
each other in a circle. SQLite has one writer at a time and no row locks: holding its write
lock through an SMTP exchange would stop every other writer, so there the look commits right
before the message is handed to the transport.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, bindparam, exists, or_, select, update
from sqlalchemy.engine import Dialect

from dripcourse import schedule
from dripcourse.courses.course import Course
from dripcourse.models import (
    Delivery,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Subscriber,
    Suppression,
)
from dripcourse.sending.prepared import Prepared, run_script, run_together, scripted
from dripcourse.sending.take import Job, Outcome, ours, set_delivery, waiting_again

log = logging.getLogger(__name__)

# Said in the delivery's record when a forgotten person's lesson was stopped: the row itself is
# gone by then, so this reaches only the log.
FORGOTTEN = "its reader was deleted (forget) before it went out"


def pause_end(
    course: Course, zone: str, paused_until: dt.datetime, now: dt.datetime
) -> dt.datetime:
    """When a lesson held by a pause may go out: the first send time at or after its end."""
    return schedule.resume_due(
        course.cadence, schedule.zone(zone), due=now, paused_until=paused_until
    )


@functools.cache
def _lock_statement():  # type: ignore[no-untyped-def]
    """The reader's enrollment row, locked, and whether it is still as the take saw it (the
    record's guard, ``record.one_statement_record``, read under the lock): built once."""
    e, s = Enrollment.__table__.c, Subscriber.__table__.c
    unchanged = and_(
        e.day < bindparam("p_day", type_=e.day.type),
        e.next_send_at.is_(None),
        e.paused_until.is_not_distinct_from(bindparam("p_seen_paused", type_=e.paused_until.type)),
        s.timezone == bindparam("p_zone", type_=s.timezone.type),
    )
    return (
        select(e.id, unchanged.label("unchanged"))
        .join(Subscriber.__table__, e.subscriber_id == s.id)
        .where(e.id == bindparam("p_enrollment", type_=e.id.type))
        .with_for_update(of=Enrollment.__table__)
    )


@functools.cache
def _free_statement():  # type: ignore[no-untyped-def]
    """The look's compare-and-set, built once with its values as parameters: building it
    afresh for each message cost about a quarter of our CPU per message."""
    d, e, s = Delivery.__table__.c, Enrollment.__table__.c, Subscriber.__table__.c
    now = bindparam("p_now", type_=d.updated_at.type)
    return (
        update(Delivery.__table__)
        .where(
            # take.ours for one attempt
            d.status == DeliveryStatus.SENDING,
            d.id == bindparam("p_delivery", type_=d.id.type),
            d.attempts == bindparam("p_attempts", type_=d.attempts.type),
            exists(
                select(e.id)
                .join(Subscriber.__table__, e.subscriber_id == s.id)
                .where(
                    e.id == d.enrollment_id,
                    e.status == EnrollmentStatus.ACTIVE,
                    or_(e.paused_until.is_(None), e.paused_until <= now),
                    ~exists(
                        select(Suppression.__table__.c.id).where(
                            Suppression.__table__.c.email == s.email
                        )
                    ),
                )
            ),
        )
        .values(updated_at=now)
    )


@functools.cache
def _prepared(dialect: Dialect) -> tuple[Prepared, Prepared]:
    """The lock and the compare-and-set, compiled once for ``dialect`` (see prepared.py)."""
    return (
        Prepared(_lock_statement(), dialect, "dripcourse_look_lock"),
        Prepared(_free_statement(), dialect, "dripcourse_look_free"),
    )


@dataclass(frozen=True)
class Look:
    """What the last look found: ``settled`` is None when the message may go out; then
    ``unchanged`` says whether the reader's enrollment (and zone) are still as the take saw
    them, so the one-statement record will match (PostgreSQL: read under the lock)."""

    settled: Outcome | None
    unchanged: bool = False


def last_look(
    conn: Connection, job: Job, course: Course, now: dt.datetime, *, begin: bool = False
) -> Look:
    """Whether the message may go out now (on PostgreSQL its reader's rows stay locked until
    the transaction of ``conn`` ends); otherwise the delivery is settled here, in that
    transaction, with its outcome: CANCELLED (the reader was forgotten, left or was
    suppressed), HELD (paused: it waits for the pause's end, its attempt given back) or
    SKIPPED (another worker holds it).

    ``begin``: the look starts the transaction itself (a connection in autocommit mode, see
    ``prepared.run_script``), in the same round trip.
    """
    steps = look_steps(conn.dialect, job, now)
    if scripted(conn, [step for step, _ in steps]):
        done = run_script(conn, steps, begin=begin)
    else:
        done = run_together(conn, steps)
    return judged(conn, job, course, now, done)


def look_steps(
    dialect: Dialect, job: Job, now: dt.datetime
) -> list[tuple[Prepared, dict[str, object]]]:
    """The look's statements and their values: on PostgreSQL the lock, then the
    compare-and-set; elsewhere the compare-and-set alone."""
    lock, free = _prepared(dialect)
    steps = [(free, {"p_delivery": job.delivery_id, "p_attempts": job.attempts, "p_now": now})]
    if dialect.name == "postgresql":
        # In one round trip; the compare-and-set still starts only once the lock is granted,
        # and reads what was committed before it.
        seen = {"p_day": job.day, "p_seen_paused": job.paused_until, "p_zone": job.timezone}
        steps.insert(0, (lock, {"p_enrollment": job.enrollment_id, **seen}))
    return steps


def judged(
    conn: Connection, job: Job, course: Course, now: dt.datetime, done: Sequence[Any]
) -> Look:
    """What the look's statements found (``done``, one result each), the delivery settled in
    the transaction of ``conn`` when it may not go out."""
    if done[-1].rowcount == 1:
        row = done[0].fetchone() if len(done) == 2 else None
        return Look(None, unchanged=bool(row is not None and row[1]))
    return Look(_settle(conn, job, course, now))


def _settle(conn: Connection, job: Job, course: Course, now: dt.datetime) -> Outcome:
    """Why the look said no, and the delivery set accordingly."""
    row = conn.execute(
        select(
            Delivery.status,
            Delivery.attempts,
            Enrollment.status.label("enrollment"),
            Enrollment.paused_until,
            Subscriber.timezone,
            Suppression.reason,
        )
        .join(Enrollment, Delivery.enrollment_id == Enrollment.id)
        .join(Subscriber, Enrollment.subscriber_id == Subscriber.id)
        .outerjoin(Suppression, Suppression.email == Subscriber.email)
        .where(Delivery.id == job.delivery_id)
    ).first()
    if row is None:
        log.info("delivery %s not sent: %s", job.delivery_id, FORGOTTEN)
        return Outcome.CANCELLED
    if (row.status, row.attempts) != (DeliveryStatus.SENDING, job.attempts):
        return Outcome.SKIPPED
    if row.enrollment != EnrollmentStatus.ACTIVE or row.reason is not None:
        why = row.reason or str(row.enrollment)
        set_delivery(conn, job.delivery_id, DeliveryStatus.CANCELLED, now, last_error=why)
        log.info("delivery %s cancelled before it went out: %s", job.delivery_id, why)
        return Outcome.CANCELLED
    until = pause_end(course, row.timezone, row.paused_until, now)
    conn.execute(
        update(Delivery)
        .where(ours([job]))
        .values(**waiting_again(until, now))
        .execution_options(synchronize_session=False)
    )
    log.info("delivery %s held for its reader's pause, until %s", job.delivery_id, until)
    return Outcome.HELD
