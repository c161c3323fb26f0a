"""What a person or an operator does while that person's lesson is on its way (queued, being
sent, waiting for a retry) is honoured or refused with the reason, never accepted and ignored;
and one person's change never holds back anyone else's lesson."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from dripcourse.db import transaction
from dripcourse.errors import InputError
from dripcourse.models import Delivery, DeliveryStatus, Enrollment, EnrollmentStatus, Subscriber
from dripcourse.people import changes as people
from dripcourse.people import csv_file, enrollment, importing
from dripcourse.reader import privacy
from dripcourse.runtime import Runtime
from dripcourse.sending import batch as sending
from dripcourse.sending import claim
from dripcourse.sending.record import record_sent
from dripcourse.sending.take import Outcome, take
from dripcourse.sending.transport import TransientMailError
from tests.conftest import make_settings
from tests.test_send_batch import NOW, Relay, cohort_of, email_of, madrid, with_relay
from tests.workers import wait_until


@pytest.fixture
def rt(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    runtime = Runtime(make_settings(tmp_path, database_url=database_url))
    yield runtime
    runtime.close()


def forget(rt: Runtime, address: str, now: dt.datetime = NOW) -> None:
    """What `dripcourse forget --yes` and the reader's "Delete everything about me" do."""
    with transaction(rt.sessions) as session:
        privacy.forget_subscriber(session, privacy.find_subscriber(session, address), now)


def delivery_of(rt: Runtime, delivery_id: int) -> Delivery | None:
    with transaction(rt.sessions) as session:
        return session.get(Delivery, delivery_id)


# -- 1. forget while the lesson is on its way --------------------------------------------


def test_readers_forgotten_mid_batch_get_nothing_and_everyone_else_is_served(
    rt: Runtime,
) -> None:
    ids = cohort_of(rt, madrid(6))
    relay = with_relay(rt)
    leaving = [email_of(rt, ids[2]), email_of(rt, ids[4])]

    def meanwhile(to: str) -> None:
        if len(relay.sent) == 1:  # while the second message is on its way, two delete all
            for address in leaving:
                forget(rt, address)

    relay.on_send = meanwhile
    outcomes = sending.send_batch(rt, ids, NOW)  # no AssertionError from the record either
    assert not set(leaving) & set(relay.sent)
    assert len(relay.sent) == 4
    expected = [Outcome.SENT, Outcome.SENT, Outcome.CANCELLED, Outcome.SENT, Outcome.CANCELLED]
    assert [outcomes[i] for i in ids] == [*expected, Outcome.SENT]
    # Nobody else's delivery is left in "sending" for the lease to run out.
    with transaction(rt.sessions) as session:
        assert set(session.scalars(select(Delivery.status))) == {DeliveryStatus.SENT}


def test_a_delivery_deleted_under_the_look_again_step_counts_as_cancelled(rt: Runtime) -> None:
    ids = cohort_of(rt, madrid(3))
    outcomes: dict[int, Outcome] = {}
    with transaction(rt.sessions) as session:
        ready, _ = take(rt, session, ids, NOW, NOW + dt.timedelta(minutes=5), outcomes)
    forget(rt, ready[1].email)
    dropped, _ = sending._look_again_at(rt, [r.job for r in ready], NOW)
    assert dropped == {ids[1]: Outcome.CANCELLED}


def test_recording_a_lesson_whose_reader_was_forgotten_meanwhile_does_not_fail(
    rt: Runtime,
) -> None:
    ids = cohort_of(rt, madrid(2))
    outcomes: dict[int, Outcome] = {}
    with transaction(rt.sessions) as session:
        ready, _ = take(rt, session, ids, NOW, NOW + dt.timedelta(minutes=5), outcomes)
    forget(rt, ready[0].email)
    # The server had the message before the deletion: the record finds nothing to move on.
    assert record_sent(rt, ready[0], NOW, "<1@course.example.org>") == Outcome.SENT
    assert record_sent(rt, ready[1], NOW, "<2@course.example.org>") == Outcome.SENT
    assert delivery_of(rt, ids[1]).status == DeliveryStatus.SENT  # type: ignore[union-attr]


@pytest.mark.postgres
def test_forgetting_a_reader_whose_lesson_is_on_the_wire_waits_for_that_one_message(
    tmp_path: Path, postgres_url: str
) -> None:
    rt = Runtime(make_settings(tmp_path, database_url=postgres_url))
    try:
        ids = cohort_of(rt, madrid(3))
        relay = with_relay(rt)
        target = email_of(rt, ids[1])
        returned: list[int] = []
        forgetting: list[threading.Thread] = []

        def deleting() -> None:
            forget(rt, target)
            returned.append(len(relay.sent))

        def meanwhile(to: str) -> None:
            if to == target:  # the reader presses "Delete everything" while it is on the wire
                forgetting.append(threading.Thread(target=deleting))
                forgetting[0].start()
                wait_until(lambda: _waiting_for_a_lock(rt), 10, "the forget to wait")
                assert not returned

        relay.on_send = meanwhile
        outcomes = sending.send_batch(rt, ids, NOW)
        forgetting[0].join(10)
        # The forget returned only once that message was out and recorded; no error.
        assert returned and returned[0] >= 2 and relay.sent[1] == target
        assert [outcomes[i] for i in ids] == [Outcome.SENT] * 3
        assert delivery_of(rt, ids[1]) is None and len(relay.sent) == 3
    finally:
        rt.close()


@pytest.mark.postgres
def test_a_reader_who_leaves_while_their_lesson_is_recorded_has_no_next_lesson(
    tmp_path: Path, postgres_url: str
) -> None:
    """The unsubscribe read the enrollment (no next lesson: claimed) before the record gave it
    tomorrow's; its write must still clear it, or status shows a lesson due to someone gone."""
    rt = Runtime(make_settings(tmp_path, database_url=postgres_url))
    try:
        (delivery_id,) = cohort_of(rt, madrid(1))
        with rt.sessions() as session, session.begin():
            leaving = session.scalars(select(Enrollment)).one()
            assert leaving.next_send_at is None  # claimed: its lesson is on its way
            with_relay(rt)
            assert sending.send_batch(rt, [delivery_id], NOW) == {delivery_id: Outcome.SENT}
            enrollment.stop_enrollment(session, leaving, EnrollmentStatus.UNSUBSCRIBED, NOW)
        with transaction(rt.sessions) as session:
            gone = session.scalars(select(Enrollment)).one()
            assert gone.status == EnrollmentStatus.UNSUBSCRIBED and gone.day == 1
            assert gone.next_send_at is None
    finally:
        rt.close()


def _waiting_for_a_lock(rt: Runtime) -> bool:
    with rt.engine.connect() as conn:
        return bool(
            conn.scalar(
                text(
                    "select count(*) from pg_stat_activity "
                    "where wait_event_type = 'Lock' and datname = current_database()"
                )
            )
        )


# -- 2. pause, unenroll, move, set-day while the lesson is on its way ---------------------


def _enrollment_of(session, address: str) -> Enrollment:  # type: ignore[no-untyped-def]
    return session.scalars(
        select(Enrollment).join(Subscriber).where(Subscriber.email == address)
    ).one()


def change(rt: Runtime, what: str, address: str, now: dt.datetime) -> people.Change:
    """The operator's command, as `dripcourse WHAT ADDRESS` runs it."""
    course = rt.catalog.course("white-coat")
    with transaction(rt.sessions) as session:
        chosen = _enrollment_of(session, address)
        if what == "pause":
            return people.pause(session, chosen, course, now, days=3)
        if what == "unenroll":
            return people.unenroll(session, chosen, course, now)
        if what == "move":
            target = enrollment.create_cohort(session, "later", course, "2026-12-01", now)
            return people.move(session, chosen, target, lambda slug: course, now)
        return people.set_day(session, chosen, course, 3, now)


def _retry_time(rt: Runtime, delivery_id: int) -> dt.datetime:
    row = delivery_of(rt, delivery_id)
    assert row is not None and row.status == DeliveryStatus.WAITING
    assert row.next_attempt_at is not None
    return row.next_attempt_at


def _sweep_and_send(rt: Runtime, relay: Relay, now: dt.datetime) -> dict[int, Outcome]:
    queued: list[int] = []
    claim.tick(rt, now, queued.extend)
    return sending.send_batch(rt, queued, now) if queued else {}


WHERE = ["queued", "being sent", "waiting for a retry"]


def _on_its_way(
    rt: Runtime, where: str, act: Callable[[], object]
) -> tuple[list[int], Relay, dt.datetime]:
    """Three readers' Day 1 claimed; the second one's lesson is ``where`` when ``act`` runs.
    Returns the ids, the relay, and the moment the batch (or the retry) was sent."""
    ids = cohort_of(rt, madrid(3))
    relay = with_relay(rt)
    target = email_of(rt, ids[1])
    if where == "queued":
        act()
        sending.send_batch(rt, ids, NOW)
        return ids, relay, NOW
    if where == "being sent":
        first = email_of(rt, ids[0])
        relay.on_send = lambda to: act() if to == first else None
        sending.send_batch(rt, ids, NOW)
        relay.on_send = lambda to: None
        return ids, relay, NOW
    relay.fail[target] = TransientMailError("451 4.3.0 try again later")
    sending.send_batch(rt, ids, NOW)
    del relay.fail[target]
    at = max(_retry_time(rt, ids[1]), NOW) + dt.timedelta(seconds=1)
    act()
    _sweep_and_send(rt, relay, at)
    return ids, relay, at


@pytest.mark.parametrize("where", WHERE)
def test_a_pause_while_the_lesson_is_on_its_way_holds_it_until_the_pause_ends(
    rt: Runtime, where: str
) -> None:
    done: list[people.Change] = []
    ids, relay, _ = _on_its_way(
        rt, where, lambda: done.append(change(rt, "pause", "reader01@example.org", NOW))
    )
    assert done and "held until the pause ends" in str(done[0])
    assert "reader01@example.org" not in relay.sent and len(relay.sent) == 2
    held = delivery_of(rt, ids[1])
    assert held is not None and held.status == DeliveryStatus.WAITING
    assert held.attempts == (1 if where == "waiting for a retry" else 0)  # nothing spent
    with rt.sessions() as session:
        paused_until = session.scalar(
            select(Enrollment.paused_until).where(Enrollment.id == held.enrollment_id)
        )
    # Three days: back on the morning three days later (the pause ends at that local midnight).
    assert paused_until is not None and NOW + dt.timedelta(
        days=2
    ) < paused_until <= NOW + dt.timedelta(days=3)
    assert held.next_attempt_at is not None and held.next_attempt_at >= paused_until
    # Nothing goes to them during the pause; at its end the held Day 1 does, once.
    _sweep_and_send(rt, relay, paused_until - dt.timedelta(minutes=1))
    assert "reader01@example.org" not in relay.sent
    assert _sweep_and_send(rt, relay, held.next_attempt_at)[ids[1]] == Outcome.SENT
    assert relay.sent.count("reader01@example.org") == 1


@pytest.mark.parametrize("where", WHERE)
def test_unenroll_while_the_lesson_is_on_its_way_cancels_it(rt: Runtime, where: str) -> None:
    done: list[people.Change] = []
    ids, relay, _ = _on_its_way(
        rt, where, lambda: done.append(change(rt, "unenroll", "reader01@example.org", NOW))
    )
    assert done and "removed" in str(done[0])
    assert "reader01@example.org" not in relay.sent and len(relay.sent) == 2
    cancelled = delivery_of(rt, ids[1])
    assert cancelled is not None and cancelled.status == DeliveryStatus.CANCELLED


@pytest.mark.parametrize("what", ["move", "set-day"])
@pytest.mark.parametrize("where", WHERE)
def test_move_and_set_day_while_the_lesson_is_on_its_way_are_refused_with_the_reason(
    rt: Runtime, what: str, where: str
) -> None:
    refused: list[str] = []

    def act() -> None:
        with pytest.raises(InputError) as caught:
            change(rt, what, "reader01@example.org", NOW)
        refused.append(str(caught.value))

    ids, relay, _ = _on_its_way(rt, where, act)
    reason = {
        "queued": "Day 1 is queued to go out to them now; try again in a minute",
        "being sent": "Day 1 is being sent to them right now; try again in a minute",
        "waiting for a retry": "Day 1 waits to go out at 2026-11-25",
    }[where]
    assert refused and f"{what} is refused while a lesson is on its way: {reason}" in refused[0]
    # Refused means unchanged: the lesson goes out as planned, once.
    assert relay.sent.count("reader01@example.org") == 1
    with transaction(rt.sessions) as session:
        kept = _enrollment_of(session, "reader01@example.org")
        assert (kept.cohort.name, kept.day, kept.status) == ("batch", 1, EnrollmentStatus.ACTIVE)


# -- 3. two imports at once ------------------------------------------------------------


def _csv(tmp_path: Path, name: str, numbers: range) -> Path:
    path = tmp_path / f"{name}.csv"
    rows = [f"doc{i:02d}@example.org,Dr. {i},Europe/Madrid" for i in numbers]
    path.write_text("email,name,timezone\n" + "\n".join(rows) + "\n")
    return path


@pytest.mark.postgres
@pytest.mark.parametrize("skip_existing", [False, True], ids=["refused", "skip-existing"])
@pytest.mark.parametrize("into", ["one cohort", "two cohorts"])
def test_two_imports_at_once_with_overlapping_rows_end_in_one_clear_answer(
    tmp_path: Path, postgres_url: str, into: str, skip_existing: bool
) -> None:
    rt = Runtime(make_settings(tmp_path, database_url=postgres_url))
    course = rt.catalog.course("white-coat")
    with transaction(rt.sessions) as session:
        for name in ("spring", "summer"):
            enrollment.create_cohort(session, name, course, "2026-12-01", NOW)
    first = csv_file.read_csv(_csv(tmp_path, "first", range(0, 10)), None)
    second = csv_file.read_csv(_csv(tmp_path, "second", range(5, 15)), None)
    second_cohort = "spring" if into == "one cohort" else "summer"
    outcome: list[object] = []

    def second_import() -> None:
        try:
            with transaction(rt.sessions) as session:
                target = enrollment.get_cohort(session, second_cohort)
                outcome.append(
                    importing.import_rows(
                        session, target, course, second, NOW, skip_existing=skip_existing
                    )
                )
        except Exception as exc:  # noqa: BLE001 - what the operator would see is the point
            outcome.append(exc)

    try:
        with transaction(rt.sessions) as session:
            importing.import_rows(
                session, enrollment.get_cohort(session, "spring"), course, first, NOW
            )
            other = threading.Thread(target=second_import)
            other.start()
            # The second one reads, or waits, while the first has not committed yet.
            wait_until(lambda: _waiting_for_a_lock(rt), 10, "the second import to wait")
        other.join(30)
        (answer,) = outcome
        if into == "one cohort" and skip_existing:
            # It waited for the first and then skipped the five people already in the cohort.
            assert isinstance(answer, importing.ImportReport)
            assert (answer.enrolled, answer.skipped) == (5, 5)
        else:
            assert isinstance(answer, importing.ImportRefused), repr(answer)
            message = str(answer)
            assert "Traceback" not in message and "IntegrityError" not in message
            for line in range(2, 7):  # doc05 .. doc09: lines 2 to 6 of the second file
                assert f"second.csv:{line}: email: doc{line + 3:02d}@example.org" in message
            assert message.endswith("nothing was imported") or "run it again" in message
        with transaction(rt.sessions) as session:
            enrolled = session.scalar(select(func.count()).select_from(Enrollment))
        assert enrolled == (15 if into == "one cohort" and skip_existing else 10)
    finally:
        rt.close()
