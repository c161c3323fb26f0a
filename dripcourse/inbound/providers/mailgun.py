"""Mailgun: a JSON event signed with HMAC-SHA256 of its timestamp and token.

The ``signature`` object carries ``timestamp``, ``token`` (50 random characters, new for
every request) and ``signature``, the hex HMAC-SHA256 of timestamp followed by token under
the webhook signing key. A request is believed when that matches, its timestamp is recent,
and its token was never seen: then ``event-data`` is read. Permanent ``failed`` events are
bounces (temporary ones delays), ``complained`` complaints, ``unsubscribed`` unsubscribes.
"""

from __future__ import annotations

import datetime as dt
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
    check_fresh,
    complaint,
    from_unix,
    parse_json,
    provider_bounce,
    text,
    unsubscribed,
)

# Mailgun's own reasons for a failure, used when its diagnostic names none.
_REASONS = {
    "suppress-bounce": Family.USER_UNKNOWN,  # it bounced before; Mailgun did not try
    "bounce": Family.USER_UNKNOWN,
}


def verify(body: bytes, *, signing_key: str, now: dt.datetime, max_age: int) -> Verified:
    """The events of one Mailgun request, once its signature and timestamp hold."""
    payload = parse_json(body)
    signed = payload.get("signature") if isinstance(payload, dict) else None
    if not isinstance(signed, dict):
        raise Refused(403, "unsigned")
    timestamp, token = text(signed.get("timestamp"), 20), text(signed.get("token"), 200)
    signature = text(signed.get("signature"), 200)
    if not (timestamp and token and signature):
        raise Refused(403, "unsigned")
    expected = hmac.new(
        signing_key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(expected, signature.lower()):
        raise Refused(403, "bad signature")
    check_fresh(from_unix(timestamp), now, max_age)
    data = payload.get("event-data")
    if not isinstance(data, dict):
        raise Refused(400, "no event-data")
    return Verified(nonce=token, events=[event_of(data, token)])


def event_of(data: dict[str, Any], token: str) -> Event:
    """One ``event-data`` read into an Event (its id, else the request's token, is its key)."""
    key = text(data.get("id"), 200) or token
    recipient = text(data.get("recipient"), 320).lower()
    variables = data.get("user-variables")
    tag = text(variables.get(TAG_NAME), 200) if isinstance(variables, dict) else ""
    message = data.get("message") if isinstance(data.get("message"), dict) else {}
    headers = message.get("headers") if isinstance(message.get("headers"), dict) else {}
    message_id = text(headers.get("message-id"), 255)
    ours = {"key": key, "recipient": recipient, "tag": tag, "message_id": message_id}
    name = text(data.get("event"))
    reason = text(data.get("reason"))
    if name == "complained" or (name == "failed" and reason == "suppress-complaint"):
        return Event(kind=Kind.COMPLAINT, complaint=complaint(recipient), **ours)
    if name == "unsubscribed" or (name == "failed" and reason == "suppress-unsubscribe"):
        return Event(kind=Kind.UNSUBSCRIBE, complaint=unsubscribed(recipient), **ours)
    if name != "failed":
        return Event(kind=Kind.OTHER, **ours)
    status = data.get("delivery-status")
    status = status if isinstance(status, dict) else {}
    words = " ".join(
        part
        for part in (
            text(status.get("code")),
            text(status.get("message")),
            text(status.get("description")),
        )
        if part
    )
    permanent = text(data.get("severity")) == "permanent"
    return Event(
        kind=Kind.BOUNCE,
        bounce=provider_bounce(
            recipient=recipient,
            diagnostic=words,
            status=text(status.get("enhanced-code")),
            action="failed" if permanent else "delayed",
            family=_REASONS.get(reason) if permanent else None,
        ),
        **ours,
    )
