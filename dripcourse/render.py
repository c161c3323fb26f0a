"""Turn a lesson into an email: Jinja2 + Markdown + premailer once per lesson, personalise after.

premailer costs milliseconds per document, so each lesson is rendered and inlined once with
placeholder tokens standing in for everything personal (name, links). Per subscriber, the
placeholders are swapped for escaped values: a string join, not another premailer run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
from dataclasses import dataclass
from email.charset import QP, Charset
from email.header import Header
from email.headerregistry import Address
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import format_datetime, formataddr, make_msgid, parseaddr
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import jinja2
import premailer
from markdown_it import MarkdownIt
from markupsafe import Markup, escape

from dripcourse.course import LAYOUT_DIR, Course, Lesson
from dripcourse.errors import CourseError

if TYPE_CHECKING:
    from dripcourse.wire import EncodedLesson

# What a lesson or layout may use that differs per subscriber.
PERSONAL_FIELDS = ("name", "first_name", "email", "reflect", "journal", "pause", "unsubscribe")
_TOKEN = "Zq{}xDRIPx{}Zq"
_TOKEN_RE = re.compile(r"Zq(\w+?)xDRIPx(\d+)Zq")
MAX_HTML_BYTES = 100_000  # Gmail clips an HTML body past about 102 KB.


@dataclass(frozen=True)
class Personal:
    """What changes per recipient. Links are full URLs."""

    email: str
    name: str
    reflect: str
    journal: str
    pause: str
    unsubscribe: str

    @property
    def first_name(self) -> str:
        return self.name.split()[0] if self.name.strip() else "there"

    def value(self, field: str) -> str:
        return str(getattr(self, field))


class _Tokens:
    """Stand-ins for personal values, unique per render so they can never collide with text."""

    def __init__(self, seed: str) -> None:
        self.salt = hashlib.sha1(seed.encode()).hexdigest()[:6]

    def __getattr__(self, field: str) -> str:
        if field not in PERSONAL_FIELDS:
            raise AttributeError(field)
        return _TOKEN.format(self.salt, PERSONAL_FIELDS.index(field))


class Template:
    """A rendered document split at its personal placeholders."""

    def __init__(self, text: str, html: bool) -> None:
        self.parts: list[str | int] = []
        pos = 0
        for match in _TOKEN_RE.finditer(text):
            self.parts.append(text[pos : match.start()])
            self.parts.append(int(match.group(2)))
            pos = match.end()
        self.parts.append(text[pos:])
        self.html = html

    def render(self, who: Personal) -> str:
        out = []
        for part in self.parts:
            if isinstance(part, int):
                value = who.value(PERSONAL_FIELDS[part])
                out.append(str(escape(value)) if self.html else value)
            else:
                out.append(part)
        return "".join(out)


@dataclass(frozen=True)
class RenderedLesson:
    """One lesson, inlined once, ready to personalise."""

    course: Course
    lesson: Lesson
    subject: Template
    text: Template
    html: Template

    @cached_property
    def encoded(self) -> EncodedLesson:
        """This lesson's parts encoded once for the fast path (dripcourse.wire)."""
        from dripcourse.wire import encode_lesson  # wire builds on this module, not the reverse

        return encode_lesson(self)


class Renderer:
    """Renders the lessons of courses under one emails/ folder, caching each lesson."""

    def __init__(self, emails_dir: Path) -> None:
        self.emails_dir = emails_dir
        layout = emails_dir / LAYOUT_DIR
        for name in ("base.html", "base.txt", "style.css"):
            if not (layout / name).is_file():
                raise CourseError(f"{layout / name}: layout file missing")
        loader = jinja2.FileSystemLoader(str(layout))
        self._html_env = jinja2.Environment(
            loader=loader, autoescape=True, undefined=jinja2.StrictUndefined
        )
        self._text_env = jinja2.Environment(
            loader=loader,
            autoescape=False,
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
        )
        self._css = (layout / "style.css").read_text(encoding="utf-8")
        self._markdown = MarkdownIt("commonmark", {"html": False, "typographer": False})
        self._cache: dict[tuple[str, int], RenderedLesson] = {}

    def lesson(self, course: Course, day: int) -> RenderedLesson:
        key = (course.slug, day)
        if key not in self._cache:
            self._cache[key] = self._render(course, course.lesson(day))
        return self._cache[key]

    def check(self, course: Course) -> None:
        """Render every lesson of ``course``; a problem raises CourseError naming the file."""
        for lesson in course.lessons:
            self.lesson(course, lesson.day)

    def _render(self, course: Course, lesson: Lesson) -> RenderedLesson:
        tokens = _Tokens(f"{course.slug}:{lesson.day}")
        ctx = {"day": lesson.day, "course": course, "lesson": lesson}
        personal = {field: getattr(tokens, field) for field in PERSONAL_FIELDS}
        lesson_vars = {**ctx, **{k: personal[k] for k in ("name", "first_name", "email")}}
        body_source = self._lesson_string(lesson.body, lesson_vars, lesson.path)
        subject = self._lesson_string(lesson.subject, lesson_vars, lesson.path).strip()
        if "\n" in subject or "\r" in subject:
            raise CourseError(f"{lesson.path}: subject must be one line")
        links = {k: personal[k] for k in ("reflect", "journal", "pause", "unsubscribe")}
        layout_ctx = {
            **ctx,
            "subject": subject,
            "links": links,
            "subscriber": personal,
            "css": Markup(self._css),
        }
        try:
            html = self._html_env.get_template("base.html").render(
                **layout_ctx, body=Markup(self._markdown.render(body_source))
            )
            text = self._text_env.get_template("base.txt").render(
                **layout_ctx, body=body_source.strip()
            )
        except jinja2.TemplateError as exc:
            raise CourseError(f"{self.emails_dir / LAYOUT_DIR}: {_describe(exc)}") from None
        except Exception as exc:  # e.g. a TypeError from an expression in the layout
            raise CourseError(
                f"{self.emails_dir / LAYOUT_DIR}: template error: {type(exc).__name__}: {exc}"
            ) from None
        inlined = _inline(html)
        if len(inlined.encode()) > MAX_HTML_BYTES:
            raise CourseError(
                f"{lesson.path}: the HTML email is {len(inlined.encode()) // 1000} KB; "
                "mail clients clip past about 100 KB"
            )
        return RenderedLesson(
            course=course,
            lesson=lesson,
            subject=Template(subject, html=False),
            text=Template(text, html=False),
            html=Template(inlined, html=True),
        )

    def _lesson_string(self, source: str, variables: dict[str, object], path: Path) -> str:
        try:
            return self._text_env.from_string(source).render(**variables)
        except jinja2.TemplateError as exc:
            raise CourseError(f"{path}: {_describe(exc)}") from None
        except Exception as exc:  # e.g. {{ "Dr " + day }}: a TypeError, still the file's fault
            raise CourseError(f"{path}: template error: {type(exc).__name__}: {exc}") from None


def _describe(exc: jinja2.TemplateError) -> str:
    if isinstance(exc, jinja2.UndefinedError):
        return f"unknown template variable ({exc.message}); lessons may use name, first_name, day"
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return f"line {exc.lineno}: template syntax error: {exc.message}"
    return f"template error: {exc}"


def _inline(html: str) -> str:
    """Inline the stylesheet into style attributes; the one place premailer runs."""
    return premailer.Premailer(
        html,
        keep_style_tags=True,  # keeps the @media rules that cannot be inlined
        remove_classes=False,
        strip_important=False,
        disable_validation=True,
        cssutils_logging_level=logging.CRITICAL,
        allow_network=False,
    ).transform()


def message_id(domain: str, delivery_id: int | None, secret: str) -> str:
    """A Message-ID: stable per delivery, so a resend after a crash looks like the same mail."""
    if delivery_id is None:
        return make_msgid(domain=domain)
    digest = hashlib.sha256(f"{secret}:{delivery_id}".encode()).hexdigest()[:20]
    return f"<lesson.{digest}@{domain}>"


def build_message(
    rendered: RenderedLesson, who: Personal, *, now: dt.datetime, msg_id: str
) -> Message:
    """The finished multipart/alternative message for one subscriber.

    Built with the compat32 MIME classes rather than EmailMessage: EmailMessage parses every
    header it is given into objects, which was a third of the cost of a message (see
    benchmarks/RESULTS.md). compat32 does not check for line breaks in header values, so
    that check is made here; non-ASCII text goes in as Header objects, which encode (RFC 2047)
    and fold it into lines of a legal length when the message is written.
    """
    subject = rendered.subject.render(who)
    check_header_values(subject, who)
    headers: dict[str, str | Header] = {
        "From": sender_header(rendered.course.sender),
        "To": to_header(who),
        "Subject": subject if subject.isascii() else Header(subject, "utf-8"),
        "Date": format_datetime(now.astimezone(dt.UTC)),
        "Message-ID": msg_id,
        "List-Unsubscribe": f"<{who.unsubscribe}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    msg = MIMEMultipart("alternative", policy=WIRE_POLICY)
    for name, value in headers.items():
        msg[name] = value
    # Quoted-printable keeps every line under 998 octets and the text readable in the source.
    msg.attach(MIMEText(rendered.text.render(who), "plain", _QP_UTF8, policy=WIRE_POLICY))
    msg.attach(MIMEText(rendered.html.render(who), "html", _QP_UTF8, policy=WIRE_POLICY))
    return msg


# CRLF as on the wire, and no ">From" mangling of lines that start with "From ".
WIRE_POLICY = compat32.clone(linesep="\r\n", mangle_from_=False)


def check_header_values(subject: str, who: Personal) -> None:
    """Refuse a value that would break out of its header line (both message paths call this)."""
    for name, value in (("Subject", subject), ("To", who.name), ("To", who.email)):
        if "\r" in value or "\n" in value:
            raise ValueError(f"line break in the {name} header: {value!r}")


def sender_header(sender: str) -> str:
    """The From value for a course's ``sender`` ("Name <address>")."""
    return _address(*parseaddr(sender))


def to_header(who: Personal) -> str:
    """The To value for one recipient."""
    return _address(who.name, who.email)


def _address(name: str, addr: str) -> str:
    # One encoded word for a non-ASCII name: some readers put spaces between the words of a
    # folded name. Names are at most 100 characters (enroll checks), so the line stays legal.
    return formataddr((name, addr), charset="utf-8") if name else addr


def _qp_utf8() -> Charset:
    charset = Charset("utf-8")
    charset.body_encoding = QP
    return charset


_QP_UTF8 = _qp_utf8()


def check_address(email: str) -> str:
    """Return the address normalised, or raise ValueError saying why it is not one."""
    value = email.strip()
    if not value or any(c in value for c in "\r\n<>,; \t"):
        raise ValueError(f"{email!r} is not an email address")
    try:
        addr = Address(addr_spec=value)
    except (ValueError, IndexError) as exc:
        raise ValueError(f"{email!r} is not an email address ({exc})") from None
    if not value.isascii():
        raise ValueError(f"{email!r}: addresses with non-ASCII characters are not supported")
    if not addr.username or "." not in addr.domain:
        raise ValueError(f"{email!r} is not an email address")
    # Mailboxes are case-insensitive in practice; one spelling keeps one subscriber per person.
    return f"{addr.username}@{addr.domain}".lower()
