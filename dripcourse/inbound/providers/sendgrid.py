"""SendGrid: a batch of events signed with ECDSA (P-256, SHA-256).

The ``X-Twilio-Email-Event-Webhook-Signature`` header holds the base64 DER signature of the
``X-Twilio-Email-Event-Webhook-Timestamp`` header's value followed by the raw body, made
with the key pair whose public half is ``sendgrid_webhook_public_key``. A batch is believed
when that verifies, its timestamp is recent and its signature was never seen; then each
event is read: ``bounce`` (and ``dropped`` for an address that bounced before) a bounce,
``spamreport`` a complaint, ``unsubscribe`` and ``group_unsubscribe`` unsubscribes.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from dripcourse.courses.message import TAG_NAME
from dripcourse.inbound.bounce_reasons import Family
from dripcourse.inbound.providers.common import (
    Event,
    Kind,
    Refused,
    Verified,
    check_fresh,
    complaint,
    from_unix,
    parse_json,
    provider_bounce,
    text,
    unsubscribed,
)
from dripcourse.webhook_settings import verification_key

SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
MAX_EVENTS = 2000


def verify(
    body: bytes, *, signature: str, timestamp: str, public_key: str, now: dt.datetime, max_age: int
) -> Verified:
    """The events of one SendGrid batch, once its signature and timestamp hold."""
    if not signature or not timestamp:
        raise Refused(403, "unsigned")
    try:
        key = verification_key(public_key)
        key.verify(
            base64.b64decode(signature, validate=True),
            timestamp.encode() + body,
            ec.ECDSA(hashes.SHA256()),
        )
    except (InvalidSignature, binascii.Error, ValueError):
        raise Refused(403, "bad signature") from None
    check_fresh(from_unix(timestamp), now, max_age)
    batch = parse_json(body)
    if not isinstance(batch, list):
        raise Refused(400, "not a batch of events")
    nonce = hashlib.sha256(signature.encode()).hexdigest()
    return Verified(
        nonce=nonce, events=[event_of(e) for e in batch[:MAX_EVENTS] if isinstance(e, dict)]
    )


_DROPPED = {
    "bounced address": Kind.BOUNCE,
    "spam reporting address": Kind.COMPLAINT,
    "unsubscribed address": Kind.UNSUBSCRIBE,
}


def event_of(data: dict[str, Any]) -> Event:
    recipient = text(data.get("email"), 320).lower()
    ours = {
        "key": text(data.get("sg_event_id"), 200),
        "recipient": recipient,
        "tag": text(data.get(TAG_NAME), 200),
        "message_id": text(data.get("smtp-id"), 255),
    }
    name = text(data.get("event"))
    if name == "dropped":
        kind = _DROPPED.get(text(data.get("reason")).lower(), Kind.OTHER)
        if kind == Kind.BOUNCE:
            bounce = provider_bounce(
                recipient=recipient,
                diagnostic=text(data.get("reason")),
                action="failed",
                family=Family.USER_UNKNOWN,  # it bounced before; SendGrid did not try
            )
            return Event(kind=kind, bounce=bounce, **ours)
        name = {Kind.COMPLAINT: "spamreport", Kind.UNSUBSCRIBE: "unsubscribe"}.get(kind, "")
    if name == "spamreport":
        return Event(kind=Kind.COMPLAINT, complaint=complaint(recipient), **ours)
    if name in ("unsubscribe", "group_unsubscribe"):
        return Event(kind=Kind.UNSUBSCRIBE, complaint=unsubscribed(recipient), **ours)
    if name != "bounce":
        return Event(kind=Kind.OTHER, **ours)
    blocked = text(data.get("type")) == "blocked"
    return Event(
        kind=Kind.BOUNCE,
        bounce=provider_bounce(
            recipient=recipient,
            diagnostic=text(data.get("reason")),
            status=text(data.get("status")),
            action="failed",
            family=Family.POLICY if blocked else None,
        ),
        **ours,
    )
