"""Amazon SES, through SNS: a signed notification per bounce or complaint.

SNS signs each message with RSA (SHA1 for ``SignatureVersion`` 1, SHA256 for 2) over its
fields in a fixed order, with a certificate it names in ``SigningCertURL``. That URL is
believed only when it is https on an ``sns.<region>.amazonaws.com`` host and names a
``.pem``: the certificate is fetched from there alone and kept, so a message cannot point
us at a key of its sender's choosing. Then the topic must be one of ``ses_topic_arn``, the
``Timestamp`` recent, and the ``MessageId`` new. A ``SubscriptionConfirmation`` is
answered by fetching its ``SubscribeURL`` under the same host rule, for our topic only.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
import threading
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from dripcourse.courses.message import TAG_HEADER
from dripcourse.inbound.bounce_reasons import Family
from dripcourse.inbound.providers.common import (
    Event,
    Kind,
    Refused,
    Verified,
    check_fresh,
    complaint,
    parse_json,
    provider_bounce,
    text,
)

Fetch = Callable[[str], bytes]

_HOST = re.compile(r"sns\.([a-z]{2}(?:-[a-z]+)+-\d)\.amazonaws\.com")
_SIGNED = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),  # fmt: skip
    "UnsubscribeConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),  # fmt: skip
}
_HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}
MAX_CERTIFICATES = 32


def sns_host(url: str) -> str:
    """The region of an https URL on an SNS host (``sns.<region>.amazonaws.com``, default
    port, no user part); Refused for any other URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise Refused(403, "not an SNS URL") from None
    host = parts.hostname or ""
    match = _HOST.fullmatch(host)
    if (
        parts.scheme != "https"
        or match is None
        or parts.netloc != host  # no user, password or port
        or port is not None
    ):
        raise Refused(403, "not an SNS URL")
    return match.group(1)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an error: it would lead away from the host that was checked."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def fetch_https(url: str) -> bytes:
    """GET ``url`` (already checked to be on an SNS host), its TLS certificate checked, in at
    most 10 s, following no redirect."""
    with _OPENER.open(url, timeout=10) as response:
        return response.read(100_000)


class Certificates:
    """Signing certificates by URL, fetched once each (at most ``MAX_CERTIFICATES`` kept)."""

    def __init__(self, fetch: Fetch = fetch_https) -> None:
        self.fetch = fetch
        self._kept: dict[str, x509.Certificate] = {}
        self._lock = threading.Lock()

    def get(self, url: str) -> x509.Certificate:
        sns_host(url)
        if not urlsplit(url).path.endswith(".pem"):
            raise Refused(403, "the signing certificate is not a .pem")
        with self._lock:
            kept = self._kept.get(url)
        if kept is not None:
            return kept
        try:
            cert = x509.load_pem_x509_certificate(self.fetch(url))
        except Exception:  # noqa: BLE001 - unreachable or not a certificate: not verified
            raise Refused(403, "the signing certificate could not be had") from None
        with self._lock:
            if len(self._kept) >= MAX_CERTIFICATES:
                self._kept.clear()
            self._kept[url] = cert
        return cert


def verify(
    body: bytes,
    *,
    topics: tuple[str, ...],
    certificates: Certificates,
    now: dt.datetime,
    max_age: int,
) -> tuple[dict[str, Any], Verified]:
    """The SNS message in ``body`` and its events, once its signature, topic and time hold."""
    message = parse_json(body)
    if not isinstance(message, dict):
        raise Refused(400, "not an SNS message")
    kind = message.get("Type")
    if kind not in _SIGNED:
        raise Refused(400, "not an SNS message type we know")
    _check_signature(message, kind, certificates, now)
    # Only now is anything in the message believed.
    if message.get("TopicArn") not in topics:
        raise Refused(403, "a topic that is not ours")
    try:
        when = dt.datetime.fromisoformat(str(message.get("Timestamp")).replace("Z", "+00:00"))
    except ValueError:
        raise Refused(400, "no timestamp") from None
    check_fresh(when if when.tzinfo else when.replace(tzinfo=dt.UTC), now, max_age)
    nonce = text(message.get("MessageId"), 100)
    if not nonce:
        raise Refused(400, "no message id")
    events = events_of(message, nonce) if kind == "Notification" else []
    return message, Verified(nonce=nonce, events=events)


def confirm(message: dict[str, Any], fetch: Fetch) -> None:
    """Confirm a subscription by fetching its SubscribeURL: only on the SNS host of the
    topic's own region, never anywhere else the message might name."""
    url = str(message.get("SubscribeURL", ""))
    region = sns_host(url)
    topic_region = str(message.get("TopicArn", "")).split(":")[3:4]
    if [region] != topic_region:
        raise Refused(403, "the subscribe URL is not in the topic's region")
    try:
        fetch(url)
    except Exception:  # noqa: BLE001 - SNS sends the confirmation again
        raise Refused(409, "the subscription could not be confirmed now") from None


def _check_signature(
    message: dict[str, Any], kind: str, certificates: Certificates, now: dt.datetime
) -> None:
    algorithm = _HASHES.get(str(message.get("SignatureVersion")))
    signature = message.get("Signature")
    if algorithm is None or not isinstance(signature, str):
        raise Refused(403, "unsigned")
    cert = certificates.get(str(message.get("SigningCertURL", "")))
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise Refused(403, "the signing certificate is out of date")
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise Refused(403, "not an SNS signing key")
    signed = "".join(
        f"{name}\n{message[name]}\n"
        for name in _SIGNED[kind]
        if name in message and isinstance(message[name], str)
    )
    try:
        key.verify(
            base64.b64decode(signature, validate=True),
            signed.encode(),
            padding.PKCS1v15(),
            algorithm(),
        )
    except (InvalidSignature, binascii.Error, ValueError):
        raise Refused(403, "bad signature") from None


# SES's own category, used when the diagnostic and status name no reason.
_BOUNCE_TYPES = {
    ("Permanent", "General"): Family.USER_UNKNOWN,
    ("Permanent", "NoEmail"): Family.USER_UNKNOWN,
    ("Permanent", "Suppressed"): Family.USER_UNKNOWN,
    ("Permanent", "OnAccountSuppressionList"): Family.USER_UNKNOWN,
    ("Transient", "MailboxFull"): Family.MAILBOX_FULL,
    ("Transient", "MessageTooLarge"): Family.TOO_LARGE,
    ("Transient", "ContentRejected"): Family.POLICY,
    ("Transient", "AttachmentRejected"): Family.POLICY,
}


def events_of(message: dict[str, Any], nonce: str) -> list[Event]:
    """The events of one SES notification (a bounce or complaint names one or more people)."""
    notice = parse_json(str(message.get("Message", "")).encode())
    if not isinstance(notice, dict):
        return []
    kind = notice.get("notificationType") or notice.get("eventType")
    mail = notice.get("mail") if isinstance(notice.get("mail"), dict) else {}
    tag, message_id = _ours(mail)
    found: list[Event] = []
    if kind == "Bounce" and isinstance(notice.get("bounce"), dict):
        bounce = notice["bounce"]
        hint = _BOUNCE_TYPES.get(
            (text(bounce.get("bounceType")), text(bounce.get("bounceSubType")))
        )
        permanent = text(bounce.get("bounceType")) == "Permanent"
        for each in _list(bounce.get("bouncedRecipients")):
            recipient = text(each.get("emailAddress"), 320).lower()
            found.append(
                Event(
                    key=f"{nonce}:{recipient}",
                    kind=Kind.BOUNCE,
                    recipient=recipient,
                    tag=tag,
                    message_id=message_id,
                    bounce=provider_bounce(
                        recipient=recipient,
                        diagnostic=text(each.get("diagnosticCode")),
                        status=text(each.get("status")),
                        action=text(each.get("action")) or ("failed" if permanent else ""),
                        family=hint,
                    ),
                )
            )
    elif kind == "Complaint" and isinstance(notice.get("complaint"), dict):
        report = notice["complaint"]
        feedback = text(report.get("complaintFeedbackType")) or "abuse"
        for each in _list(report.get("complainedRecipients")):
            recipient = text(each.get("emailAddress"), 320).lower()
            found.append(
                Event(
                    key=f"{nonce}:{recipient}",
                    kind=Kind.COMPLAINT,
                    recipient=recipient,
                    tag=tag,
                    message_id=message_id,
                    complaint=complaint(recipient, feedback),
                )
            )
    else:
        found.append(Event(key=nonce, kind=Kind.OTHER))
    return found


def _ours(mail: dict[str, Any]) -> tuple[str, str]:
    """Our delivery header and Message-ID among the original headers SES hands back."""
    tag = message_id = ""
    for header in _list(mail.get("headers")):
        name = text(header.get("name")).lower()
        if name == TAG_HEADER.lower():
            tag = text(header.get("value"), 200)
        elif name == "message-id":
            message_id = text(header.get("value"), 255)
    common = mail.get("commonHeaders")
    if not message_id and isinstance(common, dict):
        message_id = text(common.get("messageId"), 255)
    return tag, message_id


def _list(value: object) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)][:100] if isinstance(value, list) else []
