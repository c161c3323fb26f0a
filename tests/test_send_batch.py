"""The batch send path: one task and one take for many deliveries, with every per-message rule
kept per message (window, bounce, retry, relay pause) and each accepted message recorded
before the next one is sent."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.exc import OperationalError

from dripcourse import db, schedule
from dripcourse.courses.wire import WireMessage
from dripcourse.db import transaction
from dripcourse.models import Delivery, DeliveryStatus, Enrollment, EnrollmentStatus, Subscriber
from dripcourse.people import changes as people
from dripcourse.people import enrollment
from dripcourse.people.pausing import pause as pause_enrollment
from dripcourse.people.signup import check_signup
from dripcourse.runtime import Runtime
from dripcourse.sending import batch as sending
from dripcourse.sending import breaker
from dripcourse.sending import claim as delivery
from dripcourse.sending.take import Outcome
from dripcourse.sending.transport import PermanentMailError, RelayError, TransientMailError
from tests.conftest import make_settings, utc

NOW = utc(2026, 11, 25, 12)  # 13:00 in Madrid, 07:00 in New York, 01:00 in Auckland (+1 day)


@pytest.fixture
def rt(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    runtime = Runtime(make_settings(tmp_path, database_url=database_url))
    yield runtime
    runtime.close()


class Relay:
    """A transport that keeps what it was given and fails where told.

    ``fail`` maps a recipient to the exception its send raises; ``on_send`` runs before each
    message is taken (the test's look at the database, or a clock moving on).
    """

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.fail: dict[str, Exception] = {}
        self.on_send = lambda to: None
        self.lock = threading.Lock()

    def send(self, msg: WireMessage, deadline: float | None = None) -> None:
        (to,) = msg.recipients
        self.on_send(to)
        if to in self.fail:
            raise self.fail[to]
        with self.lock:
            self.sent.append(to)

    def close(self) -> None:
        pass


def cohort_of(rt: Runtime, people: dict[str, str], now: dt.datetime = NOW) -> list[int]:
    """Enroll ``people`` (address: zone) into a cohort starting today and claim Day 1."""
    course = rt.catalog.course("white-coat")
    with transaction(rt.sessions) as session:
        cohort = enrollment.create_cohort(session, "batch", course, "2026-11-25", now)
        for address, zone in people.items():
            signup = check_signup(address, "", zone)
            enrollment.enroll(session, cohort, course, signup, now)
    ids: list[int] = []
    delivery.tick(rt, now, ids.extend)
    return ids


def madrid(n: int) -> dict[str, str]:
    return {f"reader{i:02d}@example.org": "Europe/Madrid" for i in range(n)}


def rows(rt: Runtime) -> dict[str, tuple[DeliveryStatus, int]]:
    with transaction(rt.sessions) as session:
        return {
            email: (status, attempts)
            for email, status, attempts in session.execute(
                select(Subscriber.email, Delivery.status, Delivery.attempts)
                .join(Enrollment, Delivery.enrollment_id == Enrollment.id)
                .join(Subscriber, Enrollment.subscriber_id == Subscriber.id)
            )
        }


def email_of(rt: Runtime, delivery_id: int) -> str:
    with transaction(rt.sessions) as session:
        return session.scalars(
            select(Subscriber.email)
            .join(Enrollment, Enrollment.subscriber_id == Subscriber.id)
            .join(Delivery, Delivery.enrollment_id == Enrollment.id)
            .where(Delivery.id == delivery_id)
        ).one()


def with_relay(rt: Runtime) -> Relay:
    relay = Relay()
    rt._transport = relay  # type: ignore[assignment]
    return relay


def test_a_batch_is_one_take_and_each_message_is_recorded_before_the_next(rt: Runtime) -> None:
    people = madrid(20)
    ids = cohort_of(rt, people)
    relay = with_relay(rt)
    seen_sent_before: list[int] = []
    looking = [False]

    def look(to: str) -> None:
        # What the database holds as the server is about to get this message: every message
        # it already accepted is recorded as sent.
        looking[0] = True
        with transaction(rt.sessions) as session:
            seen_sent_before.append(
                len(session.scalars(select(Delivery.id).where(Delivery.status == "sent")).all())
            )
        looking[0] = False

    relay.on_send = look
    statements: list[str] = []

    def count(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        if not looking[0]:
            statements.append(statement.split()[0].upper())

    event.listen(rt.engine, "before_cursor_execute", count)
    try:
        outcomes = sending.send_batch(rt, ids, NOW)
    finally:
        event.remove(rt.engine, "before_cursor_execute", count)
    assert outcomes == dict.fromkeys(ids, Outcome.SENT)
    assert sorted(relay.sent) == sorted(people)
    assert seen_sent_before == list(range(20))
    # One UPDATE and one SELECT take the whole batch.
    assert statements[:2] == ["UPDATE", "SELECT"]
    recorded = [s for s in statements[2:] if s in {"SELECT", "UPDATE", "INSERT", "WITH"}]
    if rt.engine.dialect.name == "postgresql":
        # Each message: the last look (its reader's row locked, the delivery's compare-and-set),
        # then the record in the same transaction; the first message stores the lesson version
        # and records the careful way, every other one in one statement.
        assert recorded[-19 * 3 :] == ["SELECT", "UPDATE", "WITH"] * 19
        assert len(recorded) <= 19 * 3 + 7
    else:
        # A message: the last look's UPDATE, its reader's zone read again and two UPDATEs (the
        # lesson version, once).
        assert recorded.count("UPDATE") == 3 * len(ids)
        assert len(recorded) <= 4 * len(ids) + 2


def test_a_batch_handed_out_twice_sends_each_message_once(rt: Runtime) -> None:
    ids = cohort_of(rt, madrid(12))
    relay = with_relay(rt)
    first = sending.send_batch(rt, ids, NOW)
    again = sending.send_batch(rt, ids, NOW + dt.timedelta(seconds=5))
    assert set(first.values()) == {Outcome.SENT}
    assert again == dict.fromkeys(ids, Outcome.SKIPPED)
    assert len(relay.sent) == 12 == len(set(relay.sent))


@pytest.mark.postgres
def test_two_workers_with_the_same_batch_at_once_send_each_message_once(
    tmp_path: Path, postgres_url: str
) -> None:
    settings = make_settings(tmp_path, database_url=postgres_url)
    one, two = Runtime(settings), Runtime(settings)
    try:
        ids = cohort_of(one, madrid(40))
        relay = Relay()
        one._transport = two._transport = relay  # type: ignore[assignment]
        results: list[dict[int, Outcome]] = []
        start = threading.Barrier(2)

        def work(rt: Runtime) -> None:
            start.wait()
            results.append(sending.send_batch(rt, ids, NOW))

        threads = [threading.Thread(target=work, args=(rt,)) for rt in (one, two)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(relay.sent) == 40 == len(set(relay.sent))
        merged = [r[i] for r in results for i in ids]
        assert merged.count(Outcome.SENT) == 40 and merged.count(Outcome.SKIPPED) == 40
    finally:
        one.close()
        two.close()


def test_a_suppressed_address_in_the_middle_is_cancelled_and_the_rest_are_sent(
    rt: Runtime,
) -> None:
    people = madrid(9)
    ids = cohort_of(rt, people)
    gone = "reader04@example.org"
    with transaction(rt.sessions) as session:
        enrollment.suppress(session, gone, "complaint: marked as spam", NOW)
    relay = with_relay(rt)
    outcomes = sending.send_batch(rt, ids, NOW)
    assert list(outcomes.values()).count(Outcome.CANCELLED) == 1
    assert sorted(relay.sent) == sorted(set(people) - {gone})
    assert rows(rt)[gone][0] == DeliveryStatus.CANCELLED


def test_a_bounce_and_a_passing_failure_in_a_batch_touch_only_their_own_address(
    rt: Runtime,
) -> None:
    people = madrid(8)
    ids = cohort_of(rt, people)
    relay = with_relay(rt)
    relay.fail["reader02@example.org"] = PermanentMailError("550 5.1.1 no such user")
    relay.fail["reader05@example.org"] = TransientMailError("452 4.2.2 mailbox full")
    outcomes = sending.send_batch(rt, ids, NOW)
    assert sorted(outcomes.values()) == sorted(
        [Outcome.SENT] * 6 + [Outcome.BOUNCED, Outcome.RETRY]
    )
    state = rows(rt)
    assert state["reader02@example.org"] == (DeliveryStatus.FAILED, 1)
    assert state["reader05@example.org"] == (DeliveryStatus.WAITING, 1)
    assert len(relay.sent) == 6


def test_a_relay_failure_stops_the_batch_and_gives_the_rest_back_to_the_pause(
    rt: Runtime,
) -> None:
    people = madrid(10)
    ids = cohort_of(rt, people)
    relay = with_relay(rt)
    relay.fail[email_of(rt, ids[3])] = RelayError("535 5.7.8 authentication failed")
    outcomes = sending.send_batch(rt, ids, NOW)
    assert [outcomes[i] for i in ids] == [Outcome.SENT] * 3 + [Outcome.HELD] * 7
    assert relay.sent == [email_of(rt, i) for i in ids[:3]]
    with transaction(rt.sessions) as session:
        pause = breaker.current(session)
        held = session.execute(
            select(Delivery.status, Delivery.attempts, Delivery.next_attempt_at).where(
                Delivery.id.in_(ids[3:])
            )
        ).all()
    assert pause is not None
    # Waiting for the probe, no attempt spent: a failure of our own set-up is never theirs.
    assert set(held) == {(DeliveryStatus.WAITING, 0, pause.retry_at)}


def test_a_batch_that_runs_into_a_readers_night_holds_that_lesson_until_morning(
    rt: Runtime,
) -> None:
    # 20:58 in Madrid and 14:58 in New York: the batch is slow (a minute per message here).
    start = utc(2026, 11, 25, 19, 58)
    people = {
        "early@example.org": "Europe/Madrid",
        "ny@example.org": "America/New_York",
        "late@example.org": "Europe/Madrid",
    }
    by_email = {email_of(rt, i): i for i in cohort_of(rt, people, start)}
    ids = [by_email[address] for address in people]  # the batch in this order
    relay = with_relay(rt)
    clock = [start]

    def tick() -> dt.datetime:
        clock[0] += dt.timedelta(minutes=1)
        return clock[0]

    outcomes = sending.send_batch(rt, ids, start, clock=tick)
    assert [outcomes[i] for i in ids] == [Outcome.SENT, Outcome.SENT, Outcome.HELD]
    assert relay.sent == ["early@example.org", "ny@example.org"]
    morning = schedule.at_local_time(
        dt.date(2026, 11, 26), dt.time(7), schedule.zone("Europe/Madrid")
    )
    with transaction(rt.sessions) as session:
        late = session.get(Delivery, ids[2])
        assert (late.status, late.attempts, late.next_attempt_at) == (
            DeliveryStatus.WAITING,
            0,
            morning,
        )


def test_the_lease_is_renewed_for_the_unsent_rest_and_a_taken_over_row_is_not_sent(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = cohort_of(rt, madrid(6))
    relay = with_relay(rt)
    lease = rt.settings.send_lease_seconds
    monotonic = [1000.0]
    monkeypatch.setattr(sending.time, "monotonic", lambda: monotonic[0])
    taken_over = ids[4]

    def slow(to: str) -> None:
        # Each message takes 40% of the lease. At the second one, another worker takes
        # row 4 over, as if its lease had run out: its attempt count moves on.
        monotonic[0] += 0.4 * lease
        if len(relay.sent) == 1:
            with transaction(rt.sessions) as session:
                row = session.get(Delivery, taken_over)
                row.attempts += 1
                row.next_attempt_at = NOW + dt.timedelta(hours=1)

    relay.on_send = slow
    outcomes = sending.send_batch(rt, ids, NOW)
    assert outcomes[taken_over] == Outcome.SKIPPED
    assert [outcomes[i] for i in ids if i != taken_over] == [Outcome.SENT] * 5
    assert email_of(rt, taken_over) not in relay.sent and len(relay.sent) == 5
    with transaction(rt.sessions) as session:
        row = session.get(Delivery, taken_over)
        assert (row.status, row.attempts) == (DeliveryStatus.SENDING, 2)  # the other's, untouched


def test_an_unsubscribe_after_the_claim_leaves_that_lesson_out_of_its_batch(rt: Runtime) -> None:
    ids = cohort_of(rt, madrid(3))
    with transaction(rt.sessions) as session:
        gone = session.get(Delivery, ids[1]).enrollment
        enrollment.stop_enrollment(session, gone, EnrollmentStatus.UNSUBSCRIBED, NOW)
    relay = with_relay(rt)
    outcomes = sending.send_batch(rt, ids, NOW)
    assert [outcomes[i] for i in ids] == [Outcome.SENT, Outcome.SKIPPED, Outcome.SENT]
    assert email_of(rt, ids[1]) not in relay.sent and len(relay.sent) == 2
    with transaction(rt.sessions) as session:
        assert session.get(Delivery, ids[1]).status == DeliveryStatus.CANCELLED


def test_a_database_lock_in_mid_batch_is_waited_out_and_the_rest_of_the_batch_goes_out(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path, database_url=sqlite_url)
    rt = Runtime(settings)
    # Statements give up on a lock after 0.2 s here instead of 30 s: the lock outlasts it.
    rt.__dict__["engine"] = db.make_engine(settings.database_url, lock_timeout=0.2)
    ids = cohort_of(rt, madrid(5))
    relay = with_relay(rt)
    unlucky = email_of(rt, ids[1])
    holder = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)

    def busy_and_locked(to: str) -> None:
        if to == unlucky:
            holder.execute("BEGIN IMMEDIATE")  # a long import takes the write lock meanwhile
            raise TransientMailError("451 4.3.0 try again later")

    relay.on_send = busy_and_locked
    waits: list[float] = []

    def wait(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:
            holder.execute("ROLLBACK")  # the import ends

    monkeypatch.setattr(db, "_pause", wait)
    try:
        outcomes = sending.send_batch(rt, ids, NOW)
    finally:
        holder.close()
        rt.close()
    assert [outcomes[i] for i in ids] == [Outcome.SENT, Outcome.RETRY] + [Outcome.SENT] * 3
    assert len(waits) == 2 and len(relay.sent) == 4


def test_an_unsubscribe_while_the_batch_is_under_way_stops_that_readers_lesson(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = cohort_of(rt, madrid(6))
    relay = with_relay(rt)
    monotonic = [1000.0]
    monkeypatch.setattr(sending.time, "monotonic", lambda: monotonic[0])
    leaving = ids[4]

    def meanwhile(to: str) -> None:
        monotonic[0] += 1.5  # the relay is slow today
        if len(relay.sent) == 1:  # while the second message is on its way, one reader leaves
            with transaction(rt.sessions) as session:
                gone = session.get(Delivery, leaving).enrollment
                enrollment.unsubscribe(session, gone, NOW)

    relay.on_send = meanwhile
    outcomes = sending.send_batch(rt, ids, NOW)
    assert outcomes[leaving] == Outcome.CANCELLED
    assert email_of(rt, leaving) not in relay.sent and len(relay.sent) == 5
    with transaction(rt.sessions) as session:
        assert session.get(Delivery, leaving).status == DeliveryStatus.CANCELLED


def test_a_pause_while_the_batch_is_under_way_holds_that_readers_lesson_until_it_ends(
    rt: Runtime,
) -> None:
    ids = cohort_of(rt, madrid(4))
    relay = with_relay(rt)
    pausing = ids[2]

    def meanwhile(to: str) -> None:
        if len(relay.sent) == 1:
            with transaction(rt.sessions) as session:
                row = session.get(Delivery, pausing).enrollment
                assert pause_enrollment(session, row, rt.catalog.course("white-coat"), NOW)

    relay.on_send = meanwhile
    outcomes = sending.send_batch(rt, ids, NOW)
    assert outcomes[pausing] == Outcome.HELD and email_of(rt, pausing) not in relay.sent
    assert {outcomes[i] for i in ids if i != pausing} == {Outcome.SENT}
    # A week: back on the morning seven days later, the pause ending at that local midnight.
    week_later = schedule.at_local_time(
        dt.date(2026, 12, 2), dt.time(0), schedule.zone("Europe/Madrid")
    )
    with transaction(rt.sessions) as session:
        moved = {
            d.id: (d.status, d.attempts, d.next_attempt_at, d.enrollment.day)
            for d in session.scalars(select(Delivery))
        }
        paused = session.get(Delivery, pausing).enrollment
        assert (paused.next_send_at, paused.paused_until) == (None, week_later)
    madrid_7am = schedule.at_local_time(
        dt.date(2026, 12, 2), dt.time(7), schedule.zone("Europe/Madrid")
    )
    # Day 1 waits for the first send time after the pause, its attempt given back.
    assert moved[pausing] == (DeliveryStatus.WAITING, 0, madrid_7am, 0)
    assert {v[0] for k, v in moved.items() if k != pausing} == {DeliveryStatus.SENT}


def test_each_reader_is_greeted_as_set_derived_or_with_the_courses_fallback(
    rt: Runtime,
) -> None:
    course = rt.catalog.course("white-coat")
    with transaction(rt.sessions) as session:
        cohort = enrollment.create_cohort(session, "greet", course, "now", NOW)
        for address, name, greeting in [
            ("set@example.org", "Amara Okafor", "Dr. Amara"),
            ("derived@example.org", "Dr. Bo Chen", ""),
            ("nameless@example.org", "", ""),
        ]:
            signup = check_signup(address, name, "Europe/Madrid")
            person = enrollment.enroll(session, cohort, course, signup, NOW)
            person.subscriber.greeting = greeting
    ids: list[int] = []
    delivery.tick(rt, NOW, ids.extend)
    sent: dict[str, bytes] = {}

    class Keep(Relay):
        def send(self, msg: WireMessage, deadline: float | None = None) -> None:
            sent[msg.recipients[0]] = msg.data

    rt._transport = Keep()  # type: ignore[assignment]
    assert set(sending.send_batch(rt, ids, NOW).values()) == {Outcome.SENT}
    text = {
        to: email.message_from_bytes(data, policy=email.policy.default)
        .get_body(("plain",))
        .get_content()
        for to, data in sent.items()
    }
    # Sent at NOW, 13:00 in Madrid: the afternoon's salutation.
    assert "Good afternoon, Dr. Amara." in text["set@example.org"]
    assert "Good afternoon, Dr. Chen." in text["derived@example.org"]
    assert "Good afternoon, colleague." in text["nameless@example.org"]


def _move(rt: Runtime, address: str, zone: str) -> None:
    course = rt.catalog.course("white-coat")
    with transaction(rt.sessions) as session:
        person = session.scalars(select(Subscriber).where(Subscriber.email == address)).one()
        people.set_timezone(session, person, zone, lambda slug: course, NOW)


def test_a_reader_who_moves_to_auckland_mid_batch_is_not_woken_and_gets_one_lesson_a_day(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = cohort_of(rt, madrid(3))  # 13:00 in Madrid is 01:00 tomorrow in Auckland
    relay = with_relay(rt)
    mover = email_of(rt, ids[2])
    monotonic = [1000.0]
    monkeypatch.setattr(sending.time, "monotonic", lambda: monotonic[0])

    def meanwhile(to: str) -> None:
        monotonic[0] += 1.5
        if not relay.sent:
            _move(rt, mover, "Pacific/Auckland")

    relay.on_send = meanwhile
    outcomes = sending.send_batch(rt, ids, NOW)
    auckland = schedule.zone("Pacific/Auckland")
    seven = schedule.at_local_time(dt.date(2026, 11, 26), dt.time(7), auckland)
    assert outcomes[ids[2]] == Outcome.HELD and mover not in relay.sent
    with transaction(rt.sessions) as session:
        held = session.get(Delivery, ids[2])
        assert (held.status, held.attempts, held.next_attempt_at) == (
            DeliveryStatus.WAITING,
            0,
            seven,
        )


def test_a_reader_who_moved_just_before_the_record_gets_the_next_lesson_in_the_new_zone(
    rt: Runtime,
) -> None:
    ids = cohort_of(rt, madrid(3))
    relay = with_relay(rt)
    mover = email_of(rt, ids[2])
    relay.on_send = lambda to: _move(rt, mover, "America/New_York") if to == mover else None
    assert set(sending.send_batch(rt, ids, NOW).values()) == {Outcome.SENT}
    new_york_7am = schedule.at_local_time(
        dt.date(2026, 11, 26), dt.time(7), schedule.zone("America/New_York")
    )
    with transaction(rt.sessions) as session:
        assert session.get(Delivery, ids[2]).enrollment.next_send_at == new_york_7am


def test_a_long_wait_for_a_send_rate_slot_does_not_carry_a_lesson_past_the_window(
    rt: Runtime,
) -> None:
    start = utc(2026, 11, 25, 19, 59, 50)  # 20:59:50 in Madrid; the window closes at 21:00
    ids = cohort_of(rt, madrid(1), start)
    relay = with_relay(rt)
    clock = [start]

    def slot() -> None:
        clock[0] += dt.timedelta(seconds=20)  # the slot comes 20 s later

    rt.throttle = slot  # type: ignore[method-assign]
    outcomes = sending.send_batch(rt, ids, start, clock=lambda: clock[0])
    assert outcomes == {ids[0]: Outcome.HELD} and relay.sent == []


def test_a_database_outage_at_a_lease_renewal_spends_no_attempt(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = cohort_of(rt, madrid(3))
    relay = with_relay(rt)
    lease = rt.settings.send_lease_seconds
    monotonic = [1000.0]
    monkeypatch.setattr(sending.time, "monotonic", lambda: monotonic[0])

    def away(self, *args):  # type: ignore[no-untyped-def]
        monotonic[0] = self.ends  # the database stays away for the rest of the lease
        raise OperationalError("UPDATE", {}, Exception("could not connect to server"))

    monkeypatch.setattr(sending._Lease, "renew", away)
    relay.on_send = lambda to: monotonic.__setitem__(0, monotonic[0] + 0.6 * lease)
    # The outage reaches the task (which tries again), not the reader's record.
    with pytest.raises(OperationalError):
        sending.send_batch(rt, ids, NOW)
    assert len(relay.sent) == 1
    state = rows(rt)
    assert sorted(attempts for _, attempts in state.values()) == [1, 1, 1]
    assert sorted(str(status) for status, _ in state.values()) == ["sending", "sending", "sent"]


def test_a_send_rate_limiter_that_stays_away_pauses_sending_and_spends_no_attempt(
    tmp_path: Path, database_url: str
) -> None:
    # A send-rate limit is set; the slots are the test's (its Redis is never reached).
    settings = make_settings(
        tmp_path,
        database_url=database_url,
        rate_limit_per_second=50,
        rate_limit_redis_url="redis://127.0.0.1:9/0",
    )
    rt = Runtime(settings)
    try:
        ids = cohort_of(rt, madrid(4))
        relay = with_relay(rt)
        slots = [0]

        def limiter_gone() -> None:
            slots[0] += 1
            if slots[0] == 3:
                raise RelayError("send-rate limiter unavailable: Connection refused")

        rt.throttle = limiter_gone  # type: ignore[method-assign]
        outcomes = sending.send_batch(rt, ids, NOW)
        assert [outcomes[i] for i in ids] == [Outcome.SENT] * 2 + [Outcome.HELD] * 2
        with transaction(rt.sessions) as session:
            assert breaker.current(session) is not None
        assert sorted(attempts for _, attempts in rows(rt).values()) == [0, 0, 1, 1]
        assert len(relay.sent) == 2
        assert slots[0] == 3  # a slot before each message, none skipped
    finally:
        rt.close()


@pytest.mark.postgres
def test_the_recording_connection_cut_between_messages_is_replaced_and_nothing_is_lost(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = Runtime(make_settings(tmp_path, database_url=postgres_url))
    monkeypatch.setattr(db, "_pause", lambda seconds: None)
    admin = db.make_engine(postgres_url)
    try:
        ids = cohort_of(rt, madrid(6))
        relay = with_relay(rt)
        cut: list[int] = []

        def cut_every_connection(to: str) -> None:
            # The server ends every session of ours (a failover, a DBA) while a message goes out.
            if len(relay.sent) in (2, 4):
                with admin.connect() as conn:
                    cut.append(
                        conn.execute(
                            text(
                                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                            )
                        ).scalar_one()
                    )

        relay.on_send = cut_every_connection
        outcomes = sending.send_batch(rt, ids, NOW)
        assert len(cut) == 2 and all(cut)
        assert outcomes == dict.fromkeys(ids, Outcome.SENT)
        assert len(relay.sent) == 6 == len(set(relay.sent))
        assert {status for status, _ in rows(rt).values()} == {DeliveryStatus.SENT}
        # The recording connection ran in autocommit; the pool gets none of that back.
        with rt.engine.connect() as conn:
            assert not conn.connection.dbapi_connection.autocommit
    finally:
        admin.dispose()
        rt.close()
