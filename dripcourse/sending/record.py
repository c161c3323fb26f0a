"""The record: what became of each message of a batch, written before the next one is sent.

A message the server accepted is recorded at once (the delivery sent, the enrollment moved on
to its next lesson), so a worker killed at any moment can have sent and not recorded at most
the one message it was talking to the server about. A passing failure waits for a retry inside
the subscriber's window, a 5xx fails the delivery (and suppresses the address when it is about
the mailbox), and a failure of our own set-up pauses all sending without spending an attempt.

It stays one module (about 430 lines): every outcome of an attempt is recorded here under
the same compare-and-set on the delivery, so the rules for the record live side by side.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import random
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Transaction, bindparam, exists, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from dripcourse import schedule
from dripcourse.courses.course import Course
from dripcourse.courses.lessons_sent import digest, record_version
from dripcourse.courses.render import RenderedLesson
from dripcourse.db import transaction
from dripcourse.models import (
    Delivery,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Subscriber,
)
from dripcourse.people.enrollment import stop_enrollment, suppress
from dripcourse.sending import breaker
from dripcourse.sending.last_look import Look, judged, last_look, look_steps
from dripcourse.sending.prepared import (
    BEGIN,
    Prepared,
    run_script,
    scripted,
    unsure_of_prepared,
)
from dripcourse.sending.take import (
    Job,
    Outcome,
    Ready,
    budget_start,
    ours,
    seconds,
    set_delivery,
    still_ours,
    waiting_again,
)
from dripcourse.sending.transport import PermanentMailError

if TYPE_CHECKING:
    from dripcourse.runtime import Runtime  # passed in; the adapters build it

log = logging.getLogger(__name__)


def record_sent(rt: Runtime, item: Ready, now: dt.datetime, msg_id: str) -> Outcome:
    """Mark the delivery sent and schedule the next lesson, in one transaction.

    Every value comes from the take, but the reader's time zone, read again here (it decides
    when the next lesson is due). If the enrollment changed while we were sending (a pause,
    an unsubscribe), the guarded UPDATE matches nothing and the slower path reads the row as
    it is now; if the reader was forgotten meanwhile, there is nothing left to record.
    """
    with transaction(rt.sessions) as session:
        version_id = _record_sent_in(rt, session, item, now, msg_id)
    rt.catalog.lesson_versions[digest(item.rendered)] = version_id
    return Outcome.SENT


def _record_sent_in(
    rt: Runtime, session: Session, item: Ready, now: dt.datetime, msg_id: str
) -> int:
    """record_sent's work inside the caller's transaction; returns the lesson version's id."""
    zone = session.scalar(
        select(Subscriber.timezone)
        .join(Enrollment, Enrollment.subscriber_id == Subscriber.id)
        .where(Enrollment.id == item.job.enrollment_id)
    )
    if zone is not None and zone != item.job.timezone:
        item = replace(item, job=replace(item.job, timezone=zone))
    job, course, rendered = item.job, item.course, item.rendered
    values = moved_on(item, now)
    # The version the subscriber got, for "read in your browser"; a statement only the
    # first time this process sends a version.
    version_id = record_version(session, rendered, now, rt.catalog.lesson_versions)
    # Keep last_error: an operator asking "why was this late?" needs earlier failures.
    set_delivery(
        session,
        job.delivery_id,
        DeliveryStatus.SENT,
        now,
        sent_at=now,
        message_id=msg_id,
        lesson_version_id=version_id,
    )
    updated = session.execute(
        move_on(job, values).execution_options(synchronize_session=False)
    ).rowcount
    if updated != 1:
        _record_sent_to_changed_enrollment(session, job, now, course)
    return version_id


def moved_on(item: Ready, now: dt.datetime) -> dict[str, object]:
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


def move_on(job: Job, values: dict[str, object]):  # type: ignore[no-untyped-def]
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
def one_statement_record():  # type: ignore[no-untyped-def]
    """record_sent's two UPDATEs as one statement, built once (its compiled form is cached):
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


@functools.cache
def _prepared_record(dialect: Dialect) -> Prepared:
    return Prepared(one_statement_record(), dialect, "dripcourse_record_sent")


class Recorder:
    """Takes the last look before each message of one batch and records those the server
    accepted.

    On PostgreSQL it holds one connection for the batch, in autocommit mode: the transaction
    is its own (``prepared.run_script``). The last look (``last_look``) begins it and locks
    the reader's rows, in one round trip; the transaction stays open through the SMTP
    exchange and ends with the record, so a person changed or forgotten meanwhile waits for
    that one message and never gets one after the change returned. The record is one
    statement (a CTE moves the enrollment on and marks the delivery sent, the latter only if
    the former matched), sent with its COMMIT when the look found the enrollment as the take
    saw it: one more round trip. Inside a batch that round trip also begins the next
    message's look (``sent_then_look``): one round trip a message, the record committed before
    the next look and the next send. Otherwise (the enrollment changed; the first message of a
    lesson version in this process) the careful path (record_sent's) does it in the same
    transaction. On SQLite the last look commits before the send and the record is a
    transaction of its own. Either way the record is atomic: a crash in between leaves the
    delivery ``sending``, as a crash before the record would.
    """

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.fast = rt.engine.dialect.name == "postgresql"
        self.conn: Connection | None = None
        self.held: Transaction | None = None  # the last look's transaction, until the record
        self.unchanged = False  # what the last look found of the enrollment (PostgreSQL)
        self.versions: dict[int, int | None] = {}  # id(rendered) -> its stored version

    def look(self, item: Ready, now: dt.datetime) -> Outcome | None:
        """The last look before ``item`` is sent: None to send it, else its settled outcome."""
        self.release()
        self.unchanged = False
        if not self.fast:
            with transaction(self.rt.sessions) as session:
                return last_look(session.connection(), item.job, item.course, now).settled
        if self.conn is None:
            # Autocommit: psycopg sends no BEGIN of its own; the look's script does.
            self.conn = self.rt.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            unsure_of_prepared(self.conn)  # the pool's rollback at its last check-in
        try:
            held = self.conn.begin()  # SQLAlchemy's side of it; the server's BEGIN is scripted
            found = last_look(self.conn, item.job, item.course, now, begin=True)
            if found.settled is not None:
                held.commit()
        except Exception:
            self.close()  # a broken connection is not used again; the caller tries again
            raise
        if found.settled is None:
            self.held = held  # its locks last until the record (or release)
            self.unchanged = found.unchanged
        return found.settled

    def release(self) -> None:
        """Give up the last look's locks without recording anything (the send failed)."""
        held, self.held = self.held, None
        if held is not None:
            try:
                held.rollback()
                assert self.conn is not None
                unsure_of_prepared(self.conn)
            except Exception:  # noqa: BLE001 - a connection already broken
                self.close()

    def sent(self, item: Ready, now: dt.datetime, msg_id: str) -> Outcome:
        held, self.held = self.held, None
        if held is None or self.conn is None:  # SQLite, or the look's transaction was lost
            return record_sent(self.rt, item, now, msg_id)
        try:
            version_id = self._version(item.rendered)
            if version_id is not None and self.unchanged:
                if self._one_statement(item, now, msg_id, version_id):
                    held.commit()  # the server's transaction ended with the statement
                    self.rt.catalog.lesson_versions[digest(item.rendered)] = version_id
                    return Outcome.SENT
                # The reader's zone changed in the instant since the look (nothing else can:
                # the enrollment is locked). Nothing was written, and the transaction is over:
                # record it afresh, the careful way, as on SQLite.
                held.commit()
                return record_sent(self.rt, item, now, msg_id)
            # The careful path, in the look's transaction (the session joins it, and leaves
            # its commit to us): the look found the enrollment changed since the take (the
            # one statement's guard would not match), or this process has not stored the
            # lesson's version yet.
            session = Session(bind=self.conn, expire_on_commit=False)
            try:
                version_id = _record_sent_in(self.rt, session, item, now, msg_id)
                session.flush()
            finally:
                session.close()
            held.commit()
        except Exception:
            self.close()  # a broken connection is not used again; the caller tries again
            raise
        self.rt.catalog.lesson_versions[digest(item.rendered)] = version_id
        return Outcome.SENT

    def sent_then_look(
        self, item: Ready, now: dt.datetime, msg_id: str, then: Ready, then_now: dt.datetime
    ) -> tuple[Outcome, Look | None] | None:
        """Record ``item`` and take the last look before ``then``, the batch's next message, in
        one round trip: the record's statement and COMMIT, then BEGIN and the look's. Returns
        ``item``'s outcome and what the look found (its ``settled`` None: ``then`` may go out,
        its rows locked until its own record), or None for the look when it was not taken after
        all. None when this cannot be done here (the careful record is needed, or not
        PostgreSQL): the caller records and looks one after the other.

        The record is committed before the look begins and before ``then`` is sent, so the
        promise holds: a message the server accepted is recorded before the next one goes.
        """
        held, conn = self.held, self.conn
        if held is None or conn is None or not self.unchanged:
            return None
        version_id = self._version(item.rendered)
        record = _prepared_record(conn.dialect)
        look = look_steps(conn.dialect, then.job, then_now)
        if version_id is None or not scripted(conn, [record, *(step for step, _ in look)]):
            return None
        self.held, self.unchanged = None, False
        params = self._params(item, now, msg_id, version_id)
        try:
            recorded, *looked = run_script(conn, [(record, params), "COMMIT", BEGIN, *look])
            if recorded.fetchone() is None:
                # The reader's zone changed since the look (see ``sent``): nothing was written.
                # Give the next look up and record this one afresh, the careful way.
                self.held = held
                self.release()
                return record_sent(self.rt, item, now, msg_id), None
            self.rt.catalog.lesson_versions[digest(item.rendered)] = version_id
            # SQLAlchemy's transaction stands for the server's new one from here on.
            found = judged(conn, then.job, then.course, then_now, looked)
            if found.settled is not None:
                held.commit()
                return Outcome.SENT, found
        except Exception:
            self.close()  # a broken connection is not used again; the caller records afresh
            raise
        self.held, self.unchanged = held, found.unchanged
        return Outcome.SENT, found

    def _one_statement(self, item: Ready, now: dt.datetime, msg_id: str, version_id: int) -> bool:
        """The record in one statement and the transaction's COMMIT, in one round trip;
        whether it matched (the look's ``unchanged`` came from a script on this connection)."""
        assert self.conn is not None
        step = (_prepared_record(self.conn.dialect), self._params(item, now, msg_id, version_id))
        return run_script(self.conn, [step], commit=True)[0].fetchone() is not None

    @staticmethod
    def _params(item: Ready, now: dt.datetime, msg_id: str, version_id: int) -> dict[str, object]:
        job = item.job
        values = moved_on(item, now)
        return {
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

    def _version(self, rendered: RenderedLesson) -> int | None:
        key = id(rendered)
        if self.versions.get(key) is None:
            self.versions[key] = self.rt.catalog.lesson_versions.get(digest(rendered))
        return self.versions[key]

    def close(self) -> None:
        """Give the connection back (its open transaction, if any, rolled back)."""
        self.held = None
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - a connection already broken
                conn.invalidate()


def _record_sent_to_changed_enrollment(
    session: Session, job: Job, now: dt.datetime, course: Course
) -> None:
    enrollment = session.get(Enrollment, job.enrollment_id, with_for_update=True)
    if enrollment is None:  # forgotten while the message was on its way: nothing to move on
        log.info("delivery %s sent; its reader was deleted meanwhile", job.delivery_id)
        return
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


def record_retry(rt: Runtime, job: Job, now: dt.datetime, error: str, course: Course) -> Outcome:
    """A passing failure about this message: try again later, inside the subscriber's window,
    until the attempts or the hours of the retry budget run out."""
    settings = rt.settings
    with transaction(rt.sessions) as session:
        if not still_ours(session, job, now):
            return Outcome.SKIPPED
        spent = now - budget_start(job) >= dt.timedelta(hours=settings.retry_hours)
        if job.attempts >= settings.max_attempts or spent:
            log.warning(
                "delivery %s failed after %d attempts over %s: %s",
                job.delivery_id,
                job.attempts,
                now - job.created_at,
                error,
            )
            set_delivery(session, job.delivery_id, DeliveryStatus.FAILED, now, last_error=error)
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


def record_relay_failure(
    rt: Runtime, jobs: Sequence[Job], now: dt.datetime, error: str
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
                .where(ours(jobs))
                .values(**waiting_again(pause.retry_at, now), last_error=f"sending paused: {error}")
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


def record_bounce(rt: Runtime, job: Job, now: dt.datetime, error: PermanentMailError) -> Outcome:
    """A 5xx: the delivery fails with the server's words. Only a reply about the mailbox itself
    (no such user, mailbox gone) suppresses the address; a refusal on policy grounds (5.7.x:
    relay denied, DMARC) may be our own set-up's fault and stops this enrollment only."""
    with transaction(rt.sessions) as session:
        if not still_ours(session, job, now):
            return Outcome.SKIPPED
        set_delivery(session, job.delivery_id, DeliveryStatus.FAILED, now, last_error=str(error))
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
