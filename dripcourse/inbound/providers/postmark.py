"""Postmark: its webhooks are not signed; the request carries credentials we chose.

Postmark sends the user and password written into the webhook URL
(``https://user:password@host/webhooks/postmark``) as HTTP basic authentication, and any
custom header set on the webhook: ``postmark_webhook_password`` (with
``postmark_webhook_user``) and ``postmark_webhook_secret`` (in ``X-Dripcourse-Secret``) are
checked, every one that is set, before the body is read. With no signed timestamp, a
repeated event is known by its own ``ID``. ``Bounce`` records are bounces (a hard bounce
suppresses), ``SpamComplaint`` complaints, and a ``SubscriptionChange`` that stops sending
at the reader's own request an unsubscribe.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any

from dripcourse.courses.message import TAG_NAME
from dripcourse.inbound.bounce_reasons import Family
from dripcourse.inbound.providers.common import (
    Event,
    Kind,
    Refused,
    Verified,
    complaint,
    parse_json,
    provider_bounce,
    text,
    unsubscribed,
)

SECRET_HEADER = "X-Dripcourse-Secret"


def verify(
    body: bytes,
    *,
    authorization: str,
    secret_header: str,
    user: str,
    password: str,
    secret: str,
) -> Verified:
    """The event of one Postmark request, once every configured credential matches."""
    if not (password or secret):
        raise Refused(404, "not set up")
    if password and not _basic_matches(authorization, user, password):
        raise Refused(401, "wrong or missing credentials")
    if secret and not hmac.compare_digest(secret_header.encode(), secret.encode()):
        raise Refused(403, "wrong or missing secret")
    data = parse_json(body)
    if not isinstance(data, dict):
        raise Refused(400, "not a Postmark record")
    return Verified(nonce="", events=[event_of(data)])


def _basic_matches(authorization: str, user: str, password: str) -> bool:
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(given, f"{user}:{password}".encode())


# Postmark's bounce types: the family when the details name none, and what a type means.
_HARD = {"HardBounce": Family.USER_UNKNOWN, "BadEmailAddress": Family.USER_UNKNOWN}
_BLOCKED = {
    "Blocked": Family.POLICY,
    "SpamNotification": Family.POLICY,
    "VirusNotification": Family.POLICY,
    "DMARCPolicy": Family.OUR_SENDER,
}
_SOFT = {"SoftBounce": None, "DnsError": Family.SYSTEM_ERROR, "Transient": None}


def event_of(data: dict[str, Any]) -> Event:
    record = text(data.get("RecordType"))
    recipient = text(data.get("Email") or data.get("Recipient"), 320).lower()
    metadata = data.get("Metadata")
    ours = {
        "recipient": recipient,
        "tag": text(metadata.get(TAG_NAME), 200) if isinstance(metadata, dict) else "",
        "message_id": "",  # Postmark's MessageID is its own, not ours
    }
    if record == "SubscriptionChange":
        key = hashlib.sha256(
            "|".join(
                text(data.get(k)) for k in ("MessageID", "Recipient", "ChangedAt", "Origin")
            ).encode()
        ).hexdigest()
        # Only the reader's own wish: hard bounces and complaints come as their own records.
        if (
            data.get("SuppressSending") is True
            and text(data.get("SuppressionReason")) == "ManualSuppression"
            and text(data.get("Origin")) == "Recipient"
        ):
            return Event(key=key, kind=Kind.UNSUBSCRIBE, complaint=unsubscribed(recipient), **ours)
        return Event(key=key, kind=Kind.OTHER, **ours)
    key = f"{record}:{text(data.get('ID'), 100)}"
    if not text(data.get("ID"), 100):
        return Event(key="", kind=Kind.OTHER, **ours)
    if record == "SpamComplaint":
        return Event(key=key, kind=Kind.COMPLAINT, complaint=complaint(recipient), **ours)
    if record != "Bounce":
        return Event(key=key, kind=Kind.OTHER, **ours)
    kind = text(data.get("Type"))
    if kind == "Unsubscribe":
        return Event(key=key, kind=Kind.UNSUBSCRIBE, complaint=unsubscribed(recipient), **ours)
    if kind == "SpamComplaint":
        return Event(key=key, kind=Kind.COMPLAINT, complaint=complaint(recipient), **ours)
    if kind not in _HARD and kind not in _BLOCKED and kind not in _SOFT:
        return Event(key=key, kind=Kind.OTHER, **ours)  # auto-replies, address changes, ...
    bounce = provider_bounce(
        recipient=recipient,
        diagnostic=text(data.get("Details")) or text(data.get("Description")),
        action="delayed" if kind == "Transient" else "failed",
        family=_HARD.get(kind) or _BLOCKED.get(kind) or _SOFT.get(kind),
    )
    return Event(key=key, kind=Kind.BOUNCE, bounce=bounce, **ours)
