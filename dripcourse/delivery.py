"""The core of sending, with no Celery in it: claim due lessons, send one, record the outcome.

Every function takes ``now``. Claims commit before anything is queued or sent, and each step
is a compare-and-set on the row it changes, so a replayed tick, two beats, or a task delivered
twice by the broker can never produce a second email for the same (enrollment, day).
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage

from sqlalchemy import Select, and_, or_, select, update
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.orm.attributes import set_committed_value

from dripcourse import schedule
from dripcourse.course import Course
from dripcourse.db import transaction
from dripcourse.enrollment import stop_enrollment, suppress
from dripcourse.errors import CourseError
from dripcourse.mail import PermanentMailError, TransientMailError
from dripcourse.models import (
    Cohort,
    Delivery,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Subscriber,
    Suppression,
)
from dripcourse.render import Personal, build_message, message_id
from dripcourse.runtime import Runtime

log = logging.getLogger(__name__)

Enqueue = Callable[[Sequence[int]], None]


class Outcome(enum.StrEnum):
    SENT = "sent"
    RETRY = "retry"
    FAILED = "failed"
    BOUNCED = "bounced"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"  # another worker has it, or it is already finished


def _seconds(n: float) -> dt.timedelta:
    return dt.timedelta(seconds=n)


def _lock(query, session: Session):  # type: ignore[no-untyped-def]
    """FOR UPDATE SKIP LOCKED where the database has it (PostgreSQL).

    SQLite has no row locks (SQLAlchemy drops the clause there); its claims rely on the
    compare-and-set each caller does on the rows it read.
    """
    if session.get_bind().dialect.name == "postgresql":
        return query.with_for_update(skip_locked=True)
    return query


def claim_due_lessons(rt: Runtime, now: dt.datetime, enqueue: Enqueue) -> int:
    """Create a pending delivery for every enrollment whose next lesson is due.

    Works in batches of ``batch_size`` rows, one transaction each, and hands each batch's
    delivery ids to ``enqueue`` only after that batch has committed. Returns how many it claimed.
    """
    total = 0
    while True:
        with transaction(rt.sessions) as session:
            ids = _claim_batch(rt, session, now)
        if ids is None:
            return total
        if ids:
            enqueue(ids)
            total += len(ids)


def due_enrollments(now: dt.datetime, limit: int) -> Select[tuple[Enrollment]]:
    """The oldest ``limit`` enrollments whose next lesson is due: a range read on the
    next_send_at index (NULL, meaning "in flight" or "nothing due", is never in range)."""
    return (
        select(Enrollment)
        .where(Enrollment.next_send_at <= now, Enrollment.status == EnrollmentStatus.ACTIVE)
        # The index alone gives this order, so a batch stops after ``limit`` rows. A tie-break
        # on id would make PostgreSQL sort every due row for every batch: a whole cohort due
        # at one instant (100,000 rows) meant a full scan and a sort spilled to disk per batch.
        .order_by(Enrollment.next_send_at)
        .limit(limit)
    )


def open_deliveries(
    now: dt.datetime, limit: int
) -> Select[tuple[int, DeliveryStatus, dt.datetime | None]]:
    """Deliveries waiting for a retry, or whose task or worker was lost.

    Unordered on purpose: every one found is queued again in this same pass, so order buys
    nothing, while ORDER BY over two status ranges of the index made PostgreSQL sort every
    open row for every batch (after a Redis flush, every pending delivery of the day).
    """
    return (
        select(Delivery.id, Delivery.status, Delivery.next_attempt_at)
        .where(
            Delivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.SENDING]),
            Delivery.next_attempt_at <= now,
        )
        .limit(limit)
    )


def _claim_batch(rt: Runtime, session: Session, now: dt.datetime) -> list[int] | None:
    query = due_enrollments(now, rt.settings.batch_size)
    due = session.scalars(_lock(query, session)).all()
    if not due:
        return None
    # Related rows in two more queries, not one per enrollment.
    cohorts = {
        c.id: c
        for c in session.scalars(select(Cohort).where(Cohort.id.in_({e.cohort_id for e in due})))
    }
    subscribers = {
        s.id: s
        for s in session.scalars(
            select(Subscriber).where(Subscriber.id.in_({e.subscriber_id for e in due}))
        )
    }
    suppressed = set(
        session.scalars(
            select(Suppression.email).where(
                Suppression.email.in_({s.email for s in subscribers.values()})
            )
        )
    )
    ids: list[int] = []
    new: list[Delivery] = []
    won = 0
    for enrollment in due:
        # Compare-and-set: if another tick took this row since we read it, leave it alone.
        taken = session.execute(
            update(Enrollment)
            .where(
                Enrollment.id == enrollment.id,
                Enrollment.next_send_at == enrollment.next_send_at,
                Enrollment.status == EnrollmentStatus.ACTIVE,
            )
            .values(next_send_at=None, updated_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount
        if taken != 1:
            continue
        won += 1
        set_committed_value(enrollment, "next_send_at", None)
        subscriber = subscribers[enrollment.subscriber_id]
        course = rt.catalog.course(cohorts[enrollment.cohort_id].course_slug)
        if subscriber.email in suppressed:
            stop_enrollment(session, enrollment, EnrollmentStatus.BOUNCED, now)
            continue
        if enrollment.paused_until is not None and enrollment.paused_until > now:
            enrollment.next_send_at = schedule.resume_due(
                course.cadence,
                schedule.zone(subscriber.timezone),
                due=now,
                paused_until=enrollment.paused_until,
            )
            continue
        day = enrollment.day + 1
        if day > course.length:
            enrollment.status = EnrollmentStatus.COMPLETED
            continue
        delivery = Delivery(
            enrollment_id=enrollment.id,
            day=day,
            status=DeliveryStatus.PENDING,
            next_attempt_at=now + _seconds(rt.settings.requeue_after_seconds),
            created_at=now,
            updated_at=now,
        )
        session.add(delivery)
        new.append(delivery)
    session.flush()
    ids.extend(d.id for d in new)
    # A batch that won no row was taken by another tick as we read it (SQLite), or holds rows
    # that never compare equal: reading it again would spin. Stop; the next tick comes soon.
    return ids if won else None


def requeue_lost(rt: Runtime, now: dt.datetime, enqueue: Enqueue) -> int:
    """Queue again every delivery whose retry time has come or whose task was lost.

    A pending delivery not picked up within ``requeue_after_seconds`` (Redis flushed, broker
    restarted) and a sending one whose worker lease ran out (worker killed) both come back here.
    """
    total = 0
    while True:
        with transaction(rt.sessions) as session:
            query = open_deliveries(now, rt.settings.batch_size)
            rows = session.execute(_lock(query, session)).all()
            if not rows:
                return total
            ids = []
            for row in rows:
                taken = session.execute(
                    update(Delivery)
                    .where(
                        Delivery.id == row.id,
                        Delivery.status == row.status,
                        Delivery.next_attempt_at == row.next_attempt_at,
                    )
                    .values(
                        status=DeliveryStatus.PENDING,
                        updated_at=now,
                        next_attempt_at=now + _seconds(rt.settings.requeue_after_seconds),
                    )
                ).rowcount
                if taken == 1:
                    ids.append(row.id)
        if not ids:  # all taken by another tick meanwhile: as in _claim_batch, do not spin
            return total
        enqueue(ids)
        total += len(ids)


@dataclass(frozen=True)
class TickResult:
    claimed: int
    requeued: int


def tick(rt: Runtime, now: dt.datetime, enqueue: Enqueue) -> TickResult:
    """One scheduler pass: claim what is due, then pick up retries and lost tasks."""
    claimed = claim_due_lessons(rt, now, enqueue)
    requeued = requeue_lost(rt, now, enqueue)
    if claimed or requeued:
        log.info(
            "tick at %s: %d lessons claimed, %d deliveries queued again",
            now.isoformat(),
            claimed,
            requeued,
        )
    return TickResult(claimed=claimed, requeued=requeued)


def send_delivery(rt: Runtime, delivery_id: int, now: dt.datetime) -> Outcome:
    """Send one claimed delivery and record what happened. Safe to call twice for one id."""
    with transaction(rt.sessions) as session:
        taken = session.execute(
            update(Delivery)
            .where(
                Delivery.id == delivery_id,
                or_(
                    Delivery.status == DeliveryStatus.PENDING,
                    and_(
                        Delivery.status == DeliveryStatus.SENDING, Delivery.next_attempt_at <= now
                    ),
                ),
            )
            .values(
                status=DeliveryStatus.SENDING,
                attempts=Delivery.attempts + 1,
                updated_at=now,
                next_attempt_at=now + _seconds(rt.settings.send_lease_seconds),
            )
        ).rowcount
        if taken != 1:
            return Outcome.SKIPPED
        delivery = session.scalars(
            select(Delivery)
            .where(Delivery.id == delivery_id)
            .options(
                selectinload(Delivery.enrollment).selectinload(Enrollment.subscriber),
                selectinload(Delivery.enrollment).selectinload(Enrollment.cohort),
            )
        ).one()
        enrollment = delivery.enrollment
        subscriber = enrollment.subscriber
        blocked = session.scalar(
            select(Suppression.reason).where(Suppression.email == subscriber.email)
        )
        if enrollment.status != EnrollmentStatus.ACTIVE or blocked:
            _finish(delivery, DeliveryStatus.CANCELLED, now, blocked or str(enrollment.status))
            return Outcome.CANCELLED
        try:
            course = rt.catalog.course(enrollment.cohort.course_slug)
            rendered = rt.catalog.renderer.lesson(course, delivery.day)
        except CourseError as exc:
            _finish(delivery, DeliveryStatus.FAILED, now, str(exc))
            stop_enrollment(session, enrollment, EnrollmentStatus.FAILED, now)
            return Outcome.FAILED
        links = rt.links.for_lesson(enrollment.id, delivery.day)
        who = Personal(email=subscriber.email, name=subscriber.name, **links)
        msg_id = message_id(rt.settings.message_id_domain, delivery.id, rt.links.secret_key)
        msg = build_message(rendered, who, now=now, msg_id=msg_id)
        attempts = delivery.attempts
    # The claim is committed; no transaction stays open while we talk to the mail server.
    try:
        rt.throttle()
        rt.transport.send(msg)
    except PermanentMailError as exc:
        return _record_bounce(rt, delivery_id, now, attempts, str(exc))
    except TransientMailError as exc:
        return _record_retry(rt, delivery_id, now, attempts, str(exc))
    return _record_sent(rt, delivery_id, now, msg_id, course)


def _still_ours(session: Session, delivery_id: int, attempts: int, now: dt.datetime) -> bool:
    """Whether this attempt still holds the delivery; from here on, this transaction does.

    A worker whose lease ran out (a send slower than ``send_lease_seconds``) may hear back
    after another worker took the delivery over and perhaps sent it: its failure must not
    undo that. The compare-and-set also locks the row (PostgreSQL) or the file (SQLite).
    """
    held = session.execute(
        update(Delivery)
        .where(
            Delivery.id == delivery_id,
            Delivery.status == DeliveryStatus.SENDING,
            Delivery.attempts == attempts,
        )
        .values(updated_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if held != 1:
        log.warning(
            "delivery %s: attempt %d outlived its lease; left as it is", delivery_id, attempts
        )
    return held == 1


def _finish(
    delivery: Delivery, status: DeliveryStatus, now: dt.datetime, error: str | None
) -> None:
    delivery.status = status
    delivery.next_attempt_at = None
    delivery.updated_at = now
    delivery.last_error = error


def _record_sent(
    rt: Runtime, delivery_id: int, now: dt.datetime, msg_id: str, course: Course
) -> Outcome:
    with transaction(rt.sessions) as session:
        delivery = session.get(Delivery, delivery_id)
        assert delivery is not None
        # Keep why earlier attempts failed: an operator asking "why was this late?" needs it.
        _finish(delivery, DeliveryStatus.SENT, now, delivery.last_error)
        delivery.sent_at = now
        delivery.message_id = msg_id
        enrollment = session.get(Enrollment, delivery.enrollment_id, with_for_update=True)
        assert enrollment is not None
        enrollment.day = max(enrollment.day, delivery.day)
        enrollment.updated_at = now
        if enrollment.status != EnrollmentStatus.ACTIVE:
            return Outcome.SENT
        if enrollment.day >= course.length:
            enrollment.status = EnrollmentStatus.COMPLETED
            enrollment.next_send_at = None
            return Outcome.SENT
        tz = schedule.zone(enrollment.subscriber.timezone)
        due = schedule.next_due(course.cadence, tz, last_sent_at=now)
        if enrollment.paused_until is not None:
            due = schedule.resume_due(
                course.cadence, tz, due=due, paused_until=enrollment.paused_until
            )
        enrollment.next_send_at = due
    return Outcome.SENT


def _record_retry(
    rt: Runtime, delivery_id: int, now: dt.datetime, attempts: int, error: str
) -> Outcome:
    settings = rt.settings
    with transaction(rt.sessions) as session:
        if not _still_ours(session, delivery_id, attempts, now):
            return Outcome.SKIPPED
        delivery = session.get(Delivery, delivery_id)
        assert delivery is not None
        if attempts >= settings.max_attempts:
            log.warning("delivery %s failed after %d attempts: %s", delivery_id, attempts, error)
            _finish(delivery, DeliveryStatus.FAILED, now, error)
            stop_enrollment(session, delivery.enrollment, EnrollmentStatus.FAILED, now)
            return Outcome.FAILED
        delay = backoff(attempts, settings.retry_base_seconds, settings.retry_max_seconds)
        delivery.status = DeliveryStatus.PENDING
        delivery.next_attempt_at = now + _seconds(delay)
        delivery.updated_at = now
        delivery.last_error = error
    log.info("delivery %s will retry in %.0fs: %s", delivery_id, delay, error)
    return Outcome.RETRY


def _record_bounce(
    rt: Runtime, delivery_id: int, now: dt.datetime, attempts: int, error: str
) -> Outcome:
    with transaction(rt.sessions) as session:
        if not _still_ours(session, delivery_id, attempts, now):
            return Outcome.SKIPPED
        delivery = session.get(Delivery, delivery_id)
        assert delivery is not None
        _finish(delivery, DeliveryStatus.FAILED, now, error)
        enrollment = delivery.enrollment
        suppress(session, enrollment.subscriber.email, f"bounced: {error}", now)
        for each in enrollment.subscriber.enrollments:
            if each.status == EnrollmentStatus.ACTIVE:
                stop_enrollment(session, each, EnrollmentStatus.BOUNCED, now)
    log.warning("delivery %s bounced, address suppressed: %s", delivery_id, error)
    return Outcome.BOUNCED


def backoff(attempts: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter: about base, 2*base, 4*base ... up to cap."""
    delay = min(cap, base * 2 ** max(0, attempts - 1))
    return delay * (rng or random).uniform(0.5, 1.0)


def preview_message(
    rt: Runtime, slug: str, day: int, *, name: str, now: dt.datetime
) -> EmailMessage:
    """Lesson ``day`` of a course as a sample subscriber would receive it; nothing is recorded."""
    course = rt.catalog.course(slug)
    rendered = rt.catalog.renderer.lesson(course, day)
    links = rt.links.for_lesson(0, day)
    who = Personal(email="reader@example.org", name=name, **links)
    return build_message(
        rendered, who, now=now, msg_id=message_id(rt.settings.message_id_domain, None, "")
    )
