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
import enum
import functools
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, and_, bindparam, exists, or_, select, tuple_, update
from sqlalchemy.orm import Session

from dripcourse import breaker, schedule
from dripcourse.course import Course
from dripcourse.db import retry_outages, transaction
from dripcourse.enrollment import stop_enrollment, suppress
from dripcourse.errors import CourseError
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

Clock = Callable[[], dt.datetime]
T = TypeVar("T")

# How stale a batch's view of its readers may grow: an unsubscribe or a suppression made while
# a batch is under way stops that reader's lesson if it comes later than this in the batch.
RECHECK_SECONDS = 2.0


class Outcome(enum.StrEnum):
    SENT = "sent"
    RETRY = "retry"
    FAILED = "failed"
    BOUNCED = "bounced"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"  # another worker has it, or it is already finished
    HELD = "held"  # put back unsent: outside the local window, relay paused, course broken


def seconds(n: float) -> dt.timedelta:
    return dt.timedelta(seconds=n)


def course_or_none(rt: Runtime, slug: str) -> Course | None:
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


def sendable(
    course: Course, tz: ZoneInfo, now: dt.datetime, *, day: int, started_at: dt.datetime | None
) -> bool:
    """Whether lesson ``day`` may go out at ``now``: inside the subscriber's local window, or
    Day 1 of a cohort the operator started "now" (at once, whatever the hour)."""
    return schedule.at_once(day, started_at) or schedule.in_window(course.cadence, tz, now)


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


@dataclass(frozen=True)
class _Ready:
    """A taken delivery that passed every check at the take: what its message needs."""

    job: _Job
    email: str
    name: str | None
    greeting: str | None
    course: Course
    rendered: RenderedLesson


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

    def renew(self, rt: Runtime, jobs: Sequence[_Job], now: dt.datetime) -> set[int]:
        """Extend the lease of ``jobs``; returns the ids still ours (a compare-and-set on each
        row's attempt: one the sweep or another worker took meanwhile is left alone)."""
        until = now + seconds(self.length)
        ends = time.monotonic() + self.length
        with transaction(rt.sessions) as session:
            kept = set(
                session.scalars(
                    update(Delivery)
                    .where(_ours(jobs))
                    .values(next_attempt_at=until, updated_at=now)
                    .returning(Delivery.id)
                    .execution_options(synchronize_session=False)
                )
            )
        self.until, self.ends = until, ends
        return kept


def _ours(jobs: Sequence[_Job]):  # type: ignore[no-untyped-def]
    """Rows still held by these attempts: sending, with the attempt count each attempt set."""
    return and_(
        Delivery.status == DeliveryStatus.SENDING,
        tuple_(Delivery.id, Delivery.attempts).in_([(j.delivery_id, j.attempts) for j in jobs]),
    )


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
        ready, relay_paused_until = _take(rt, session, delivery_ids, now, lease, outcomes)
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
        ready: list[_Ready],
        outcomes: dict[int, Outcome],
        lease: _Lease,
        read: Clock,
    ) -> None:
        self.rt, self.ready, self.outcomes, self.lease, self.read = rt, ready, outcomes, lease, read
        self.one_send = getattr(rt.transport, "worst_case_seconds", 0.0)
        self.probing = False
        self.checked = time.monotonic()
        self.recorder = _Recorder(rt)

    def run(self) -> None:
        try:
            for n in range(len(self.ready)):
                if self.outcomes.get(self.ready[n].job.delivery_id) is None:
                    self._look_again(n)  # may cancel it, or give it a new zone
                item = self.ready[n]
                if self.outcomes.get(item.job.delivery_id) is None and not self._send(n, item):
                    break
        finally:
            self.recorder.close()

    def _unsent(self, n: int) -> list[_Job]:
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

    def _send(self, n: int, item: _Ready) -> bool:
        """Send message ``n`` and record what happened; False when the batch must stop."""
        rt, job, outcomes = self.rt, item.job, self.outcomes
        try:
            rt.throttle()  # the send-rate slot: before the last checks, so the rate holds
        except RelayError as exc:  # the limiter is ours: its outage pauses, like the relay's
            return self._pause(n, str(exc))
        # Outside the try below: a database that stays away while the lease runs out is the
        # task's trouble (it tries again), never a failed attempt of this reader.
        if not self._keep_lease(n):
            return True
        now = self.read()
        tz = schedule.zone(job.timezone)
        if not sendable(item.course, tz, now, day=job.day, started_at=job.started_at):
            # The batch ran into the night of this subscriber (a long queue, a slow relay, a
            # long wait for a send-rate slot).
            until = schedule.window_start(item.course.cadence, tz, now)
            outcomes[job.delivery_id] = self._steadily(
                lambda: _put_back(rt, [job], until, now, "window closed"),
                f"delivery {job.delivery_id} put back",
            )
            return True
        try:
            msg, msg_id = _message(rt, item, now)
            rt.transport.send(msg, deadline=self.lease.ends)
        except PermanentMailError as exc:
            refusal = exc
            outcomes[job.delivery_id] = self._steadily(
                lambda: _record_bounce(rt, job, now, refusal),
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
                lambda: _record_retry(rt, job, now, error, item.course),
                f"delivery {job.delivery_id} not sent, recording it",
            )
            return True
        sent_at = self.read()
        # The server has the message. A locked or restarting database must not lose that, or
        # the lease runs out and the lesson goes out again: wait for it however long it takes.
        outcomes[job.delivery_id] = retry_outages(
            lambda: self.recorder.sent(item, sent_at, msg_id),
            what=f"delivery {job.delivery_id} sent, recording it",
        )
        if self.probing:
            # This send was the probe of a paused relay, and it went through.
            self._steadily(lambda: _close_breaker(rt, sent_at), "ending the pause")
            self.probing = False
        return True

    def _pause(self, n: int, reason: str) -> bool:
        """Our own set-up failed (relay, login, TLS, the rate limiter): pause all sending and
        give message ``n`` and the rest of the batch back to the pause, attempts untouched."""
        rest, now = self._unsent(n), self.read()
        self.outcomes.update(
            self._steadily(
                lambda: _record_relay_failure(self.rt, rest, now, reason),
                "sending paused, recording it",
            )
        )
        return False


def _look_again_at(
    rt: Runtime, jobs: Sequence[_Job], now: dt.datetime
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
        for row in found:
            if row.status == EnrollmentStatus.ACTIVE and row.reason is None:
                if row.timezone != by_id[row.id].timezone:
                    moved[row.id] = row.timezone
                continue
            why = row.reason or str(row.status)
            cancelled = session.execute(
                update(Delivery)
                .where(_ours([by_id[row.id]]))
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


def _take(
    rt: Runtime,
    session: Session,
    delivery_ids: Sequence[int],
    now: dt.datetime,
    lease: _Lease,
    outcomes: dict[int, Outcome],
) -> tuple[list[_Ready], dt.datetime | None]:
    """Take the batch's deliveries that are free (one UPDATE ... RETURNING), read what sending
    them needs (one joined SELECT), and settle those that must not be sent now.

    Returns the ones to send, in the order given, and the relay's pause (its end) if the
    breaker is open. Every settled one gets its outcome in ``outcomes``; so do ids not taken
    (SKIPPED).
    """
    wanted = list(dict.fromkeys(delivery_ids))
    taken = {
        row.id: row
        for row in session.execute(
            update(Delivery)
            .where(
                Delivery.id.in_(wanted),
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
                next_attempt_at=lease.until,
                queued_at=None,  # its task is taken: nothing of it is left in the broker
            )
            .returning(
                Delivery.id,
                Delivery.enrollment_id,
                Delivery.day,
                Delivery.attempts,
                Delivery.created_at,
            )
            .execution_options(synchronize_session=False)
        )
    }
    for delivery_id in wanted:
        if delivery_id not in taken:
            outcomes[delivery_id] = Outcome.SKIPPED
    if not taken:
        return [], None
    details = {
        row.id: row
        for row in session.execute(
            select(
                Enrollment.id,
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
            .where(Enrollment.id.in_({row.enrollment_id for row in taken.values()}))
        )
    }
    ready: list[_Ready] = []
    relay_paused_until = None
    for delivery_id in wanted:
        row = taken.get(delivery_id)
        if row is None:
            continue
        info = details[row.enrollment_id]
        relay_paused_until = info.relay_paused_until
        job = _Job(
            delivery_id,
            row.enrollment_id,
            row.day,
            row.attempts,
            info.timezone,
            info.paused_until,
            info.started_at,
            row.created_at,
        )
        if info.status != EnrollmentStatus.ACTIVE or info.reason is not None:
            why = info.reason or str(info.status)
            _set_delivery(session, delivery_id, DeliveryStatus.CANCELLED, now, last_error=why)
            outcomes[delivery_id] = Outcome.CANCELLED
            continue
        later = now + seconds(rt.settings.requeue_after_seconds)
        course = course_or_none(rt, info.course_slug)
        if course is None:
            outcomes[delivery_id] = _hold(session, job, later, now)
            continue
        try:
            rendered = rt.catalog.renderer.lesson(course, row.day)
        except Exception as exc:  # a lesson that stopped rendering: never the subscriber's fault
            log.error("course %s day %s is held back: %s", course.slug, row.day, exc)
            outcomes[delivery_id] = _hold(session, job, later, now)
            continue
        if relay_paused_until is not None and relay_paused_until > now:
            outcomes[delivery_id] = _hold(session, job, relay_paused_until, now)
            continue
        tz = schedule.zone(info.timezone)
        if not sendable(course, tz, now, day=row.day, started_at=info.started_at):
            # Picked up outside the subscriber's window (a long queue, a retry, a late worker).
            until = schedule.window_start(course.cadence, tz, now)
            outcomes[delivery_id] = _hold(session, job, until, now)
            continue
        ready.append(_Ready(job, info.email, info.name, info.greeting, course, rendered))
    return ready, relay_paused_until


def _message(rt: Runtime, item: _Ready, now: dt.datetime):  # type: ignore[no-untyped-def]
    """The personalised message for one delivery, in wire form, and its Message-ID."""
    job = item.job
    links = rt.links.for_lesson(job.enrollment_id, job.day)
    who = Personal(
        email=item.email,
        name=item.name,
        # Worked out only if the lesson shows it: deriving one parses the name.
        greeting=(item.greeting or "").strip(),
        greeting_fallback=item.course.greeting_fallback,
        **links,
        **reply_addresses(rt.links, rt.settings.reply_domain, job.enrollment_id, job.day),
    )
    msg_id = message_id(rt.settings.message_id_domain, job.delivery_id, rt.links.secret_key)
    # Straight into wire bytes: the same bytes build_message gives (tests/test_wire.py), at a
    # tenth of the cost per recipient.
    return personalise(item.rendered, who, now=now, msg_id=msg_id), msg_id


def _put_back(
    rt: Runtime, jobs: Sequence[_Job], until: dt.datetime, now: dt.datetime, why: str
) -> Outcome:
    """Put deliveries back unsent until ``until``, without spending their attempts; those no
    longer ours (taken over after a lease ran out) are left as they are."""
    with transaction(rt.sessions) as session:
        back = session.execute(
            update(Delivery)
            .where(_ours(jobs))
            .values(**_waiting_again(until, now))
            .execution_options(synchronize_session=False)
        ).rowcount
    for job in jobs:
        log.info("delivery %s put back until %s: %s", job.delivery_id, until.isoformat(), why)
    return Outcome.HELD if back else Outcome.SKIPPED


def _hold(session: Session, job: _Job, until: dt.datetime, now: dt.datetime) -> Outcome:
    """Put a delivery just taken back unsent until ``until``, giving its attempt back."""
    session.execute(
        update(Delivery)
        .where(Delivery.id == job.delivery_id)
        .values(**_waiting_again(until, now))
        .execution_options(synchronize_session=False)
    )
    log.info("delivery %s put back until %s", job.delivery_id, until.isoformat())
    return Outcome.HELD


def _waiting_again(until: dt.datetime, now: dt.datetime) -> dict[str, object]:
    """A taken delivery put back unsent: waiting until ``until``, its attempt given back."""
    return {
        "status": DeliveryStatus.WAITING,
        "attempts": Delivery.attempts - 1,
        "next_attempt_at": until,
        "updated_at": now,
    }


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


def _still_ours(session: Session, job: _Job, now: dt.datetime) -> bool:
    """Whether this attempt still holds the delivery; from here on, this transaction does.

    A worker whose lease ran out (a send slower than ``send_lease_seconds``) may hear back
    after another worker took the delivery over and perhaps sent it: its failure must not
    undo that. The compare-and-set also locks the row (PostgreSQL) or the file (SQLite).
    """
    held = session.execute(
        update(Delivery)
        .where(_ours([job]))
        .values(updated_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if held != 1:
        log.warning(
            "delivery %s: attempt %d outlived its lease; left as it is",
            job.delivery_id,
            job.attempts,
        )
    return held == 1


def _record_sent(rt: Runtime, item: _Ready, now: dt.datetime, msg_id: str) -> Outcome:
    """Mark the delivery sent and schedule the next lesson, in one transaction.

    Every value comes from the take, but the reader's time zone, read again here (it decides
    when the next lesson is due). If the enrollment changed while we were sending (a pause,
    an unsubscribe), the guarded UPDATE matches nothing and the slower path reads the row as
    it is now.
    """
    with transaction(rt.sessions) as session:
        zone = session.scalar(
            select(Subscriber.timezone)
            .join(Enrollment, Enrollment.subscriber_id == Subscriber.id)
            .where(Enrollment.id == item.job.enrollment_id)
        )
        if zone is not None and zone != item.job.timezone:
            item = replace(item, job=replace(item.job, timezone=zone))
        job, course, rendered = item.job, item.course, item.rendered
        values = _moved_on(item, now)
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
            _move_on(job, values).execution_options(synchronize_session=False)
        ).rowcount
        if updated != 1:
            _record_sent_to_changed_enrollment(session, job, now, course)
    rt.catalog.lesson_versions[digest(rendered)] = version_id
    return Outcome.SENT


def _moved_on(item: _Ready, now: dt.datetime) -> dict[str, object]:
    """The enrollment's values once lesson ``job.day`` went out at ``now``: the day, the
    next lesson's due time (after a pause, if one is set), or completed."""
    job, course = item.job, item.course
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
    return values


def _move_on(job: _Job, values: dict[str, object]):  # type: ignore[no-untyped-def]
    """The enrollment moves on to ``values``, only if it is as the take saw it: still active,
    still on the day before, nothing scheduled meanwhile, no pause set or lifted since."""
    return (
        update(Enrollment)
        .where(
            Enrollment.id == job.enrollment_id,
            Enrollment.status == EnrollmentStatus.ACTIVE,
            Enrollment.day < job.day,
            Enrollment.next_send_at.is_(None),
            Enrollment.paused_until.is_not_distinct_from(job.paused_until),
        )
        .values(**values)
    )


@functools.cache
def _one_statement_record():  # type: ignore[no-untyped-def]
    """_record_sent's two UPDATEs as one statement, built once (its compiled form is cached):
    the enrollment moves on under the same guard, and the delivery is marked sent only if it
    did."""
    e, d = Enrollment.__table__.c, Delivery.__table__.c

    def param(name: str, column):  # type: ignore[no-untyped-def]
        return bindparam(name, type_=column.type)

    moved = (
        update(Enrollment.__table__)
        .where(
            e.id == param("p_enrollment", e.id),
            e.status == EnrollmentStatus.ACTIVE,
            e.day < param("p_day", e.day),
            e.next_send_at.is_(None),
            e.paused_until.is_not_distinct_from(param("p_seen_paused", e.paused_until)),
            # The reader still lives where the take saw them: the next lesson's time depends on it.
            exists(
                select(Subscriber.__table__.c.id).where(
                    Subscriber.__table__.c.id == e.subscriber_id,
                    Subscriber.__table__.c.timezone
                    == param("p_zone", Subscriber.__table__.c.timezone),
                )
            ),
        )
        .values(
            day=param("p_day", e.day),
            updated_at=param("p_now", e.updated_at),
            paused_until=param("p_paused_until", e.paused_until),
            next_send_at=param("p_next_send_at", e.next_send_at),
            status=param("p_status", e.status),
        )
        .returning(e.id)
        .cte("moved")
    )
    return (
        update(Delivery.__table__)
        .where(d.id == param("p_delivery", d.id), exists(select(moved.c.id)))
        .values(
            status=DeliveryStatus.SENT,
            next_attempt_at=None,
            updated_at=param("p_now", d.updated_at),
            sent_at=param("p_now", d.sent_at),
            message_id=param("p_message_id", d.message_id),
            lesson_version_id=param("p_version", d.lesson_version_id),
        )
        .returning(d.id)
    )


class _Recorder:
    """Records the messages of one batch that the server accepted.

    On PostgreSQL it holds one connection for the batch, in autocommit, and records each
    message in one statement (a CTE moves the enrollment on and marks the delivery sent, the
    latter only if the former matched), so a message costs one round trip to the database
    instead of five (a pool check-out, BEGIN, two UPDATEs, COMMIT). When that statement
    changes nothing (the enrollment changed while we sent; the first message of a lesson
    version in this process), the careful path (_record_sent) does it in a transaction.
    Either way the record is atomic: a crash in between leaves the delivery ``sending``, as a
    crash before the record would.
    """

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.fast = rt.engine.dialect.name == "postgresql"
        self.conn: Connection | None = None
        self.versions: dict[int, int | None] = {}  # id(rendered) -> its stored version

    def sent(self, item: _Ready, now: dt.datetime, msg_id: str) -> Outcome:
        version_id = self._version(item.rendered) if self.fast else None
        if version_id is None:
            return _record_sent(self.rt, item, now, msg_id)
        job = item.job
        values = _moved_on(item, now)
        params = {
            "p_delivery": job.delivery_id,
            "p_enrollment": job.enrollment_id,
            "p_day": job.day,
            "p_seen_paused": job.paused_until,
            "p_zone": job.timezone,
            "p_paused_until": values["paused_until"],
            "p_next_send_at": values["next_send_at"],
            "p_status": values.get("status", EnrollmentStatus.ACTIVE),
            "p_now": now,
            "p_message_id": msg_id,
            "p_version": version_id,
        }
        try:
            if self.conn is None:
                self.conn = self.rt.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            done = self.conn.execute(_one_statement_record(), params).first()
        except Exception:
            self.close()  # a broken connection is not used again; the caller tries again
            raise
        if done is None:
            return _record_sent(self.rt, item, now, msg_id)
        return Outcome.SENT

    def _version(self, rendered: RenderedLesson) -> int | None:
        key = id(rendered)
        if self.versions.get(key) is None:
            self.versions[key] = self.rt.catalog.lesson_versions.get(digest(rendered))
        return self.versions[key]

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - a connection already broken
                conn.invalidate()


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
        if not _still_ours(session, job, now):
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
        retry_at = now + seconds(delay)
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


def _record_relay_failure(
    rt: Runtime, jobs: Sequence[_Job], now: dt.datetime, error: str
) -> dict[int, Outcome]:
    """A failure of our own set-up or of the relay: pause all sending, spend no attempt.

    The first of ``jobs`` met the failure; the rest of its batch was not sent. All of them
    wait for the end of the pause; the breaker's probe, or the sweep after the breaker
    closed, queues them again. Any no longer ours (a lease that ran out) are left alone.
    """
    with transaction(rt.sessions) as session:
        pause = breaker.trip(session, now, error, first_pause=rt.settings.relay_retry_seconds)
        held = set(
            session.scalars(
                update(Delivery)
                .where(_ours(jobs))
                .values(
                    **_waiting_again(pause.retry_at, now), last_error=f"sending paused: {error}"
                )
                .returning(Delivery.id)
                .execution_options(synchronize_session=False)
            )
        )
    log.error(
        "delivery %s: %s (%d more of its batch wait for it)",
        jobs[0].delivery_id,
        pause.describe(),
        len(held - {jobs[0].delivery_id}),
    )
    return {j.delivery_id: Outcome.HELD if j.delivery_id in held else Outcome.SKIPPED for j in jobs}


def _record_bounce(rt: Runtime, job: _Job, now: dt.datetime, error: PermanentMailError) -> Outcome:
    """A 5xx: the delivery fails with the server's words. Only a reply about the mailbox itself
    (no such user, mailbox gone) suppresses the address; a refusal on policy grounds (5.7.x:
    relay denied, DMARC) may be our own set-up's fault and stops this enrollment only."""
    with transaction(rt.sessions) as session:
        if not _still_ours(session, job, now):
            return Outcome.SKIPPED
        _set_delivery(session, job.delivery_id, DeliveryStatus.FAILED, now, last_error=str(error))
        delivery = session.get(Delivery, job.delivery_id)
        assert delivery is not None
        enrollment = delivery.enrollment
        if not error.suppress:
            if enrollment.status == EnrollmentStatus.ACTIVE:
                stop_enrollment(session, enrollment, EnrollmentStatus.FAILED, now)
            log.warning("delivery %s refused (address kept): %s", job.delivery_id, error)
            return Outcome.FAILED
        suppress(session, enrollment.subscriber.email, f"bounced: {error}", now)
        for each in enrollment.subscriber.enrollments:
            if each.status == EnrollmentStatus.ACTIVE:
                stop_enrollment(session, each, EnrollmentStatus.BOUNCED, now)
    log.warning("delivery %s bounced, address suppressed: %s", job.delivery_id, error)
    return Outcome.BOUNCED


def backoff(attempts: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter: about base, 2*base, 4*base ... up to cap."""
    delay = min(cap, base * 2 ** max(0, attempts - 1))
    return delay * (rng or random).uniform(0.5, 1.0)
