"""A verified request's events applied once each, and recorded for ``status``.

Each signed request's nonce (SNS MessageId, Mailgun token, SendGrid signature) is kept: the
same request again is refused. Each event's own id is kept too: an event the provider sends
again (a retry after a lost answer, the same event in a later batch) changes nothing. Both
live in ``webhook_events`` under a unique digest, so two requests racing each other cannot
both act on one event.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dripcourse.db import savepoint
from dripcourse.inbound.bounces import Effect, SoftRule
from dripcourse.inbound.complaints import Reaction
from dripcourse.inbound.decision import Decision
from dripcourse.inbound.effects import apply_bounce, apply_complaint
from dripcourse.inbound.providers.common import Event, Kind, Refused, Verified
from dripcourse.inbound.providers.deliveries import find
from dripcourse.links import Links
from dripcourse.models import InboundKind, WebhookEvent

log = logging.getLogger(__name__)


def record(
    session: Session,
    provider: str,
    verified: Verified,
    *,
    links: Links,
    now: dt.datetime,
    soft_rule: SoftRule | None = None,
) -> list[str]:
    """Apply each event of ``verified`` not seen before; the kinds recorded, in order.

    Refused (409) when the request itself was seen before: nothing is changed.
    """
    if verified.nonce and not _claim(
        session, WebhookEvent(digest=_digest(provider, "request", verified.nonce),
                              provider=provider, kind="request", received_at=now),
    ):  # fmt: skip
        raise Refused(409, "this request was received before: a replay")
    kinds = []
    for event in verified.events:
        kind = _one(session, provider, event, links, now, soft_rule or SoftRule())
        kinds.append(kind)
        log.info("webhook %s: %s", provider, kind)
    return kinds


def _one(
    session: Session,
    provider: str,
    event: Event,
    links: Links,
    now: dt.datetime,
    soft_rule: SoftRule,
) -> str:
    key = event.key or "|".join((event.kind, event.recipient, event.tag, event.message_id))
    digest = _digest(provider, "event", key)
    if _seen(session, digest):
        return "duplicate"
    try:
        with savepoint(session):
            row = WebhookEvent(digest=digest, provider=provider, kind="ignored", received_at=now)
            session.add(row)
            session.flush()  # a second request with this event stops here
            if event.kind == Kind.OTHER:
                return "ignored"
            found = find(session, links, event)
            if found is None:
                row.kind = "unmatched"
                return row.kind
            row.enrollment_id, row.day = found.enrollment.id, found.day
            if event.bounce is not None:
                decision = apply_bounce(
                    session, found.enrollment, found.day, event.bounce,
                    now=now, soft_rule=soft_rule, source=provider,
                )  # fmt: skip
                row.kind = _bounce_kind(decision, event.bounce.effect)
            elif event.complaint is not None:
                decision = apply_complaint(
                    session, found.enrollment, found.day, event.complaint,
                    now=now, source=provider,
                )  # fmt: skip
                row.kind = _complaint_kind(decision, event.complaint.reaction)
            session.flush()
            return row.kind
    except IntegrityError:
        if _seen(session, digest):
            return "duplicate"  # the same event, applied by a request racing this one
        raise  # another write collided (two events about one person at once): retried later


def _bounce_kind(decision: Decision, effect: Effect) -> str:
    """What ``status`` counts a bounce as, by what the rules did with it."""
    if decision.kind == InboundKind.DELAY:
        return "delay"
    if decision.kind != InboundKind.BOUNCE:
        return "ignored"
    return {Effect.SOFT: "soft", Effect.WARN: "warning"}.get(effect, "bounce")


def _complaint_kind(decision: Decision, reaction: Reaction) -> str:
    if decision.kind != InboundKind.COMPLAINT:
        return "ignored"
    return {Reaction.UNSUBSCRIBE: "unsubscribe", Reaction.WARN: "warning"}.get(
        reaction, "complaint"
    )


def _claim(session: Session, row: WebhookEvent) -> bool:
    """Insert ``row`` unless its digest is there already; whether it was new."""
    if _seen(session, row.digest):
        return False
    try:
        with savepoint(session):
            session.add(row)
            session.flush()
    except IntegrityError:
        if _seen(session, row.digest):
            return False
        raise
    return True


def _seen(session: Session, digest: str) -> bool:
    found = session.scalar(select(WebhookEvent.id).where(WebhookEvent.digest == digest))
    return found is not None


def _digest(provider: str, what: str, key: str) -> str:
    return hashlib.sha256(f"{provider}:{what}:{key}".encode()).hexdigest()
