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
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import Message

from sqlalchemy import Select, and_, insert, or_, select, update
from sqlalchemy.orm import Session

from dripcourse import schedule
from dripcourse.course import Course
from dripcourse.db import transaction
from dripcourse.enrollment import stop_enrollment, suppress
from dripcourse.errors import CourseError
from dripcourse.lessons_sent import digest, record_version
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
from dripcourse.render import Personal, RenderedLesson, build_message, message_id
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


OPEN = (DeliveryStatus.PENDING, DeliveryStatus.SENDING)


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


def due_enrollments(now: dt.datetime, limit: int) -> Select[tuple[int]]:
    """The oldest ``limit`` enrollments whose next lesson is due: a range read on the
    next_send_at index (NULL, meaning "in flight" or "nothing due", is never in range)."""
    return (
        select(Enrollment.id)
        .where(Enrollment.next_send_at <= now, Enrollment.status == EnrollmentStatus.ACTIVE)
        # The index alone gives this order, so a batch stops after ``limit`` rows. A tie-break
        # on id would make PostgreSQL sort every due row for every batch: a whole cohort due
        # at one instant (100,000 rows) meant a full scan and a sort spilled to disk per batch.
        .order_by(Enrollment.next_send_at)
        .limit(limit)
    )


def open_deliveries(now: dt.datetime, limit: int) -> Select[tuple[int]]:
    """Deliveries waiting for a retry, or whose task or worker was lost.

    Unordered on purpose: every one found is queued again in this same pass, so order buys
    nothing, while ORDER BY over two status ranges of the index made PostgreSQL sort every
    open row for every batch (after a Redis flush, every pending delivery of the day).
    """
    return (
        select(Delivery.id)
        .where(Delivery.status.in_(OPEN), Delivery.next_attempt_at <= now)
        .limit(limit)
    )


def _claim_batch(rt: Runtime, session: Session, now: dt.datetime) -> list[int] | None:
    """Claim one batch with one UPDATE ... RETURNING, then insert its deliveries in bulk.

    The UPDATE is the compare-and-set: it takes only rows that are still due and active when
    it runs, so whatever another tick took meanwhile is simply not returned. On PostgreSQL the
    inner SELECT also skips rows another claim has locked, rather than waiting for them.
    """
    pick = _lock(due_enrollments(now, rt.settings.batch_size), session).scalar_subquery()
    claimed = session.execute(
        update(Enrollment)
        .where(
            Enrollment.id.in_(pick),
            Enrollment.next_send_at <= now,
            Enrollment.status == EnrollmentStatus.ACTIVE,
        )
        .values(next_send_at=None, updated_at=now)
        .returning(Enrollment.id, Enrollment.day, Enrollment.paused_until)
        .execution_options(synchronize_session=False)
    ).all()
    if not claimed:
        # Nothing due, or all of it taken by another tick as we looked: either way, done.
        return None
    details = {
        row.id: row
        for row in session.execute(
            select(
                Enrollment.id,
                Subscriber.email,
                Subscriber.timezone,
                Cohort.course_slug,
                Suppression.id.label("suppressed"),
            )
            .join(Subscriber, Enrollment.subscriber_id == Subscriber.id)
            .join(Cohort, Enrollment.cohort_id == Cohort.id)
            .outerjoin(Suppression, Suppression.email == Subscriber.email)
            .where(Enrollment.id.in_([row.id for row in claimed]))
        )
    }
    later = now + _seconds(rt.settings.requeue_after_seconds)
    new: list[dict[str, object]] = []
    for row in claimed:
        info = details[row.id]
        try:
            course = rt.catalog.course(info.course_slug)
        except CourseError as exc:
            # One broken course must not stop the others: hold its lessons back and say why.
            log.error("course %s cannot be sent: %s", info.course_slug, exc)
            _set_enrollment(session, row.id, next_send_at=later)
            continue
        if info.suppressed is not None:
            enrollment = session.get(Enrollment, row.id)
            assert enrollment is not None
            stop_enrollment(session, enrollment, EnrollmentStatus.BOUNCED, now)
        elif row.paused_until is not None and row.paused_until > now:
            due = schedule.resume_due(
                course.cadence, schedule.zone(info.timezone), due=now, paused_until=row.paused_until
            )
            _set_enrollment(session, row.id, next_send_at=due)
        elif row.day >= course.length:
            _set_enrollment(session, row.id, status=EnrollmentStatus.COMPLETED)
        else:
            new.append(
                {
                    "enrollment_id": row.id,
                    "day": row.day + 1,
                    "status": DeliveryStatus.PENDING,
                    "next_attempt_at": later,
                    "attempts": 0,
                    "created_at": now,
                    "updated_at": now,
                }
            )
    if not new:
        return []
    return list(session.scalars(insert(Delivery).returning(Delivery.id), new))


def _set_enrollment(session: Session, enrollment_id: int, **values: object) -> None:
    session.execute(
        update(Enrollment)
        .where(Enrollment.id == enrollment_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


def requeue_lost(rt: Runtime, now: dt.datetime, enqueue: Enqueue) -> int:
    """Queue again every delivery whose retry time has come or whose task was lost.

    A pending delivery not picked up within ``requeue_after_seconds`` (Redis flushed, broker
    restarted) and a sending one whose worker lease ran out (worker killed) both come back here.
    Like the claim, one UPDATE ... RETURNING per batch is the compare-and-set.
    """
    total = 0
    later = now + _seconds(rt.settings.requeue_after_seconds)
    while True:
        with transaction(rt.sessions) as session:
            pick = _lock(open_deliveries(now, rt.settings.batch_size), session).scalar_subquery()
            ids = session.scalars(
                update(Delivery)
                .where(
                    Delivery.id.in_(pick),
                    Delivery.status.in_(OPEN),
                    Delivery.next_attempt_at <= now,
                )
                .values(status=DeliveryStatus.PENDING, updated_at=now, next_attempt_at=later)
                .returning(Delivery.id)
                .execution_options(synchronize_session=False)
            ).all()
        if not ids:
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


def tick_inline(
    rt: Runtime, clock: Callable[[], dt.datetime]
) -> tuple[TickResult, Counter[Outcome]]:
    """One pass that sends what it claims in this process (cron, debugging): no broker."""
    outcomes: Counter[Outcome] = Counter()

    def send_here(ids: Sequence[int]) -> None:
        for delivery_id in ids:
            outcomes[send_delivery(rt, delivery_id, clock(), clock=clock)] += 1

    return tick(rt, clock(), send_here), outcomes


@dataclass(frozen=True)
class _Job:
    """What one attempt needs to know after its claim has committed."""

    delivery_id: int
    enrollment_id: int
    day: int
    attempts: int
    timezone: str
    paused_until: dt.datetime | None


def send_delivery(
    rt: Runtime,
    delivery_id: int,
    now: dt.datetime,
    clock: Callable[[], dt.datetime] | None = None,
) -> Outcome:
    """Send one claimed delivery and record what happened. Safe to call twice for one id.

    ``clock``, when given, is read again once the server has accepted the message: the wait
    for a rate-limit slot and the SMTP exchange take time, and the lesson counts for the local
    day on which it actually went out (a send that crosses local midnight belongs to the new
    day, so the next lesson waits for the morning after it).

    Two short transactions around the send, a handful of statements in all: this runs once
    per subscriber at a cohort's morning, so every round trip counts.
    """
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
            .returning(Delivery.enrollment_id, Delivery.day, Delivery.attempts)
            .execution_options(synchronize_session=False)
        ).first()
        if taken is None:
            return Outcome.SKIPPED
        info = session.execute(
            select(
                Enrollment.status,
                Enrollment.paused_until,
                Subscriber.email,
                Subscriber.name,
                Subscriber.timezone,
                Cohort.course_slug,
                Suppression.reason,
            )
            .join(Subscriber, Enrollment.subscriber_id == Subscriber.id)
            .join(Cohort, Enrollment.cohort_id == Cohort.id)
            .outerjoin(Suppression, Suppression.email == Subscriber.email)
            .where(Enrollment.id == taken.enrollment_id)
        ).one()
        if info.status != EnrollmentStatus.ACTIVE or info.reason is not None:
            _set_delivery(
                session,
                delivery_id,
                DeliveryStatus.CANCELLED,
                now,
                last_error=info.reason or str(info.status),
            )
            return Outcome.CANCELLED
        try:
            course = rt.catalog.course(info.course_slug)
            rendered = rt.catalog.renderer.lesson(course, taken.day)
        except CourseError as exc:
            _set_delivery(session, delivery_id, DeliveryStatus.FAILED, now, last_error=str(exc))
            enrollment = session.get(Enrollment, taken.enrollment_id)
            assert enrollment is not None
            stop_enrollment(session, enrollment, EnrollmentStatus.FAILED, now)
            return Outcome.FAILED
    job = _Job(
        delivery_id,
        taken.enrollment_id,
        taken.day,
        taken.attempts,
        info.timezone,
        info.paused_until,
    )
    # The claim is committed; no transaction stays open while we talk to the mail server.
    try:
        links = rt.links.for_lesson(job.enrollment_id, job.day)
        who = Personal(email=info.email, name=info.name, **links)
        msg_id = message_id(rt.settings.message_id_domain, delivery_id, rt.links.secret_key)
        msg = build_message(rendered, who, now=now, msg_id=msg_id)
        rt.throttle()
        rt.transport.send(msg)
    except PermanentMailError as exc:
        return _record_bounce(rt, delivery_id, now, job.attempts, exc)
    except TransientMailError as exc:
        return _record_retry(rt, delivery_id, now, job.attempts, str(exc))
    except Exception as exc:
        # Anything unforeseen still ends the attempt on the record, so max_attempts applies
        # and the delivery cannot circle through the sweep forever.
        log.exception("delivery %s: unexpected error", delivery_id)
        return _record_retry(rt, delivery_id, now, job.attempts, f"{type(exc).__name__}: {exc}")
    return _record_sent(rt, job, clock() if clock else now, msg_id, course, rendered)


def _set_delivery(
    session: Session, delivery_id: int, status: DeliveryStatus, now: dt.datetime, **values: object
) -> None:
    """Finish a delivery: it leaves the sweep's index range (next_attempt_at NULL)."""
    session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id)
        .values(status=status, next_attempt_at=None, updated_at=now, **values)
        .execution_options(synchronize_session=False)
    )


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


def _record_sent(
    rt: Runtime,
    job: _Job,
    now: dt.datetime,
    msg_id: str,
    course: Course,
    rendered: RenderedLesson,
) -> Outcome:
    """Mark the delivery sent and schedule the next lesson, in one transaction.

    Every value comes from the claim, so this is two UPDATEs. If the enrollment changed while
    we were sending (a pause, an unsubscribe), the guarded UPDATE matches nothing and the
    slower path reads the row as it is now.
    """
    tz = schedule.zone(job.timezone)
    paused_until = job.paused_until if job.paused_until and job.paused_until > now else None
    values: dict[str, object] = {"day": job.day, "updated_at": now, "paused_until": paused_until}
    if job.day >= course.length:
        values.update(status=EnrollmentStatus.COMPLETED, next_send_at=None)
    else:
        due = schedule.next_due(course.cadence, tz, last_sent_at=now)
        if paused_until is not None:
            due = schedule.resume_due(course.cadence, tz, due=due, paused_until=paused_until)
        values["next_send_at"] = due
    with transaction(rt.sessions) as session:
        # The version the subscriber got, for "read in your browser"; a statement only the
        # first time this process sends a version.
        version_id = record_version(session, rendered, now, rt.catalog.lesson_versions)
        # Keep last_error: an operator asking "why was this late?" needs earlier failures.
        _set_delivery(
            session,
            job.delivery_id,
            DeliveryStatus.SENT,
            now,
            sent_at=now,
            message_id=msg_id,
            lesson_version_id=version_id,
        )
        updated = session.execute(
            update(Enrollment)
            .where(
                Enrollment.id == job.enrollment_id,
                Enrollment.status == EnrollmentStatus.ACTIVE,
                Enrollment.day < job.day,
                Enrollment.next_send_at.is_(None),
                Enrollment.paused_until.is_not_distinct_from(job.paused_until),
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        ).rowcount
        if updated != 1:
            _record_sent_to_changed_enrollment(session, job, now, course)
    rt.catalog.lesson_versions[digest(rendered)] = version_id
    return Outcome.SENT


def _record_sent_to_changed_enrollment(
    session: Session, job: _Job, now: dt.datetime, course: Course
) -> None:
    enrollment = session.get(Enrollment, job.enrollment_id, with_for_update=True)
    assert enrollment is not None
    enrollment.day = max(enrollment.day, job.day)
    enrollment.updated_at = now
    if enrollment.status != EnrollmentStatus.ACTIVE or enrollment.next_send_at is not None:
        return
    if enrollment.day >= course.length:
        enrollment.status = EnrollmentStatus.COMPLETED
        return
    tz = schedule.zone(job.timezone)
    due = schedule.next_due(course.cadence, tz, last_sent_at=now)
    if enrollment.paused_until is not None and enrollment.paused_until > now:
        due = schedule.resume_due(course.cadence, tz, due=due, paused_until=enrollment.paused_until)
    enrollment.next_send_at = due


def _record_retry(
    rt: Runtime, delivery_id: int, now: dt.datetime, attempts: int, error: str
) -> Outcome:
    settings = rt.settings
    with transaction(rt.sessions) as session:
        if not _still_ours(session, delivery_id, attempts, now):
            return Outcome.SKIPPED
        if attempts >= settings.max_attempts:
            log.warning("delivery %s failed after %d attempts: %s", delivery_id, attempts, error)
            _set_delivery(session, delivery_id, DeliveryStatus.FAILED, now, last_error=error)
            delivery = session.get(Delivery, delivery_id)
            assert delivery is not None
            if delivery.enrollment.status == EnrollmentStatus.ACTIVE:
                stop_enrollment(session, delivery.enrollment, EnrollmentStatus.FAILED, now)
            return Outcome.FAILED
        delay = backoff(attempts, settings.retry_base_seconds, settings.retry_max_seconds)
        session.execute(
            update(Delivery)
            .where(Delivery.id == delivery_id)
            .values(
                status=DeliveryStatus.PENDING,
                next_attempt_at=now + _seconds(delay),
                updated_at=now,
                last_error=error,
            )
        )
    log.info("delivery %s will retry in %.0fs: %s", delivery_id, delay, error)
    return Outcome.RETRY


def _record_bounce(
    rt: Runtime, delivery_id: int, now: dt.datetime, attempts: int, error: PermanentMailError
) -> Outcome:
    """A 5xx: the delivery fails with the server's words. Only a reply about the mailbox itself
    (no such user, mailbox gone) suppresses the address; a refusal on policy grounds (5.7.x:
    relay denied, DMARC) may be our own set-up's fault and stops this enrollment only."""
    with transaction(rt.sessions) as session:
        if not _still_ours(session, delivery_id, attempts, now):
            return Outcome.SKIPPED
        _set_delivery(session, delivery_id, DeliveryStatus.FAILED, now, last_error=str(error))
        delivery = session.get(Delivery, delivery_id)
        assert delivery is not None
        enrollment = delivery.enrollment
        if not error.suppress:
            if enrollment.status == EnrollmentStatus.ACTIVE:
                stop_enrollment(session, enrollment, EnrollmentStatus.FAILED, now)
            log.warning("delivery %s refused (address kept): %s", delivery_id, error)
            return Outcome.FAILED
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


def preview_message(rt: Runtime, slug: str, day: int, *, name: str, now: dt.datetime) -> Message:
    """Lesson ``day`` of a course as a sample subscriber would receive it; nothing is recorded."""
    course = rt.catalog.course(slug)
    rendered = rt.catalog.renderer.lesson(course, day)
    links = rt.links.for_lesson(0, day)
    who = Personal(email="reader@example.org", name=name, **links)
    return build_message(
        rendered, who, now=now, msg_id=message_id(rt.settings.message_id_domain, None, "")
    )
