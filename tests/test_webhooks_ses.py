"""SES through SNS: the certificate and the subscription are fetched from SNS hosts alone.

A message names the URL of its own signing certificate and, to subscribe, a URL to visit:
both are the sender's words until the signature holds, so neither may make us fetch from
anywhere but an ``sns.<region>.amazonaws.com`` https URL. The fetch is handed in: no network.
"""

from __future__ import annotations

import http.server
import json
import threading
import urllib.error
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from dripcourse.inbound.providers import ses
from dripcourse.models import EnrollmentStatus
from dripcourse.runtime import Runtime
from tests import test_webhooks as base
from tests import webhook_payloads as wp
from tests.test_webhooks import ANA, NOW, SNS, post, state, status_of

# The fixtures of the provider tests: two subscribers with three lessons sent, the web app.
rt, lessons, client = base.rt, base.lessons, base.client

ELSEWHERE = [
    "http://sns.eu-west-1.amazonaws.com/SimpleNotificationService-1.pem",
    "https://sns.eu-west-1.amazonaws.com.attacker.example/SimpleNotificationService-1.pem",
    "https://attacker.example/sns.eu-west-1.amazonaws.com/SimpleNotificationService-1.pem",
    "https://attacker.example@sns.eu-west-1.amazonaws.com/SimpleNotificationService-1.pem",
    "https://sns.eu-west-1.amazonaws.com:8443/SimpleNotificationService-1.pem",
    "https://s3.eu-west-1.amazonaws.com/SimpleNotificationService-1.pem",
    "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-1.txt",
    "file:///etc/passwd",
]


@pytest.mark.parametrize("url", ELSEWHERE)
def test_the_signing_certificate_is_fetched_only_from_an_sns_host(
    rt: Runtime, lessons: Path, client: FlaskClient, url: str
) -> None:
    before = state(rt)
    notice = wp.ses_bounce(wp.lesson_for(lessons, ANA, 3), NOW)
    body = SNS.sign(wp.sns_notification(notice, NOW, SigningCertURL=url))
    assert post(client, "ses", body).status_code == 403
    assert SNS.fetched == []
    assert state(rt) == before


def test_a_certificate_is_fetched_once_and_kept(
    rt: Runtime, lessons: Path, client: FlaskClient
) -> None:
    for day in (1, 2, 3):
        notice = wp.ses_bounce(wp.lesson_for(lessons, ANA, day), NOW)
        notice["bounce"]["bounceType"] = "Transient"
        notice["bounce"]["bouncedRecipients"][0].update(status="4.2.2", action="delayed")
        assert post(client, "ses", SNS.sign(wp.sns_notification(notice, NOW))).status_code == 200
    assert SNS.fetched == [wp.CERT_URL]


def test_signature_version_2_is_taken_and_a_wrong_one_refused(
    rt: Runtime, lessons: Path, client: FlaskClient
) -> None:
    notice = wp.ses_complaint(wp.lesson_for(lessons, ANA, 3), NOW)
    message = wp.sns_notification(notice, NOW)
    signed = json.loads(SNS.sign(message, version="2"))
    signed["SignatureVersion"] = "1"  # SHA256 signature, said to be SHA1
    assert post(client, "ses", json.dumps(signed).encode()).status_code == 403
    assert state(rt)["suppressed"] == {}
    assert post(client, "ses", SNS.sign(message, version="2")).status_code == 200
    assert status_of(rt, ANA) == EnrollmentStatus.UNSUBSCRIBED


def test_a_topic_that_is_not_ours_is_refused(
    rt: Runtime, lessons: Path, client: FlaskClient
) -> None:
    """SNS signs every topic's messages with the same certificates: someone else's topic,
    subscribed to our URL, must not reach our subscribers."""
    before = state(rt)
    notice = wp.ses_bounce(wp.lesson_for(lessons, ANA, 3), NOW)
    other = "arn:aws:sns:eu-west-1:999999999999:someone-elses-topic"
    body = SNS.sign(wp.sns_notification(notice, NOW, TopicArn=other))
    assert post(client, "ses", body).status_code == 403
    assert state(rt) == before


SUBSCRIBE = "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=x&Token=y"


def test_a_subscription_confirmation_is_followed_on_the_sns_host(
    rt: Runtime, client: FlaskClient
) -> None:
    body = SNS.sign(wp.sns_confirmation(NOW, SUBSCRIBE))
    assert post(client, "ses", body).status_code == 200
    assert SNS.fetched == [wp.CERT_URL, SUBSCRIBE]
    # The same confirmation again is a replay: refused, and not followed again.
    assert post(client, "ses", body).status_code == 409
    assert SNS.fetched == [wp.CERT_URL, SUBSCRIBE]


@pytest.mark.parametrize(
    "url",
    [
        "https://attacker.example/?Action=ConfirmSubscription",
        "http://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription",
        "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription",  # not the topic's
        "https://sns.eu-west-1.amazonaws.com.attacker.example/?Action=ConfirmSubscription",
        "https://127.0.0.1/?Action=ConfirmSubscription",
    ],
)
def test_a_subscription_confirmation_is_not_followed_to_any_other_host(
    rt: Runtime, client: FlaskClient, url: str
) -> None:
    body = SNS.sign(wp.sns_confirmation(NOW, url))
    assert post(client, "ses", body).status_code == 403
    assert url not in SNS.fetched
    assert state(rt)["events"] == 0


def test_a_subscription_confirmation_for_another_topic_is_not_followed(
    rt: Runtime, client: FlaskClient
) -> None:
    message = wp.sns_confirmation(NOW, SUBSCRIBE)
    message["TopicArn"] = "arn:aws:sns:eu-west-1:999999999999:someone-elses-topic"
    assert post(client, "ses", SNS.sign(message)).status_code == 403
    assert SUBSCRIBE not in SNS.fetched


def test_the_sns_fetch_follows_no_redirect() -> None:
    """A URL checked to be on an SNS host must not lead elsewhere by a redirect."""
    followed: list[str] = []

    class Redirecting(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            followed.append(self.path)
            self.send_response(302)
            self.send_header("Location", "/elsewhere.pem")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Redirecting)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(urllib.error.HTTPError):
            ses.fetch_https(f"http://127.0.0.1:{server.server_port}/cert.pem")
    finally:
        server.shutdown()
        server.server_close()
    assert followed == ["/cert.pem"]
