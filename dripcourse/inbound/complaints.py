"""A complaint or opt-out report, read into its feedback type, its recipient and its effect.

Mailbox providers report in three shapes: RFC 5965 feedback reports (``Feedback-Type:
abuse``, ``opt-out``, ``auth-failure``, ``fraud``, ...), one large provider's junk-mail
reports (the enclosed original only, marked with the recipient it came to), and one mail
client's unsubscribe message (``X-Apple-Unsubscribe``) sent on the reader's behalf. Like
``bounces.py`` this is a pure function; ``route.py`` applies the effect (docs/inbound.md,
"Complaints"). Which of our addresses a report came to is ``route.py``'s business: the
fields read here are written by whoever sent the report and prove nothing about the token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message
from enum import StrEnum

from dripcourse.inbound.bounces import MAX_PARTS, _address, _fields, _header, _text


class Reaction(StrEnum):
    """What a report does to the subscriber it names."""

    COMPLAINED = "complained"  # marked as spam: unsubscribe and suppress, as ever
    UNSUBSCRIBE = "unsubscribe"  # asked to stop through their provider or client
    WARN = "warn"  # about us (authentication failed, taken for fraud or a virus)
    IGNORE = "ignore"  # not-spam and unknown types


REACTIONS = {
    "abuse": Reaction.COMPLAINED,
    "opt-out": Reaction.UNSUBSCRIBE,
    "auth-failure": Reaction.WARN,
    "fraud": Reaction.WARN,
    "virus": Reaction.WARN,
    "not-spam": Reaction.IGNORE,
}


@dataclass(frozen=True)
class Complaint:
    feedback_type: str  # lower-case, as the report names it ("abuse", "opt-out", ...)
    recipient: str  # the address the reported message was sent to; "" when redacted
    reaction: Reaction


def classify_complaint(msg: Message) -> Complaint | None:
    """The complaint ``msg`` carries, or None when it is no feedback report. Never raises."""
    try:
        return _classify(msg)
    except Exception:  # noqa: BLE001 - a hostile message is "not a complaint", never a crash
        return None


def _classify(msg: Message) -> Complaint | None:
    parts = _walk(msg)
    report = next((p for p in parts if p.get_content_type() == "message/feedback-report"), None)
    enclosed = _enclosed(parts)
    if report is not None:
        fields = _report_fields(report)
        kind = fields.get("feedback-type", "").strip().lower() or "abuse"
        recipient = _address(fields.get("original-rcpt-to", ""))
        if not recipient and enclosed is not None:
            recipient = _address(_header(enclosed, "To"))
        return Complaint(kind, recipient.lower(), REACTIONS.get(kind, Reaction.IGNORE))
    if enclosed is not None and enclosed.get("X-HmXmrOriginalRecipient"):
        recipient = _address(_header(enclosed, "X-HmXmrOriginalRecipient"))
        return Complaint("abuse", recipient.lower(), Reaction.COMPLAINED)
    if _header(msg, "X-Apple-Unsubscribe").strip().lower() == "true":
        recipient = _address(_header(msg, "From"))
        return Complaint("opt-out", recipient.lower(), Reaction.UNSUBSCRIBE)
    return None


def _walk(msg: Message) -> list[Message]:
    found: list[Message] = []
    stack = [msg]
    while stack and len(found) < MAX_PARTS:
        part = stack.pop()
        found.append(part)
        payload = part.get_payload()
        if part.is_multipart() and isinstance(payload, list):
            if part.get_content_type() == "message/rfc822":
                found.extend(p for p in payload[:1] if isinstance(p, Message))
            elif part.get_content_type() != "message/feedback-report":
                stack.extend(reversed(payload[:MAX_PARTS]))
    return found


def _enclosed(parts: list[Message]) -> Message | None:
    """The reported message (or its headers)."""
    for index, part in enumerate(parts):
        kind = part.get_content_type()
        if kind == "message/rfc822" and index + 1 < len(parts):
            return parts[index + 1]
        if kind in ("text/rfc822-headers", "message/rfc822-headers"):
            from email.parser import HeaderParser

            return HeaderParser().parsestr(_text(part))
    return None


def _report_fields(part: Message) -> dict[str, str]:
    payload = part.get_payload()
    if isinstance(payload, list):
        lines = []
        for block in payload:
            lines += [f"{k}: {v}" for k, v in block.items()]
            rest = block.get_payload()
            if isinstance(rest, str):
                lines.append(rest)
        text = "\n".join(lines)
    else:
        text = str(payload)
    return _fields(re.sub(r"\n[ \t]*\n", "\n", text.replace("\r\n", "\n")))
