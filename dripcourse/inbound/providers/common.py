"""What every provider's module gives back: verified events in one shape, or a refusal.

A provider module reads nothing of a request before its signature (or credentials) is
checked, and gives back only ``Event`` values built from the classifier's ``Bounce`` and
``Complaint``: the rules that follow are the same as for bounces by mail.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from dripcourse.inbound.bounce_reasons import Family, action_of, best_status, family_of
from dripcourse.inbound.bounces import Bounce
from dripcourse.inbound.complaints import REACTIONS, Complaint, Reaction

MAX_BODY_BYTES = 5_000_000  # a SendGrid batch is at most a few hundred events


class Refused(Exception):
    """A request we do not act on: unsigned, badly signed, replayed, or not one we know.
    ``status`` is the 4xx it gets; nothing has been changed."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status
        self.why = why


class Kind(StrEnum):
    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"
    OTHER = "other"  # deliveries, opens, anything we do not act on


@dataclass(frozen=True)
class Event:
    """One event about one recipient, as the provider reported it."""

    key: str  # the provider's own id of the event: seen before means done before
    kind: Kind
    recipient: str = ""  # lower case; never enough alone to find the person
    tag: str = ""  # the token of our delivery header, "" when the event carries none
    message_id: str = ""  # our Message-ID as the provider hands it back, "" when none
    bounce: Bounce | None = None
    complaint: Complaint | None = None


@dataclass(frozen=True)
class Verified:
    """A request whose signature held: its nonce (a replay of it is refused) and events."""

    nonce: str  # "" when the scheme has none (Postmark): events' keys guard alone
    events: list[Event] = field(default_factory=list)


def parse_json(body: bytes) -> Any:
    """The JSON of a body whose signature already held; Refused (400) when it is not JSON."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Refused(400, "the body is not JSON") from None


def check_fresh(when: dt.datetime, now: dt.datetime, max_age: int) -> None:
    """Refuse a signed request older than ``max_age`` seconds (or as far in the future)."""
    if abs((now - when).total_seconds()) > max_age:
        raise Refused(403, "the signed timestamp is too old: a replay")


def from_unix(value: object) -> dt.datetime:
    try:
        return dt.datetime.fromtimestamp(float(str(value)), dt.UTC)
    except (ValueError, OverflowError, OSError):
        raise Refused(403, "the signed timestamp is not a time") from None


def text(value: object, limit: int = 2000) -> str:
    """A payload value as one short line ("" for anything that is not text or a number)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return ""
    return " ".join(str(value).split())[:limit]


def provider_bounce(
    *,
    recipient: str,
    diagnostic: str,
    status: str = "",
    action: str = "",
    family: Family | None = None,
) -> Bounce:
    """A ``Bounce`` read as the classifier reads one by mail: the diagnostic's words and the
    most specific status first; the provider's own category (``family``) only when they
    name nothing."""
    status = best_status(status, diagnostic)
    action = action_of(action.lower(), status, diagnostic)
    found = family_of(diagnostic, diagnostic, status, action)
    if found == Family.OTHER and family is not None:
        found = family
    return Bounce(
        family=found,
        status=status,
        action=action,
        recipient=recipient.lower(),
        diagnostic=diagnostic[:300],
        rfc3464=False,
    )


def complaint(recipient: str, feedback_type: str = "abuse") -> Complaint:
    kind = (feedback_type or "abuse").strip().lower()
    return Complaint(kind, recipient.lower(), REACTIONS.get(kind, Reaction.IGNORE))


def unsubscribed(recipient: str) -> Complaint:
    """An unsubscribe the provider took (its link, its list header): the reader's own wish."""
    return Complaint("opt-out", recipient.lower(), Reaction.UNSUBSCRIBE)
