"""The send path, with no Celery in it: take a batch of claimed deliveries, send each over the
SMTP connection of the process (or thread) that sends, and record each outcome before the next
message goes out.

A worker takes a batch (``send_batch_size`` deliveries, one task) in one statement and one
transaction, so a cohort's morning costs one Celery task and one claim per batch instead of
per message. What a subscriber relies on is decided per message, as before: the local send
window is checked again right before each send, a 5xx fails or suppresses only its own
address, a passing failure retries only its own delivery, and a failure of the relay or of our
set-up stops the batch and pauses all sending (the rest of the batch waits for the pause,
attempts untouched).

The bound on duplicates: a message the server accepted is recorded before the next one is
sent, so a worker killed at any moment can have sent, and not recorded, at most the one
message it was talking to the server about. Its lease runs out and that one goes out again;
nothing else of its batch does. Every step is a compare-and-set on the row it changes, so a
batch handed out twice by the broker sends each message once.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import select, update

from dripcourse import schedule
from dripcourse.db import retry_outages, transaction
from dripcourse.models import (
    Delivery,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Subscriber,
    Suppression,
)
from dripcourse.sending import breaker
from dripcourse.sending.record import Recorder, record_bounce, record_relay_failure, record_retry
from dripcourse.sending.take import (
    Clock,
    Job,
    Outcome,
    Ready,
    message,
    ours,
    put_back,
    seconds,
    sendable,
    take,
)
from dripcourse.sending.transport import PermanentMailError, RelayError, TransientMailError

if TYPE_CHECKING:
    from dripcourse.runtime import Runtime  # passed in; the adapters build it

log = logging.getLogger(__name__)

T = TypeVar("T")

# How stale a batch's view of its readers may grow: an unsubscribe or a suppression made while
# a batch is under way stops that reader's lesson if it comes later than this in the batch.
RECHECK_SECONDS = 2.0


class _Lease:
    """How long this batch holds its deliveries, in the database and on this worker's clock.

    Every taken row carries ``until`` as its next_attempt_at: past it, the sweep may hand the
    row to another worker. The lease is renewed for the rows not yet sent whenever less than
    half of it (or less than one whole send) is left, so a long batch or a long wait for a
    rate-limit slot never lets a row be taken over while this worker is about to send it.
    """

    def __init__(self, length: float, now: dt.datetime) -> None:
        self.length = length
        self.until = now + seconds(length)
        self.ends = time.monotonic() + length

    def left(self) -> float:
        return self.ends - time.monotonic()

    def wants_renewal(self, one_send: float) -> bool:
        left = self.left()
        return left < self.length / 2 or left < one_send

    def renew(self, rt: Runtime, jobs: Sequence[Job], now: dt.datetime) -> set[int]:
        """Extend the lease of ``jobs``; returns the ids still ours (a compare-and-set on each
        row's attempt: one the sweep or another worker took meanwhile is left alone)."""
        until = now + seconds(self.length)
        ends = time.monotonic() + self.length
        with transaction(rt.sessions) as session:
            kept = set(
                session.scalars(
                    update(Delivery)
                    .where(ours(jobs))
                    .values(next_attempt_at=until, updated_at=now)
                    .returning(Delivery.id)
                    .execution_options(synchronize_session=False)
                )
            )
        self.until, self.ends = until, ends
        return kept


def send_delivery(
    rt: Runtime, delivery_id: int, now: dt.datetime, clock: Clock | None = None
) -> Outcome:
    """Send one claimed delivery and record what happened: a batch of one."""
    return send_batch(rt, [delivery_id], now, clock).get(delivery_id, Outcome.SKIPPED)


def send_batch(
    rt: Runtime, delivery_ids: Sequence[int], now: dt.datetime, clock: Clock | None = None
) -> dict[int, Outcome]:
    """Send a batch of claimed deliveries and record each outcome. Safe to call twice.

    ``clock``, when given, is read again before each message (the window check) and once the
    server has accepted it: a batch, the wait for a rate-limit slot and the SMTP exchange take
    time, and a lesson counts for the local day on which it actually went out. Without it,
    every step happens at ``now``.

    Checked at the take, whatever the claim decided: the enrollment (stopped or suppressed:
    cancelled), the course (broken since the claim: held back without spending an attempt)
    and the relay's pause. Checked again before each message: the subscriber's local window
    (a delivery whose window closed is put back until it opens, not sent); and, every
    RECHECK_SECONDS and after each bounce, whether anyone left or was suppressed since the
    take. Put back means ``waiting`` with the attempt given back. Ids another worker holds,
    or already finished, come back SKIPPED.
    """
    outcomes: dict[int, Outcome] = {}
    lease = _Lease(rt.settings.send_lease_seconds, now)
    with transaction(rt.sessions) as session:
        ready, relay_paused_until = take(rt, session, delivery_ids, now, lease.until, outcomes)
    if ready:
        batch = _Batch(rt, ready, outcomes, lease, clock or (lambda: now))
        batch.probing = relay_paused_until is not None
        batch.run()
    return outcomes


class _Batch:
    """The sending of one taken batch: one message after another, each recorded before the
    next, with what the batch keeps between messages (its lease, when it last looked at its
    readers, whether it probes a paused relay)."""

    def __init__(
        self,
        rt: Runtime,
        ready: list[Ready],
        outcomes: dict[int, Outcome],
        lease: _Lease,
        read: Clock,
    ) -> None:
        self.rt, self.ready, self.outcomes, self.lease, self.read = rt, ready, outcomes, lease, read
        self.one_send = getattr(rt.transport, "worst_case_seconds", 0.0)
        self.probing = False
        self.checked = time.monotonic()
        self.recorder = Recorder(rt)
        # The last look already taken at message n (with the record of the one before): n,
        # the time it was taken at, and what it found (None: n may go out).
        self.looked: tuple[int, dt.datetime, Outcome | None] | None = None

    def run(self) -> None:
        try:
            for n in range(len(self.ready)):
                looked = self.looked is not None and self.looked[0] == n
                if not looked and self.outcomes.get(self.ready[n].job.delivery_id) is None:
                    # Not while its last look holds its rows: this would wait for them.
                    self._look_again(n)  # may cancel it, or give it a new zone
                item = self.ready[n]
                if self.outcomes.get(item.job.delivery_id) is None and not self._send(n, item):
                    break
        finally:
            self.recorder.close()

    def _unsent(self, n: int) -> list[Job]:
        return [r.job for r in self.ready[n:] if self.outcomes.get(r.job.delivery_id) is None]

    def _steadily(self, work: Callable[[], T], what: str) -> T:
        # The batch is taken: a database that blinks now is waited for while the lease lasts
        # (each wait logged). Past it, the error reaches the task, whose retry takes the rows
        # back once their lease has run out; nothing waits for the sweep.
        return retry_outages(work, what=what, patience=max(0.0, self.lease.left()))

    def _look_again(self, n: int) -> None:
        """Someone may have left since the take (an unsubscribe, a complaint) or moved to
        another time zone: look again at the rest of the batch, in one statement every few
        seconds, not per message."""
        if time.monotonic() - self.checked <= RECHECK_SECONDS:
            return
        rest = self._unsent(n)
        dropped, moved = self._steadily(
            lambda: _look_again_at(self.rt, rest, self.read()), "looking again at the batch"
        )
        self.outcomes.update(dropped)
        for i, each in enumerate(self.ready):
            zone = moved.get(each.job.delivery_id)
            if zone is not None:  # moved to another zone: its window and its next lesson follow
                self.ready[i] = replace(each, job=replace(each.job, timezone=zone))
        self.checked = time.monotonic()

    def _keep_lease(self, n: int) -> bool:
        """Renew the lease of the unsent rest when it runs short; whether message ``n`` is
        still ours (a row another worker took over meanwhile is left to it)."""
        if not self.lease.wants_renewal(self.one_send):
            return True
        rest = self._unsent(n)
        kept = self._steadily(lambda: self.lease.renew(self.rt, rest, self.read()), "lease renewal")
        for lost in rest:
            if lost.delivery_id not in kept:
                log.warning("delivery %s was taken over; left to it", lost.delivery_id)
                self.outcomes[lost.delivery_id] = Outcome.SKIPPED
        return self.ready[n].job.delivery_id in kept

    def _send(self, n: int, item: Ready) -> bool:
        """Send message ``n`` and record what happened; False when the batch must stop."""
        rt, job, outcomes = self.rt, item.job, self.outcomes
        looked, self.looked = self.looked, None
        if looked is not None and looked[0] == n:
            # Its checks and its last look came with the record of the message before.
            now, settled = looked[1], looked[2]
        else:
            try:
                rt.throttle()  # the send-rate slot: before the last checks, so the rate holds
            except RelayError as exc:  # the limiter is ours: its outage pauses, like the relay's
                return self._pause(n, str(exc))
            # Outside the try below: a database that stays away while the lease runs out is
            # the task's trouble (it tries again), never a failed attempt of this reader.
            if not self._keep_lease(n):
                return True
            now = self.read()
            tz = schedule.zone(job.timezone)
            if not sendable(item.course, tz, now, day=job.day, started_at=job.started_at):
                # The batch ran into the night of this subscriber (a long queue, a slow relay,
                # a long wait for a send-rate slot).
                until = schedule.window_start(item.course.cadence, tz, now)
                outcomes[job.delivery_id] = self._steadily(
                    lambda: put_back(rt, [job], until, now, "window closed"),
                    f"delivery {job.delivery_id} put back",
                )
                return True
            # The last look: a reader forgotten, paused or gone since the take is not mailed.
            settled = self._steadily(
                lambda: self.recorder.look(item, now), f"delivery {job.delivery_id}, last look"
            )
        if settled is not None:
            outcomes[job.delivery_id] = settled
            return True
        try:
            try:
                msg, msg_id = message(rt, item, now)
                rt.transport.send(msg, deadline=self.lease.ends)
            except BaseException:
                self.recorder.release()  # nothing to record in the look's transaction
                raise
        except PermanentMailError as exc:
            refusal = exc
            outcomes[job.delivery_id] = self._steadily(
                lambda: record_bounce(rt, job, now, refusal),
                f"delivery {job.delivery_id} refused, recording it",
            )
            if outcomes[job.delivery_id] is Outcome.BOUNCED:
                self.checked = -RECHECK_SECONDS  # the address may come again in this batch
            return True
        except RelayError as exc:
            return self._pause(n, str(exc))
        except Exception as exc:
            if isinstance(exc, TransientMailError):
                error = str(exc)
            else:
                # Anything unforeseen still ends the attempt on the record, so the retry
                # budget applies and the delivery cannot circle through the sweep forever.
                log.exception("delivery %s: unexpected error", job.delivery_id)
                error = f"{type(exc).__name__}: {exc}"
            outcomes[job.delivery_id] = self._steadily(
                lambda: record_retry(rt, job, now, error, item.course),
                f"delivery {job.delivery_id} not sent, recording it",
            )
            return True
        sent_at = self.read()
        recorded = self._record_then_look(n, item, sent_at, msg_id)
        if recorded is None:
            # The server has the message. A locked or restarting database must not lose that,
            # or the lease runs out and the lesson goes out again: wait for it however long it
            # takes.
            recorded = retry_outages(
                lambda: self.recorder.sent(item, sent_at, msg_id),
                what=f"delivery {job.delivery_id} sent, recording it",
            )
        outcomes[job.delivery_id] = recorded
        if self.probing:
            # This send was the probe of a paused relay, and it went through.
            self._steadily(lambda: _close_breaker(rt, sent_at), "ending the pause")
            self.probing = False
        return True

    def _record_then_look(
        self, n: int, item: Ready, sent_at: dt.datetime, msg_id: str
    ) -> Outcome | None:
        """Record message ``n`` and take the last look before message ``n + 1`` in one round
        trip (``Recorder.sent_then_look``) when nothing else has to come between them: no
        send-rate slot to wait for, no lease to renew, no look again at the batch due, the
        next one inside its window, no paused relay being probed. Its outcome, or None when
        it is left to the caller to record (the look then comes in its turn)."""
        after = n + 1
        if after >= len(self.ready) or self.rt.limiter is not None or self.probing:
            return None
        then = self.ready[after]
        if self.outcomes.get(then.job.delivery_id) is not None:
            return None
        if time.monotonic() - self.checked > RECHECK_SECONDS:
            return None
        if self.lease.wants_renewal(self.one_send):
            return None
        now, job = self.read(), then.job
        if not sendable(
            then.course, schedule.zone(job.timezone), now, day=job.day, started_at=job.started_at
        ):
            return None
        try:
            done = self.recorder.sent_then_look(item, sent_at, msg_id, then, now)
        except Exception as exc:  # noqa: BLE001 - recorded afresh by the caller, which waits
            log.info(
                "delivery %s: recording it with the next look failed, recording it alone: %s",
                item.job.delivery_id,
                exc,
            )
            return None
        if done is None:
            return None
        outcome, found = done
        if found is not None:
            self.looked = (after, now, found.settled)
        return outcome

    def _pause(self, n: int, reason: str) -> bool:
        """Our own set-up failed (relay, login, TLS, the rate limiter): pause all sending and
        give message ``n`` and the rest of the batch back to the pause, attempts untouched."""
        rest, now = self._unsent(n), self.read()
        self.outcomes.update(
            self._steadily(
                lambda: record_relay_failure(self.rt, rest, now, reason),
                "sending paused, recording it",
            )
        )
        return False


def _look_again_at(
    rt: Runtime, jobs: Sequence[Job], now: dt.datetime
) -> tuple[dict[int, Outcome], dict[int, str]]:
    """Cancel those of ``jobs`` whose enrollment stopped or whose address was suppressed
    since the take, and find those whose reader moved to another time zone (one SELECT; an
    UPDATE only for each one cancelled). Returns the outcomes and the new zones by id."""
    dropped: dict[int, Outcome] = {}
    moved: dict[int, str] = {}
    if not jobs:
        return dropped, moved
    by_id = {j.delivery_id: j for j in jobs}
    with transaction(rt.sessions) as session:
        found = session.execute(
            select(Delivery.id, Enrollment.status, Suppression.reason, Subscriber.timezone)
            .join(Enrollment, Delivery.enrollment_id == Enrollment.id)
            .join(Subscriber, Enrollment.subscriber_id == Subscriber.id)
            .outerjoin(Suppression, Suppression.email == Subscriber.email)
            .where(Delivery.id.in_(list(by_id)))
        ).all()
        for gone in by_id.keys() - {row.id for row in found}:
            # Deleted since the take: its reader was forgotten. Nothing is left to update.
            dropped[gone] = Outcome.CANCELLED
            log.info("delivery %s not sent: its reader was deleted", gone)
        for row in found:
            if row.status == EnrollmentStatus.ACTIVE and row.reason is None:
                if row.timezone != by_id[row.id].timezone:
                    moved[row.id] = row.timezone
                continue
            why = row.reason or str(row.status)
            cancelled = session.execute(
                update(Delivery)
                .where(ours([by_id[row.id]]))
                .values(
                    status=DeliveryStatus.CANCELLED,
                    next_attempt_at=None,
                    updated_at=now,
                    last_error=why,
                )
                .execution_options(synchronize_session=False)
            ).rowcount
            dropped[row.id] = Outcome.CANCELLED if cancelled else Outcome.SKIPPED
            log.info("delivery %s cancelled before it went out: %s", row.id, why)
    return dropped, moved


def _close_breaker(rt: Runtime, now: dt.datetime) -> None:
    with transaction(rt.sessions) as session:
        breaker.close(session, now)
