"""A rendered lesson personalised straight into wire bytes: the per-recipient fast path.

``message.build_message`` builds a MIME object per recipient and lets the email package encode
it, about 1.5 ms a message, most of it quoted-printable encoding of the same 11 KB of HTML
again and again. Here each lesson is encoded once (``encode_lesson``); per recipient only the
lines that hold a personal value are encoded, and only the headers that need folding go
through the email package's folder. The bytes are those ``build_message`` would give, bar the
random MIME boundary: tests/test_wire.py holds the two paths to that for hard names.

Quoted-printable encodes line by line, so a line without a personal value encodes the same for
everyone; a line with one is joined from its pieces and encoded on its own. Escaping is octet
by octet, so the fixed pieces of such a line are escaped once per lesson and only the values
per recipient; the joined line is then cut at 76 characters as the email package cuts it
(``_qp_cut``). A line the cutting rules treat otherwise (one ending in a space or a tab, a
value with a line break in it) goes through the email package's own encoder.
"""

from __future__ import annotations

import datetime as dt
import functools
import random
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from email import quoprimime
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.utils import format_datetime, parseaddr

from markupsafe import escape

from dripcourse.courses.headers import (
    WIRE_POLICY,
    check_header_values,
    sender_header,
    subject_header,
    to_header,
)
from dripcourse.courses.render import PERSONAL_FIELDS, Personal, RenderedLesson, Template


def wire_bytes(msg: Message) -> bytes:
    """The message as it goes on the wire: CRLF line ends, lines starting "From " untouched."""
    return msg.as_bytes(policy=WIRE_POLICY)


@dataclass(frozen=True)
class WireMessage:
    """A finished message: its bytes as they go on the wire (CRLF) and its envelope."""

    sender: str
    recipients: tuple[str, ...]
    data: bytes
    # What the message is, for people looking at a folder of them: "white-coat-day03".
    label: str = ""


def as_wire(msg: Message | WireMessage) -> WireMessage:
    """A message in wire form; a MIME object is serialised, its envelope read from its
    Return-Path (or From) and To."""
    if isinstance(msg, WireMessage):
        return msg
    sender, data = envelope(msg)
    return WireMessage(sender=sender, recipients=(parseaddr(msg["To"])[1],), data=data)


def envelope(msg: Message) -> tuple[str, bytes]:
    """The envelope sender and the bytes to send.

    A ``Return-Path`` header set by the renderer names the envelope sender (a per-delivery
    bounce address); it is taken off the bytes, since the receiving server writes its own.
    Without one, the envelope sender is the From address.
    """
    return_path = msg["Return-Path"]
    if return_path is None:
        return parseaddr(msg["From"])[1], wire_bytes(msg)
    del msg["Return-Path"]
    try:
        return parseaddr(return_path)[1], wire_bytes(msg)
    finally:
        msg["Return-Path"] = return_path


CRLF = "\r\n"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # the only line breaks left once a body is QP-escaped
_MAX_PLAIN_HEADER = 78  # compat32 folds a header line longer than this
_UNFOLDABLE = re.compile(r"[!-+\--:<-~]+")  # no space, ",", ";": where compat32 may fold
_BOUNDARY_DIGITS = len(repr(sys.maxsize - 1))  # as email.generator makes them: fixed length
_PART_HEAD = (
    'Content-Type: text/{subtype}; charset="utf-8"\r\n'
    "MIME-Version: 1.0\r\n"
    "Content-Transfer-Encoding: quoted-printable\r\n"
    "\r\n"
)


def _boundary() -> str:
    # A boundary can never occur in a quoted-printable body: every "=" there is "=3D" or a
    # soft break at the end of a line, so "==" never appears.
    return "=" * 15 + str(random.randrange(sys.maxsize)).zfill(_BOUNDARY_DIGITS) + "=="


def _fold(name: str, value: str | Header) -> str:
    """One header as compat32 writes it with CRLF, the common cases without the email package.

    A short printable ASCII value stays on the header's line; one with nowhere to fold it (a
    link) moves whole to the next line. Anything else goes through compat32's own folder.
    """
    if isinstance(value, str) and value.isascii() and value.isprintable():
        if len(name) + 2 + len(value) <= _MAX_PLAIN_HEADER:
            return f"{name}: {value}{CRLF}"
        if _UNFOLDABLE.fullmatch(value):
            return f"{name}: {CRLF} {value}{CRLF}"
    return WIRE_POLICY.fold(name, value)


def _content_type_header() -> tuple[str, str]:
    """The multipart Content-Type line for a sample boundary, and the sample to swap out.

    Every boundary has the same length and no spaces, so it folds the same way every time.
    """
    sample = "=" * 15 + "7" * _BOUNDARY_DIGITS + "=="
    msg = MIMEMultipart("alternative", policy=WIRE_POLICY)
    msg.set_boundary(sample)
    return WIRE_POLICY.fold("Content-Type", msg["Content-Type"]), sample


_CONTENT_TYPE, _SAMPLE_BOUNDARY = _content_type_header()


# Quoted-printable in a body, as the email package writes it: every octet but printable ASCII
# other than "=", space and tab is written =XX (CR and LF are line breaks, never in a line here).
_QP_ESCAPES = {
    octet: quoprimime.quote(chr(octet))
    for octet in range(256)
    if quoprimime.body_check(octet) and chr(octet) not in "\r\n"
}
_QP_PLAIN = re.compile(
    "[" + re.escape("".join(chr(o) for o in range(256) if not quoprimime.body_check(o))) + "]*"
)
_QP_WIDTH = 76  # the longest encoded line, its soft break "=" included


def _qp_escaped(text: str) -> str:
    """``text`` escaped for a quoted-printable body, as UTF-8 octets, not yet cut into lines."""
    if _QP_PLAIN.fullmatch(text):
        return text
    if not text.isascii():  # the encoder works on octets, one character each
        text = text.encode("utf-8").decode("latin-1")
    return text.translate(_QP_ESCAPES)


def _qp_cut(line: str) -> str:
    """An escaped line (no line break in it, not ending in a space or a tab) cut as the email
    package's encoder cuts it: pieces of at most 75 characters and a soft break "=", an escape
    never split (it moves whole to the next piece). tests/test_wire.py holds it to that encoder.
    """
    if len(line) <= _QP_WIDTH:
        return line
    pieces = []
    start = 0
    while len(line) - start > _QP_WIDTH:
        stop = start + _QP_WIDTH - 1
        if line[stop - 2] == "=":  # an escape at the end: its "=" is the soft break, and it
            pieces.append(line[start : stop - 1])  # comes again whole on the next line
            start = stop - 2
        elif line[stop - 1] == "=":
            pieces.append(line[start:stop])
            start = stop - 1
        else:
            pieces.append(line[start:stop] + "=")
            start = stop
    pieces.append(line[start:])
    return CRLF.join(pieces)


class _PersonalLine:
    """A line that holds personal values, as two %-format strings: its text escaped once (the
    values go in escaped), and as it is (for the email package's encoder, when it must)."""

    __slots__ = ("escaped", "fields", "raw")

    def __init__(self, pieces: Sequence[str | int]) -> None:
        self.fields = tuple(p for p in pieces if isinstance(p, int))
        self.escaped = "".join(
            "%s" if isinstance(p, int) else _qp_escaped(p).replace("%", "%%") for p in pieces
        )
        self.raw = "".join("%s" if isinstance(p, int) else p.replace("%", "%%") for p in pieces)


class EncodedBody:
    """One part's body in quoted-printable, encoded once; personal lines encoded per recipient.

    ``chunks`` holds, in order, runs of ready-encoded lines (str) and lines that hold a
    personal value (``_PersonalLine``); a line break goes between chunks.
    """

    def __init__(self, template: Template) -> None:
        lines: list[list[str | int]] = [[]]
        for part in template.parts:
            if isinstance(part, int):
                lines[-1].append(part)
                continue
            first, *rest = _LINE_BREAK.split(part)
            lines[-1].append(first)
            lines.extend([piece] for piece in rest)
        self.chunks: list[str | _PersonalLine] = []
        static: list[str] = []
        for line in lines:
            if all(isinstance(piece, str) for piece in line):
                static.append(_qp_line("".join(line)))  # type: ignore[arg-type]
                continue
            if static:
                self.chunks.append(CRLF.join(static))
                static = []
            self.chunks.append(_PersonalLine(line))
        if static:
            self.chunks.append(CRLF.join(static))
        self.fields = frozenset(
            i for chunk in self.chunks if isinstance(chunk, _PersonalLine) for i in chunk.fields
        )

    def encode(self, values: Sequence[str]) -> str:
        """The body with ``values`` (indexed as PERSONAL_FIELDS) in place."""
        escaped = {i: _qp_escaped(values[i]) for i in self.fields}
        # A value with a line break in it (none from a name or an address): every line through
        # the email package's encoder, which gives the same as below for the other lines.
        broken = any("\r" in value or "\n" in value for value in escaped.values())
        lines = []
        for chunk in self.chunks:
            if isinstance(chunk, str):
                lines.append(chunk)
                continue
            line = chunk.escaped % tuple([escaped[i] for i in chunk.fields])
            if broken or (line and line[-1] in " \t"):
                # Cut otherwise (see _qp_line): the email package's encoder, on the line as it is.
                line = _qp_line(chunk.raw % tuple([values[i] for i in chunk.fields]))
            elif len(line) > _QP_WIDTH:
                line = _qp_cut(line)
            lines.append(line)
        return CRLF.join(lines)


def _qp_line(line: str) -> str:
    """One line (no line break in it) as the email package's quoted-printable encoder writes it."""
    if not line:
        return ""
    if not line.isascii():  # the encoder works on octets, one character each
        line = line.encode("utf-8").decode("latin-1")
    return quoprimime.body_encode(line, eol=CRLF)


@dataclass(frozen=True)
class EncodedLesson:
    """A lesson with everything that is the same for every recipient already encoded."""

    rendered: RenderedLesson
    sender: str
    from_header: str
    text: EncodedBody
    html: EncodedBody
    # Header lines the same for every reader, folded once: the email package folds a long or
    # non-ASCII Subject in tens of microseconds. None for a subject that shows a personal field.
    shared_subject_header: str | None = None
    list_id_header: str = ""
    feedback_header: str = ""  # empty when the programme sets no Feedback-ID

    @functools.cached_property
    def fields(self) -> tuple[tuple[int, str], ...]:
        """The PERSONAL_FIELDS either part shows, with their indexes: only those are worked
        out per recipient (a greeting parses the name)."""
        used = self.text.fields | self.html.fields
        return tuple((i, PERSONAL_FIELDS[i]) for i in sorted(used))

    @functools.cached_property
    def shown(self) -> frozenset[str]:
        """The PERSONAL_FIELDS the message shows anywhere (text, HTML or subject): the links
        among them are the only ones its readers need signed."""
        subject = (p for p in self.rendered.subject.parts if isinstance(p, int))
        used = self.text.fields | self.html.fields | frozenset(subject)
        return frozenset(PERSONAL_FIELDS[i] for i in used)


def encode_lesson(rendered: RenderedLesson) -> EncodedLesson:
    """Encode what every recipient of ``rendered`` shares; costs about one build_message."""
    subject = rendered.subject.parts
    feedback_id = rendered.feedback_id
    return EncodedLesson(
        rendered=rendered,
        sender=parseaddr(rendered.course.sender)[1],
        from_header=_fold("From", sender_header(rendered.course.sender)),
        text=EncodedBody(rendered.text),
        html=EncodedBody(rendered.html),
        shared_subject_header=(
            _fold("Subject", subject_header("".join(subject)))  # type: ignore[arg-type]
            if all(isinstance(part, str) for part in subject)
            else None
        ),
        list_id_header=_fold("List-Id", rendered.list_id),
        feedback_header=_fold("Feedback-ID", feedback_id) if feedback_id else "",
    )


@functools.lru_cache(maxsize=8)
def _date_header(second: dt.datetime) -> str:
    """The Date line for one second (UTC): every message of a batch sent within it shares it."""
    return _fold("Date", format_datetime(second))


def encoded(rendered: RenderedLesson) -> EncodedLesson:
    """The shared parts of ``rendered``, encoded on first use and kept with the lesson.

    Two threads asking at once may both encode it; the results are equal and one is kept.
    """
    lesson = rendered.derived.get("wire")
    if not isinstance(lesson, EncodedLesson):
        lesson = rendered.derived.setdefault("wire", encode_lesson(rendered))
    assert isinstance(lesson, EncodedLesson)
    return lesson


def personalise(
    rendered: RenderedLesson, who: Personal, *, now: dt.datetime, msg_id: str
) -> WireMessage:
    """The message ``build_message`` would give for ``who``, as wire bytes with its envelope.

    The lesson's shared parts are encoded on first use and kept with ``rendered``.
    """
    lesson = encoded(rendered)
    subject = lesson.rendered.subject.render(who)
    check_header_values(subject, who)
    plain = [""] * len(PERSONAL_FIELDS)
    for i, field in lesson.fields:
        plain[i] = who.value(field)
    escaped = plain.copy()
    for i in lesson.html.fields:  # escaped only where the HTML shows it
        escaped[i] = str(escape(plain[i]))
    boundary = _boundary()
    head = "".join(
        (
            _CONTENT_TYPE.replace(_SAMPLE_BOUNDARY, boundary),
            "MIME-Version: 1.0\r\n",
            lesson.from_header,
            _fold("To", to_header(who)),
            lesson.shared_subject_header or _fold("Subject", subject_header(subject)),
            # format_datetime writes whole seconds: the same line for a whole second.
            _date_header(now.astimezone(dt.UTC).replace(microsecond=0)),
            _fold("Message-ID", msg_id),
            lesson.list_id_header,
            _fold("List-Unsubscribe", f"<{who.unsubscribe}>"),
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
            lesson.feedback_header,
            _fold("Reply-To", who.reply_to) if who.reply_to else "",
            *(_fold(name, value) for name, value in who.tags),
            CRLF,
        )
    )
    data = "".join(
        (
            head,
            f"--{boundary}{CRLF}",
            _PART_HEAD.format(subtype="plain"),
            lesson.text.encode(plain),
            f"{CRLF}--{boundary}{CRLF}",
            _PART_HEAD.format(subtype="html"),
            lesson.html.encode(escaped),
            f"{CRLF}--{boundary}--{CRLF}",
        )
    )
    # A per-delivery bounce address is the envelope sender only (build_message's Return-Path,
    # which mail.envelope takes off the bytes).
    sender = who.bounce_to or lesson.sender
    return WireMessage(
        sender=sender,
        recipients=(who.email,),
        data=data.encode("ascii"),
        label=f"{rendered.course.slug}-day{rendered.lesson.day:02d}",
    )
