"""Which lesson a provider's event is about: by our header or Message-ID, never the address.

And what the rules of bounces by mail then do: a block about our own sending keeps the
address; ``status`` and ``show`` count and show what each provider reported.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from freezegun import freeze_time

from dripcourse.models import EnrollmentStatus
from dripcourse.runtime import Runtime
from tests import test_webhooks as base
from tests import webhook_payloads as wp
from tests.conftest import make_settings
from tests.test_web_support import Clock, enroll, make_app, run_cli, send_days
from tests.test_webhooks import ANA, BOB, NOW, PROVIDERS, SNS, post, request_for, state, status_of

# The fixtures of the provider tests: two subscribers with three lessons sent, the web app.
rt, lessons, client = base.rt, base.lessons, base.client


def _without_ours(provider: str, sent: wp.Sent, *, keep_message_id: bool) -> tuple[bytes, dict]:
    """A bounce about ``sent`` that carries neither our header nor (unless kept) our
    Message-ID: only the address says who it is about."""
    message_id = sent.message_id if keep_message_id else "<someone-else@example.net>"
    if provider == "ses":
        notice = wp.ses_bounce(sent, NOW)
        notice["mail"]["headers"] = [{"name": "Message-ID", "value": message_id}]
        notice["mail"]["commonHeaders"] = {"messageId": message_id}
        return SNS.sign(wp.sns_notification(notice, NOW)), {}
    if provider == "mailgun":
        data = wp.mailgun_event(sent, NOW, "failed", **{"user-variables": {}})
        data["message"]["headers"]["message-id"] = message_id.strip("<>")
        return wp.mailgun_body(data, NOW), {}
    if provider == "sendgrid":
        data = wp.sendgrid_event(sent, NOW, "bounce", **{"smtp-id": message_id})
        data.pop("dripcourse_delivery")
        return base.SENDGRID.request([data], NOW)
    record = wp.postmark_bounce(sent, NOW, Metadata={})
    return json.dumps(record).encode(), wp.postmark_headers()


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_event_naming_only_an_address_changes_nothing(
    rt: Runtime, lessons: Path, client: FlaskClient, provider: str
) -> None:
    """Anyone who can post to the URL can write an address; only what we made counts."""
    body, headers = _without_ours(provider, wp.lesson_for(lessons, ANA, 3), keep_message_id=False)
    assert post(client, provider, body, headers).status_code == 200
    assert state(rt)["suppressed"] == {}
    assert status_of(rt, ANA) == EnrollmentStatus.ACTIVE


@pytest.mark.parametrize("provider", ["ses", "mailgun", "sendgrid"])
def test_an_event_is_found_by_our_message_id_alone(
    rt: Runtime, lessons: Path, client: FlaskClient, provider: str
) -> None:
    """An operator whose provider account drops custom headers still has the Message-ID."""
    body, headers = _without_ours(provider, wp.lesson_for(lessons, ANA, 3), keep_message_id=True)
    assert post(client, provider, body, headers).status_code == 200
    assert list(state(rt)["suppressed"]) == [ANA]  # type: ignore[call-overload]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_event_about_one_lesson_and_another_address_changes_nothing(
    rt: Runtime, lessons: Path, client: FlaskClient, provider: str
) -> None:
    """Ana's lesson named, Bob's address given: neither of them is touched."""
    ana = wp.lesson_for(lessons, ANA, 3)
    body, headers = request_for(provider, "bounce", ana)
    if provider == "ses":
        notice = wp.ses_bounce(ana, NOW, recipient=BOB)
        body = SNS.sign(wp.sns_notification(notice, NOW))
    elif provider == "mailgun":
        data = wp.mailgun_event(ana, NOW, "failed", recipient=BOB)
        body = wp.mailgun_body(data, NOW)
    elif provider == "sendgrid":
        body, headers = base.SENDGRID.request(
            [wp.sendgrid_event(ana, NOW, "bounce", email=BOB)], NOW
        )
    else:
        body = json.dumps(wp.postmark_bounce(ana, NOW, Email=BOB)).encode()
    assert post(client, provider, body, headers).status_code == 200
    assert state(rt)["suppressed"] == {}


def test_a_provider_whose_setting_is_empty_is_not_there(tmp_path: Path, sqlite_url: str) -> None:
    runtime = Runtime(make_settings(tmp_path, database_url=sqlite_url))
    try:
        web = make_app(runtime, Clock(NOW)).test_client()
        for name in [*PROVIDERS, "sparkpost"]:
            assert web.post(f"/webhooks/{name}", data=b"{}").status_code == 404
        assert web.get("/webhooks/mailgun").status_code in (404, 405)
    finally:
        runtime.close()


BLOCKS: dict[str, dict[str, Any]] = {
    "sendgrid": {"type": "blocked", "status": "5.7.1", "reason": "550 5.7.1 Message rejected"},
    "postmark": {
        "Type": "DMARCPolicy",
        "TypeCode": 100009,
        "Details": "smtp;550 5.7.26 Unauthenticated email is not accepted from this domain",
    },
}


@pytest.mark.parametrize("provider", list(BLOCKS))
def test_a_block_about_our_sending_keeps_the_address_and_warns(
    rt: Runtime, lessons: Path, client: FlaskClient, provider: str
) -> None:
    sent = wp.lesson_for(lessons, ANA, 3)
    body, headers = request_for(provider, "bounce", sent, **BLOCKS[provider])
    assert post(client, provider, body, headers).status_code == 200
    assert state(rt)["suppressed"] == {}
    assert status_of(rt, ANA) == EnrollmentStatus.ACTIVE
    assert state(rt)["problems"] == [(ANA, "bounce", "warn", provider)]
    with freeze_time(NOW):  # status warns of the last days' blocks
        out = run_cli(rt.settings, "status").output
    assert "deliverability warning: " in out
    assert f"{provider}: 1 warnings about our sending" in out


def test_status_and_show_count_what_each_provider_reported(
    rt: Runtime, lessons: Path, client: FlaskClient
) -> None:
    for provider, what, who in (
        ("ses", "bounce", ANA),
        ("mailgun", "complaint", BOB),
    ):
        body, headers = request_for(provider, what, wp.lesson_for(lessons, who, 3))
        assert post(client, provider, body, headers).status_code == 200
    out = run_cli(rt.settings, "status").output
    assert "provider webhooks: mailgun: 1 complaints; ses: 1 bounces" in out
    assert "provider webhooks (cohort spring): mailgun: 1 complaints; ses: 1 bounces" in (
        run_cli(rt.settings, "status", "--cohort", "spring").output
    )
    shown = run_cli(rt.settings, "show", ANA).output
    assert "suppressed: bounced on " in shown
    assert "day   3  bounce: user unknown 5.1.1 (suppress), by ses at 2025-03-05 21:00 UTC" in shown
    assert "bounced after sending: 5.1.1" in shown
    assert "complaint: abuse (complained), by mailgun" in run_cli(rt.settings, "show", BOB).output


def test_lessons_name_their_delivery_only_to_a_provider_that_is_set_up(
    tmp_path: Path, sqlite_url: str
) -> None:
    runtime = Runtime(
        make_settings(tmp_path, database_url=sqlite_url, mailgun_webhook_signing_key=wp.MAILGUN_KEY)
    )
    try:
        enroll(runtime, ANA)
        send_days(runtime, 1)
    finally:
        runtime.close()
    headers = wp.lesson_for(tmp_path / "outbox", ANA, 1).headers
    assert json.loads(headers["x-mailgun-variables"])["dripcourse_delivery"]
    for other in ("x-dripcourse-delivery", "x-smtpapi"):
        assert other not in headers
    assert not [name for name in headers if name.startswith("x-pm-metadata")]


def test_forgetting_a_subscriber_deletes_what_providers_reported_about_them(
    rt: Runtime, lessons: Path, client: FlaskClient
) -> None:
    body, headers = request_for("postmark", "bounce", wp.lesson_for(lessons, ANA, 3))
    assert post(client, "postmark", body, headers).status_code == 200
    assert state(rt)["events"] == 1
    assert run_cli(rt.settings, "forget", ANA, "--yes").exit_code == 0
    assert state(rt)["events"] == 0


def test_a_large_sendgrid_batch_is_taken_whole(
    rt: Runtime, lessons: Path, client: FlaskClient
) -> None:
    """SendGrid posts hundreds of events at once: more than a reflection form may hold."""
    sent = wp.lesson_for(lessons, ANA, 3)
    batch = [wp.sendgrid_event(sent, NOW, "delivered", response="250 OK " + "x" * 300)] * 1500
    batch.append(wp.sendgrid_event(sent, NOW, "bounce"))
    body, headers = base.SENDGRID.request(batch, NOW)
    assert len(body) > rt.settings.reflection_max_chars * 12 + 64 * 1024
    assert post(client, "sendgrid", body, headers).status_code == 200
    assert list(state(rt)["suppressed"]) == [ANA]  # type: ignore[call-overload]


def test_one_event_posted_twice_at_once_is_applied_once(rt: Runtime, lessons: Path) -> None:
    """Postmark retries while the first try is still being answered: on PostgreSQL the two
    requests really overlap, and the unique digest lets one of them act."""
    app = make_app(rt, Clock(NOW))
    body, headers = request_for("postmark", "bounce", wp.lesson_for(lessons, ANA, 3))
    start = threading.Barrier(2)

    def one() -> int:
        web = app.test_client()
        start.wait()
        return post(web, "postmark", body, headers).status_code

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: one(), range(2)))
    assert answers == [200, 200]
    after = state(rt)
    assert after["problems"] == [(ANA, "bounce", "suppress", "postmark")]
    assert after["events"] == 1


ODD = [None, 7, "text", [], {}, [{}], {"x": [1, {"y": None}]}, True, 1e308]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_signed_event_of_any_odd_shape_is_answered_never_a_crash(
    rt: Runtime, lessons: Path, client: FlaskClient, provider: str
) -> None:
    """Whatever the values inside a verified request, it gets an answer, not a 500."""
    sent = wp.lesson_for(lessons, ANA, 3)
    for odd in ODD:
        if provider == "ses":
            notice: Any = {"notificationType": "Bounce", "bounce": odd, "mail": odd}
            if isinstance(odd, dict):
                notice = wp.ses_bounce(sent, NOW)
                notice["bounce"]["bouncedRecipients"] = [odd, {"emailAddress": odd}]
            body, headers = SNS.sign(wp.sns_notification(notice, NOW)), {}
        elif provider == "mailgun":
            data = {"event": "failed", "delivery-status": odd, "message": odd, "recipient": odd}
            body, headers = wp.mailgun_body(data | {"user-variables": odd}, NOW), {}
        elif provider == "sendgrid":
            body, headers = base.SENDGRID.request(
                [odd, {"event": "bounce", "email": odd, "reason": odd, "status": odd}], NOW
            )
        else:
            record = {"RecordType": "Bounce", "ID": odd, "Type": odd, "Email": odd}
            body, headers = json.dumps(record | {"Metadata": odd}).encode(), wp.postmark_headers()
        answer = post(client, provider, body, headers).status_code
        assert answer < 500, (odd, answer)
    assert state(rt)["suppressed"] == {}
