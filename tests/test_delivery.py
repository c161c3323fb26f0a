"""Claim, send and record: over real SMTP (aiosmtpd) and the file transport."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re
from pathlib import Path

import pytest
from sqlalchemy import select

from dripcourse.db import transaction
from dripcourse.models import (
    Delivery,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Subscriber,
    Suppression,
)
from dripcourse.people import enrollment
from dripcourse.people.signup import check_signup
from dripcourse.runtime import Runtime
from dripcourse.sending import batch as sending
from dripcourse.sending import claim as delivery
from dripcourse.sending.take import Outcome
from tests.conftest import make_settings, utc
from tests.smtp_sink import SMTPSink

NOW = utc(2026, 11, 25, 12)
PEOPLE = [
    ("ana@example.org", "Ana Ruiz", "Europe/Madrid"),
    ("bo@example.org", "Bo Chen", "Asia/Shanghai"),
]


def start_cohort(rt: Runtime, now: dt.datetime = NOW) -> None:
    course = rt.catalog.course("white-coat")
    with transaction(rt.sessions) as session:
        cohort = enrollment.create_cohort(session, "c1", course, "now", now)
        for address, name, zone in PEOPLE:
            enrollment.enroll(session, cohort, course, check_signup(address, name, zone), now)


def claim(rt: Runtime, now: dt.datetime = NOW) -> list[int]:
    ids: list[int] = []
    delivery.tick(rt, now, ids.extend)
    return ids


@pytest.fixture
def smtp_rt(tmp_path: Path, sqlite_url: str, smtp_sink: SMTPSink) -> Runtime:
    rt = Runtime(make_settings(tmp_path, database_url=sqlite_url, mail_url=smtp_sink.url))
    yield rt
    rt.close()


def test_day_one_arrives_over_real_smtp_with_crlf_and_both_parts(
    smtp_rt: Runtime, smtp_sink: SMTPSink
) -> None:
    start_cohort(smtp_rt)
    ids = claim(smtp_rt)
    assert [sending.send_delivery(smtp_rt, i, NOW) for i in ids] == [Outcome.SENT, Outcome.SENT]

    assert sorted(smtp_sink.handler.recipients()) == ["ana@example.org", "bo@example.org"]
    for received in smtp_sink.handler.received:
        assert received.mail_from == "lessons@dripcourse.example"
        msg = received.message
        assert str(msg["Subject"]).startswith("Day 1:")
        assert msg.get_body(("plain",)) is not None and msg.get_body(("html",)) is not None
    with transaction(smtp_rt.sessions) as session:
        rows = session.execute(
            select(Delivery.status, Delivery.attempts, Delivery.message_id)
        ).all()
    assert all(
        status == DeliveryStatus.SENT and attempts == 1 and mid for status, attempts, mid in rows
    )


def test_a_task_delivered_twice_sends_once(smtp_rt: Runtime, smtp_sink: SMTPSink) -> None:
    start_cohort(smtp_rt)
    first = claim(smtp_rt)[0]
    assert sending.send_delivery(smtp_rt, first, NOW) == Outcome.SENT
    assert sending.send_delivery(smtp_rt, first, NOW + dt.timedelta(seconds=1)) == Outcome.SKIPPED
    assert len(smtp_sink.handler.received) == 1


def test_second_tick_claims_nothing(smtp_rt: Runtime) -> None:
    start_cohort(smtp_rt)
    assert len(claim(smtp_rt)) == 2
    assert claim(smtp_rt) == []


def test_a_message_refused_for_now_retries_later_then_delivers_once(
    smtp_rt: Runtime, smtp_sink: SMTPSink
) -> None:
    start_cohort(smtp_rt)
    smtp_sink.handler.busy = True
    smtp_sink.handler.busy_reply = "451 4.3.0 Temporary failure, try again later"
    ids = claim(smtp_rt)
    assert {sending.send_delivery(smtp_rt, i, NOW) for i in ids} == {Outcome.RETRY}
    with transaction(smtp_rt.sessions) as session:
        rows = session.execute(
            select(Delivery.status, Delivery.next_attempt_at, Delivery.last_error)
        ).all()
    for status, next_attempt, error in rows:
        assert status == DeliveryStatus.WAITING
        assert NOW + dt.timedelta(seconds=29) <= next_attempt <= NOW + dt.timedelta(seconds=60)
        assert error.startswith("451")
    # Not before the backoff has passed...
    assert claim(smtp_rt, NOW + dt.timedelta(seconds=10)) == []
    smtp_sink.handler.busy = False
    later = NOW + dt.timedelta(minutes=2)
    again = claim(smtp_rt, later)
    assert sorted(again) == sorted(ids)
    assert {sending.send_delivery(smtp_rt, i, later) for i in again} == {Outcome.SENT}
    assert sorted(smtp_sink.handler.recipients()) == ["ana@example.org", "bo@example.org"]


def test_rejected_recipient_fails_once_and_is_suppressed(
    smtp_rt: Runtime, smtp_sink: SMTPSink
) -> None:
    smtp_sink.handler.reject["bo@example.org"] = "550 5.1.1 No such user"
    start_cohort(smtp_rt)
    outcomes = sorted(sending.send_delivery(smtp_rt, i, NOW) for i in claim(smtp_rt))
    assert outcomes == [Outcome.BOUNCED, Outcome.SENT]
    with transaction(smtp_rt.sessions) as session:
        failed = session.scalars(
            select(Delivery).where(Delivery.status == DeliveryStatus.FAILED)
        ).one()
        assert failed.last_error.startswith("550 5.1.1")
        assert failed.enrollment.status == EnrollmentStatus.BOUNCED
        assert session.scalars(select(Suppression.email)).all() == ["bo@example.org"]
    # Days later nothing more goes to the bounced address.
    later = NOW + dt.timedelta(days=3)
    for i in claim(smtp_rt, later):
        sending.send_delivery(smtp_rt, i, later)
    assert smtp_sink.handler.recipients().count("bo@example.org") == 0


def test_gives_up_after_max_attempts_and_records_why(
    tmp_path: Path, sqlite_url: str, smtp_sink: SMTPSink
) -> None:
    smtp_sink.handler.busy = True
    smtp_sink.handler.busy_reply = "452 4.2.2 Mailbox full"
    rt = Runtime(
        make_settings(tmp_path, database_url=sqlite_url, mail_url=smtp_sink.url, max_attempts=3)
    )
    start_cohort(rt)
    now = NOW
    outcomes = []
    for _ in range(3):
        for i in claim(rt, now):
            outcomes.append(sending.send_delivery(rt, i, now))
        now += dt.timedelta(hours=2)
    assert outcomes == [Outcome.RETRY] * 4 + [Outcome.FAILED] * 2
    with transaction(rt.sessions) as session:
        rows = session.execute(
            select(Delivery.status, Delivery.attempts, Delivery.last_error)
        ).all()
        assert all(
            s == DeliveryStatus.FAILED and a == 3 and "Mailbox full" in e for s, a, e in rows
        )
        assert set(session.scalars(select(Enrollment.status))) == {EnrollmentStatus.FAILED}
        assert session.scalars(select(Suppression)).all() == []  # a 4xx never suppresses
    rt.close()


def test_gives_up_when_the_retry_hours_run_out_before_the_attempts(
    tmp_path: Path, sqlite_url: str, smtp_sink: SMTPSink
) -> None:
    smtp_sink.handler.busy = True
    smtp_sink.handler.busy_reply = "452 4.2.2 Mailbox full"
    rt = Runtime(
        make_settings(tmp_path, database_url=sqlite_url, mail_url=smtp_sink.url, retry_hours=3.0)
    )
    start_cohort(rt)
    outcomes = []
    for hours in (0, 1, 2, 3):
        now = NOW + dt.timedelta(hours=hours)
        outcomes += [sending.send_delivery(rt, i, now) for i in claim(rt, now)]
    # Three hours after the claim the budget is spent: failed at the fourth try, not the 30th.
    assert outcomes == [Outcome.RETRY] * 6 + [Outcome.FAILED] * 2
    rt.close()


def test_the_retry_budget_is_checked_before_an_attempt_not_after_it(
    tmp_path: Path, sqlite_url: str, smtp_sink: SMTPSink
) -> None:
    """A retry that came 37 h after the claim (sending paused for a day and a half) went out
    with a 24 h budget, and only then was the budget found spent."""
    smtp_sink.handler.busy_for = 2
    smtp_sink.handler.busy_reply = "451 4.3.0 Try again later"
    rt = Runtime(
        make_settings(tmp_path, database_url=sqlite_url, mail_url=smtp_sink.url, retry_hours=24.0)
    )
    start_cohort(rt)
    assert [sending.send_delivery(rt, i, NOW) for i in claim(rt)] == [Outcome.RETRY] * 2
    later = NOW + dt.timedelta(hours=37)
    assert [sending.send_delivery(rt, i, later) for i in claim(rt, later)] == [Outcome.FAILED] * 2
    assert smtp_sink.handler.received == []  # no attempt past the budget
    with transaction(rt.sessions) as session:
        assert set(session.scalars(select(Enrollment.status))) == {EnrollmentStatus.FAILED}
        assert set(session.scalars(select(Delivery.last_error))) == {
            "451 4.3.0 Try again later (the retry budget of 24 h ran out before the next try)"
        }
    rt.close()


def test_file_transport_writes_complete_crlf_messages(rt: Runtime, outbox: Path) -> None:
    start_cohort(rt)
    for i in claim(rt):
        sending.send_delivery(rt, i, NOW)
    files = sorted(outbox.glob("*.eml"))
    assert len(files) == 2
    assert not list(outbox.glob(".*.tmp"))
    for path in files:
        data = path.read_bytes()
        assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
        msg = email.message_from_bytes(data, policy=email.policy.default)
        address = msg["To"].addresses[0].addr_spec
        assert address in {p[0] for p in PEOPLE}
        # The name says when, which course and day, and to whom.
        sent = msg["Date"].datetime.astimezone(dt.UTC)
        assert re.fullmatch(
            rf"{sent:%Y%m%d-%H%M%S}-white-coat-day01-{re.escape(address)}-[0-9a-f]{{8}}\.eml",
            path.name,
        ), path.name


def test_unsubscribed_before_the_worker_got_to_it_is_cancelled(rt: Runtime, outbox: Path) -> None:
    start_cohort(rt)
    ids = claim(rt)
    with transaction(rt.sessions) as session:
        ana = session.scalars(select(Enrollment).order_by(Enrollment.id)).first()
        enrollment.unsubscribe(session, ana, NOW)
    outcomes = sorted(sending.send_delivery(rt, i, NOW) for i in ids)
    assert outcomes == [Outcome.SENT, Outcome.SKIPPED]  # the pending one was cancelled at once
    assert len(list(outbox.glob("*.eml"))) == 1


def test_a_policy_refusal_fails_the_lesson_but_keeps_the_address(
    smtp_rt: Runtime, smtp_sink: SMTPSink
) -> None:
    # 5.7.x (DMARC, content policy) may be our set-up's fault, not the subscriber's mailbox.
    smtp_sink.handler.reject["bo@example.org"] = "550 5.7.1 Rejected by DMARC policy"
    start_cohort(smtp_rt)
    outcomes = sorted(sending.send_delivery(smtp_rt, i, NOW) for i in claim(smtp_rt))
    assert outcomes == [Outcome.FAILED, Outcome.SENT]
    with transaction(smtp_rt.sessions) as session:
        assert session.scalars(select(Suppression)).all() == []
        failed = session.scalars(
            select(Delivery).where(Delivery.status == DeliveryStatus.FAILED)
        ).one()
        assert failed.last_error.startswith("550 5.7.1")
        assert failed.enrollment.status == EnrollmentStatus.FAILED


class Broken:
    def send(self, msg, deadline=None) -> None:  # type: ignore[no-untyped-def]
        raise RuntimeError("something nobody foresaw")

    def close(self) -> None:
        pass


def test_an_unforeseen_error_is_recorded_and_retried_then_fails(
    tmp_path: Path, sqlite_url: str
) -> None:
    rt = Runtime(
        make_settings(tmp_path, database_url=sqlite_url, max_attempts=2), _transport=Broken()
    )
    start_cohort(rt)
    first = claim(rt)
    assert {sending.send_delivery(rt, i, NOW) for i in first} == {Outcome.RETRY}
    later = NOW + dt.timedelta(hours=1)
    assert {sending.send_delivery(rt, i, later) for i in claim(rt, later)} == {Outcome.FAILED}
    with transaction(rt.sessions) as session:
        rows = session.execute(
            select(Delivery.status, Delivery.attempts, Delivery.last_error)
        ).all()
    assert rows == [(DeliveryStatus.FAILED, 2, "RuntimeError: something nobody foresaw")] * 2
    rt.close()


def test_a_send_that_crosses_local_midnight_counts_for_the_new_day(rt: Runtime) -> None:
    # Ana is in Madrid (UTC+1): 22:59:50 UTC is 23:59:50 local; the server accepts at 00:00:20.
    start_cohort(rt, utc(2026, 11, 25, 22, 59, 50))
    started = utc(2026, 11, 25, 22, 59, 50)
    accepted = utc(2026, 11, 25, 23, 0, 20)
    claimed = claim(rt, started)
    with transaction(rt.sessions) as session:
        ana = session.scalar(
            select(Delivery.id)
            .join(Enrollment, Delivery.enrollment_id == Enrollment.id)
            .join(Subscriber, Enrollment.subscriber_id == Subscriber.id)
            .where(Subscriber.email == "ana@example.org", Delivery.id.in_(claimed))
        )
    assert sending.send_delivery(rt, ana, started, clock=lambda: accepted) == Outcome.SENT
    with transaction(rt.sessions) as session:
        sent = session.get(Delivery, ana)
        assert sent.sent_at == accepted
        # Day 2 waits for 07:00 on the 27th local: the 26th already had Day 1, just after midnight.
        assert sent.enrollment.next_send_at == utc(2026, 11, 27, 6)
