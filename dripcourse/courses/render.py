"""Turn a lesson into an email: Jinja2 + Markdown + premailer once per lesson, personalise after.

premailer costs milliseconds per document, so each lesson is rendered and inlined once with
placeholder tokens standing in for everything personal (name, links). Per subscriber, the
placeholders are swapped for escaped values: a string join, not another premailer run.

The variables a template may use are listed here, with the errors a course writer sees;
the sandbox that holds templates to them is ``sandbox``, the header values ``headers``, and
the message built for one reader from the result ``message``. What stays here (about 420
lines) is the contract with course writers: the variables, the renderer that gives them and
the errors that name them.
"""

from __future__ import annotations

import hashlib
import logging
import re
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import jinja2.sandbox
import premailer
from markdown_it import MarkdownIt
from markupsafe import Markup, escape

from dripcourse.courses.checkins import asked_on
from dripcourse.courses.course import DEFAULT_GREETING_FALLBACK, LAYOUT_DIR, Course, Lesson
from dripcourse.courses.greeting import MORNING_SALUTATION, from_name
from dripcourse.courses.headers import list_id
from dripcourse.courses.plaintext import markdown_to_text, reflow
from dripcourse.courses.sandbox import sandbox
from dripcourse.errors import CourseError

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
    "links.checkin": "the subscriber's check-in link: add /QUESTION/ANSWER to answer in one click",
    "checkins": "the check-in questions this lesson asks (first and last lesson only; maybe empty)",
    "circle_count": "how many others in the reader's cohort shared their reflection on the "
    "previous lesson's question, in the lesson rendered for those with 2 or more (the cohort "
    "circle, docs/subscribers.md); empty otherwise",
    "links.circle": "the reader's link to the previous lesson's page, at its circle",
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
    "checkin",
    "circle_count",
    "circle",
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
    # What the name gives (greeting.from_name), as kept on the subscriber's row when the name
    # was written; None (not worked out yet) parses the name here, when a lesson shows it.
    derived_greeting: str | None = None
    derived_given_name: str | None = None
    lesson: str = ""  # the lesson as sent, in a browser
    privacy: str = ""  # the privacy page (the same for everyone)
    support: str = ""  # their places to turn (a link that never expires)
    # How the lesson opens at the moment it is sent, on the reader's clock (see
    # Course.salutation_at); previews show the one of the course's send time.
    salutation: str = MORNING_SALUTATION
    checkin: str = ""  # the check-in answers' link, to which a question and answer are added
    # The cohort circle: how many others shared on the previous lesson, and a link to them
    # (only in a lesson rendered with ``circle=True``).
    circle_count: str = ""
    circle: str = ""
    # With reply_domain set: the Reply-To address (reflect+TOKEN@...) and the envelope sender
    # (bounce+TOKEN@..., VERP) of this one delivery. Headers only, never in the text.
    reply_to: str = ""
    bounce_to: str = ""
    # Headers naming this one delivery to the email providers whose webhooks are set up
    # (``delivery_headers``), so a bounce they report comes back to the right person.
    tags: tuple[tuple[str, str], ...] = ()

    @property
    def first_name(self) -> str:
        return self._from_name()[1] or self.value("greeting")

    def value(self, field: str) -> str:
        if field.endswith("."):
            value = self.value(field[:-1])
            return value if value.endswith(".") else value + "."
        if field == "greeting" and not self.greeting:
            return self._from_name()[0] or self.greeting_fallback
        return str(getattr(self, field))

    def _from_name(self) -> tuple[str, str]:
        if self.derived_greeting is None or self.derived_given_name is None:
            return from_name(self.name)
        return self.derived_greeting, self.derived_given_name


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
        self._html_env = sandbox(loader=loader, autoescape=True)
        self._text_env = sandbox(loader=loader, autoescape=False, keep_trailing_newline=True)
        self._css = (layout / "style.css").read_text(encoding="utf-8")
        self._markdown = MarkdownIt("commonmark", {"html": False, "typographer": False})
        self._markdown.add_render_rule("image", _column_wide_image)
        self._cache: dict[tuple[str, int, bool], RenderedLesson] = {}

    def lesson(self, course: Course, day: int, *, circle: bool = False) -> RenderedLesson:
        """The lesson rendered once; ``circle`` the variant that says how many in the
        reader's cohort shared their reflection on the previous lesson (``circle_count``)."""
        key = (course.slug, day, circle)
        if key not in self._cache:
            self._cache[key] = self._render(course, course.lesson(day), circle)
        return self._cache[key]

    def check(self, course: Course) -> None:
        """Render every lesson of ``course``; a problem raises CourseError naming the file."""
        for lesson in course.lessons:
            self.lesson(course, lesson.day)
            if course.circle and lesson.day > 1:
                self.lesson(course, lesson.day, circle=True)

    def _render(self, course: Course, lesson: Lesson, circle: bool = False) -> RenderedLesson:
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
            "checkins": [
                c.as_dict() for c in course.checkins if asked_on(lesson.day, course.length)
            ],
        }
        for name in ("name", "first_name", "greeting", "salutation"):
            facts[name] = facts[f"subscriber.{name}"] = getattr(tokens, name)
        for link in (
            "reflect",
            "journal",
            "pause",
            "unsubscribe",
            "lesson",
            "privacy",
            "support",
            "checkin",
            "circle",
        ):
            facts[f"links.{link}"] = getattr(tokens, link)
        facts["circle_count"] = tokens.circle_count if circle else ""
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
