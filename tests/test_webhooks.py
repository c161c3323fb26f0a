"""Bounces and complaints from an email provider's webhook: the same outcomes as by mail.

Each provider's request is built in the shape its documentation gives and signed with keys
made here; the lessons are really sent (to the file outbox) first, so the header and the
Message-ID the events carry back are the ones the lesson went out with.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from dripcourse.db import transaction
from dripcourse.models import (
    DeliveryProblem,
    Enrollment,
    EnrollmentStatus,
    Subscriber,
    Suppression,
    WebhookEvent,
)
from dripcourse.runtime import Runtime
from tests import webhook_payloads as wp
from tests.conftest import make_settings, utc
from tests.test_web_support import Clock, enroll, make_app, send_days

ANA, BOB = "ana@example.org", "bob@example.org"
NOW = utc(2025, 3, 5, 21)  # the evening of Day 3
PROVIDERS = ["ses", "mailgun", "sendgrid", "postmark"]
SNS = wp.SNS()
SENDGRID = wp.SendGrid()


def provider_settings(**overrides: object) -> dict[str, object]:
    return {
        "ses_topic_arn": wp.TOPIC,
        "mailgun_webhook_signing_key": wp.MAILGUN_KEY,
        "sendgrid_webhook_public_key": SENDGRID.public_key,
        "postmark_webhook_user": wp.POSTMARK_USER,
        "postmark_webhook_password": wp.POSTMARK_PASSWORD,
        "postmark_webhook_secret": wp.POSTMARK_SECRET,
        **overrides,
    }


@pytest.fixture
def rt(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    settings = make_settings(tmp_path, database_url=database_url, **provider_settings())
    runtime = Runtime(settings)
    yield runtime
    runtime.close()


@pytest.fixture
def lessons(rt: Runtime, tmp_path: Path) -> Path:
    """Ana and Bob enrolled, Days 1-3 sent to each; the outbox they went to."""
    enroll(rt, ANA)
    enroll(rt, BOB)
    send_days(rt, 3)
    return tmp_path / "outbox"


@pytest.fixture
def client(rt: Runtime) -> FlaskClient:
    SNS.fetched.clear()
    return make_app(rt, Clock(NOW), SNS_FETCH=SNS.fetch(NOW)).test_client()


def post(client: FlaskClient, provider: str, body: bytes, headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return client.post(f"/webhooks/{provider}", data=body, headers=headers or {})


def request_for(provider: str, what: str, sent: wp.Sent, now: dt.datetime = NOW, **kw: Any):  # type: ignore[no-untyped-def]
    """(body, headers) of a ``what`` event ("bounce", "complaint", "unsubscribe") about
    ``sent``, as ``provider`` posts it; ``kw`` changes the event's fields."""
    if provider == "ses":
        notice = (wp.ses_bounce if what == "bounce" else wp.ses_complaint)(sent, now)
        notice.update(kw)
        return SNS.sign(wp.sns_notification(notice, now)), {}
    if provider == "mailgun":
        name = {"bounce": "failed", "complaint": "complained", "unsubscribe": "unsubscribed"}
        return wp.mailgun_body(wp.mailgun_event(sent, now, name[what], **kw), now), {}
    if provider == "sendgrid":
        name = {"bounce": "bounce", "complaint": "spamreport", "unsubscribe": "unsubscribe"}
        return SENDGRID.request([wp.sendgrid_event(sent, now, name[what], **kw)], now)
    make = {
        "bounce": wp.postmark_bounce,
        "complaint": wp.postmark_complaint,
        "unsubscribe": wp.postmark_unsubscribe,
    }
    return json.dumps({**make[what](sent, now), **kw}).encode(), wp.postmark_headers()


def state(rt: Runtime) -> dict[str, object]:
    """Everything a webhook may change: suppressions, enrollments, the events recorded."""
    with transaction(rt.sessions) as session:
        return {
            "suppressed": {
                e: r for e, r in session.execute(select(Suppression.email, Suppression.reason))
            },
            "enrollments": sorted(
                (e.subscriber.email, str(e.status)) for e in session.scalars(select(Enrollment))
            ),
            "events": session.scalar(select(func.count()).select_from(WebhookEvent)),
            "problems": [
                tuple(row)
                for row in session.execute(
                    select(
                        Subscriber.email,
                        DeliveryProblem.kind,
                        DeliveryProblem.effect,
                        DeliveryProblem.source,
                    )
                    .join(Enrollment, DeliveryProblem.enrollment_id == Enrollment.id)
                    .join(Subscriber, Enrollment.subscriber_id == Subscriber.id)
                    .order_by(DeliveryProblem.id)
                )
            ],
        }


def status_of(rt: Runtime, email: str) -> str:
    return dict(state(rt)["enrollments"])[email]  # type: ignore[arg-type]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_hard_bounce_through_each_provider_suppresses_that_subscriber(
    rt: Runtime, lessons: Path, client: FlaskClient, provider: str
) -> None:
    body, headers = request_for(provider, "bounce", wp.lesson_for(lessons, ANA, 3))
    response = post(client, provider, body, headers)
    assert response.status_code == 200, response.text
    after = state(rt)
    assert list(after["suppressed"]) == [ANA]  # type: ignore[call-overload]
    assert after["suppressed"][ANA].startswith("bounced: 5.1.1")  # type: ignore[index]
    assert after["problems"] == [(ANA, "bounce", "suppress", provider)]
    assert status_of(rt, ANA) == EnrollmentStatus.BOUNCED
    assert status_of(rt, BOB) == EnrollmentStatus.ACTIVE


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_complaint_through_each_provider_suppresses_that_subscriber(
    rt: Runtime, lessons: Path, client: FlaskClient, provider: str
) -> None:
    body, headers = request_for(provider, "complaint", wp.lesson_for(lessons, BOB, 2))
    assert post(client, provider, body, headers).status_code == 200
    after = state(rt)
    assert list(after["suppressed"]) == [BOB]  # type: ignore[call-overload]
    assert after["suppressed"][BOB] == "complained"  # type: ignore[index]
    assert after["problems"] == [(BOB, "complaint", "complained", provider)]
    assert status_of(rt, BOB) == EnrollmentStatus.UNSUBSCRIBED
    assert status_of(rt, ANA) == EnrollmentStatus.ACTIVE


@pytest.mark.parametrize("provider", ["mailgun", "sendgrid", "postmark"])
def test_an_unsubscribe_a_provider_took_unsubscribes_that_subscriber(
    rt: Runtime, lessons: Path, client: FlaskClient, provider: str
) -> None:
    body, headers = request_for(provider, "unsubscribe", wp.lesson_for(lessons, ANA, 1))
    assert post(client, provider, body, headers).status_code == 200
    assert state(rt)["suppressed"] == {ANA: "unsubscribed"}
    assert status_of(rt, ANA) == EnrollmentStatus.UNSUBSCRIBED


def _forged(provider: str, body: bytes, headers: dict[str, str]) -> tuple[bytes, dict]:
    """The same request with its signature (or credentials) made by someone without ours."""
    if provider == "ses":
        return wp.SNS().sign(json.loads(body) | {"Signature": ""}), {}
    if provider == "mailgun":
        payload = json.loads(body)
        return wp.mailgun_body(payload["event-data"], NOW, key="someone-elses-signing-key"), {}
    if provider == "sendgrid":
        return wp.SendGrid().request(json.loads(body), NOW)
    return body, wp.postmark_headers(password="not-the-password-we-set", secret="guess")


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("how", ["forged", "unsigned", "tampered"])
def test_a_forged_unsigned_or_tampered_request_changes_nothing(
    rt: Runtime, lessons: Path, client: FlaskClient, provider: str, how: str
) -> None:
    body, headers = request_for(provider, "bounce", wp.lesson_for(lessons, ANA, 3))
    before = state(rt)
    if how == "forged":
        body, headers = _forged(provider, body, headers)
    elif how == "unsigned":
        payload = json.loads(body)
        if isinstance(payload, dict):
            for name in ("Signature", "signature"):
                payload.pop(name, None)
        body, headers = json.dumps(payload).encode(), {}
    else:  # the signature is good, but for other words: BOB swapped in for ANA
        body = body.replace(ANA.encode(), BOB.encode())
    response = post(client, provider, body, headers)
    if how == "tampered" and provider in ("mailgun", "postmark"):
        # Neither signs the event itself (Mailgun signs a timestamp and a nonce, Postmark
        # sends credentials): the event names Ana's lesson with Bob's address, so it
        # matches neither of them and is only counted as unmatched.
        assert response.status_code == 200
        after = state(rt)
        assert (after["suppressed"], after["enrollments"]) == (
            before["suppressed"],
            before["enrollments"],
        )
        return
    assert 400 <= response.status_code < 500
    assert state(rt) == before


@pytest.mark.parametrize("provider", ["ses", "mailgun", "sendgrid"])
def test_a_replayed_request_is_refused_and_changes_nothing(
    rt: Runtime, lessons: Path, client: FlaskClient, provider: str
) -> None:
    """A signed request seen before is refused, and so is one signed too long ago."""
    sent = wp.lesson_for(lessons, ANA, 3)
    body, headers = request_for(provider, "bounce", sent, NOW - dt.timedelta(seconds=30))
    assert post(client, provider, body, headers).status_code == 200
    after_first = state(rt)
    assert post(client, provider, body, headers).status_code == 409
    assert state(rt) == after_first

    stale, stale_headers = request_for(
        provider, "complaint", wp.lesson_for(lessons, BOB, 3), NOW - dt.timedelta(minutes=6)
    )
    assert post(client, provider, stale, stale_headers).status_code == 403
    assert state(rt) == after_first


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_event_sent_again_changes_nothing(
    rt: Runtime, lessons: Path, client: FlaskClient, provider: str
) -> None:
    """A provider that retries (our answer was lost) sends the same event in a new request:
    a soft bounce counted once, however often it comes."""
    sent = wp.lesson_for(lessons, ANA, 3)
    event = _soft_bounce_event(provider, sent)
    answers = []
    for attempt in range(3):
        body, headers = event(NOW + dt.timedelta(seconds=attempt))
        answers.append(post(client, provider, body, headers).status_code)
    # SNS sends a retry as the same signed message: a replay of its MessageId.
    assert answers == ([200, 409, 409] if provider == "ses" else [200, 200, 200])
    with transaction(rt.sessions) as session:
        kinds = list(
            session.scalars(select(WebhookEvent.kind).where(WebhookEvent.kind != "request"))
        )
    assert kinds == ["soft"]
    assert state(rt)["suppressed"] == {}


def _soft_bounce_event(provider: str, sent: wp.Sent) -> Callable[[dt.datetime], tuple]:
    """One mailbox-full event; each call posts it in a new (freshly signed) request."""
    full = "552 5.2.2 The recipient's mailbox is full"
    if provider == "ses":
        notice = wp.ses_bounce(sent, NOW)
        notice["bounce"]["bounceType"] = "Transient"
        notice["bounce"]["bounceSubType"] = "MailboxFull"
        notice["bounce"]["bouncedRecipients"][0].update(status="5.2.2", diagnosticCode=full)
        message = wp.sns_notification(notice, NOW)
        return lambda now: (SNS.sign(message), {})
    if provider == "mailgun":
        data = wp.mailgun_event(sent, NOW, "failed")
        data["delivery-status"]["message"] = full
        return lambda now: (wp.mailgun_body(data, now), {})
    if provider == "sendgrid":
        data = wp.sendgrid_event(sent, NOW, "bounce", status="5.2.2", reason=full)
        return lambda now: SENDGRID.request([data], now)
    record = wp.postmark_bounce(sent, NOW, Type="SoftBounce", TypeCode=4096, Details=full)
    return lambda now: (json.dumps(record).encode(), wp.postmark_headers())
