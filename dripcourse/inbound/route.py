"""Inbound mail: one function from the raw bytes of one message to a decision and its effect.

Replies to a lesson's ``reflect+TOKEN`` address become that day's reflection; bounces in
any shape and feedback reports to a ``bounce+TOKEN`` address are read by ``bounces`` and
``complaints`` and applied by ``effects``; auto-replies and everything else are dropped with
one log line. The SMTP listener, the stdin pipe and the IMAP poll (cli/inbound.py) are thin
adapters that hand bytes to ``process``. The raw message is never stored: a row in
``inbound_messages`` keeps only what kind it was, for the Message-ID check, the rate limits
and ``status``.

It stays whole (about 450 lines): the routing of one message is one reading; who sent a
reply is ``sender``'s question, what it answers ``answered``'s, what a report does
``effects``', and what becomes of a reply from another address ``reader.held_replies``'.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import hashlib
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.message import EmailMessage, Message
from email.utils import getaddresses
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from dripcourse.courses.course import Course
from dripcourse.db import savepoint
from dripcourse.encryption import ReflectionCipher, WrongReflectionsKey
from dripcourse.inbound.answered import LessonText, answered
from dripcourse.inbound.bounces import SoftRule, classify
from dripcourse.inbound.complaints import classify_complaint
from dripcourse.inbound.decision import Decision
from dripcourse.inbound.effects import apply_bounce, apply_complaint
from dripcourse.inbound.reply_text import reply_text
from dripcourse.inbound.sender import authenticated, from_address
from dripcourse.links import BOUNCE, REPLY, BadToken, Links, enrollment_of
from dripcourse.models import (
    Enrollment,
    InboundKind,
    InboundMessage,
    Subscriber,
)
from dripcourse.reader import held_replies
from dripcourse.reader.reflections import ReflectionRejected, append_from_email

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    per_subscriber_per_day: int = 20
    per_hour: int = 500
    max_chars: int = 20000
    # Messages asking a reader about a reply from another address, per reader per day.
    held_notices_per_day: int = 3


@dataclass(frozen=True)
class Inbound:
    """What ``process`` needs besides the session and the message."""

    links: Links
    cipher: ReflectionCipher
    reply_domain: str
    course: Callable[[str], Course | None]  # a course by slug, None when it is gone
    limits: Limits = Limits()
    # The MTA in front whose Authentication-Results are believed; "" reads none.
    trusted_authserv_id: str = ""
    # When mailbox-full and expired bounces add up to a suppression.
    soft_rule: SoftRule = SoftRule()
    # The lesson as the course renders it, by (slug, day): what a reply may quote.
    lesson_text: LessonText = lambda slug, day: ""  # noqa: E731


def process(
    session: Session,
    raw: bytes,
    inbound: Inbound,
    *,
    now: dt.datetime,
    recipients: Iterable[str] = (),
) -> Decision:
    """Decide what one inbound message is and act on it, in the caller's transaction.

    ``recipients`` are the envelope recipients when the adapter knows them (SMTP RCPT TO,
    the MTA's ``$recipient``); otherwise the message's own headers name our address. Logs
    one line. A message whose Message-ID was seen before does nothing.

    Whatever the bytes, a message becomes a decision: only what is not the message's fault
    escapes (``TEMPORARY``: the database, a wrong reflections key), so that the adapter asks
    the sender to try again later and nothing is recorded.
    """
    try:
        decision = _decide(session, raw, inbound, now, list(recipients))
    except DuplicateMessage:
        decision = Decision(InboundKind.DUPLICATE)
    log.info("inbound: %s", decision.describe())
    return decision


# Not the message's fault: the same message may succeed later, so nothing is recorded for it.
TEMPORARY: tuple[type[Exception], ...] = (DBAPIError, WrongReflectionsKey)

# Containers (multipart/*, message/*) one message may hold. Python's parser recurses once per
# level and raises past about 300; a real reply or report holds a handful. The cap keeps the
# parse and every walk over the tree short whatever the input.
MAX_CONTAINERS = 50
_CONTAINER = re.compile(rb"^content-type:[ \t]*(?:\r?\n[ \t]+)*(?:multipart|message)/", re.I | re.M)


# MIME parts of any kind: the parser spends about a tenth of a millisecond on each, so a
# message of 40,000 tiny parts (well under the size limit) would hold a thread for seconds.
# Counted as lines starting with "--", a few more than the parts; a real reply has a handful.
MAX_PARTS = 1000


class DuplicateMessage(Exception):
    """This Message-ID was processed before."""


class Unreadable(Exception):
    """A message the parser cannot be trusted with (too deeply nested)."""


def _decide(
    session: Session,
    raw: bytes,
    inbound: Inbound,
    now: dt.datetime,
    recipients: list[str],
) -> Decision:
    msg, digest = _read(raw)
    if session.scalar(select(InboundMessage.id).where(InboundMessage.digest == digest)):
        raise DuplicateMessage
    try:
        if msg is None:
            raise Unreadable
        # A savepoint: a message that breaks the parsing halfway leaves nothing half-done.
        with savepoint(session):
            decision = _classify(session, msg, raw, inbound, now, recipients)
    except TEMPORARY:
        raise  # not the message's fault: the adapter asks the sender to retry
    except Exception as exc:  # noqa: BLE001 - a message we cannot read is junk, never a crash
        decision = Decision(InboundKind.JUNK, f"unreadable ({type(exc).__name__})")
    session.add(
        InboundMessage(
            digest=digest,
            kind=str(decision.kind),
            enrollment_id=decision.enrollment_id,
            day=decision.day,
            received_at=now,
        )
    )
    session.flush()  # a second process with the same Message-ID stops here
    return decision


def _read(raw: bytes) -> tuple[EmailMessage | None, str]:
    """The parsed message (None when it cannot be read) and the digest it is recorded by.

    The digest is of the Message-ID when it has the shape of one, else of the raw bytes: an
    empty or broken Message-ID (``<>``, ``<@>``, ``<a@[b``, on which the header parser
    raises) would otherwise make every such message a duplicate of the first, or a crash.
    """
    raw_digest = hashlib.sha256(raw).hexdigest()
    if len(_CONTAINER.findall(raw)) > MAX_CONTAINERS:
        return None, raw_digest
    # Every MIME part starts on a line "--boundary"; each costs the parser its headers.
    if raw.startswith(b"--") + raw.count(b"\n--") > MAX_PARTS:
        return None, raw_digest
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        # The raw value: parsing it is what raises on the broken ones.
        ids = [value for name, value in msg.raw_items() if name.lower() == "message-id"]
    except Exception:  # noqa: BLE001 - whatever the parser raises, the bytes are junk
        return None, raw_digest
    message_id = " ".join(str(ids[0]).split()) if ids else ""
    if not _MESSAGE_ID.fullmatch(message_id):
        return msg, raw_digest
    return msg, hashlib.sha256(message_id.encode("utf-8", "surrogateescape")).hexdigest()


_MESSAGE_ID = re.compile(r"<[^<>@\s]+@[^<>@\s]+>")


def _classify(
    session: Session,
    msg: EmailMessage,
    raw: bytes,
    inbound: Inbound,
    now: dt.datetime,
    recipients: list[str],
) -> Decision:
    addressed = recipients or _header_recipients(msg)
    found = _token(session, inbound, addressed, (BOUNCE,))
    if found is not None:
        return _at_bounce_address(session, raw, inbound, now, *found)
    if msg.get_content_type() == "multipart/report":
        # A program wrote it (a bounce, a complaint, a read receipt): never a reflection.
        report = msg.get_param("report-type", "", header="content-type")
        report = report.lower() if isinstance(report, str) else ""
        if report == "feedback-report":
            return Decision(InboundKind.JUNK, "a complaint not sent to a bounce address")
        if report == "delivery-status":
            return Decision(InboundKind.JUNK, "a delivery report not addressed to a bounce address")
        return Decision(InboundKind.JUNK, "a report, not a reply")
    if is_auto_reply(msg):
        return Decision(InboundKind.AUTO_REPLY)
    found = _token(session, inbound, addressed, (REPLY,))
    if found is None:
        return Decision(InboundKind.JUNK, "not addressed to a valid reply address")
    enrollment_id, day = found
    if classify(msg) is not None:
        # A bounce that found the reply address (a server that answers Reply-To) is never
        # a reflection; and it suppresses no one there.
        return Decision(
            InboundKind.JUNK,
            "a delivery report not addressed to a bounce address",
            enrollment_id,
            day,
        )
    if is_forward(msg):
        return Decision(InboundKind.JUNK, "a forwarded message, not a reply", enrollment_id, day)
    return _reply(session, msg, inbound, now, enrollment_id, day)


# Replies


def _reply(
    session: Session,
    msg: EmailMessage,
    inbound: Inbound,
    now: dt.datetime,
    enrollment_id: int,
    day: int,
) -> Decision:
    enrollment = session.get(Enrollment, enrollment_id)
    if enrollment is None:
        return Decision(InboundKind.JUNK, "the enrollment is gone")
    subscriber = enrollment.subscriber
    sender = from_address(msg)
    if sender is None:
        return Decision(
            InboundKind.JUNK, "a From that is not one plain address", enrollment_id, day
        )
    if sender.casefold() != subscriber.email.casefold():
        return _hold(session, msg, inbound, now, enrollment, day, sender)
    if inbound.trusted_authserv_id and not authenticated(msg, inbound.trusted_authserv_id):
        return Decision(
            InboundKind.JUNK, "the sender's domain did not authenticate", enrollment_id, day
        )
    # One reply of this subscriber at a time (PostgreSQL; SQLite has one writer anyway): the
    # limit is counted and the day's text appended under this lock, so two replies at once
    # can neither both pass the limit nor each write the day's text without the other's.
    session.execute(select(Subscriber.id).where(Subscriber.id == subscriber.id).with_for_update())
    over = _over_limit(session, inbound.limits, subscriber.id, now)
    if over:
        return Decision(InboundKind.LIMITED, over, enrollment_id, day)
    asked = answered(session, enrollment, day, inbound.course, inbound.lesson_text)
    prompt = asked.prompt
    # The lesson's words find it wherever it is quoted, in any language's quote header.
    text = reply_text(msg, lesson=asked.lesson)
    if prompt is None:
        return Decision(InboundKind.JUNK, "the course no longer has that day", enrollment_id, day)
    try:
        append_from_email(
            session,
            enrollment,
            day,
            prompt,
            text,
            cipher=inbound.cipher,
            max_chars=inbound.limits.max_chars,
            now=now,
            local_day=now.astimezone(ZoneInfo(subscriber.timezone)).date(),
        )
    except ReflectionRejected as exc:
        why = "empty" if "empty" in str(exc) else "too long"
        return Decision(InboundKind.JUNK, f"reply {why}, not saved", enrollment_id, day)
    return Decision(InboundKind.REPLY, "", enrollment_id, day)


def _hold(
    session: Session,
    msg: EmailMessage,
    inbound: Inbound,
    now: dt.datetime,
    enrollment: Enrollment,
    day: int,
    sender: str,
) -> Decision:
    """A reply from another address: kept sealed, and its reader asked once whether it is
    theirs (reader.held_replies; the asking is sent after the commit by sending.notices)."""
    # The lock replies take: two held replies at once cannot both pass the notice limit.
    session.execute(
        select(Subscriber.id).where(Subscriber.id == enrollment.subscriber_id).with_for_update()
    )
    asked = answered(session, enrollment, day, inbound.course, inbound.lesson_text)
    if asked.prompt is None:
        return Decision(InboundKind.JUNK, "the course no longer has that day", enrollment.id, day)
    try:
        detail = held_replies.hold(
            session,
            enrollment,
            day,
            sender,
            reply_text(msg, lesson=asked.lesson),
            asked.prompt,
            cipher=inbound.cipher,
            links=inbound.links,
            max_chars=inbound.limits.max_chars,
            notices_per_day=inbound.limits.held_notices_per_day,
            now=now,
        )
    except ReflectionRejected as exc:
        why = "empty" if "empty" in str(exc) else "too long"
        return Decision(InboundKind.JUNK, f"reply {why}, not held", enrollment.id, day)
    return Decision(InboundKind.HELD, f"from another address, {detail}", enrollment.id, day)


def _over_limit(session: Session, limits: Limits, subscriber_id: int, now: dt.datetime) -> str:
    """Why another reply may not be saved now ("" when it may): a loop between two
    autoresponders, or a flood, must not fill the database."""
    mine = session.scalar(
        select(func.count())
        .select_from(InboundMessage)
        .join(Enrollment, InboundMessage.enrollment_id == Enrollment.id)
        .where(
            Enrollment.subscriber_id == subscriber_id,
            InboundMessage.kind == InboundKind.REPLY,
            InboundMessage.received_at > now - dt.timedelta(days=1),
        )
    )
    if (mine or 0) >= limits.per_subscriber_per_day:
        return f"more than {limits.per_subscriber_per_day} replies from one subscriber in a day"
    everyone = session.scalar(
        select(func.count())
        .select_from(InboundMessage)
        .where(
            InboundMessage.kind == InboundKind.REPLY,
            InboundMessage.received_at > now - dt.timedelta(hours=1),
        )
    )
    if (everyone or 0) >= limits.per_hour:
        return f"more than {limits.per_hour} replies in an hour"
    return ""


# Auto-replies and forwards

_AUTO_SUBJECT = re.compile(
    r"^\s*(out of (the )?office|automatic reply|auto(matic)?[- ]?reply|autoreply|away from"
    r"|abwesenheit|automatische antwort|respuesta autom[aá]tica|fuera de la oficina"
    r"|r[ée]ponse automatique|absence"
    # What the common clients write in the other languages of the course's readers.
    r"|risposta automatica|resposta autom[aá]tica|automatisch antwoord"
    r"|odpowied[zź] automatyczna|automatiskt? svar|autosvar|automaattinen vastaus"
    r"|автоматический ответ|автоматична відповідь|automatick[aá] odpov[eě][dď]"
    r"|otomatik yan[ıi]t|رد تلقائي|תשובה אוטומטית|自动回复|自动答复|自動回覆|自動応答|自動返信"
    r"|자동 ?회신|자동 ?응답|स्वचालित उत्तर)",
    re.IGNORECASE,
)
# A null envelope sender, as the delivering MTA records it: only programs send so.
_NULL_RETURN_PATH = re.compile(r"^\s*<\s*(#@\[\])?\s*>\s*$")  # qmail writes <#@[]>
_FORWARD_SUBJECT = re.compile(r"^\s*(fwd?|wg|rv|tr|enc|i)\s*:", re.IGNORECASE)
_FORWARD_BODY = re.compile(
    r"^-{2,}\s*(forwarded message|weitergeleitete nachricht|mensaje reenviado|original message)"
    r"|^begin forwarded message:",
    re.IGNORECASE | re.MULTILINE,
)


def is_auto_reply(msg: Message) -> bool:
    """An out-of-office or other message a program sent: it must never be answered or saved.

    Besides the headers such programs write, a ``Return-Path: <>`` (the topmost, which the
    delivering MTA writes) says so: a null envelope sender is for bounces, notices and
    out-of-office answers (RFC 5321, 4.5.5), never a person's reply.
    """
    if _NULL_RETURN_PATH.match(str(msg.get("Return-Path", "-"))):
        return True
    auto = str(msg.get("Auto-Submitted", "")).strip().lower()
    if auto and auto != "no":
        return True
    if msg.get("X-Autoreply") or msg.get("X-Autorespond"):
        return True
    if str(msg.get("Precedence", "")).strip().lower() in ("auto_reply", "bulk", "junk", "list"):
        return True
    return bool(_AUTO_SUBJECT.match(str(msg.get("Subject", ""))))


def is_forward(msg: EmailMessage) -> bool:
    """A lesson forwarded to our address rather than answered."""
    if not _FORWARD_SUBJECT.match(str(msg.get("Subject", ""))):
        return False
    part = msg.get_body(preferencelist=("plain", "html"))
    try:
        body = part.get_content() if part is not None else ""  # type: ignore[union-attr]
    except (LookupError, ValueError):
        body = ""
    return bool(_FORWARD_BODY.search(body))


# Delivery reports and complaints


def _at_bounce_address(
    session: Session,
    raw: bytes,
    inbound: Inbound,
    now: dt.datetime,
    enrollment_id: int,
    day: int,
) -> Decision:
    """A message to the bounce address: a complaint, a bounce in any shape, or neither.

    Only here do reports count: the bounce address is in no message a subscriber can
    forward (it is the envelope sender alone), while the reply address is in every
    lesson's Reply-To; and the report's own fields are written by whoever sent it.
    """
    enrollment = session.get(Enrollment, enrollment_id)
    if enrollment is None:
        return Decision(InboundKind.JUNK, "the enrollment is gone")
    # Read as the classifiers are measured (benchmarks/bounces.py): the lenient parser.
    msg = email.message_from_bytes(raw[:MAX_REPORT_BYTES], policy=email.policy.compat32)
    complaint = classify_complaint(msg)
    if complaint is not None:
        return apply_complaint(session, enrollment, day, complaint, now=now, source="mail")
    bounce = classify(msg, to_bounce_address=True)
    if bounce is not None:
        return apply_bounce(
            session, enrollment, day, bounce, now=now, soft_rule=inbound.soft_rule, source="mail"
        )
    if is_auto_reply(msg):
        return Decision(InboundKind.AUTO_REPLY, "", enrollment_id, day)
    return Decision(
        InboundKind.JUNK, "neither a delivery report nor a complaint", enrollment_id, day
    )


MAX_REPORT_BYTES = 2_000_000


# Addresses


def _header_recipients(msg: Message) -> list[str]:
    """The values of the headers that may name our address, as they came: the parser reads
    an address header in about a tenth of a millisecond, and a message may hold 40,000 of
    them. Those past ``MAX_ADDRESS_HEADERS`` are not read."""
    names = ("delivered-to", "x-original-to", "to", "cc")
    found: dict[str, list[str]] = {name: [] for name in names}
    for name, value in msg.raw_items():
        listed = found.get(name.lower())
        if listed is not None and len(listed) < MAX_ADDRESS_HEADERS:
            listed.append(" ".join(str(value).split()))
    return [value for name in names for value in found[name]]


MAX_ADDRESS_HEADERS = 100


def _token(
    session: Session, inbound: Inbound, values: Iterable[str], purposes: tuple[str, ...]
) -> tuple[int, int] | None:
    """(enrollment, day) from the first of ``values`` that is a valid address of ours, made
    for an enrollment that is still there (an old address never reaches a later row)."""
    domain = inbound.reply_domain.lower()
    for _name, address in getaddresses([v for v in values if v]):
        local, _, host = address.strip().rpartition("@")
        if not domain or host.lower() != domain:
            continue
        for purpose in purposes:
            try:
                token = inbound.links.load_address_token(purpose, local)
            except BadToken:
                continue
            if enrollment_of(session, token) is not None:
                return token.ids[0], token.ids[1]
    return None
