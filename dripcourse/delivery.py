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
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy import Select, and_, insert, or_, select, update
from sqlalchemy.orm import Session

from dripcourse import breaker, schedule
from dripcourse.course import Course
from dripcourse.db import retry_outages, transaction
from dripcourse.enrollment import stop_enrollment, suppress
from dripcourse.errors import CourseError
from dripcourse.greeting import greeting_for
from dripcourse.lessons_sent import digest, record_version
from dripcourse.mail import PermanentMailError, RelayError, TransientMailError
from dripcourse.models import (
    Cohort,
    Delivery,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Subscriber,
    Suppression,
)
from dripcourse.render import Personal, RenderedLesson, message_id, reply_addresses
from dripcourse.runtime import Runtime
from dripcourse.wire import personalise

log = logging.getLogger(__name__)

Enqueue = Callable[[Sequence[int]], None]


class Outcome(enum.StrEnum):
    SENT = "sent"
    RETRY = "retry"
    FAILED = "failed"
    BOUNCED = "bounced"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"  # another worker has it, or it is already finished
    HELD = "held"  # put back unsent: outside the local window, relay paused, course broken


OPEN = (DeliveryStatus.PENDING, DeliveryStatus.WAITING, DeliveryStatus.SENDING)


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


def claim_due_lessons(
    rt: Runtime, now: dt.datetime, enqueue: Enqueue, limit: int | None = None
) -> int:
    """Create a pending delivery for every enrollment whose next lesson is due.

    Works in batches of ``batch_size`` rows, one transaction each, and hands each batch's
    delivery ids to ``enqueue`` only after that batch has committed. Returns how many it
    claimed. ``limit`` stops after that many enrollments were looked at (a probe of a paused
    relay wants one).
    """
    total = 0
    while True:
        size = rt.settings.batch_size if limit is None else min(limit, rt.settings.batch_size)
        with transaction(rt.sessions) as session:
            ids = _claim_batch(rt, session, now, size)
        if ids is None:
            return total
        if ids:
            enqueue(ids)
            total += len(ids)
        if limit is not None:
            return total


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


def _claim_batch(rt: Runtime, session: Session, now: dt.datetime, size: int) -> list[int] | None:
    """Claim one batch with one UPDATE ... RETURNING, then insert its deliveries in bulk.

    The UPDATE is the compare-and-set: it takes only rows that are still due and active when
    it runs, so whatever another tick took meanwhile is simply not returned. On PostgreSQL the
    inner SELECT also skips rows another claim has locked, rather than waiting for them.

    A claimed enrollment whose local window is closed (night, a skipped weekend) gets a new due
    time, the next time its window opens, and no delivery: after downtime nobody is woken at
    01:35. A course that cannot be loaded holds back only its own enrollments.
    """
    pick = _lock(due_enrollments(now, size), session).scalar_subquery()
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
                Cohort.started_at,
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
        course = _course_or_none(rt, info.course_slug)
        if course is None:
            # One broken course must not stop the others: hold its lessons back.
            _set_enrollment(session, row.id, next_send_at=later)
            continue
        tz = schedule.zone(info.timezone)
        if info.suppressed is not None:
            enrollment = session.get(Enrollment, row.id)
            assert enrollment is not None
            stop_enrollment(session, enrollment, EnrollmentStatus.BOUNCED, now)
        elif row.paused_until is not None and row.paused_until > now:
            due = schedule.resume_due(course.cadence, tz, due=now, paused_until=row.paused_until)
            _set_enrollment(session, row.id, next_send_at=due)
        elif row.day >= course.length:
            _set_enrollment(session, row.id, status=EnrollmentStatus.COMPLETED)
        elif not _sendable(course, tz, now, day=row.day + 1, started_at=info.started_at):
            _set_enrollment(
                session, row.id, next_send_at=schedule.window_start(course.cadence, tz, now)
            )
        else:
            new.append(
                {
                    "enrollment_id": row.id,
                    "day": row.day + 1,
                    "status": DeliveryStatus.PENDING,
                    "next_attempt_at": later,
                    "queued_at": now,
                    "attempts": 0,
                    "created_at": now,
                    "updated_at": now,
                }
            )
    if not new:
        return []
    return list(session.scalars(insert(Delivery).returning(Delivery.id), new))


def _course_or_none(rt: Runtime, slug: str) -> Course | None:
    """The course, or None (with the reason in the log) when it cannot be loaded or rendered.

    Any error counts, not only a CourseError: a TypeError from a template, a file that is not
    UTF-8. One course's mistake must never stop another course.
    """
    try:
        return rt.catalog.course(slug)
    except CourseError as exc:
        log.error("course %s is held back: %s", slug, exc)
    except Exception:
        log.exception("course %s is held back: unexpected error loading it", slug)
    return None


def _sendable(
    course: Course, tz: ZoneInfo, now: dt.datetime, *, day: int, started_at: dt.datetime | None
) -> bool:
    """Whether lesson ``day`` may go out at ``now``: inside the subscriber's local window, or
    Day 1 of a cohort the operator started "now" (at once, whatever the hour)."""
    return schedule.at_once(day, started_at) or schedule.in_window(course.cadence, tz, now)


def _set_enrollment(session: Session, enrollment_id: int, **values: object) -> None:
    session.execute(
        update(Enrollment)
        .where(Enrollment.id == enrollment_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


def requeue_lost(rt: Runtime, now: dt.datetime, enqueue: Enqueue, limit: int | None = None) -> int:
    """Queue again every delivery whose retry time has come or whose task was lost.

    A waiting delivery whose time has come (a retry, the window reopening, a paused relay's
    probe), a pending one not picked up within ``requeue_after_seconds`` (Redis flushed, broker
    restarted) and a sending one whose worker lease ran out (worker killed) all come back here.
    Like the claim, one UPDATE ... RETURNING per batch is the compare-and-set.
    """
    total = 0
    later = now + _seconds(rt.settings.requeue_after_seconds)
    while True:
        size = rt.settings.batch_size if limit is None else min(limit, rt.settings.batch_size)
        with transaction(rt.sessions) as session:
            pick = _lock(open_deliveries(now, size), session).scalar_subquery()
            ids = session.scalars(
                update(Delivery)
                .where(
                    Delivery.id.in_(pick),
                    Delivery.status.in_(OPEN),
                    Delivery.next_attempt_at <= now,
                )
                .values(
                    status=DeliveryStatus.PENDING,
                    updated_at=now,
                    next_attempt_at=later,
                    queued_at=now,
                )
                .returning(Delivery.id)
                .execution_options(synchronize_session=False)
            ).all()
        if not ids:
            return total
        enqueue(ids)
        total += len(ids)
        if limit is not None:
            return total


@dataclass(frozen=True)
class TickResult:
    claimed: int
    requeued: int
    paused: breaker.Pause | None = None


def tick(rt: Runtime, now: dt.datetime, enqueue: Enqueue) -> TickResult:
    """One scheduler pass: claim what is due, then pick up retries and lost tasks.

    While sending is paused (a failure of our own set-up), it claims and queues nothing; once
    the pause is over it queues a single delivery to probe the relay, and the next pass after
    that probe succeeded runs as usual.
    """
    with transaction(rt.sessions) as session:
        paused = breaker.current(session)
    if paused is not None:
        if paused.gate(now) is breaker.Gate.SHUT:
            log.warning("tick at %s: %s", now.isoformat(), paused.describe())
            return TickResult(claimed=0, requeued=0, paused=paused)
        requeued = requeue_lost(rt, now, enqueue, limit=1)
        claimed = 0 if requeued else claim_due_lessons(rt, now, enqueue, limit=1)
        log.warning("tick at %s: probing the relay with one delivery", now.isoformat())
        return TickResult(claimed=claimed, requeued=requeued, paused=paused)
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
    started_at: dt.datetime | None
    created_at: dt.datetime


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

    Checked again here, whatever the claim decided: the subscriber's local window (a delivery
    picked up at night is put back until the window opens, not sent), the relay's pause, and
    the course (a lesson file broken since the claim holds the delivery back without spending
    an attempt). Put back means ``waiting`` with the attempt given back.

    Two short transactions around the send, a handful of statements in all: this runs once
    per subscriber at a cohort's morning, so every round trip counts.
    """
    lease = rt.settings.send_lease_seconds
    lease_ends = time.monotonic() + lease
    with transaction(rt.sessions) as session:
        taken = session.execute(
            update(Delivery)
            .where(
                Delivery.id == delivery_id,
                # Never "waiting": a second task for a delivery waiting out its retry delay or
                # the night must not send it early. The sweep turns it "pending" when its time
                # has come.
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
                next_attempt_at=now + _seconds(lease),
                queued_at=None,  # its task is taken: nothing of it is left in the broker
            )
            .returning(Delivery.enrollment_id, Delivery.day, Delivery.attempts, Delivery.created_at)
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
                Subscriber.greeting,
                Subscriber.timezone,
                Cohort.course_slug,
                Cohort.started_at,
                Suppression.reason,
                breaker.gate_column().label("relay_paused_until"),
            )
            .join(Subscriber, Enrollment.subscriber_id == Subscriber.id)
            .join(Cohort, Enrollment.cohort_id == Cohort.id)
            .outerjoin(Suppression, Suppression.email == Subscriber.email)
            .where(Enrollment.id == taken.enrollment_id)
        ).one()
        job = _Job(
            delivery_id,
            taken.enrollment_id,
            taken.day,
            taken.attempts,
            info.timezone,
            info.paused_until,
            info.started_at,
            taken.created_at,
        )
        if info.status != EnrollmentStatus.ACTIVE or info.reason is not None:
            _set_delivery(
                session,
                delivery_id,
                DeliveryStatus.CANCELLED,
                now,
                last_error=info.reason or str(info.status),
            )
            return Outcome.CANCELLED
        course = _course_or_none(rt, info.course_slug)
        if course is None:
            _hold(session, job, now + _seconds(rt.settings.requeue_after_seconds), now)
            return Outcome.HELD
        try:
            rendered = rt.catalog.renderer.lesson(course, taken.day)
        except Exception as exc:  # a lesson that stopped rendering: never the subscriber's fault
            log.error("course %s day %s is held back: %s", course.slug, taken.day, exc)
            _hold(session, job, now + _seconds(rt.settings.requeue_after_seconds), now)
            return Outcome.HELD
        relay_paused_until = info.relay_paused_until
        if relay_paused_until is not None and relay_paused_until > now:
            _hold(session, job, relay_paused_until, now)
            return Outcome.HELD
        tz = schedule.zone(info.timezone)
        if not _sendable(course, tz, now, day=job.day, started_at=job.started_at):
            # Picked up outside the subscriber's window (a long queue, a retry, a late worker).
            _hold(session, job, schedule.window_start(course.cadence, tz, now), now)
            return Outcome.HELD
    # The claim is committed; no transaction stays open while we talk to the mail server.
    try:
        links = rt.links.for_lesson(job.enrollment_id, job.day)
        greeting = greeting_for(info.name, info.greeting, course.greeting_fallback)
        who = Personal(
            email=info.email,
            name=info.name,
            greeting=greeting,
            **links,
            **reply_addresses(rt.links, rt.settings.reply_domain, job.enrollment_id, job.day),
        )
        msg_id = message_id(rt.settings.message_id_domain, delivery_id, rt.links.secret_key)
        # Straight into wire bytes: the same bytes build_message gives (tests/test_wire.py), at
        # a tenth of the cost per recipient.
        msg = personalise(rendered, who, now=now, msg_id=msg_id)
        rt.throttle()  # the send-rate slot: right before the send, so the rate holds
        left = lease_ends - time.monotonic()
        if left < getattr(rt.transport, "worst_case_seconds", 0.0):
            # The wait for the slot ate the lease: another worker could take the delivery over
            # while we still talk to the server. Do not start what cannot finish in time.
            return _give_back(rt, job, now, f"{left:.0f}s of the lease left after the rate wait")
        rt.transport.send(msg, deadline=lease_ends)
    except PermanentMailError as exc:
        return _record_bounce(rt, delivery_id, now, job.attempts, exc)
    except RelayError as exc:
        return _record_relay_failure(rt, job, now, str(exc))
    except TransientMailError as exc:
        return _record_retry(rt, job, now, str(exc), course)
    except Exception as exc:
        # Anything unforeseen still ends the attempt on the record, so the retry budget applies
        # and the delivery cannot circle through the sweep forever.
        log.exception("delivery %s: unexpected error", delivery_id)
        return _record_retry(rt, job, now, f"{type(exc).__name__}: {exc}", course)
    sent_at = clock() if clock else now
    # The server has the message. A locked or restarting database must not lose that, or the
    # lease runs out and the lesson goes out again: wait for it however long it takes.
    outcome = retry_outages(
        lambda: _record_sent(rt, job, sent_at, msg_id, course, rendered),
        what=f"delivery {delivery_id} sent, recording it",
    )
    if relay_paused_until is not None:
        # This send was the probe of a paused relay, and it went through.
        with transaction(rt.sessions) as session:
            breaker.close(session, sent_at)
    return outcome


def _give_back(rt: Runtime, job: _Job, now: dt.datetime, why: str) -> Outcome:
    """Put a delivery back for the next sweep, unsent and without spending its attempt."""
    with transaction(rt.sessions) as session:
        if not _still_ours(session, job.delivery_id, job.attempts, now):
            return Outcome.SKIPPED
        _hold(session, job, now, now)
    log.warning("delivery %s put back unsent: %s", job.delivery_id, why)
    return Outcome.HELD


def _hold(session: Session, job: _Job, until: dt.datetime, now: dt.datetime) -> None:
    """Put a taken delivery back unsent until ``until``, giving its attempt back."""
    session.execute(
        update(Delivery)
        .where(Delivery.id == job.delivery_id)
        .values(
            status=DeliveryStatus.WAITING,
            attempts=Delivery.attempts - 1,
            next_attempt_at=until,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    log.info("delivery %s put back until %s", job.delivery_id, until.isoformat())


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


def _record_retry(rt: Runtime, job: _Job, now: dt.datetime, error: str, course: Course) -> Outcome:
    """A passing failure about this message: try again later, inside the subscriber's window,
    until the attempts or the hours of the retry budget run out."""
    settings = rt.settings
    with transaction(rt.sessions) as session:
        if not _still_ours(session, job.delivery_id, job.attempts, now):
            return Outcome.SKIPPED
        spent = now - job.created_at >= dt.timedelta(hours=settings.retry_hours)
        if job.attempts >= settings.max_attempts or spent:
            log.warning(
                "delivery %s failed after %d attempts over %s: %s",
                job.delivery_id,
                job.attempts,
                now - job.created_at,
                error,
            )
            _set_delivery(session, job.delivery_id, DeliveryStatus.FAILED, now, last_error=error)
            delivery = session.get(Delivery, job.delivery_id)
            assert delivery is not None
            if delivery.enrollment.status == EnrollmentStatus.ACTIVE:
                stop_enrollment(session, delivery.enrollment, EnrollmentStatus.FAILED, now)
            return Outcome.FAILED
        delay = backoff(job.attempts, settings.retry_base_seconds, settings.retry_max_seconds)
        retry_at = now + _seconds(delay)
        if not schedule.at_once(job.day, job.started_at):
            retry_at = schedule.window_start(course.cadence, schedule.zone(job.timezone), retry_at)
        session.execute(
            update(Delivery)
            .where(Delivery.id == job.delivery_id)
            .values(
                status=DeliveryStatus.WAITING,
                next_attempt_at=retry_at,
                updated_at=now,
                last_error=error,
            )
        )
    log.info("delivery %s will retry at %s: %s", job.delivery_id, retry_at.isoformat(), error)
    return Outcome.RETRY


def _record_relay_failure(rt: Runtime, job: _Job, now: dt.datetime, error: str) -> Outcome:
    """A failure of our own set-up or of the relay: pause all sending, spend no attempt.

    The delivery waits for the end of the pause; the breaker's probe, or the sweep after the
    breaker closed, queues it again.
    """
    with transaction(rt.sessions) as session:
        if not _still_ours(session, job.delivery_id, job.attempts, now):
            return Outcome.SKIPPED
        pause = breaker.trip(session, now, error, first_pause=rt.settings.relay_retry_seconds)
        session.execute(
            update(Delivery)
            .where(Delivery.id == job.delivery_id)
            .values(
                status=DeliveryStatus.WAITING,
                attempts=Delivery.attempts - 1,
                next_attempt_at=pause.retry_at,
                updated_at=now,
                last_error=f"sending paused: {error}",
            )
            .execution_options(synchronize_session=False)
        )
    log.error("delivery %s: %s", job.delivery_id, pause.describe())
    return Outcome.HELD


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
