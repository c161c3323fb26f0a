"""What each bounce reason and complaint type does to a subscriber (docs/inbound.md, Bounces).

Every message here comes to the subscriber's bounce address through ``inbound.process``, as
the listener, the pipe and the poll hand it on; ``apply_bounce`` and ``apply_complaint`` are
also called directly, as a provider's webhook does.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from freezegun import freeze_time
from sqlalchemy import select

from dripcourse.cli import cli
from dripcourse.db import transaction
from dripcourse.inbound import route as inbound
from dripcourse.inbound.bounce_reasons import Family
from dripcourse.inbound.bounces import Bounce, SoftRule
from dripcourse.inbound.complaints import Complaint, Reaction
from dripcourse.inbound.effects import apply_bounce, apply_complaint
from dripcourse.links import BOUNCE, REPLY
from dripcourse.models import (
    Delivery,
    DeliveryProblem,
    Enrollment,
    EnrollmentStatus,
    Reflection,
    Suppression,
)
from dripcourse.models import InboundKind as Kind
from dripcourse.people.status import deliverability_line, deliverability_warnings
from dripcourse.runtime import Runtime
from tests.conftest import make_settings, utc
from tests.test_web_support import address, enroll, send_days
from tests.workers import settings_env

DOMAIN = "reply.course.example.org"
ANA = "ana@example.org"
NOW = utc(2025, 3, 5, 21)
_ids = itertools.count(1)


@pytest.fixture
def rt(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    runtime = Runtime(make_settings(tmp_path, database_url=database_url, reply_domain=DOMAIN))
    yield runtime
    runtime.close()


@pytest.fixture
def ana(rt: Runtime) -> int:
    """Enrolled, has had Days 1-3."""
    enrollment_id = enroll(rt, ANA)
    send_days(rt, 3)
    return enrollment_id


def dsn(
    rt: Runtime,
    enrollment_id: int,
    status: str,
    diagnostic: str,
    *,
    action: str = "failed",
    day: int = 3,
    purpose: str = BOUNCE,
) -> bytes:
    """An RFC 3464 report about ANA to her bounce address, as a Postfix server writes it."""
    to = address(rt, purpose, enrollment_id, day, DOMAIN)
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\r\n"
        f"To: <{to}>\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <dsn{next(_ids)}@mx.example.org>\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\n"
        "Your message could not be delivered to one or more recipients.\r\n\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.org\r\n\r\n"
        f"Final-Recipient: rfc822; {ANA}\r\n"
        f"Action: {action}\r\n"
        f"Status: {status}\r\n"
        f"Diagnostic-Code: smtp; {diagnostic}\r\n\r\n"
        "--b--\r\n"
    ).encode()


def exim(rt: Runtime, enrollment_id: int, why: str, *, purpose: str = BOUNCE) -> bytes:
    """A bounce in Exim's own prose: no delivery-status part at all."""
    to = address(rt, purpose, enrollment_id, 3, DOMAIN)
    return (
        "From: Mail Delivery System <Mailer-Daemon@mx.example.org>\r\n"
        f"To: {to}\r\n"
        "Subject: Mail delivery failed: returning message to sender\r\n"
        f"Message-ID: <exim{next(_ids)}@mx.example.org>\r\n"
        f"X-Failed-Recipients: {ANA}\r\n"
        "Auto-Submitted: auto-replied\r\n\r\n"
        "This message was created automatically by mail delivery software.\r\n\r\n"
        "A message that you sent could not be delivered to one or more of its\r\n"
        "recipients. This is a permanent error. The following address(es) failed:\r\n\r\n"
        f"  {ANA}\r\n    {why}\r\n\r\n"
        "------ This is a copy of the message, including all the headers. ------\r\n\r\n"
        "Subject: Day 3: Small boundaries on a real rota\r\n\r\nThe lesson.\r\n"
    ).encode()


def arf(rt: Runtime, enrollment_id: int, feedback_type: str, *, purpose: str = BOUNCE) -> bytes:
    to = address(rt, purpose, enrollment_id, 3, DOMAIN)
    return (
        "From: Feedback Loop <fbl@isp.example.net>\r\n"
        f"To: <{to}>\r\n"
        "Subject: Feedback report\r\n"
        f"Message-ID: <arf{next(_ids)}@isp.example.net>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="a"\r\n\r\n'
        "--a\r\nContent-Type: text/plain\r\n\r\nA feedback report.\r\n\r\n"
        "--a\r\nContent-Type: message/feedback-report\r\n\r\n"
        f"Feedback-Type: {feedback_type}\r\nUser-Agent: ExampleFBL/1.0\r\nVersion: 1\r\n\r\n"
        "--a\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        "From: The White Coat Reset <lessons@dripcourse.example>\r\n"
        "To: <redacted@isp.example.net>\r\n\r\n"
        "--a--\r\n"
    ).encode()


def receive(rt: Runtime, raw: bytes, now: dt.datetime = NOW) -> inbound.Decision:
    with transaction(rt.sessions) as session:
        return inbound.process(session, raw, rt.inbound, now=now)


def suppressed(rt: Runtime) -> str | None:
    with transaction(rt.sessions) as session:
        return session.scalar(select(Suppression.reason).where(Suppression.email == ANA))


def status_of(rt: Runtime, enrollment_id: int) -> EnrollmentStatus:
    with transaction(rt.sessions) as session:
        found = session.get(Enrollment, enrollment_id)
        assert found is not None
        return found.status


def last_error(rt: Runtime, enrollment_id: int, day: int = 3) -> str | None:
    with transaction(rt.sessions) as session:
        return session.scalar(
            select(Delivery.last_error).where(
                Delivery.enrollment_id == enrollment_id, Delivery.day == day
            )
        )


def warnings(rt: Runtime, now: dt.datetime = NOW) -> list[tuple[str, str, int]]:
    with transaction(rt.sessions) as session:
        return [(w.kind, w.reason, w.count) for w in deliverability_warnings(session, now)]


# Bounces by reason family


@pytest.mark.parametrize(
    ("status", "diagnostic"),
    [
        ("5.1.1", "550 5.1.1 <ana@example.org>: Recipient address rejected: User unknown"),
        # A generic 5.0.0 hiding the real code in the diagnostic.
        ("5.0.0", "550 5.1.1 The email account that you tried to reach does not exist"),
        ("5.1.2", "550 5.1.2 Host or domain name not found"),
    ],
)
def test_a_user_or_host_unknown_suppresses_and_stops_every_enrollment_as_bounced(
    rt: Runtime, ana: int, status: str, diagnostic: str
) -> None:
    other = enroll(rt, ANA, cohort="autumn")
    decision = receive(rt, dsn(rt, ana, status, diagnostic))
    assert decision.kind == Kind.BOUNCE
    assert (suppressed(rt) or "").startswith("bounced: ")
    assert status_of(rt, ana) == EnrollmentStatus.BOUNCED
    assert status_of(rt, other) == EnrollmentStatus.BOUNCED


def test_a_bounce_in_exims_prose_suppresses_an_unknown_user(rt: Runtime, ana: int) -> None:
    raw = exim(
        rt,
        ana,
        "SMTP error from remote mail server after RCPT TO:<ana@example.org>:\r\n"
        "    550 5.1.1 No such user here",
    )
    decision = receive(rt, raw)
    assert decision.kind == Kind.BOUNCE
    assert suppressed(rt) is not None
    assert status_of(rt, ana) == EnrollmentStatus.BOUNCED


@pytest.mark.parametrize(
    ("status", "diagnostic", "family"),
    [
        ("5.7.1", "550 5.7.1 Message rejected as spam by Content Filtering", Family.POLICY),
        ("5.1.8", "553 5.1.8 Sender address rejected: Domain not found", Family.OUR_SENDER),
        ("5.7.26", "550 5.7.26 Unauthenticated email is not accepted (DMARC)", Family.OUR_SENDER),
        ("5.3.4", "552 5.3.4 Message size exceeds fixed maximum message size", Family.TOO_LARGE),
    ],
)
def test_a_block_that_is_about_us_keeps_the_subscriber_and_warns_the_operator(
    rt: Runtime, ana: int, status: str, diagnostic: str, family: Family
) -> None:
    decision = receive(rt, dsn(rt, ana, status, diagnostic))
    assert decision.kind == Kind.BOUNCE and "address kept" in decision.detail
    assert suppressed(rt) is None
    assert status_of(rt, ana) == EnrollmentStatus.ACTIVE
    assert (last_error(rt, ana) or "").startswith(f"blocked after sending ({family}")
    assert warnings(rt) == [("bounce", str(family), 1)]
    # A week later the warning is over.
    assert warnings(rt, NOW + dt.timedelta(days=8)) == []


@pytest.mark.parametrize(
    ("status", "diagnostic"),
    [
        ("5.3.0", "554 5.3.0 Local mail system error"),
        ("5.0.0", "550 Something went wrong on our side"),
    ],
)
def test_a_system_error_or_other_reason_is_noted_on_the_delivery_only(
    rt: Runtime, ana: int, status: str, diagnostic: str
) -> None:
    decision = receive(rt, dsn(rt, ana, status, diagnostic))
    assert decision.kind == Kind.BOUNCE and decision.detail.endswith("noted")
    assert suppressed(rt) is None
    assert status_of(rt, ana) == EnrollmentStatus.ACTIVE
    assert (last_error(rt, ana) or "").startswith("bounced after sending (")
    assert warnings(rt) == []


def test_a_delay_is_noted_and_not_counted_as_a_failure(rt: Runtime, ana: int) -> None:
    raw = dsn(rt, ana, "4.2.2", "452 4.2.2 Mailbox full", action="delayed")
    assert receive(rt, raw) == inbound.Decision(Kind.DELAY, "4.2.2", ana, 3)
    assert (last_error(rt, ana) or "").startswith("delayed after sending: 4.2.2")
    with transaction(rt.sessions) as session:
        effects = session.scalars(select(DeliveryProblem.effect)).all()
    assert effects == ["delay"]


def test_action_failed_with_a_4xx_status_is_a_failure_not_a_delay(rt: Runtime, ana: int) -> None:
    raw = dsn(rt, ana, "4.4.7", "421 4.4.7 Message expired: retry timeout exceeded")
    decision = receive(rt, raw)
    assert decision.kind == Kind.BOUNCE
    assert "expired" in decision.detail and "1 of 3" in decision.detail
    with transaction(rt.sessions) as session:
        assert session.scalars(select(DeliveryProblem.effect)).all() == ["soft"]


# The soft rule

FULL = ("5.2.2", "552 5.2.2 Mailbox full: user is over quota")


def test_a_full_mailbox_suppresses_after_three_failures_at_least_five_days_apart(
    rt: Runtime, ana: int
) -> None:
    for days in (0, 2):
        decision = receive(rt, dsn(rt, ana, *FULL), NOW + dt.timedelta(days=days))
        assert decision.kind == Kind.BOUNCE and "address kept" in decision.detail
        assert suppressed(rt) is None and status_of(rt, ana) == EnrollmentStatus.ACTIVE
    decision = receive(rt, dsn(rt, ana, *FULL), NOW + dt.timedelta(days=5))
    assert decision.detail.endswith("3 times: suppressed")
    assert (suppressed(rt) or "").startswith("bounced: mailbox full, 3 times: 5.2.2")
    assert status_of(rt, ana) == EnrollmentStatus.BOUNCED


def test_three_full_mailbox_failures_within_a_few_days_suppress_nothing(
    rt: Runtime, ana: int
) -> None:
    for hours in (0, 30, 60, 90):
        receive(rt, dsn(rt, ana, *FULL), NOW + dt.timedelta(hours=hours))
    assert suppressed(rt) is None
    assert status_of(rt, ana) == EnrollmentStatus.ACTIVE


def test_soft_failures_older_than_the_window_are_not_counted(rt: Runtime, ana: int) -> None:
    for days in (0, 6, 40):  # the first two are out of the window by the third
        receive(rt, dsn(rt, ana, *FULL), NOW + dt.timedelta(days=days))
    assert suppressed(rt) is None


def test_the_soft_rule_comes_from_the_settings(tmp_path: Path, database_url: str) -> None:
    runtime = Runtime(
        make_settings(
            tmp_path,
            database_url=database_url,
            reply_domain=DOMAIN,
            bounce_soft_failures=1,
            bounce_soft_days=0,
        )
    )
    try:
        assert runtime.inbound.soft_rule == SoftRule(failures=1, days=0, window_days=30)
        enrollment_id = enroll(runtime, ANA)
        send_days(runtime, 3)
        assert receive(runtime, dsn(runtime, enrollment_id, *FULL)).detail.endswith("suppressed")
        assert suppressed(runtime) is not None
    finally:
        runtime.close()


# Who a bounce is about, and where it came


def test_a_bounce_naming_no_recipient_suppresses_no_one(rt: Runtime, ana: int) -> None:
    raw = (
        exim(rt, ana, "550 5.1.1 No such user here")
        .replace(f"X-Failed-Recipients: {ANA}\r\n".encode(), b"")
        .replace(f"  {ANA}\r\n".encode(), b"  the recipient\r\n")
    )
    assert receive(rt, raw).kind == Kind.JUNK
    assert suppressed(rt) is None


@pytest.mark.parametrize("make", [dsn, exim])
def test_a_bounce_of_any_shape_to_the_reply_address_is_never_a_reflection(
    rt: Runtime, ana: int, make
) -> None:  # type: ignore[no-untyped-def]
    raw = (
        dsn(rt, ana, "5.1.1", "550 5.1.1 User unknown", purpose=REPLY)
        if make is dsn
        # Without Auto-Submitted: only its words tell it from a reply.
        else exim(rt, ana, "550 5.1.1 No such user here", purpose=REPLY).replace(
            b"Auto-Submitted: auto-replied\r\n", b""
        )
    )
    # Junk, or an auto-reply when it says it is one (Auto-Submitted): never a reply.
    assert receive(rt, raw).kind in (Kind.JUNK, Kind.AUTO_REPLY)
    assert suppressed(rt) is None
    with transaction(rt.sessions) as session:
        assert session.scalar(select(Reflection)) is None


# Complaints by feedback type


def test_an_opt_out_report_unsubscribes(rt: Runtime, ana: int) -> None:
    decision = receive(rt, arf(rt, ana, "opt-out"))
    assert decision.kind == Kind.COMPLAINT and "unsubscribed" in decision.detail
    assert suppressed(rt) == "unsubscribed"
    assert status_of(rt, ana) == EnrollmentStatus.UNSUBSCRIBED


@pytest.mark.parametrize("feedback_type", ["auth-failure", "fraud"])
def test_an_auth_failure_or_fraud_report_keeps_the_subscriber_and_warns(
    rt: Runtime, ana: int, feedback_type: str
) -> None:
    decision = receive(rt, arf(rt, ana, feedback_type))
    assert decision.kind == Kind.COMPLAINT and "address kept" in decision.detail
    assert suppressed(rt) is None
    assert status_of(rt, ana) == EnrollmentStatus.ACTIVE
    assert warnings(rt) == [("complaint", feedback_type, 1)]


def test_a_not_spam_report_is_ignored(rt: Runtime, ana: int) -> None:
    assert receive(rt, arf(rt, ana, "not-spam")).kind == Kind.JUNK
    assert suppressed(rt) is None and warnings(rt) == []


# The same effects from a provider's webhook


def test_a_webhook_bounce_is_applied_as_a_mailed_one_and_records_its_source(
    rt: Runtime, ana: int
) -> None:
    bounce = Bounce(
        family=Family.OUR_SENDER,
        status="5.7.26",
        action="failed",
        recipient=ANA,
        diagnostic="550 5.7.26 DMARC policy",
        rfc3464=False,
    )
    with transaction(rt.sessions) as session:
        enrollment = session.get(Enrollment, ana)
        assert enrollment is not None
        decision = apply_bounce(
            session, enrollment, 3, bounce, now=NOW, soft_rule=SoftRule(), source="ses"
        )
        complaint = Complaint("abuse", "", Reaction.COMPLAINED)
        second = apply_complaint(session, enrollment, 3, complaint, now=NOW, source="ses")
        sources = session.scalars(select(DeliveryProblem.source)).all()
    assert decision.kind == Kind.BOUNCE and "about us" in decision.detail
    assert second.kind == Kind.COMPLAINT
    assert sources == ["ses", "ses"]
    assert suppressed(rt) == "complained"


def test_what_is_stored_of_a_bounce_holds_no_address_or_text(rt: Runtime, ana: int) -> None:
    receive(rt, dsn(rt, ana, "5.7.1", "550 5.7.1 <ana@example.org> rejected: spam detected"))
    with transaction(rt.sessions) as session:
        row = session.scalar(select(DeliveryProblem))
        assert row is not None
        stored = " ".join(
            str(v) for v in (row.kind, row.reason, row.effect, row.status, row.source)
        )
    assert stored == "bounce content or policy block warn 5.7.1 mail"


# Where the operator sees the warning


def test_status_and_health_show_the_deliverability_warning(rt: Runtime, ana: int) -> None:
    with transaction(rt.sessions) as session:
        assert deliverability_line(deliverability_warnings(session, NOW)) is None
    receive(rt, dsn(rt, ana, "5.7.1", "550 5.7.1 Message rejected as spam"), NOW)
    receive(rt, arf(rt, ana, "auth-failure"), NOW)
    runner = CliRunner()
    env = settings_env(rt.settings)
    with freeze_time(NOW + dt.timedelta(hours=1)):
        status = runner.invoke(cli, ["status"], env=env)
        health = runner.invoke(cli, ["health"], env=env)
    for result in (status, health):
        assert "deliverability warning: in the last 7 days" in result.output, result.output
        assert "1 bounce (content or policy block 5.7.1)" in result.output
        assert "1 complaint (auth-failure)" in result.output
        assert ANA not in result.output
