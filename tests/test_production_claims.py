"""Claims under concurrency and at scale: two schedulers ticking at the same instant, bounded
batches, and a due query that reads through its index on PostgreSQL."""

from __future__ import annotations

import collections
import datetime as dt
import email
import enum
import threading
from collections.abc import Callable, Iterator, Sequence
from email.message import Message
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import event, func, select, text, update

from dripcourse.courses.wire import WireMessage, as_wire
from dripcourse.db import transaction
from dripcourse.models import (
    Delivery,
    Enrollment,
    EnrollmentStatus,
)
from dripcourse.people import enrollment
from dripcourse.people.signup import Signup
from dripcourse.runtime import Runtime
from dripcourse.sending import batch as sending
from dripcourse.sending import claim as delivery
from dripcourse.sending import queue_loss, record, take
from dripcourse.sending.take import Outcome
from tests.conftest import make_settings, utc

START = utc(2026, 3, 2, 5)  # a Monday; the course's 07:00 is still ahead everywhere below
ZONES = ["UTC", "America/Chicago", "Europe/Berlin", "Asia/Tokyo", "Australia/Sydney"]


class Recorder:
    """A transport that keeps who was sent what, safely from many threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent: list[tuple[str, str]] = []

    def send(self, msg: Message | WireMessage, deadline: float | None = None) -> None:
        parsed = email.message_from_bytes(as_wire(msg).data)
        with self.lock:
            self.sent.append((str(parsed["To"]), str(parsed["Subject"])))

    def close(self) -> None:
        pass


def enroll(rt: Runtime, size: int, now: dt.datetime, start: str = "today") -> None:
    course = rt.catalog.course("white-coat")
    with transaction(rt.sessions) as session:
        cohort = enrollment.create_cohort(session, "busy", course, start, now)
        for i in range(size):
            signup = Signup(f"r{i:03d}@example.org", "", ZONES[i % len(ZONES)])
            enrollment.enroll(session, cohort, course, signup, now)


def side_by_side(*calls: Callable[[], object]) -> list[object]:
    """Run the calls in threads released at the same instant; re-raise the first failure."""
    gate = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(i: int, call: Callable[[], object]) -> None:
        try:
            gate.wait()
            results[i] = call()
        except BaseException as exc:  # noqa: BLE001 - reported in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]
    return results


def send_all(rt: Runtime, ids: list[int], now: dt.datetime) -> list[Outcome]:
    return [sending.send_delivery(rt, i, now) for i in ids]


@pytest.fixture
def two_schedulers(tmp_path: Path, database_url: str) -> Iterator[tuple[Runtime, Runtime]]:
    """Two runtimes with their own engines, as two beats on two machines would have."""
    settings = make_settings(tmp_path, database_url=database_url, batch_size=7)
    shared = Recorder()
    pair = (Runtime(settings, _transport=shared), Runtime(settings, _transport=shared))
    yield pair
    for rt in pair:
        rt.close()


def test_two_schedulers_ticking_at_the_same_instant_never_duplicate(
    two_schedulers: tuple[Runtime, Runtime],
):
    first, second = two_schedulers
    size, steps, step = 20, 12 * 8 + 1, dt.timedelta(hours=2)
    enroll(first, size, START)
    queued: list[list[int]] = [[], []]
    outcomes: collections.Counter[Outcome] = collections.Counter()

    for n in range(steps):
        now = START + n * step
        before = [len(q) for q in queued]
        # Both beats tick at the very same instant...
        side_by_side(
            partial(delivery.tick, first, now, queued[0].extend),
            partial(delivery.tick, second, now, queued[1].extend),
        )
        fresh = queued[0][before[0] :] + queued[1][before[1] :]
        # ...and every queued task is delivered to two workers at once, as a broker may.
        results = side_by_side(
            partial(send_all, first, fresh, now),
            partial(send_all, second, fresh[::-1], now),
        )
        outcomes.update(o for batch in results for o in batch)  # type: ignore[attr-defined]

    course_length = first.catalog.course("white-coat").length
    everyone = size * course_length
    # No delivery was queued by both schedulers, and none twice by one.
    assert not set(queued[0]) & set(queued[1])
    assert len(queued[0] + queued[1]) == len(set(queued[0] + queued[1])) == everyone
    # Each was sent once; the copy the other worker got found it taken.
    assert outcomes == {Outcome.SENT: everyone, Outcome.SKIPPED: everyone}
    sent = first.transport.sent  # type: ignore[attr-defined]
    assert len(sent) == len(set(sent)) == everyone
    with transaction(first.sessions) as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == everyone
        finished = session.execute(select(Enrollment.status, Enrollment.day)).all()
    assert set(finished) == {(EnrollmentStatus.COMPLETED, course_length)}


def test_both_schedulers_do_share_the_work(two_schedulers: tuple[Runtime, Runtime]):
    # With batches of 7, the first to lock a batch leaves it to the other, who takes the next.
    first, second = two_schedulers
    enroll(first, 60, START, start="now")
    queued: list[list[int]] = [[], []]

    side_by_side(
        lambda: delivery.tick(first, START, queued[0].extend),
        lambda: delivery.tick(second, START, queued[1].extend),
    )

    assert len(queued[0]) + len(queued[1]) == 60
    assert not set(queued[0]) & set(queued[1])


class BatchSpy:
    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, ids: Sequence[int]) -> None:
        self.batches.append(len(ids))


@pytest.mark.parametrize(("size", "batch_size"), [(50, 7), (21, 7), (3, 500)])
def test_due_lessons_are_claimed_and_queued_in_bounded_batches(
    tmp_path: Path, sqlite_url: str, size: int, batch_size: int
):
    rt = Runtime(make_settings(tmp_path, database_url=sqlite_url, batch_size=batch_size))
    enroll(rt, size, START, start="now")
    spy = BatchSpy()

    result = delivery.tick(rt, START, spy)

    assert result.claimed == size
    assert sum(spy.batches) == size
    assert max(spy.batches) <= batch_size
    assert len(spy.batches) == -(-size // batch_size)
    rt.close()


# Where each enrollment's next lesson stands, by subscriber id: a quiet hour (one in a hundred
# due, a third in flight, the rest later today) and a morning rush (a whole cohort due at once,
# every delivery of the day queued again after a Redis flush).
SHAPES = {
    "quiet hour": (
        "CASE WHEN id % 100 = 0 THEN :now - interval '1 minute' WHEN id % 3 = 0 THEN NULL"
        " ELSE :now + (id % 1440) * interval '1 minute' END",
        "CASE WHEN id % 200 = 0 THEN 'pending' ELSE 'sent' END",
    ),
    "morning rush": (":now - interval '1 minute'", "'pending'"),
}


def fill(rt: Runtime, size: int, now: dt.datetime, next_send_at: str, delivery_status: str) -> None:
    """``size`` subscribers with an enrollment and a Day 1 delivery each, written by SQL."""
    params = {"now": now.replace(tzinfo=None), "size": size}
    statements = [
        "INSERT INTO cohorts (name, course_slug, created_at) VALUES ('big', 'white-coat', :now)",
        "INSERT INTO subscribers (email, name, timezone, created_at)"
        " SELECT 's' || n || '@example.org', '', 'UTC', :now FROM generate_series(1, :size) n",
        "INSERT INTO enrollments"
        " (subscriber_id, cohort_id, status, day, next_send_at, created_at, updated_at)"
        f" SELECT id, (SELECT id FROM cohorts), 'active', 1, {next_send_at}, :now, :now"
        " FROM subscribers",
        "INSERT INTO deliveries"
        " (enrollment_id, day, status, next_attempt_at, attempts, created_at, updated_at)"
        f" SELECT id, 1, {delivery_status}, NULL, 1, :now, :now FROM enrollments",
        # Open deliveries are due for the sweep five seconds ago.
        "UPDATE deliveries SET next_attempt_at = :now - interval '5 seconds'"
        " WHERE status = 'pending'",
        "ANALYZE",
    ]
    with rt.engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement), params)


def plan(conn, query) -> str:  # type: ignore[no-untyped-def]
    """What PostgreSQL does for ``query`` as a claim runs it: locking, skipping the locked."""
    sql = query.with_for_update(skip_locked=True).compile(
        conn, compile_kwargs={"literal_binds": True}
    )
    return "\n".join(conn.execute(text(f"EXPLAIN (ANALYZE, COSTS OFF) {sql}")).scalars())


def rows_read(plan_text: str, node: str) -> int:
    line = next(line for line in plan_text.splitlines() if node in line)
    return int(line.split("rows=")[1].split()[0])


@pytest.mark.postgres
@pytest.mark.parametrize("shape", SHAPES)
def test_due_query_reads_only_due_rows_through_the_index_a_batch_at_a_time(
    postgres_url: str, tmp_path: Path, shape: str
):
    batch = 500
    rt = Runtime(make_settings(tmp_path, database_url=postgres_url, batch_size=batch))
    fill(rt, 20_000, START, *SHAPES[shape])
    with rt.engine.connect() as conn, conn.begin():
        due = plan(conn, delivery.due_enrollments(START, batch))
        sweep = plan(conn, delivery.open_deliveries(START, batch))
        conn.rollback()
    print(due, sweep, sep="\n")

    assert "ix_enrollments_next_send_at" in due
    assert "Seq Scan" not in due
    if shape == "morning rush":
        # The index hands rows over in order and the scan stops after one batch: no sort.
        assert "Sort" not in due
        assert rows_read(due, "ix_enrollments_next_send_at") == batch
    else:
        assert rows_read(due, "ix_enrollments_next_send_at") == 200
    assert "Sort" not in sweep
    if shape == "quiet hour":
        assert "ix_deliveries_open" in sweep
    rt.close()


@pytest.mark.postgres
def test_a_tick_skips_rows_another_transaction_holds_instead_of_waiting(
    postgres_url: str, tmp_path: Path
):
    rt = Runtime(make_settings(tmp_path, database_url=postgres_url))
    enroll(rt, 12, START, start="now")
    other = rt.engine.connect()
    held = other.begin()
    # Another beat or worker is in the middle of claiming five of them.
    locked = other.scalars(
        select(Enrollment.id).order_by(Enrollment.id).limit(5).with_for_update()
    ).all()
    claimed: list[int] = []

    (result,) = side_by_side(lambda: delivery.tick(rt, START, claimed.extend))

    assert result.claimed == 7
    held.rollback()
    other.close()
    with transaction(rt.sessions) as session:
        claimed_enrollments = set(
            session.scalars(select(Delivery.enrollment_id).where(Delivery.id.in_(claimed)))
        )
    assert not claimed_enrollments & set(locked)
    # Once the other transaction lets go, the next tick takes the rest.
    assert delivery.tick(rt, START, claimed.extend).claimed == 5
    rt.close()


@pytest.mark.postgres
def test_a_limited_pick_takes_no_more_than_its_limit_whatever_the_plan(
    tmp_path: Path, postgres_url: str
) -> None:
    """A small table makes PostgreSQL run the pick as the inner side of a nested loop, once
    per outer row; with SKIP LOCKED each rerun skipped the rows the statement had just
    updated and picked new ones, so a probe meant to queue one delivery queued all 40, and a
    claim of a batch could take more than its batch."""
    rt = Runtime(make_settings(tmp_path, database_url=postgres_url, batch_size=7))
    try:
        enroll(rt, 40, START, start="now")
        claimed: list[list[int]] = []
        assert delivery.claim_due_lessons(rt, START, claimed.append, limit=1) == 1
        delivery.claim_due_lessons(rt, START, claimed.append)
        assert [len(batch) for batch in claimed] == [1] + [7] * 5 + [4]
        with transaction(rt.sessions) as session:
            session.execute(update(Delivery).values(status="waiting", next_attempt_at=START))
        later = START + dt.timedelta(seconds=1)
        queued: list[list[int]] = []
        assert delivery.requeue_lost(rt, later, queued.append, limit=1) == 1
        with transaction(rt.sessions) as session:
            session.execute(update(Delivery).values(status="pending", queued_at=START))
        assert queue_loss.requeue_queued(rt, later, queued.append) == 40
        assert [len(batch) for batch in queued] == [1] + [7] * 5 + [5]
    finally:
        rt.close()


def explain(conn, statement, params: dict[str, object]) -> str:  # type: ignore[no-untyped-def]
    """EXPLAIN ANALYZE of a statement with bound parameters, as the worker sends it."""
    compiled = statement.compile(dialect=conn.dialect)
    values = {}
    for name, value in compiled.construct_params(params).items():
        if isinstance(value, dt.datetime) and value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        values[name] = str(value) if isinstance(value, enum.Enum) else value
    found = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, COSTS OFF) {compiled.string}", values)
    return "\n".join(found.scalars())


@pytest.mark.postgres
def test_recording_a_sent_lesson_finds_its_enrollment_by_key_during_a_claimed_morning(
    postgres_url: str, tmp_path: Path
) -> None:
    """Statistics taken before a morning's claim see almost no enrollment without a due time;
    the claim then clears it for the whole cohort. The record's guard ("nothing scheduled
    meanwhile": next_send_at IS NULL) made PostgreSQL walk every cleared entry of the due-time
    index instead of the primary key: 5 ms a message at 30,000, the PostgreSQL backends at
    90 % CPU while the workers waited for them."""
    rt = Runtime(make_settings(tmp_path, database_url=postgres_url))
    try:
        fill(rt, 6_000, START, ":now + (id % 1440) * interval '1 minute'", "'sent'")
        with rt.engine.begin() as conn:
            conn.execute(text("ALTER TABLE enrollments SET (autovacuum_enabled = false)"))
            # The morning's claim, after the statistics were taken.
            conn.execute(text("UPDATE enrollments SET next_send_at = NULL WHERE id % 4 <> 0"))
            job = conn.execute(
                text("SELECT max(id) AS id, max(subscriber_id) FROM enrollments WHERE id % 4 = 1")
            ).one()
        item = take.Ready(  # the statements the worker runs, as it runs them
            take.Job(job.id, job.id, 2, 1, "UTC", None, None, START),
            "s@example.org",
            "",
            "",
            rt.catalog.course("white-coat"),
            None,  # type: ignore[arg-type]
            "abcdefghij23",
        )
        values = record.moved_on(item, START)
        one_statement = {
            "p_delivery": job.id,
            "p_enrollment": job.id,
            "p_day": 2,
            "p_seen_paused": None,
            "p_zone": "UTC",
            "p_paused_until": None,
            "p_next_send_at": values["next_send_at"],
            "p_status": EnrollmentStatus.ACTIVE,
            "p_now": START,
            "p_message_id": "<m@example.org>",
            "p_version": None,
        }
        statements = [
            (record.one_statement_record(), one_statement),
            (record.move_on(item.job, values), {}),  # the careful path
        ]
        with rt.engine.connect() as conn, conn.begin():
            # The worker runs the one statement prepared on the server: after a few runs,
            # PostgreSQL may keep a generic plan, made without the values; it must hold too.
            conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
            generic = explain_prepared(conn, record._prepared_record(conn.dialect), one_statement)
            conn.rollback()
        for statement, params in statements:
            with rt.engine.connect() as conn, conn.begin():
                found = explain(conn, statement, params)
                conn.rollback()
            print(found)
            plans = [found, generic] if statement is statements[0][0] else [found]
            for plan in plans:
                assert "enrollments_pkey" in plan
                assert "ix_enrollments_next_send_at" not in plan
                assert "Rows Removed by Filter" not in plan  # the row it wanted, and no other
    finally:
        rt.close()


def explain_prepared(conn, prepared, params: dict[str, object]) -> str:  # type: ignore[no-untyped-def]
    """EXPLAIN ANALYZE of a statement prepared on the server as the worker prepares it
    (sending/prepared.py), executed with ``params``."""
    import psycopg

    cursor = psycopg.ClientCursor(conn.connection.driver_connection)
    cursor.execute(prepared.prepare)
    values = prepared.values(params)
    arguments = ", ".join(f"%({name})s" for name in prepared.order)
    cursor.execute(
        f"EXPLAIN (ANALYZE, COSTS OFF) EXECUTE {prepared.name}({arguments})",
        {name: values[name] for name in prepared.order},
    )
    found = "\n".join(row[0] for row in cursor.fetchall())
    print(found)
    return found


@pytest.mark.postgres
def test_the_take_names_its_batch_in_one_array_and_reads_it_by_primary_key(
    postgres_url: str, tmp_path: Path
) -> None:
    """The take names a batch's deliveries, and then their enrollments, as one array parameter
    each (``db.among``): the same SQL whatever the batch's size, so neither SQLAlchemy nor
    psycopg writes it out again per batch (an IN list did, a third of the take's CPU), and
    PostgreSQL still finds the rows by their keys among thousands."""
    rt = Runtime(make_settings(tmp_path, database_url=postgres_url))
    try:
        fill(rt, 6_000, START, "NULL", "'pending'")
        with rt.engine.begin() as conn:
            ids = conn.scalars(text("SELECT id FROM deliveries ORDER BY id DESC LIMIT 10")).all()
        seen: list[tuple[str, object]] = []

        def keep(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
            seen.append((statement, parameters))

        def take_and_undo(batch: Sequence[int]) -> list[tuple[str, object]]:
            seen.clear()
            session = rt.sessions()
            try:
                take.take(rt, session, batch, START, START + dt.timedelta(minutes=5), {})
            finally:
                session.rollback()
                session.close()
            return [(sql, values) for sql, values in seen if "ANY (" in sql]

        event.listen(rt.engine, "before_cursor_execute", keep)
        try:
            small = take_and_undo(ids[:3])
            large = take_and_undo(ids)
        finally:
            event.remove(rt.engine, "before_cursor_execute", keep)
        assert [sql for sql, _ in small] == [sql for sql, _ in large]
        assert [sql.split()[0] for sql, _ in large] == ["UPDATE", "SELECT"]
        for sql, values in large:
            with rt.engine.connect() as conn, conn.begin():
                found = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, COSTS OFF) {sql}", values)
                plan_text = "\n".join(found.scalars())
                conn.rollback()
            print(plan_text)
            for table in ("deliveries", "enrollments", "subscribers"):
                assert f"Seq Scan on {table}" not in plan_text
            assert ("deliveries_pkey" if sql.startswith("UPDATE") else "enrollments_pkey") in (
                plan_text
            )
    finally:
        rt.close()
