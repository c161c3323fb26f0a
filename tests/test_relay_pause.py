"""A failure that is ours (relay login, TLS, a relay that is down or refuses everyone) pauses
sending as a whole: no subscriber's attempts are spent, nobody's enrollment fails, and sending
resumes by itself once the relay works again."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from dripcourse.db import transaction
from dripcourse.models import Delivery, DeliveryStatus, Enrollment, EnrollmentStatus
from dripcourse.people import enrollment
from dripcourse.people.signup import check_signup
from dripcourse.runtime import Runtime
from dripcourse.sending import batch as sending
from dripcourse.sending import breaker
from dripcourse.sending import claim as delivery
from dripcourse.sending.take import Outcome
from tests.conftest import make_settings, utc
from tests.smtp_sink import SMTPSink

NOW = utc(2026, 11, 25, 12)
PEOPLE = [f"p{i}@example.org" for i in range(5)]


def start(rt: Runtime, now: dt.datetime = NOW) -> None:
    course = rt.catalog.course("white-coat")
    with transaction(rt.sessions) as session:
        cohort = enrollment.create_cohort(session, "c", course, "now", now)
        for address in PEOPLE:
            signup = check_signup(address, "", "Europe/Madrid")
            enrollment.enroll(session, cohort, course, signup, now)


def claim(rt: Runtime, now: dt.datetime) -> list[int]:
    ids: list[int] = []
    delivery.tick(rt, now, ids.extend)
    return ids


def rows(rt: Runtime) -> list[tuple[DeliveryStatus, int]]:
    with transaction(rt.sessions) as session:
        return [
            (r.status, r.attempts)
            for r in session.execute(
                select(Delivery.status, Delivery.attempts).order_by(Delivery.id)
            )
        ]


def paused(rt: Runtime) -> breaker.Pause | None:
    with transaction(rt.sessions) as session:
        return breaker.current(session)


@pytest.fixture
def relay() -> Iterator[tuple[SMTPSink, dict[str, str]]]:
    """A relay that wants a login; the dict is its account list, which a test may fix."""
    accounts = {"course": "old-password"}
    sink = SMTPSink(credentials=accounts).start()
    yield sink, accounts
    sink.stop()


def test_a_wrong_relay_password_pauses_sending_and_spends_no_attempts(
    tmp_path: Path, sqlite_url: str, relay: tuple[SMTPSink, dict[str, str]]
) -> None:
    sink, accounts = relay
    url = f"smtp://course:new-password@127.0.0.1:{sink.port}"
    rt = Runtime(make_settings(tmp_path, database_url=sqlite_url, mail_url=url, max_attempts=2))
    start(rt)
    ids = claim(rt, NOW)
    outcomes = [sending.send_delivery(rt, i, NOW) for i in ids]
    # The first 535 pauses sending; the others are put back without talking to the relay.
    assert outcomes == [Outcome.HELD] * len(PEOPLE)
    assert rows(rt) == [(DeliveryStatus.WAITING, 0)] * len(PEOPLE)
    pause = paused(rt)
    assert pause is not None and "535" in pause.reason
    assert pause.retry_at == NOW + dt.timedelta(seconds=30)

    # While paused, ticks claim and queue nothing, however long it lasts.
    assert claim(rt, NOW + dt.timedelta(seconds=10)) == []
    # Hours of a wrong password, probed every so often: attempts stay untouched.
    now = NOW
    for _ in range(6):
        now = paused(rt).retry_at  # type: ignore[union-attr]
        probe = claim(rt, now)
        assert len(probe) == 1
        assert sending.send_delivery(rt, probe[0], now) == Outcome.HELD
    assert paused(rt).failures == 7  # type: ignore[union-attr]
    assert {attempts for _, attempts in rows(rt)} == {0}

    # The operator fixes the relay account: the next probe goes through and closes the pause.
    accounts["course"] = "new-password"
    now = paused(rt).retry_at  # type: ignore[union-attr]
    probe = claim(rt, now)
    assert [sending.send_delivery(rt, i, now) for i in probe] == [Outcome.SENT]
    assert paused(rt) is None
    rest = claim(rt, now + dt.timedelta(seconds=1))
    assert len(rest) == len(PEOPLE) - 1
    assert {sending.send_delivery(rt, i, now) for i in rest} == {Outcome.SENT}
    assert sink.handler.counts() == {address: 1 for address in PEOPLE}
    assert rows(rt) == [(DeliveryStatus.SENT, 1)] * len(PEOPLE)
    with transaction(rt.sessions) as session:
        assert set(session.scalars(select(Enrollment.status))) == {EnrollmentStatus.ACTIVE}
    rt.close()


@pytest.mark.parametrize(
    "fault",
    ["connection-refused", "421-to-everyone", "relay-access-denied"],
)
def test_a_relay_that_is_down_or_refuses_everyone_pauses_and_resumes_by_itself(
    tmp_path: Path, sqlite_url: str, fault: str
) -> None:
    sink = SMTPSink()
    port = sink.port
    if fault == "421-to-everyone":
        sink.handler.busy = True
    elif fault == "relay-access-denied":
        for address in PEOPLE:
            sink.handler.reject[address] = "554 5.7.1 <x>: Relay access denied"
    if fault != "connection-refused":
        sink.start()
    rt = Runtime(
        make_settings(
            tmp_path,
            database_url=sqlite_url,
            mail_url=f"smtp://127.0.0.1:{port}",
            max_attempts=1,
            smtp_timeout_seconds=2,
        )
    )
    start(rt)
    ids = claim(rt, NOW)
    assert {sending.send_delivery(rt, i, NOW) for i in ids} == {Outcome.HELD}
    assert rows(rt) == [(DeliveryStatus.WAITING, 0)] * len(PEOPLE)
    # The relay comes back.
    if fault == "connection-refused":
        sink.start()
    sink.handler.busy = False
    sink.handler.reject.clear()
    now = paused(rt).retry_at  # type: ignore[union-attr]
    for _ in range(2):  # the probe, then everyone else
        for i in claim(rt, now):
            assert sending.send_delivery(rt, i, now) == Outcome.SENT
        now += dt.timedelta(seconds=1)
    assert sink.handler.counts() == {address: 1 for address in PEOPLE}
    # max_attempts = 1, yet nobody failed: the relay's trouble spent no attempt.
    assert rows(rt) == [(DeliveryStatus.SENT, 1)] * len(PEOPLE)
    rt.close()
    sink.stop()


def test_a_mailbox_full_is_still_the_recipients_trouble_and_spends_attempts(
    tmp_path: Path, sqlite_url: str, smtp_sink: SMTPSink
) -> None:
    smtp_sink.handler.reject[PEOPLE[0]] = "452 4.2.2 Mailbox full"
    rt = Runtime(make_settings(tmp_path, database_url=sqlite_url, mail_url=smtp_sink.url))
    start(rt)
    outcomes = sorted(sending.send_delivery(rt, i, NOW) for i in claim(rt, NOW))
    assert outcomes == [Outcome.RETRY] + [Outcome.SENT] * (len(PEOPLE) - 1)
    assert paused(rt) is None
    rt.close()


def test_status_and_tick_say_that_sending_is_paused_and_why(
    tmp_path: Path, sqlite_url: str
) -> None:
    from dripcourse.cli import cli

    rt = Runtime(make_settings(tmp_path, database_url=sqlite_url))
    with transaction(rt.sessions) as session:
        breaker.trip(session, NOW, "535 5.7.8 Authentication credentials invalid")
    rt.close()
    env = {
        "DRIPCOURSE_DATABASE_URL": sqlite_url,
        "DRIPCOURSE_SECRET_KEY": "k" * 40,
        "DRIPCOURSE_VAR_DIR": str(tmp_path / "var"),
    }
    result = CliRunner().invoke(cli, ["status"], env=env)
    assert result.exit_code == 0, result.output
    assert "sending paused since" in result.output
    assert "535 5.7.8 Authentication credentials invalid" in result.output


def test_tick_inline_whose_probe_went_through_says_sending_resumed_and_nothing_else(
    tmp_path: Path, sqlite_url: str
) -> None:
    """It printed "sending resumed" and then the pause it had just ended."""
    from dripcourse.cli import cli
    from tests.workers import settings_env

    settings = make_settings(tmp_path, database_url=sqlite_url)
    rt = Runtime(settings)
    start(rt)
    with transaction(rt.sessions) as session:
        breaker.trip(session, NOW, "535 5.7.8 Authentication credentials invalid")
    rt.close()
    result = CliRunner().invoke(cli, ["tick", "--inline"], env=settings_env(settings))
    assert result.exit_code == 0, result.output
    assert "1 sent" in result.output
    assert "sending resumed" in result.output
    assert "sending paused since" not in result.output
