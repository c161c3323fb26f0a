"""The last look and the record on PostgreSQL: two round trips a message, each a script of
statements prepared on the server, and what keeps that safe (sending/prepared.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event, select, text

from dripcourse import schedule
from dripcourse.db import transaction
from dripcourse.models import Delivery, DeliveryStatus, Enrollment, Subscriber
from dripcourse.reader import privacy
from dripcourse.runtime import Runtime
from dripcourse.sending import batch as sending
from dripcourse.sending import prepared
from dripcourse.sending.take import Outcome
from dripcourse.sending.transport import TransientMailError
from tests.conftest import make_settings
from tests.test_send_batch import NOW, cohort_of, email_of, madrid, with_relay

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
        scripts.append([s if isinstance(s, str) else s[0].name.split("_")[-1] for s in sent])
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


@pytest.mark.parametrize("which", [1, 2], ids=["mid-batch", "last"])
def test_a_zone_changed_between_the_look_and_the_record_is_recorded_the_careful_way(
    rt: Runtime, which: int
) -> None:
    """Mid-batch the record goes with the next message's look; last, with its COMMIT alone."""
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
