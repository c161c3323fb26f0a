"""Delivery guarantees at the edges of a worker's life: a lease that runs out mid-send, a
forked pool process, and the order of claim, commit, queue and send."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest
from sqlalchemy import select, text

from dripcourse.courses.wire import WireMessage, as_wire
from dripcourse.db import transaction
from dripcourse.models import Delivery, DeliveryStatus, Enrollment, EnrollmentStatus, Suppression
from dripcourse.people import enrollment
from dripcourse.people.signup import check_signup
from dripcourse.runtime import Runtime
from dripcourse.sending import batch as sending
from dripcourse.sending import claim as delivery
from dripcourse.sending.take import Outcome
from dripcourse.sending.transport import PermanentMailError, TransientMailError
from tests.conftest import make_settings, utc

NOW = utc(2026, 11, 25, 12)
LEASE = 60


class Recorder:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, msg: Message | WireMessage, deadline: float | None = None) -> None:
        self.sent.append(as_wire(msg).recipients[0])

    def close(self) -> None:
        pass


class OutlivesItsLease:
    """A server so slow that the lease runs out: meanwhile another worker takes the delivery
    over and sends it; then this server's answer finally comes, and it is a failure."""

    def __init__(self, other: Runtime, delivery_id: int, error: Exception) -> None:
        self.other, self.delivery_id, self.error = other, delivery_id, error
        self.taken_over: Outcome | None = None

    def send(self, msg: Message | WireMessage, deadline: float | None = None) -> None:
        later = NOW + dt.timedelta(seconds=LEASE + 1)
        # The sweep hands the delivery to another worker once the lease has run out.
        delivery.requeue_lost(self.other, later, lambda ids: None)
        self.taken_over = sending.send_delivery(self.other, self.delivery_id, later)
        raise self.error

    def close(self) -> None:
        pass


@pytest.fixture
def one_enrolled(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    """One subscriber whose Day 1 is due at NOW."""
    settings = make_settings(tmp_path, database_url=database_url, send_lease_seconds=LEASE)
    rt = Runtime(settings, _transport=Recorder())
    course = rt.catalog.course("white-coat")
    with transaction(rt.sessions) as session:
        cohort = enrollment.create_cohort(session, "c", course, "now", NOW)
        signup = check_signup("slow@example.org", "Dr. Slow", "UTC")
        enrollment.enroll(session, cohort, course, signup, NOW)
    yield rt
    rt.close()


@pytest.fixture
def one_due(one_enrolled: Runtime) -> tuple[Runtime, int]:
    """The same, with Day 1 claimed and queued."""
    ids: list[int] = []
    delivery.tick(one_enrolled, NOW, ids.extend)
    return one_enrolled, ids[0]


@pytest.mark.parametrize(
    "late_answer",
    [TransientMailError("451 4.4.2 timeout"), PermanentMailError("550 5.1.1 unknown user")],
    ids=["transient", "permanent"],
)
def test_a_late_failure_after_the_lease_ran_out_does_not_undo_the_takeover(
    one_due: tuple[Runtime, int], late_answer: Exception
):
    other, delivery_id = one_due
    slow = Runtime(other.settings, _transport=None)
    slow._transport = OutlivesItsLease(other, delivery_id, late_answer)

    outcome = sending.send_delivery(slow, delivery_id, NOW)

    if other.engine.dialect.name == "postgresql":
        # There the sender's last look keeps the row locked until its answer is recorded: no
        # one takes over a delivery while its sender still talks to the server, and its late
        # answer counts as its own attempt.
        assert slow._transport.taken_over == Outcome.SKIPPED
        assert other.transport.sent == []  # type: ignore[attr-defined]
        assert outcome in (Outcome.RETRY, Outcome.BOUNCED)
        slow.close()
        return
    assert slow._transport.taken_over == Outcome.SENT
    assert outcome == Outcome.SKIPPED
    assert other.transport.sent == ["slow@example.org"]  # type: ignore[attr-defined]
    with transaction(other.sessions) as session:
        row = session.get(Delivery, delivery_id)
        assert row is not None
        assert (row.status, row.attempts, row.next_attempt_at) == (DeliveryStatus.SENT, 2, None)
        assert row.enrollment.status == EnrollmentStatus.ACTIVE
        assert row.enrollment.next_send_at is not None
        assert session.scalars(select(Suppression)).all() == []
    # Nothing is left for the sweep to send a third time.
    later = NOW + dt.timedelta(hours=1)
    assert delivery.requeue_lost(other, later, lambda ids: None) == 0
    slow.close()


def test_deliveries_are_committed_before_they_are_queued(one_enrolled: Runtime):
    rt = one_enrolled
    seen_by_another_connection: list[int] = []

    def enqueue(ids: list[int]) -> None:
        # A worker on another connection must find the rows the moment a task arrives.
        with rt.engine.connect() as conn:
            seen_by_another_connection.extend(
                conn.scalars(select(Delivery.id).where(Delivery.id.in_(ids)))
            )

    result = delivery.tick(rt, NOW, enqueue)

    assert result.claimed == 1
    assert len(seen_by_another_connection) == 1


@pytest.mark.timeout(20)
def test_a_due_row_written_in_another_text_form_is_claimed_once_and_the_tick_returns(
    tmp_path: Path, sqlite_url: str
):
    rt = Runtime(make_settings(tmp_path, database_url=sqlite_url), _transport=Recorder())
    course = rt.catalog.course("white-coat")
    with transaction(rt.sessions) as session:
        cohort = enrollment.create_cohort(session, "c", course, "now", NOW)
        signup = check_signup("odd@example.org", "", "UTC")
        enrollment.enroll(session, cohort, course, signup, NOW)
        # Written by hand in another text form than SQLAlchemy's. A claim that compared the
        # value read back for equality could never take it, and once spun forever on it.
        session.execute(text("UPDATE enrollments SET next_send_at = '2026-11-25 11:00:00'"))

    assert delivery.tick(rt, NOW, lambda ids: None).claimed == 1
    assert delivery.tick(rt, NOW, lambda ids: None).claimed == 0
    rt.close()


@pytest.mark.postgres
def test_a_forked_pool_process_leaves_the_parents_database_connection_alone(
    tmp_path: Path, postgres_url: str
):
    rt = Runtime(make_settings(tmp_path, database_url=postgres_url))
    with rt.engine.connect() as conn:
        parent_backend = conn.scalar(text("SELECT pg_backend_pid()"))
    child = os.fork()
    if child == 0:  # the pool process, as Celery's worker_process_init sees it
        code = 1
        try:
            rt.after_fork()
            with rt.engine.connect() as conn:
                code = 0 if conn.scalar(text("SELECT pg_backend_pid()")) != parent_backend else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    with rt.engine.connect() as conn:
        # Still the parent's own connection from the pool: the child neither used nor ended it.
        assert conn.scalar(text("SELECT pg_backend_pid()")) == parent_backend
    rt.close()


def test_enrollment_waits_for_nothing_while_its_lesson_is_in_flight(
    one_due: tuple[Runtime, int],
):
    rt, _ = one_due
    with transaction(rt.sessions) as session:
        (next_send_at,) = session.scalars(select(Enrollment.next_send_at)).all()
    # NULL is outside every due range: a second tick cannot claim the day again.
    assert next_send_at is None
    assert delivery.tick(rt, NOW + dt.timedelta(days=3), lambda ids: None).claimed == 0
