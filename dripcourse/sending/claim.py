"""The scheduler's side, with no Celery in it: claim due lessons, sweep up lost ones, tick.

Every function takes ``now``. Claims commit before anything is queued or sent, and each step
is a compare-and-set on the row it changes, so a replayed tick, two beats, or a task delivered
twice by the broker can never produce a second email for the same (enrollment, day). Sending
what was claimed is dripcourse.sending.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Select, insert, select, update
from sqlalchemy.orm import Session

from dripcourse import schedule
from dripcourse.db import transaction
from dripcourse.models import (
    Cohort,
    Delivery,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Subscriber,
    Suppression,
)
from dripcourse.people.enrollment import stop_enrollment
from dripcourse.sending import breaker
from dripcourse.sending.batch import send_batch
from dripcourse.sending.take import Outcome, course_or_none, seconds, sendable

if TYPE_CHECKING:
    from dripcourse.runtime import Runtime  # passed in; the adapters build it

log = logging.getLogger(__name__)

Enqueue = Callable[[Sequence[int]], None]


OPEN = (DeliveryStatus.PENDING, DeliveryStatus.WAITING, DeliveryStatus.SENDING)


def picked(query: Select[tuple[int]], session: Session):  # type: ignore[no-untyped-def]
    """The ids ``query`` picks, for ``WHERE id IN (...)``, evaluated once per statement.

    On PostgreSQL the pick locks its rows with FOR UPDATE SKIP LOCKED, so two ticks never wait
    for each other, and runs as a materialised CTE: as a plain subquery the planner may run it
    again for every row of the UPDATE (a nested loop over a small table), and each run skips
    the rows the statement has just changed and picks new ones, so a pick of one took all.
    SQLite has no row locks; its claims rely on the compare-and-set each caller does on the
    rows it read.
    """
    if session.get_bind().dialect.name != "postgresql":
        return query.scalar_subquery()
    once = query.with_for_update(skip_locked=True).cte("picked").prefix_with("MATERIALIZED")
    return select(*once.c)


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


def claim_statement(session: Session, now: dt.datetime, size: int):  # type: ignore[no-untyped-def]
    """The claim's compare-and-set: up to ``size`` due enrollments marked in flight
    (next_send_at NULL), returning what the claim needs of each."""
    return (
        update(Enrollment)
        .where(
            Enrollment.id.in_(picked(due_enrollments(now, size), session)),
            Enrollment.next_send_at <= now,
            Enrollment.status == EnrollmentStatus.ACTIVE,
        )
        .values(next_send_at=None, updated_at=now)
        .returning(Enrollment.id, Enrollment.day, Enrollment.paused_until)
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
    claimed = session.execute(
        claim_statement(session, now, size).execution_options(synchronize_session=False)
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
    later = now + seconds(rt.settings.requeue_after_seconds)
    new: list[dict[str, object]] = []
    for row in claimed:
        info = details[row.id]
        course = course_or_none(rt, info.course_slug)
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
        elif not sendable(course, tz, now, day=row.day + 1, started_at=info.started_at):
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
    later = now + seconds(rt.settings.requeue_after_seconds)
    while True:
        size = rt.settings.batch_size if limit is None else min(limit, rt.settings.batch_size)
        with transaction(rt.sessions) as session:
            pick = picked(open_deliveries(now, size), session)
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
        for outcome in send_batch(rt, ids, clock(), clock=clock).values():
            outcomes[outcome] += 1

    return tick(rt, clock(), send_here), outcomes
