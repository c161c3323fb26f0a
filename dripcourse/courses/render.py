"""Turn a lesson into an email: Jinja2 + Markdown + premailer once per lesson, personalise after.

premailer costs milliseconds per document, so each lesson is rendered and inlined once with
placeholder tokens standing in for everything personal (name, links). Per subscriber, the
placeholders are swapped for escaped values: a string join, not another premailer run.

It stays whole (about 550 lines): the variables a template may use, the sandbox that holds
it to them and the message built from the result are one contract with course writers,
read in one place.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import traceback
from dataclasses import dataclass, field
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import format_datetime, formataddr, make_msgid, parseaddr
from pathlib import Path

import jinja2
import jinja2.sandbox
import premailer
from markdown_it import MarkdownIt
from markupsafe import Markup, escape

from dripcourse import validate
from dripcourse.courses.course import DEFAULT_GREETING_FALLBACK, LAYOUT_DIR, Course, Lesson
from dripcourse.courses.greeting import MORNING_SALUTATION, derive_greeting, given_name
from dripcourse.courses.plaintext import markdown_to_text, reflow
from dripcourse.errors import CourseError
from dripcourse.links import BOUNCE, REPLY, Links

# What course content may use: the one list, from which the renderer builds each template's
# variables, its error messages name them, and docs/courses.md lists them (a test compares).
# A dotted name is a field of a plain dict: course content never sees our objects, so
# ``course.sender``, ``lesson.path`` or an address cannot be reached from a template.
LESSON_VARIABLES: dict[str, str] = {
    "salutation": '"Good morning", "Good afternoon", "Good evening" or "Hello", by the local '
    "time it is sent (course.toml's salutation)",
    "greeting": 'how the lesson addresses them ("Dr. Okafor", "Amara"; see docs/courses.md)',
    "name": "the subscriber's name as enrolled (may be empty)",
    "first_name": "their given name, or the greeting when the name has none",
    "day": "the lesson's day number",
}
LAYOUT_VARIABLES: dict[str, str] = {
    **LESSON_VARIABLES,
    "subject": "the lesson's subject line, rendered",
    "body": "the lesson text: HTML in base.html, plain prose in base.txt",
    "css": "the contents of style.css",
    "course.title": "the course's title",
    "course.reason": "why the reader gets the course (course.toml's reason, or 'you enrolled')",
    "course.rhythm": "how often lessons come: 'One lesson a day, 7 in all.'",
    "lesson.day": "the lesson's day number",
    "lesson.title": "the lesson's title",
    "lesson.prompt": "the reflection question",
    "lesson.questions": "the sub-questions (a list, maybe empty)",
    "lesson.preheader": "the inbox preview line (maybe empty)",
    "links.reflect": "the subscriber's link to write the day's reflection",
    "links.journal": "the subscriber's link to their journal",
    "links.pause": "the subscriber's link to pause for a week",
    "links.unsubscribe": "the subscriber's link to unsubscribe",
    "links.lesson": "the subscriber's link to read this lesson in a browser",
    "links.privacy": "the privacy page: what is kept, for how long, how to delete it",
    "links.support": "the subscriber's link to their places to turn in a dark week",
    "support.line": "the course's words for that link (course.toml's support_line)",
    "support.in_footer": "true when the course shows that link in every lesson's footer",
    "lesson.last": "true for the course's last lesson",
    "reply_by_email": "true when replying to the lesson saves the reply in the journal",
    "team.name": "who runs the course (setting team_name)",
    "team.contact": "their address for questions about data (setting team_contact; maybe empty)",
    "subscriber.name": "the same as name",
    "subscriber.first_name": "the same as first_name",
    "subscriber.greeting": "the same as greeting",
}

# What a lesson or layout may use that differs per subscriber.
PERSONAL_FIELDS = (
    "name",
    "first_name",
    "email",
    "reflect",
    "journal",
    "pause",
    "unsubscribe",
    "greeting",
    "lesson",
    "privacy",
    "support",
    # A name at the end of a sentence ("Good morning, {{ greeting }}."): the value and the
    # full stop together, so a name that ends in one ("Dr. K.C.") does not get a second.
    "name.",
    "first_name.",
    "greeting.",
    # Added last: a lesson version kept in the database holds these fields by their index.
    "salutation",
)
_SENTENCE_END = {"name", "first_name", "greeting"}
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
    # How the lesson addresses them (see greeting.greeting_for); "" derives it from the name
    # when a lesson shows it, with greeting_fallback for a name that gives none.
    greeting: str = ""
    greeting_fallback: str = DEFAULT_GREETING_FALLBACK
    lesson: str = ""  # the lesson as sent, in a browser
    privacy: str = ""  # the privacy page (the same for everyone)
    support: str = ""  # their places to turn (a link that never expires)
    # How the lesson opens at the moment it is sent, on the reader's clock (see
    # Course.salutation_at); previews show the one of the course's send time.
    salutation: str = MORNING_SALUTATION
    # With reply_domain set: the Reply-To address (reflect+TOKEN@...) and the envelope sender
    # (bounce+TOKEN@..., VERP) of this one delivery. Headers only, never in the text.
    reply_to: str = ""
    bounce_to: str = ""

    @property
    def first_name(self) -> str:
        return given_name(self.name) or self.value("greeting")

    def value(self, field: str) -> str:
        if field.endswith("."):
            value = self.value(field[:-1])
            return value if value.endswith(".") else value + "."
        if field == "greeting" and not self.greeting:
            return derive_greeting(self.name, self.greeting_fallback)
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
            field = PERSONAL_FIELDS[int(match.group(2))]
            pos = match.end()
            if field in _SENTENCE_END and text.startswith(".", pos):
                field, pos = f"{field}.", pos + 1
            self.parts.append(PERSONAL_FIELDS.index(field))
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
    # The lesson's body alone as HTML, names still placeholders: kept as the version sent.
    body_html: str = ""
    # Bulk-sender headers, the same for every reader of the course: List-Id (RFC 2919) and,
    # when the programme sets one, Feedback-ID (read by some providers' complaint reports).
    list_id: str = ""
    feedback_id: str = ""
    # What modules built on this one derive from the lesson once and keep with it, for as
    # long as the renderer caches it (the wire module's encoded parts): this module never
    # needs to know them.
    derived: dict[str, object] = field(default_factory=dict, compare=False, repr=False)


class Renderer:
    """Renders the lessons of courses under one emails/ folder, caching each lesson."""

    def __init__(
        self,
        emails_dir: Path,
        *,
        reply_by_email: bool = False,
        feedback_id: str = "",
        team_name: str = "the course team",
        team_contact: str = "",
    ) -> None:
        self.emails_dir = emails_dir
        self.reply_by_email = reply_by_email
        self.feedback_id = feedback_id
        self.team_name, self.team_contact = team_name, team_contact
        layout = emails_dir / LAYOUT_DIR
        for name in ("base.html", "base.txt", "style.css"):
            if not (layout / name).is_file():
                raise CourseError(f"{layout / name}: layout file missing")
        loader = jinja2.FileSystemLoader(str(layout))
        # Sandboxed: course content is written by staff but must not reach the process
        # (``lipsum.__globals__``, ``cycler.__init__.__globals__.os.environ``, ...).
        self._html_env = _sandbox(loader=loader, autoescape=True)
        self._text_env = _sandbox(loader=loader, autoescape=False, keep_trailing_newline=True)
        self._css = (layout / "style.css").read_text(encoding="utf-8")
        self._markdown = MarkdownIt("commonmark", {"html": False, "typographer": False})
        self._markdown.add_render_rule("image", _column_wide_image)
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
        facts: dict[str, object] = {
            "day": lesson.day,
            "course.title": course.title,
            "course.reason": course.why_you_get_it,
            "course.rhythm": course.rhythm,
            "lesson.day": lesson.day,
            "lesson.title": lesson.title,
            "lesson.prompt": lesson.prompt,
            "lesson.questions": list(lesson.questions),
            "lesson.preheader": lesson.preheader,
            "lesson.last": lesson.day == course.length,
            "support.line": course.support.line,
            "support.in_footer": course.support.in_footer,
            "css": Markup(self._css),
            "reply_by_email": self.reply_by_email,
            "team.name": self.team_name,
            "team.contact": self.team_contact,
        }
        for name in ("name", "first_name", "greeting", "salutation"):
            facts[name] = facts[f"subscriber.{name}"] = getattr(tokens, name)
        for link in ("reflect", "journal", "pause", "unsubscribe", "lesson", "privacy", "support"):
            facts[f"links.{link}"] = getattr(tokens, link)
        lesson_vars = _variables(LESSON_VARIABLES, facts)
        body_source = self._lesson_string(lesson.body, lesson_vars, lesson.path, lesson.body_line)
        subject_line = lesson.line_of("subject")
        subject = self._lesson_string(lesson.subject, lesson_vars, lesson.path, subject_line)
        subject = subject.strip()
        if "\n" in subject or "\r" in subject:
            raise CourseError.at(lesson.path, subject_line, "subject must be one line")
        facts["subject"] = subject
        body_html = self._markdown.render(body_source)
        try:
            facts["body"] = Markup(body_html)
            html = self._html_env.get_template("base.html").render(
                _variables(LAYOUT_VARIABLES, facts)
            )
            facts["body"] = markdown_to_text(body_source)
            text = reflow(
                self._text_env.get_template("base.txt").render(_variables(LAYOUT_VARIABLES, facts))
            )
        except Exception as exc:  # noqa: BLE001 - a TypeError in the layout is the layout's error
            layout = self.emails_dir / LAYOUT_DIR
            where, line = template_place(exc, str(layout))
            path = Path(where) if where else layout
            raise CourseError.at(path, line, describe_error(exc, layout=True)) from None
        # Over MAX_HTML_BYTES is a warning of ``check`` (Gmail clips it), not a refusal.
        inlined = _inline(html)
        return RenderedLesson(
            course=course,
            lesson=lesson,
            subject=Template(subject, html=False),
            text=Template(text, html=False),
            html=Template(inlined, html=True),
            body_html=body_html,
            list_id=list_id(course),
            feedback_id=self.feedback_id,
        )

    def _lesson_string(
        self, source: str, variables: dict[str, object], path: Path, first_line: int
    ) -> str:
        """Render a lesson's text or subject; an error names the line in the lesson file
        (``first_line`` is where ``source`` starts in it)."""
        try:
            return self._text_env.from_string(source).render(variables)
        except Exception as exc:  # noqa: BLE001 - whatever a lesson's own text raises is its error
            _where, line = template_place(exc, "<template>")
            in_file = first_line + line - 1 if line else first_line
            raise CourseError.at(path, in_file, describe_error(exc)) from None


# The lesson column's width in the layout (600 less 32 px padding each side).
IMAGE_WIDTH = 536


def _column_wide_image(self, tokens, idx, options, env):  # type: ignore[no-untyped-def]
    """An image as wide as the lesson's column, never wider: the stylesheet's ``max-width:
    100%`` holds it to a phone's width, and the ``width`` attribute to the column in Outlook
    on Windows, which ignores max-width and would show a large image at its own size."""
    tokens[idx].attrSet("width", str(IMAGE_WIDTH))
    return self.image(tokens, idx, options, env)


def template_place(exc: Exception, filename: str) -> tuple[str | None, int | None]:
    """The template file and line an error comes from, as far as Jinja tells.

    A syntax error carries its line; an error while rendering (an unknown variable) is found
    in the traceback, where Jinja puts frames carrying the template's own line numbers.
    """
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return exc.filename, exc.lineno
    place: tuple[str | None, int | None] = (None, None)
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == filename or frame.filename.startswith(filename):
            place = (frame.filename, frame.lineno)
    return place


def describe_error(exc: Exception, layout: bool = False) -> str:
    """One line saying what is wrong with a template, in the words a course writer uses."""
    who, allowed = ("layouts", LAYOUT_VARIABLES) if layout else ("lessons", LESSON_VARIABLES)
    if isinstance(exc, jinja2.UndefinedError):
        return f"unknown template variable ({exc.message}); {who} may use {', '.join(allowed)}"
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return f"template syntax error: {exc.message}"
    if isinstance(exc, jinja2.exceptions.SecurityError):
        return f"not allowed in a template: {exc}"
    if isinstance(exc, jinja2.TemplateError):
        return f"does not render: {exc}"
    return f"does not render: {type(exc).__name__}: {exc}"


# The most a single expression may make: a whole lesson is far smaller than this.
MAX_TEMPLATE_VALUE = 200_000


class _Sandbox(jinja2.sandbox.SandboxedEnvironment):
    """Jinja's sandbox, with ``*`` and ``**`` bounded: ``{{ "a" * 100000000 }}`` would make a
    value of any size (and take the machine's memory) in check, preview, workers and pages."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context, operator, left, right):  # type: ignore[no-untyped-def]
        if operator == "**":
            if isinstance(right, int | float) and abs(right) > 100:
                raise jinja2.sandbox.SecurityError("an exponent over 100 is not allowed")
            return left**right
        size = _repeat_size(left, right)
        if size is not None and size > MAX_TEMPLATE_VALUE:
            raise jinja2.sandbox.SecurityError(
                f"a value of {size} characters or items is not allowed "
                f"(at most {MAX_TEMPLATE_VALUE})"
            )
        return left * right


def _repeat_size(left: object, right: object) -> int | None:
    """The length ``left * right`` would have, when it repeats a text or a list."""
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, str | list | tuple) and isinstance(times, int):
            return len(seq) * max(times, 0)
    return None


def _sandbox(**options: object) -> jinja2.sandbox.SandboxedEnvironment:
    """A sandboxed environment holding nothing but what we pass each render.

    Jinja's own globals (``range``, ``lipsum``, ``cycler``, ``joiner``, ``namespace``, ``dict``)
    are removed too: a template sees only the documented variables.
    """
    env = _Sandbox(undefined=jinja2.StrictUndefined, **options)  # type: ignore[arg-type]
    env.globals.clear()
    return env


def _variables(allowed: dict[str, str], facts: dict[str, object]) -> dict[str, object]:
    """The variables a template gets: exactly the ``allowed`` names, dotted ones as dicts."""
    out: dict[str, object] = {}
    for dotted in allowed:
        head, _, field = dotted.partition(".")
        if field:
            inner = out.setdefault(head, {})
            assert isinstance(inner, dict)
            inner[field] = facts[dotted]
        else:
            out[head] = facts[dotted]
    return out


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


def reply_addresses(
    links: Links, domain: str, enrollment_id: int, day: int, key: str
) -> dict[str, str]:
    """Reply-To and envelope sender of one delivery, bound to the enrollment's ``link_key``;
    none without a ``reply_domain``."""
    if not domain:
        return {}
    return {
        "reply_to": links.address(REPLY, enrollment_id, day, domain, key),
        "bounce_to": links.address(BOUNCE, enrollment_id, day, domain, key),
    }


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
        "Subject": subject_header(subject),
        "Date": format_datetime(now.astimezone(dt.UTC)),
        "Message-ID": msg_id,
        "List-Id": rendered.list_id,
        "List-Unsubscribe": f"<{who.unsubscribe}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    if rendered.feedback_id:
        headers["Feedback-ID"] = rendered.feedback_id
    if who.reply_to:
        headers["Reply-To"] = who.reply_to
    if who.bounce_to:
        # Read by the SMTP transport as the envelope sender and not sent (see mail.envelope).
        headers["Return-Path"] = f"<{who.bounce_to}>"
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


def subject_header(subject: str) -> str | Header:
    """The Subject value: as written when it is plain, else encoded (RFC 2047)."""
    return subject if _plain(subject) else Header(subject, "utf-8")


def sender_header(sender: str) -> str:
    """The From value for a course's ``sender`` ("Name <address>")."""
    return _address(*parseaddr(sender))


def list_id(course: Course) -> str:
    """The course's List-Id (RFC 2919): its title and ``<slug.sender-domain>``, one per course,
    so a reader's mail program can sort or filter a course's lessons as one list."""
    domain = parseaddr(course.sender)[1].rpartition("@")[2] or "localhost"
    return _address(course.title, f"{course.slug}.{domain}")


def to_header(who: Personal) -> str:
    """The To value for one recipient."""
    return _address(who.name, who.email)


def _address(name: str, addr: str) -> str:
    # One encoded word for a non-ASCII name: some readers put spaces between the words of a
    # folded name. Names are at most 100 characters (enroll checks), so the line stays legal.
    if not name:
        return addr
    if _plain(name):
        return formataddr((name, addr))
    return f"{_UTF8_WORDS.header_encode(name)} <{addr}>"


def _plain(value: str) -> bool:
    """Whether header text can go out as written: ASCII, and nothing a reader would decode.

    ASCII text holding "=?" could read as an encoded word (``=?utf-8?q?x?=`` shows as "x"),
    so it is encoded like non-ASCII text.
    """
    return value.isascii() and "=?" not in value


_UTF8_WORDS = Charset("utf-8")


def _qp_utf8() -> Charset:
    charset = Charset("utf-8")
    charset.body_encoding = QP
    return charset


_QP_UTF8 = _qp_utf8()


def check_address(email: str) -> str:
    """Return the address normalised, or raise ValueError saying why it is not one."""
    return validate.check_address(email)
