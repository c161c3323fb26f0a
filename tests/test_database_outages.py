"""A database that is locked or briefly away: work is tried again, a sent message is never lost."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Sequence
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError

from dripcourse import db
from dripcourse.models import Delivery, DeliveryStatus, Enrollment
from dripcourse.runtime import Runtime
from dripcourse.sending import batch as sending
from dripcourse.sending import claim as delivery
from dripcourse.sending import outages
from dripcourse.sending.take import Outcome
from dripcourse.settings import Settings
from tests.test_delivery import NOW, claim, start_cohort


class LockAfterSending:
    """The real file transport; once the message is written, another writer takes the
    database's write lock, as a long import does, and keeps it until released."""

    def __init__(self, inner, database: str) -> None:  # type: ignore[no-untyped-def]
        self.inner = inner
        self.holder = sqlite3.connect(database, isolation_level=None)
        self.sent = 0

    def send(self, msg: EmailMessage, deadline: float | None = None) -> None:
        self.inner.send(msg, deadline)
        self.sent += 1
        self.holder.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        if self.holder.in_transaction:
            self.holder.execute("ROLLBACK")

    def close(self) -> None:
        self.release()
        self.holder.close()


def test_a_send_waits_out_a_write_lock_longer_than_the_busy_timeout_and_is_recorded(
    settings: Settings, outbox: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = Runtime(settings)
    # Statements give up on the lock after 0.2 s here instead of 30 s: the lock below outlasts it.
    rt.__dict__["engine"] = db.make_engine(settings.database_url, lock_timeout=0.2)
    start_cohort(rt)
    first = claim(rt)[0]
    locker = LockAfterSending(rt.transport, settings.database_url.removeprefix("sqlite:///"))
    rt._transport = locker  # type: ignore[assignment]
    waits: list[float] = []

    def wait(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:
            locker.release()  # the import commits, after three failed tries to record

    monkeypatch.setattr(db, "_pause", wait)

    assert sending.send_delivery(rt, first, NOW) == Outcome.SENT

    assert len(waits) == 3
    assert locker.sent == 1 and len(list(outbox.glob("*.eml"))) == 1
    with db.transaction(rt.sessions) as session:
        row = session.get(Delivery, first)
        assert row is not None and row.status == DeliveryStatus.SENT and row.sent_at == NOW
        assert session.get(Enrollment, row.enrollment_id).day == 1  # type: ignore[union-attr]
    rt.close()  # closes the transport, and with it the other writer


@pytest.mark.parametrize(
    ("error", "outage"),
    [
        (OperationalError("UPDATE", {}, sqlite3.OperationalError("database is locked")), True),
        (OperationalError("SELECT 1", {}, Exception("server closed the connection")), True),
        (IntegrityError("INSERT", {}, Exception("duplicate key")), False),
        (ValueError("naive datetime"), False),
    ],
)
def test_only_a_database_out_of_reach_counts_as_an_outage(error: Exception, outage: bool) -> None:
    assert db.is_outage(error) is outage


def test_waiting_for_the_database_gives_up_after_its_patience(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [0.0]
    monkeypatch.setattr(db.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(db, "_pause", lambda seconds: clock.__setitem__(0, clock[0] + seconds))
    tries = []

    def work() -> None:
        tries.append(clock[0])
        with db.transaction(rt.sessions) as session:
            session.execute(text("SELECT * FROM no_such_table_means_operational_error"))

    with pytest.raises(OperationalError):
        db.retry_outages(work, what="a test", patience=20)
    assert 3 < len(tries) < 10 and tries[-1] >= 10


def test_a_mistake_in_the_work_is_raised_at_once_not_retried(rt: Runtime) -> None:
    tries = []

    def work() -> None:
        tries.append(1)
        raise IntegrityError("INSERT", {}, Exception("duplicate key"))

    with pytest.raises(IntegrityError):
        db.retry_outages(work, what="a test")
    assert tries == [1]


@pytest.mark.parametrize(
    ("retries", "low", "high"),
    [(0, 0.75, 1.0), (1, 1.5, 2.0), (3, 6.0, 8.0), (6, 22.5, 30.0), (20, 22.5, 30.0)],
)
def test_a_task_that_missed_the_database_is_tried_again_within_seconds(
    retries: int, low: float, high: float
) -> None:
    delay = outages.retry_delay(retries, patience=900)
    assert delay is not None and low <= delay <= high


def test_after_the_sweeps_own_wait_a_task_leaves_its_delivery_to_the_sweep() -> None:
    assert outages.retry_delay(5, patience=31) is None  # 1 + 2 + 4 + 8 + 16 seconds waited


def test_a_late_delivery_says_the_database_held_it_up_and_keeps_earlier_errors(
    rt: Runtime,
) -> None:
    start_cohort(rt)
    first, second = claim(rt)
    with db.transaction(rt.sessions) as session:
        session.get(Delivery, second).last_error = "421 busy"  # type: ignore[union-attr]
    outages.note_interrupted(rt, [first, second], NOW, 3)
    with db.transaction(rt.sessions) as session:
        notes = [session.get(Delivery, each).last_error for each in (first, second)]  # type: ignore[union-attr]
    said = "2026-11-25 12:00:00Z database unavailable, task tried again 3x"
    assert notes == [said, f"421 busy; {said}"]


def test_lessons_the_broker_would_not_take_are_queued_by_the_next_tick(rt: Runtime) -> None:
    start_cohort(rt)
    ids = []
    delivery.tick(rt, NOW, ids.extend)
    handed: list[int] = []

    def publish(batch: Sequence[int]) -> None:
        if handed:
            raise ConnectionRefusedError("broker down")
        handed.extend(batch)

    with pytest.raises(ConnectionRefusedError):
        outages.publish_each(rt, [ids[:1], ids[1:2], ids[2:]], publish, NOW)

    again: list[int] = []
    delivery.tick(rt, NOW + dt.timedelta(minutes=1), again.extend)
    assert handed == ids[:1] and sorted(again) == sorted(ids[1:])
