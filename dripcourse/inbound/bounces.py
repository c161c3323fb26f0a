"""A bounce in any shape, read into one reason family, its enhanced status and its recipient.

Real bounces are RFC 3464 delivery reports only about half of the time: Exim, qmail, older
Postfix and Exchange, Gmail, Yahoo and list software write prose, each its own. So the
classifier reads three things and trusts them in this order: the words of the diagnostic
(what the receiving server said, which names the reason even behind a generic ``5.0.0``),
the most specific enhanced status found in the report or the diagnostic, and the report's
own fields. It is a pure function: no database, no settings; ``route.py`` applies the rules
(docs/inbound.md, "Bounces"). Its input is bounded (``MAX_TEXT`` characters of report text,
``MAX_PARTS`` MIME parts) and its patterns are linear, so a hostile message costs
milliseconds.

It stays one module (about 450 lines): reading a report and finding its reason family are one
pass over the same text; the families themselves are in ``bounce_reasons``.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.message import Message
from enum import StrEnum

from dripcourse.inbound.bounce_reasons import (
    MAX_TEXT,
    Family,
    action_of,
    best_status,
    family_of,
)

MAX_PARTS = 64


class Effect(StrEnum):
    """What a failure of this family does to the subscriber's address."""

    SUPPRESS = "suppress"  # the address does not exist: never mail it again
    SOFT = "soft"  # suppress only after repeated failures over days
    WARN = "warn"  # about us: keep the subscriber, warn the operator
    NOTE = "note"  # recorded on the delivery, nothing else


EFFECTS = {
    Family.USER_UNKNOWN: Effect.SUPPRESS,
    Family.HOST_UNKNOWN: Effect.SUPPRESS,
    Family.MAILBOX_FULL: Effect.SOFT,
    Family.MAILBOX_DISABLED: Effect.SOFT,
    Family.EXPIRED: Effect.SOFT,
    Family.TOO_LARGE: Effect.WARN,
    Family.POLICY: Effect.WARN,
    Family.OUR_SENDER: Effect.WARN,
    Family.SYSTEM_ERROR: Effect.NOTE,
    Family.OTHER: Effect.NOTE,
}


@dataclass(frozen=True)
class Bounce:
    """One failed (or delayed) delivery as a report tells it."""

    family: Family
    status: str  # the most specific enhanced status found, "5.1.1"; "" when none
    action: str  # "failed", "delayed" or "delivered"
    recipient: str  # the address that failed, lower-cased; "" when the report names none
    diagnostic: str  # what the receiving server said, one line, at most 300 characters
    rfc3464: bool  # the report was a machine-readable delivery report

    @property
    def failed(self) -> bool:
        """The server gave up: ``Action: failed`` (whatever its status class) or a 5.x.x."""
        return self.action == "failed"

    @property
    def effect(self) -> Effect:
        if not self.failed:
            return Effect.NOTE
        return EFFECTS[self.family]


@dataclass(frozen=True)
class SoftRule:
    """When soft failures (mailbox full, disabled, expired) add up to a suppression: at
    least ``failures`` of them within ``window_days``, the first and the last at least
    ``days`` apart. A mailbox full for an afternoon is a bad day; full for a week is gone."""

    failures: int = 3
    days: int = 5
    window_days: int = 30

    def suppresses(self, times: Sequence[dt.datetime], now: dt.datetime) -> bool:
        """Whether soft failures at ``times`` (this one included) suppress the address."""
        recent = sorted(t for t in times if now - t <= dt.timedelta(days=self.window_days))
        if len(recent) < self.failures:
            return False
        return recent[-1] - recent[0] >= dt.timedelta(days=self.days)


def classify_bytes(raw: bytes, *, to_bounce_address: bool = False) -> Bounce | None:
    """``classify`` on raw bytes; never raises on a message, however broken."""
    try:
        msg = email.message_from_bytes(raw[:2_000_000], policy=email.policy.compat32)
    except Exception:  # noqa: BLE001 - unparseable input is simply not a bounce we can read
        return None
    return classify(msg, to_bounce_address=to_bounce_address)


def classify(msg: Message, *, to_bounce_address: bool = False) -> Bounce | None:
    """The bounce ``msg`` reports, or None when it does not look like a bounce at all.

    Reads RFC 3464 reports (tolerating unindented continuation lines) and the prose of the
    MTAs that write none. ``to_bounce_address``: the message came to our envelope-only
    bounce address, where little but bounces and auto-replies arrives, so a notice whose
    headers do not look like a bounce is still read when its words say delivery failed.
    Never raises on a message.
    """
    try:
        return _classify(msg, to_bounce_address)
    except Exception:  # noqa: BLE001 - a hostile message is "not a bounce", never a crash
        return None


def looks_like_bounce(msg: Message) -> bool:
    """A delivery failure notice by its envelope and headers, before reading its text."""
    if msg.get_content_type() == "multipart/report":
        kind = str(msg.get_param("report-type", "", header="content-type") or "").lower()
        # A complaint or a read receipt is a report too, but not a bounce.
        return kind not in ("feedback-report", "disposition-notification")
    if _header(msg, "X-Failed-Recipients"):
        return True
    sender = _header(msg, "From").lower()
    subject = _header(msg, "Subject")
    if re.search(
        r"mailer-?daemon|post_?master|mail delivery (sub)?system|\bowner-|-(admin|owner|request"
        r"|bounces?)@",
        sender,
    ):
        return True
    if _REPLY_SUBJECT.match(subject):
        return False  # a person answering a lesson whose title has such words
    return bool(_BOUNCE_SUBJECT.search(subject))


_REPLY_SUBJECT = re.compile(r"^\s*(re|aw|sv|vs|ref|antw|odp|ynt|回复|답장)\s*[:：]", re.IGNORECASE)


def _auto_reply(msg: Message) -> bool:
    """An out-of-office answer to our envelope sender: RFC 3834 marks it auto-replied."""
    auto = _header(msg, "Auto-Submitted").strip().lower()
    return auto.startswith("auto-replied") or bool(
        _header(msg, "X-Autoreply") or _header(msg, "X-Autorespond")
    )


_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|delivery (status notification|failure|failed|report|problem)"
    r"|failure notice|returned mail|mail delivery failed|could not be delivered"
    r"|nondeliverable|non-delivery|delivery notification|returned to sender"
    r"|mail system error|warning: could not send|unzustellbar|non remis|no entregado"
    r"|mail failure|message not delivered|delivery has failed|недоставлен",
    re.IGNORECASE,
)


# Reading the message


@dataclass
class _Recipient:
    address: str = ""
    action: str = ""
    status: str = ""
    diagnostic: str = ""


def _classify(msg: Message, to_bounce_address: bool) -> Bounce | None:
    kind = str(msg.get_param("report-type", "", header="content-type") or "").lower()
    if kind in ("feedback-report", "disposition-notification"):
        return None  # a complaint (complaints.py) or a read receipt
    parts = _parts(msg)
    report = [p for p in parts if p.get_content_type() == "message/delivery-status"]
    text = _report_text(msg, parts)
    recipients = _delivery_status(report[0]) if report else _delivery_status_in(text)
    if not recipients and not looks_like_bounce(msg):
        # A notice whose headers hide what it is still reads as one: on the bounce
        # address, or anywhere when it answers no message (a person's reply names the
        # message it answers; a mail server's notice does not).
        answers = _header(msg, "In-Reply-To") or _header(msg, "References")
        if (answers and not to_bounce_address) or _auto_reply(msg) or not _FAILURE.search(text):
            return None
    chosen = next((r for r in recipients if r.action.startswith("fail")), None)
    chosen = chosen or (recipients[0] if recipients else _Recipient())
    address = chosen.address or _failed_header(msg) or _address_in(text, msg)
    diagnostic = chosen.diagnostic or _diagnostic_line(text, address)
    status = best_status(chosen.status, f"{chosen.diagnostic}\n{text}")
    action = action_of(chosen.action, status, text)
    family = family_of(chosen.diagnostic, text, status, action)
    return Bounce(
        family=family,
        status=status,
        action=action,
        recipient=address.lower(),
        diagnostic=" ".join(diagnostic.split())[:300],
        rfc3464=bool(recipients),
    )


def _parts(msg: Message) -> list[Message]:
    """The message's parts outside any enclosed original, at most ``MAX_PARTS``."""
    found: list[Message] = []
    stack = [msg]
    while stack and len(found) < MAX_PARTS:
        part = stack.pop()
        found.append(part)
        kind = part.get_content_type()
        payload = part.get_payload()
        if not part.is_multipart() or not isinstance(payload, list):
            continue
        if kind == "message/rfc822":
            # A report forwarded whole (one mail system wraps the real DSN so) is read;
            # any other enclosed message is the original, not the report.
            inner = payload[0] if payload else None
            if (
                isinstance(inner, Message)
                and inner.get_content_type() == "multipart/report"
                and not any(p.get_content_type() == "message/delivery-status" for p in found)
            ):
                stack.append(inner)
        elif kind != "message/delivery-status":
            stack.extend(reversed(payload[:MAX_PARTS]))
    return found


def _header(msg: Message, name: str) -> str:
    value = msg.get(name)
    if value is None:
        return ""
    try:
        return str(make_header(decode_header(str(value))))
    except Exception:  # noqa: BLE001 - a broken encoded-word is read as it stands
        return str(value)


def _text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        payload = str(part.get_payload()).encode("utf-8", "replace")
    charset = part.get_content_charset() or "utf-8"
    try:
        text = payload[: MAX_TEXT * 4].decode(charset, "replace")
    except LookupError:
        text = payload[: MAX_TEXT * 4].decode("utf-8", "replace")
    return text.replace("\r\n", "\n").replace("\r", "\n")[:MAX_TEXT]


# The start of the enclosed original in a one-part bounce, in the words MTAs use.
_ORIGINAL = re.compile(
    r"^([ \t]*-{2,}.*(below this line|original message|copy of the message|message header"
    r"|original headers|undelivered message|returned message|headers of your message"
    r"|message text|unsent message|original mail).*"
    r"|.*(original message follows|message follows|unsent message below"
    r"|original message headers).*"
    # A header at the start of a line; an indented one is a summary inside the explanation.
    r"|(return-path|received|dkim-signature|x-received|arc-seal|message-id|mime-version):.*)$",
    re.IGNORECASE | re.MULTILINE,
)


def _report_text(msg: Message, parts: list[Message]) -> str:
    """The human-readable explanation, without the enclosed original."""
    texts = [p for p in parts if _kind(p) == "text/plain"]
    if not texts:
        # A multipart whose boundary is lost (an unindented header continuation) reads as
        # one text.
        texts = [
            p
            for p in parts
            if p.get_content_maintype() == "multipart" and isinstance(p.get_payload(), str)
        ]
    if not texts:
        texts = [p for p in parts if _kind(p) == "text/html"]
        text = _strip_html(_text(texts[0])) if texts else ""
    else:
        text = _text(texts[0])
    broken = texts[0].get_content_maintype() == "multipart"
    if broken or len(texts) == 1 and not _has_enclosure(parts):
        cut = _ORIGINAL.search(text)
        if cut and cut.start() > 0:
            text = text[: cut.start()]
    return text


def _kind(part: Message) -> str:
    """The part's content type, also when a semicolon is missing before its parameters
    ("text/plain" and "charset=..." on the next line, as one old gateway writes it)."""
    kind = part.get_content_type()
    return kind.split()[0] if kind[:1].isalpha() and any(c.isspace() for c in kind) else kind


def _has_enclosure(parts: list[Message]) -> bool:
    kinds = ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers")
    return any(p.get_content_type() in kinds for p in parts)


def _strip_html(html: str) -> str:
    html = re.sub(r"(?is)<(style|script)\b.{0,5000}?</\1\s*>", " ", html)
    text = re.sub(r"(?s)<br\s*/?>|</(p|div|tr|li)>", "\n", html)
    text = re.sub(r"(?s)<[^>]{0,2000}>", " ", text)
    return re.sub(r"&nbsp;|&#160;", " ", text).replace("&lt;", "<").replace("&gt;", ">")


def _delivery_status(part: Message) -> list[_Recipient]:
    """The per-recipient blocks of a message/delivery-status part.

    Continuation lines that are not indented (one filtering service writes its long
    diagnostics so) continue the field above them rather than ending the block.
    """
    payload = part.get_payload()
    if isinstance(payload, list):
        blocks: list[str] = []
        for block in payload:
            lines = [f"{k}: {v}" for k, v in block.items()]
            rest = block.get_payload()
            if isinstance(rest, str) and rest.strip():
                lines.append(rest)
            blocks.append("\n".join(lines))
        text = "\n\n".join(blocks)
    else:
        text = str(payload)
    return _recipient_blocks(text)


def _delivery_status_in(text: str) -> list[_Recipient]:
    """Delivery-status fields written into the text itself (a report whose MIME structure
    is broken, or a provider that quotes the fields in its prose)."""
    if not re.search(r"^final-recipient:", text, re.IGNORECASE | re.MULTILINE):
        return []
    return [r for r in _recipient_blocks(text) if r.address]


def _recipient_blocks(text: str) -> list[_Recipient]:
    recipients = []
    for block in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n")[:MAX_TEXT]):
        fields = _fields(block)
        if "final-recipient" in fields or "original-recipient" in fields or "status" in fields:
            recipients.append(  # noqa: PERF401
                _Recipient(
                    address=_address(
                        fields.get("final-recipient") or fields.get("original-recipient", "")
                    ),
                    action=fields.get("action", "").strip().lower(),
                    status=fields.get("status", "").strip(),
                    diagnostic=fields.get("diagnostic-code", ""),
                )
            )
    return recipients


_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9-]{0,40}):[ \t]?(.*)$")


def _fields(block: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    last = ""
    for line in block.split("\n"):
        match = _FIELD.match(line)
        if match and not line[:1].isspace():
            last = match.group(1).lower()
            fields.setdefault(last, match.group(2).strip())
        elif last and line.strip():
            fields[last] += " " + line.strip()
    return fields


_ADDRESS = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63}){1,8}"
)


def _address(field: str) -> str:
    """The address of an ``rfc822; user@host`` field."""
    value = field.split(";", 1)[-1]
    match = _ADDRESS.search(value)
    return match.group(0).strip(".") if match else ""


def _failed_header(msg: Message) -> str:
    return _address(_header(msg, "X-Failed-Recipients"))


_NOT_RECIPIENT = re.compile(r"^(mailer-daemon|mail-daemon)@", re.IGNORECASE)
# Where the prose names the recipients; an address before it is often the original's To.
_NAMED = re.compile(
    r"(following|these) (recipient|address|destination)|the recipient|did not reach"
    r"|not (be )?delivered to"
    r"|could not be reached|delivery to|failed recipient|original address",
    re.IGNORECASE,
)


_MALFORMED = re.compile(r"malformed address: <?(" + _ADDRESS.pattern + ")", re.IGNORECASE)

# What may stand between those words and the address: Exim's "address(es) failed:".
_NAMED_GAP = re.compile(r"[\s():es]{0,8}(failed\W{0,4})?\s{0,8}", re.IGNORECASE)


def _address_in(text: str, msg: Message) -> str:
    """The first address in the explanation that is neither the bounce's sender nor ours."""
    ours = {
        _address(_header(msg, name)).lower() for name in ("From", "To", "Return-Path", "Sender")
    }
    # Right after the words that name the recipients, the first address is theirs, even
    # when it is also the bounce's To (one sent to oneself).
    senders = {_address(_header(msg, name)).lower() for name in ("From", "Sender")}
    malformed = _MALFORMED.search(text)  # Exim names the bad address after these words
    if malformed:
        return malformed.group(1).strip(".")
    for anchor in itertools.islice(_NAMED.finditer(text), 10):
        first = _ADDRESS.search(text, anchor.end(), anchor.end() + 100)
        if first is None or not _NAMED_GAP.fullmatch(text[anchor.end() : first.start()]):
            continue
        address = first.group(0).strip(".")
        if address.lower() not in senders and not _NOT_RECIPIENT.match(address):
            return address
    named = _NAMED.search(text)
    if named:
        text = text[named.end() :] + "\n" + text[: named.end()]
    for match in _ADDRESS.finditer(text):
        address = match.group(0).strip(".")
        if address.lower() not in ours and not _NOT_RECIPIENT.match(address):
            return address
    return ""


def _diagnostic_line(text: str, address: str) -> str:
    for line in text.split("\n"):
        if re.search(r"\b[45]\d\d\b|\b[45]\.\d{1,3}\.\d{1,3}\b", line):
            return line.strip()
    return ""


_FAILURE = re.compile(
    r"could not be delivered|undeliverable|delivery (has )?failed|permanent (error|failure)"
    r"|not (be )?delivered|unable to deliver|returned to sender|failed to deliver"
    r"|not a member of|duplicated message-id|delivery status notification",
    re.IGNORECASE,
)
