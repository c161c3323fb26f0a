"""The last look and the record on PostgreSQL: two round trips a message, each a script of
statements prepared on the server, and what keeps that safe (sending/prepared.py)."""

from __future__ import annotations

import datetime as dt
import decimal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg.pq import TransactionStatus
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    Date,
    DateTime,
    Float,
    Integer,
    Interval,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    bindparam,
    event,
    insert,
    select,
    text,
)
from sqlalchemy.engine import make_url

from dripcourse import schedule
from dripcourse.db import transaction
from dripcourse.models import Delivery, DeliveryStatus, Enrollment, Subscriber
from dripcourse.models.base import UTCDateTime
from dripcourse.people import enrollment, suppressions
from dripcourse.people.pausing import pause
from dripcourse.reader import privacy
from dripcourse.runtime import Runtime
from dripcourse.sending import batch as sending
from dripcourse.sending import prepared, record
from dripcourse.sending.take import Outcome
from dripcourse.sending.transport import TransientMailError
from tests.conftest import make_settings
from tests.test_send_batch import NOW, cohort_of, email_of, madrid, with_relay
from tests.workers import wait_until

pytestmark = pytest.mark.postgres


@pytest.fixture
def rt(tmp_path: Path, postgres_url: str) -> Iterator[Runtime]:
    runtime = Runtime(make_settings(tmp_path, database_url=postgres_url))
    yield runtime
    runtime.close()


def test_each_message_is_one_round_trip_its_record_committed_before_the_next_look(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = cohort_of(rt, madrid(8))
    relay = with_relay(rt)
    scripts: list[list[str]] = []
    real = prepared.run_script

    def spy(conn, steps, *, begin=False, commit=False):  # type: ignore[no-untyped-def]
        sent = [*(["BEGIN"] if begin else []), *steps, *(["COMMIT"] if commit else [])]
        scripts.append(
            [s.split()[0] if isinstance(s, str) else s[0].name.split("_")[-1] for s in sent]
        )
        return real(conn, steps, begin=begin, commit=commit)

    for module in ("last_look", "record"):
        monkeypatch.setattr(f"dripcourse.sending.{module}.run_script", spy)
    delivered: list[int] = []

    def sent_before(to: str) -> None:
        # As each message is handed to the server, every message before it is recorded.
        with transaction(rt.sessions) as session:
            delivered.append(
                len(session.scalars(select(Delivery.id).where(Delivery.status == "sent")).all())
            )

    relay.on_send = sent_before
    assert set(sending.send_batch(rt, ids, NOW).values()) == {Outcome.SENT}
    assert len(relay.sent) == 8 and delivered == list(range(8))
    look, record_and_look = ["BEGIN", "lock", "free"], ["sent", "COMMIT", "BEGIN", "lock", "free"]
    # The first message records its lesson's version the careful way (through the session,
    # in its look's transaction); from the second on, a message's record, its COMMIT and the
    # next message's last look are one round trip; the last record goes with its COMMIT.
    assert scripts == [look, look, *[record_and_look] * 6, ["sent", "COMMIT"]]
    with transaction(rt.sessions) as session:
        assert set(session.scalars(select(Delivery.status))) == {DeliveryStatus.SENT}
        idle = session.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' "
                "AND datname = current_database()"
            )
        )
        assert idle == 0


def test_statements_psycopg_deallocates_after_a_failed_send_are_prepared_again(
    rt: Runtime,
) -> None:
    """psycopg, rolling back a transaction on a connection where it prepared statements of its
    own, deallocates every prepared statement of the session, ours too."""
    rt.engine.dispose()

    @event.listens_for(rt.engine, "connect")
    def _prepare_everything(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        dbapi_conn.prepare_threshold = 0  # psycopg prepares each statement it runs

    ids = cohort_of(rt, madrid(5))
    relay = with_relay(rt)
    relay.fail[email_of(rt, ids[2])] = TransientMailError("451 try again later")
    outcomes = sending.send_batch(rt, ids, NOW)
    # The failed send's rollback took our statements with it; the next look prepares them
    # again rather than stop the batch.
    assert [outcomes[i] for i in ids] == [Outcome.SENT] * 2 + [Outcome.RETRY] + [Outcome.SENT] * 2
    assert len(relay.sent) == 4


@pytest.mark.parametrize("default", ["read committed", "repeatable read"])
@pytest.mark.parametrize("which", [1, 2], ids=["mid-batch", "last"])
def test_a_zone_changed_between_the_look_and_the_record_is_recorded_the_careful_way(
    rt: Runtime, which: int, default: str
) -> None:
    """Mid-batch the record goes with the next message's look; last, with its COMMIT alone.
    Whatever the server's default isolation: under repeatable read the record, in the look's
    transaction, would read the zone as it was at the look."""
    name = make_url(rt.settings.database_url).database
    with rt.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(
            text(f"ALTER DATABASE \"{name}\" SET default_transaction_isolation = '{default}'")
        )
    rt.engine.dispose()
    ids = cohort_of(rt, madrid(3))
    relay = with_relay(rt)
    moving = email_of(rt, ids[which])

    def meanwhile(to: str) -> None:
        if to == moving:  # written straight to the row: nothing locks the enrollment
            with rt.engine.begin() as conn:
                conn.execute(
                    text("UPDATE subscribers SET timezone = 'Pacific/Auckland' WHERE email = :e"),
                    {"e": moving},
                )

    relay.on_send = meanwhile
    outcomes = sending.send_batch(rt, ids, NOW)
    assert [outcomes[i] for i in ids] == [Outcome.SENT] * 3
    assert len(relay.sent) == 3
    with transaction(rt.sessions) as session:
        assert set(session.scalars(select(Delivery.status))) == {DeliveryStatus.SENT}
        done = session.get(Delivery, ids[which])
        assert done is not None and done.status == DeliveryStatus.SENT
        enrolled = session.get(Enrollment, done.enrollment_id)
        assert enrolled is not None and enrolled.day == 1
        # The next lesson is planned in the reader's new zone.
        course = rt.catalog.course("white-coat")
        auckland = schedule.next_due(
            course.cadence, schedule.zone("Pacific/Auckland"), last_sent_at=NOW
        )
        madrid_time = schedule.next_due(
            course.cadence, schedule.zone("Europe/Madrid"), last_sent_at=NOW
        )
        assert auckland != madrid_time
        assert enrolled.next_send_at == auckland


def test_a_statement_name_held_by_another_statement_is_not_trusted(rt: Runtime) -> None:
    """Our names on a pooled connection may hold someone else's statement (a session pooler
    not resetting its server connections, another program on the same session): executed,
    such a look says "go" to anyone. A reader forgotten meanwhile must still not be mailed."""
    rt.engine.dispose()

    @event.listens_for(rt.engine, "connect")
    def _taken(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        dbapi_conn.autocommit = True
        dbapi_conn.execute("PREPARE dripcourse_look_free AS SELECT 1")
        dbapi_conn.autocommit = False

    ids = cohort_of(rt, madrid(3))
    relay = with_relay(rt)
    gone = email_of(rt, ids[1])

    def forget_the_next(to: str) -> None:
        if to == email_of(rt, ids[0]):
            with transaction(rt.sessions) as session:
                person = session.scalars(select(Subscriber).where(Subscriber.email == gone)).one()
                privacy.forget_subscriber(session, person, NOW)

    relay.on_send = forget_the_next
    outcomes = sending.send_batch(rt, ids, NOW)
    assert [outcomes[i] for i in ids] == [Outcome.SENT, Outcome.CANCELLED, Outcome.SENT]
    assert gone not in relay.sent and len(relay.sent) == 2


def _enrollment_of(rt: Runtime, delivery_id: int) -> int:
    with transaction(rt.sessions) as session:
        found = session.get(Delivery, delivery_id)
        assert found is not None
        return found.enrollment_id


def _recorded(rt: Runtime, ids: list[int]) -> list[tuple[DeliveryStatus, int]]:
    """Each delivery's status and the day its enrollment stands on."""
    with transaction(rt.sessions) as session:
        return [
            session.execute(
                select(Delivery.status, Enrollment.day)
                .join(Enrollment, Delivery.enrollment_id == Enrollment.id)
                .where(Delivery.id == each)
            ).one()
            for each in ids
        ]


def _backends(rt: Runtime, where: str, *, end: bool = False) -> list[int]:
    """The sessions on the test's database matching ``where``; ``end``: ended by the server."""
    what = "pg_terminate_backend(pid)" if end else "pid"
    with rt.engine.connect() as conn:
        return list(
            conn.scalars(
                text(
                    f"SELECT {what} FROM pg_stat_activity "
                    f"WHERE datname = current_database() AND {where}"
                )
            )
        )


def _pooled(rt: Runtime) -> list[tuple[bool, TransactionStatus]]:
    """Every connection resting in the pool: (autocommit, psycopg's transaction status)."""
    resting = [rt.engine.raw_connection() for _ in range(rt.engine.pool.checkedin())]
    try:
        return [
            (each.driver_connection.autocommit, each.driver_connection.info.transaction_status)
            for each in resting
        ]
    finally:
        for each in resting:
            each.close()


def _hold(rt: Runtime, sql: str, row: int) -> Connection:
    """Another session holding one row's lock until closed."""
    conn = rt.engine.connect()
    conn.begin()
    conn.execute(text(sql), {"id": row})
    return conn


FAULTS = [
    "lock timeout at the lock",
    "lock timeout at the compare-and-set",
    "connection ended while the look waits",
    "connection ended before the script",
]


@pytest.mark.parametrize("fault", FAULTS)
def test_a_record_sent_with_the_next_look_survives_a_failure_at_any_step(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    """Message 1's record, its COMMIT and message 2's last look are one script. Whichever of
    its steps fails (and after the COMMIT, the record is in), message 1 ends recorded once,
    message 2 goes out once, and every connection is back in the pool idle, out of
    autocommit, with no session left idle in a transaction."""
    ids = cohort_of(rt, madrid(4))
    if fault.startswith("lock timeout"):
        name = make_url(rt.settings.database_url).database
        with rt.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"ALTER DATABASE \"{name}\" SET lock_timeout = '200ms'"))
        rt.engine.dispose()
    relay = with_relay(rt)
    after, nxt = email_of(rt, ids[1]), ids[2]
    blockers: list[Connection] = []
    ending: list[threading.Thread] = []
    faulted: list[str] = []

    def end_the_waiting_session() -> None:
        wait_until(lambda: bool(_backends(rt, "wait_event_type = 'Lock'")), 10, "the look")
        _backends(rt, "wait_event_type = 'Lock'", end=True)

    def meanwhile(to: str) -> None:
        if to != after or faulted:
            return
        faulted.append(fault)
        if fault == "connection ended before the script":  # the look's, idle in its transaction
            assert len(_backends(rt, "state LIKE 'idle in%'", end=True)) == 1
            return
        if fault.endswith("compare-and-set"):
            blockers.append(_hold(rt, "SELECT id FROM deliveries WHERE id = :id FOR UPDATE", nxt))
        else:
            locking = "SELECT id FROM enrollments WHERE id = :id FOR UPDATE"
            blockers.append(_hold(rt, locking, _enrollment_of(rt, nxt)))
        if fault == "connection ended while the look waits":
            ending.append(threading.Thread(target=end_the_waiting_session))
            ending[0].start()

    recorded_alone: list[int] = []
    real = record.record_sent

    def record_sent(rt, item, now, msg_id):  # type: ignore[no-untyped-def]
        recorded_alone.append(item.job.delivery_id)
        while blockers:  # the next look may have its rows now
            blockers.pop().close()
        return real(rt, item, now, msg_id)

    monkeypatch.setattr(record, "record_sent", record_sent)
    relay.on_send = meanwhile
    outcomes = sending.send_batch(rt, ids, NOW)
    for each in ending:
        each.join(10)
    assert [outcomes[i] for i in ids] == [Outcome.SENT] * 4
    assert sorted(relay.sent) == sorted(set(relay.sent)) and len(relay.sent) == 4
    # The merged script failed, and message 1 was recorded on its own: once, its day moved on
    # once, as if the script's record (in, when the failure came after its COMMIT) were not.
    assert recorded_alone == [ids[1]]
    assert _recorded(rt, ids) == [(DeliveryStatus.SENT, 1)] * 4
    assert _backends(rt, "state LIKE 'idle in transaction%'") == []
    assert faulted and _pooled(rt) and set(_pooled(rt)) == {(False, TransactionStatus.IDLE)}


CHANGES = {"forget": Outcome.CANCELLED, "pause": Outcome.HELD, "unsubscribe": Outcome.CANCELLED}
CHANGES["suppress"] = Outcome.CANCELLED


def _change(rt: Runtime, what: str, address: str) -> None:
    with transaction(rt.sessions) as session:
        person = session.scalars(select(Subscriber).where(Subscriber.email == address)).one()
        if what == "forget":
            privacy.forget_subscriber(session, person, NOW)
        elif what == "pause":
            pause(session, person.enrollments[0], rt.catalog.course("white-coat"), NOW)
        elif what == "unsubscribe":
            enrollment.unsubscribe(session, person.enrollments[0], NOW)
        else:
            suppressions.add(session, address, "asked by phone", NOW)


@pytest.mark.parametrize("what", CHANGES)
def test_a_change_made_as_the_message_before_goes_out_is_seen_by_the_merged_look(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, what: str
) -> None:
    """Reader 2 is forgotten, paused, unsubscribed or suppressed while message 1 is on the
    wire: the last look that comes with message 1's record finds it, and reader 2 gets
    nothing."""
    ids = cohort_of(rt, madrid(4))
    relay = with_relay(rt)
    before, changed = email_of(rt, ids[1]), email_of(rt, ids[2])
    relay.on_send = lambda to: _change(rt, what, changed) if to == before else None
    scripts: list[list[str]] = []
    real = record.run_script

    def spy(conn, steps, *, begin=False, commit=False):  # type: ignore[no-untyped-def]
        scripts.append(
            [s.split()[0] if isinstance(s, str) else s[0].name.split("_")[-1] for s in steps]
        )
        return real(conn, steps, begin=begin, commit=commit)

    monkeypatch.setattr(record, "run_script", spy)
    outcomes = sending.send_batch(rt, ids, NOW)
    assert scripts[0] == ["sent", "COMMIT", "BEGIN", "lock", "free"]  # message 2's look
    assert [outcomes[i] for i in ids] == [Outcome.SENT] * 2 + [CHANGES[what], Outcome.SENT]
    assert changed not in relay.sent and len(relay.sent) == 3


def test_forgetting_a_reader_the_merged_look_holds_waits_for_their_message(rt: Runtime) -> None:
    """The forget comes while reader 2's lesson (looked at with message 1's record) is on the
    wire: it waits for it, and returns once it is out and recorded; never both not waiting
    and sent."""
    ids = cohort_of(rt, madrid(4))
    relay = with_relay(rt)
    target = email_of(rt, ids[2])
    returned: list[int] = []
    forgetting: list[threading.Thread] = []

    def deleting() -> None:
        _change(rt, "forget", target)
        returned.append(len(relay.sent))

    def meanwhile(to: str) -> None:
        if to == target:
            forgetting.append(threading.Thread(target=deleting))
            forgetting[0].start()
            wait_until(lambda: bool(_backends(rt, "wait_event_type = 'Lock'")), 10, "the forget")
            assert not returned

    relay.on_send = meanwhile
    outcomes = sending.send_batch(rt, ids, NOW)
    forgetting[0].join(10)
    assert returned and returned[0] >= 3 and relay.sent.count(target) == 1
    assert [outcomes[i] for i in ids] == [Outcome.SENT] * 4
    assert _recorded(rt, [ids[0], ids[1], ids[3]]) == [(DeliveryStatus.SENT, 1)] * 3


def test_statements_another_session_deallocated_on_a_pooled_connection_are_prepared_again(
    rt: Runtime,
) -> None:
    """A connection goes back to the pool with our statements; whoever uses it next may roll
    back after psycopg prepared its own (it then deallocates all). The next batch on it asks
    the server again rather than execute what is gone."""
    rt.engine.dispose()

    @event.listens_for(rt.engine, "connect")
    def _prepare_everything(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        dbapi_conn.prepare_threshold = 0

    ids = cohort_of(rt, madrid(6))
    relay = with_relay(rt)
    assert set(sending.send_batch(rt, ids[:3], NOW).values()) == {Outcome.SENT}
    resting = [rt.engine.raw_connection() for _ in range(rt.engine.pool.checkedin())]
    for each in resting:
        cursor = each.driver_connection.cursor()
        cursor.execute("SELECT 1")
        each.driver_connection.rollback()
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE name ^@ 'dripcourse'")
        assert cursor.fetchone() == (0,)
        each.close()
    assert set(sending.send_batch(rt, ids[3:], NOW).values()) == {Outcome.SENT}
    assert len(relay.sent) == 6


def test_a_statements_own_constants_are_written_into_its_prepare_not_sent_each_time(
    rt: Runtime,
) -> None:
    """The statuses the look and the record test and set, and the NULL the record writes, are
    part of the prepared statement (known to its plan), not values quoted into every script:
    only the message's own values are sent."""
    from dripcourse.sending import last_look

    dialect = rt.engine.dialect
    statements = [record._prepared_record(dialect), *last_look._prepared(dialect)]
    for statement in statements:
        assert all(name.startswith("p_") for name in statement.order), statement.order
    record_sql, lock_sql, free_sql = (statement.prepare for statement in statements)
    assert "status='sent'" in record_sql and "enrollments.status = 'active'" in record_sql
    assert "next_attempt_at=NULL::TIMESTAMP" in record_sql
    assert "deliveries.status = 'sending'" in free_sql
    assert "enrollments.status = 'active'" in free_sql
    ids = cohort_of(rt, madrid(2))
    with_relay(rt)
    assert set(sending.send_batch(rt, ids, NOW).values()) == {Outcome.SENT}
    assert _recorded(rt, ids) == [(DeliveryStatus.SENT, 1), (DeliveryStatus.SENT, 1)]


def test_constants_of_any_type_read_the_same_prepared_as_bound(rt: Runtime) -> None:
    """A constant is written into the PREPARE only where its literal surely reads as the
    parameter would (NULL once processed, a string, an integer); a JSON null, an interval,
    bytes and the rest stay parameters. The row a script writes equals SQLAlchemy's."""
    metadata = MetaData()
    table = Table(
        "constants_check",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("s", String),
        Column("z", Integer),
        Column("t", DateTime),
        Column("b", Boolean),
        Column("u", UTCDateTime()),
        Column("f", Float),
        Column("n", Numeric(10, 3)),
        Column("j", JSON),
        Column("i", Interval),
        Column("d", Date),
        Column("by", LargeBinary),
    )
    metadata.create_all(rt.engine)
    constants = {
        "s": "it's 100%% \\ %s ünï",
        "z": 7,
        "t": None,
        "b": True,
        "u": dt.datetime(2024, 3, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=5))),
        "f": 0.1,
        "n": decimal.Decimal("1.235"),
        "j": None,  # JSON's null, not SQL's
        "i": dt.timedelta(days=1, seconds=3, microseconds=7),
        "d": dt.date(2024, 2, 29),
        "by": b"ab\x01'\\",
    }
    statement = insert(table).values(id=bindparam("p_id"), **constants)
    step = prepared.Prepared(statement, rt.engine.dialect, "dripcourse_constants_check")
    assert set(step.order) == {"p_id", "b", "u", "f", "n", "j", "i", "d", "by"}
    assert "'it''s 100%% \\ %s ünï'" in step.prepare and "NULL" in step.prepare
    try:
        with rt.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(statement, {"p_id": 1})
            prepared.run_script(conn, [(step, {"p_id": 2})])
            rows = conn.execute(
                text(
                    "SELECT s, z, t, b, u, f, n, j::text, j IS NULL, i, d, by"
                    " FROM constants_check ORDER BY id"
                )
            ).all()
    finally:
        metadata.drop_all(rt.engine)
    assert len(rows) == 2 and rows[0] == rows[1], rows
