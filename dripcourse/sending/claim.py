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

from sqlalchemy import Select, select, update

from dripcourse.db import transaction
from dripcourse.models import Delivery, DeliveryStatus
from dripcourse.sending import breaker
from dripcourse.sending.batch import send_batch
from dripcourse.sending.claim_batch import (  # noqa: F401 - the claim's statements, named here too
    claim_batch,
    claim_statement,
    due_enrollments,
    picked,
)
from dripcourse.sending.take import Outcome, seconds

if TYPE_CHECKING:
    from dripcourse.runtime import Runtime  # passed in; the adapters build it

log = logging.getLogger(__name__)

Enqueue = Callable[[Sequence[int]], None]


OPEN = (DeliveryStatus.PENDING, DeliveryStatus.WAITING, DeliveryStatus.SENDING)


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
            ids = claim_batch(rt, session, now, size)
        if ids is None:
            return total
        if ids:
            enqueue(ids)
            total += len(ids)
        if limit is not None:
            return total


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
            pick = picked(Delivery.id, open_deliveries(now, size), session)
            ids = session.scalars(
                update(Delivery)
                .where(
                    pick,
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
