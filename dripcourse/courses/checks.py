"""The rules `dripcourse check` applies to courses; each finding is (file, line, severity, message).

Reading a course (course_folder.py) finds what makes it unusable: a gap in the days, front
matter that is not valid, a missing subject. The rules here look at what the lessons say and
how they render: unknown variables, links, images, headings, size and length. Every rule runs
on every lesson it can, so one run lists every problem: a lesson whose front matter is broken
still has its text checked, text that does not render has its Markdown checked as written, and
a course.toml or layout with an error does not hide the lessons' own problems.

It stays one module (about 480 lines) because every rule reads the same rendered lesson and
adds to one list of findings; the image and link rules are the part to move out next.
"""

from __future__ import annotations

import datetime as dt
import re
import statistics
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path

import jinja2
import jinja2.meta
import jinja2.nodes
import jinja2.sandbox
import lxml.html
from markdown_it import MarkdownIt
from markdown_it.token import Token

from dripcourse.courses.course import (
    LAYOUT_DIR,
    Course,
    Finding,
    Lesson,
    check_slug,
    course_slugs,
)
from dripcourse.courses.course_folder import read_course
from dripcourse.courses.message import build_message, message_id
from dripcourse.courses.render import (
    LESSON_VARIABLES,
    MAX_HTML_BYTES,
    Personal,
    Renderer,
    describe_error,
    template_place,
)
from dripcourse.courses.sandbox import Sandbox
from dripcourse.errors import CourseError
from dripcourse.links import Links

MAX_SUBJECT_CHARS = 70  # longer subjects are cut off in most inboxes
WORDS_PER_MINUTE = 200
_ADDRESS = re.compile(r"\((?:data:|https?://)[^)\s]*\)|<(?:https?://)[^>\s]*>|data:\S+")
READING_TIME_FACTOR = 2  # a lesson over twice the course's median reading time is flagged
LAYOUT_FILE_MISSING = "layout file missing"
SAMPLE_LINKS = Links(secret_key="check", base_url="https://course.example.org")
_ABSOLUTE = re.compile(r"^(https?://[^\s/]+|mailto:\S+@\S+)", re.IGNORECASE)
# A Jinja tag in an address, as written or as Markdown percent-encodes it.
_TEMPLATED = re.compile(r"\{\{|\{%|%7B%7B|%7B%25", re.IGNORECASE)


@dataclass
class LessonFacts:
    """What the studio's index shows for a lesson."""

    day: int
    subject: str
    prompt: str
    reading_minutes: float = 0.0
    html_bytes: int = 0


@dataclass
class CourseReport:
    """Every finding for one course, and the facts of each lesson that loaded."""

    slug: str
    course: Course | None
    findings: list[Finding] = field(default_factory=list)
    lessons: dict[int, LessonFacts] = field(default_factory=dict)

    def for_day(self, day: int) -> list[Finding]:
        return [f for f in self.findings if f.day == day]


def counts(findings: list[Finding]) -> tuple[int, int]:
    """(errors, warnings) among ``findings``."""
    errors = sum(f.severity == "error" for f in findings)
    return errors, sum(f.severity == "warning" for f in findings)


def check_all(
    emails_dir: Path, slugs: list[str] | None = None
) -> tuple[list[Finding], list[CourseReport]]:
    """The layout's findings and a report per course (default: every course)."""
    layout, renderer = layout_and_renderer(emails_dir)
    slugs = slugs or course_slugs(emails_dir)
    return layout, [check_course(emails_dir, slug, renderer) for slug in slugs]


def layout_and_renderer(emails_dir: Path) -> tuple[list[Finding], Renderer | None]:
    """The layout's findings, and a renderer unless the layout cannot render (a file missing
    or not a template). A relative link in it is an error but renders: the lessons are still
    rendered and measured, so their problems show in the same run."""
    layout = check_layout(emails_dir)
    if any(f.message == LAYOUT_FILE_MISSING for f in layout):
        return layout, None
    try:
        return layout, Renderer(emails_dir)
    except CourseError as exc:
        return [*layout, _from_error(exc, emails_dir / LAYOUT_DIR, None)], None


def check_course(emails_dir: Path, slug: str, renderer: Renderer | None) -> CourseReport:
    """Every problem in one course; ``renderer`` None skips rendering (the layout is broken)."""
    try:
        check_slug(slug)
    except CourseError as exc:  # a folder with a course.toml in it, named otherwise
        return CourseReport(slug, None, [Finding(emails_dir / slug, 1, "error", exc.detail)])
    reading = read_course(emails_dir, slug)
    report = CourseReport(slug=slug, course=reading.course, findings=list(reading.findings))
    for lesson in reading.lessons:
        facts = LessonFacts(day=lesson.day, subject=lesson.subject, prompt=lesson.prompt)
        report.lessons[lesson.day] = facts
        report.findings.extend(_check_lesson(reading.course, lesson, renderer, facts))
    for lesson in reading.unloaded:
        # Its front matter has errors, so it cannot be sent or rendered whole; its text can
        # still be checked. Its facts stay out of the report: it has no subject to show.
        facts = LessonFacts(day=lesson.day, subject=lesson.subject, prompt=lesson.prompt)
        report.findings.extend(_check_lesson(None, lesson, None, facts))
    report.findings.extend(_reading_time_outliers(reading.lessons, report.lessons))
    report.findings.extend(_sequence_problems(reading.lessons))
    report.findings.sort(key=lambda f: (str(f.path), f.line))
    return report


def _check_lesson(
    course: Course | None, lesson: Lesson, renderer: Renderer | None, facts: LessonFacts
) -> list[Finding]:
    """Every problem in what one lesson says; the whole message is rendered (to measure it)
    when there is a course and a renderer and the subject and text render on their own."""
    found: list[Finding] = []

    def add(line: int, severity: str, message: str) -> None:
        found.append(Finding(lesson.path, line, severity, message, lesson.day))  # type: ignore[arg-type]

    subject_line = lesson.line_of("subject")
    subject_problems = _template_problems(lesson.subject)
    for line, message in subject_problems:
        add(subject_line + line - 1, "error", message)
    text_problems = _template_problems(lesson.body)
    for line, message in text_problems:
        add(lesson.body_line + line - 1, "error", message)
    if len(lesson.subject) > MAX_SUBJECT_CHARS:
        add(
            subject_line,
            "warning",
            f"the subject is {len(lesson.subject)} characters; inboxes cut it off past about "
            f"{MAX_SUBJECT_CHARS}",
        )
    body = None
    if not text_problems:
        try:
            body = _sample_body(lesson)
        except Exception as exc:  # noqa: BLE001 - whatever the lesson's text raises is its error
            _where, line = template_place(exc, "<template>")
            add(lesson.body_line + (line or 1) - 1, "error", describe_error(exc))
    if body is None:
        # The text does not render: its Markdown is checked as written (Jinja keeps the lines
        # where they were either way), so its links and headings are not left for next time.
        found.extend(_markdown_problems(lesson, lesson.body, as_written=True))
        return found
    # Addresses are not read: a data: URI would count as thousands of words.
    prose = _ADDRESS.sub(" ", " ".join([body, lesson.prompt, *lesson.questions]))
    words = len(re.findall(r"\w+", prose))
    facts.reading_minutes = round(words / WORDS_PER_MINUTE, 1)
    found.extend(_markdown_problems(lesson, body))
    if course is None or renderer is None or subject_problems:
        return found  # (a subject that does not render would only be reported again)
    try:
        msg = _sample_message(renderer, course, lesson.day)
    except CourseError as exc:
        found.append(_from_error(exc, lesson.path, lesson.day))
        return found
    html = _html_part(msg)
    facts.html_bytes = len(html)
    if len(html) > MAX_HTML_BYTES:
        add(
            1,
            "warning",
            f"the HTML email is {len(html) // 1000} KB after inlining; Gmail clips messages "
            "past about 102 KB, hiding the reflection and unsubscribe links",
        )
    return found


# The renderer's sandbox and its bounds (Jinja's globals kept: an escape through them is
# reported as the sandbox's refusal): Jinja's plain one let `check` try to build a
# value as big as a huge repetition asked for, and report the MemoryError it met (if the
# machine did not give up first) instead of the rule the lesson broke.
_ENV = Sandbox(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def _template_problems(source: str) -> list[tuple[int, str]]:
    """Syntax errors and unknown variables in a lesson's text, with lines counted from 1."""
    try:
        tree = _ENV.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        return [(exc.lineno or 1, f"template syntax error: {exc.message}")]
    unknown = jinja2.meta.find_undeclared_variables(tree) - set(LESSON_VARIABLES)
    allowed = ", ".join(LESSON_VARIABLES)
    problems = []
    seen = set()
    for node in tree.find_all(jinja2.nodes.Name):
        if node.name in unknown and node.ctx == "load" and (node.lineno, node.name) not in seen:
            seen.add((node.lineno, node.name))
            message = f"unknown variable {node.name!r}; lessons may use {allowed}"
            problems.append((node.lineno, message))
    return problems


def _sample_body(lesson: Lesson) -> str:
    """The lesson's Markdown with sample values in; Jinja keeps its lines where they were."""
    values = {
        "salutation": "Good morning",
        "greeting": "Dr. Okafor",
        "name": "Amara Okafor",
        "first_name": "Amara",
    }
    return _ENV.from_string(lesson.body).render(**values, day=lesson.day)


def _markdown_problems(lesson: Lesson, body: str, *, as_written: bool = False) -> list[Finding]:
    """Links, images and headings; ``as_written``: ``body`` is the text before Jinja filled it,
    so an address made by a template tag is left alone (it is not known yet)."""
    found = []

    def add(line: int, severity: str, message: str) -> None:
        found.append(Finding(lesson.path, line, severity, message, lesson.day))  # type: ignore[arg-type]

    level = 1  # the layout's "Day N: Title" heading
    for token in MarkdownIt("commonmark", {"html": False}).parse(body):
        line = lesson.body_line + (token.map[0] if token.map else 0)
        if token.type == "heading_open":
            new = int(token.tag[1])
            if new == 1:
                add(
                    line,
                    "warning",
                    "a # heading in a lesson competes with the layout's "
                    "'Day N: Title'; start the lesson's headings at ##",
                )
            elif new > level + 1:
                add(line, "warning", f"heading level {new} follows level {level}; use {level + 1}")
            level = new
        if token.type == "inline":
            for child, offset in _inline_children(token):
                if child.type == "link_open":
                    href = str(child.attrs.get("href", ""))
                    if as_written and _TEMPLATED.search(href):
                        continue
                    if not _ABSOLUTE.match(href):
                        add(line + offset, "error", _link_message(href))
                elif child.type == "image":
                    src = str(child.attrs.get("src", ""))
                    for severity, message in _image_problems(src, child.content, as_written):
                        add(line + offset, severity, message)
    return found


# An image written into the lesson (a data: URI) goes into every message; Gmail shows none of
# them, and past this size it is refused rather than warned about.
MAX_DATA_IMAGE_BYTES = 16 * 1024


def _image_problems(src: str, alt: str, as_written: bool) -> list[tuple[str, str]]:
    """What ``check`` says about one lesson image: no alt text, not https, written in."""
    shown = _shown(src)
    found = []
    if not alt.strip():
        found.append(
            (
                "warning",
                f"image {shown} has no alt text; a reader who cannot see it "
                "(images off, a screen reader) gets nothing",
            )
        )
    if as_written and _TEMPLATED.search(src):
        return found
    if src[:5].lower() == "data:":
        size = len(src)
        if size > MAX_DATA_IMAGE_BYTES:
            found.append(
                (
                    "error",
                    f"image {shown} is written into the lesson ({size // 1024} KB "
                    "in every message); put it on an https:// address",
                )
            )
        else:
            found.append(
                (
                    "warning",
                    f"image {shown} is written into the lesson; Gmail does not "
                    "show such images: put it on an https:// address",
                )
            )
    elif re.match(r"^http://\S", src, re.IGNORECASE):
        found.append(
            (
                "warning",
                f"image {shown} is not https://; many mail apps block or warn "
                "about images over plain http",
            )
        )
    elif not re.match(r"^https://\S", src, re.IGNORECASE):
        found.append(("error", _link_message(src, "image")))
    return found


def _shown(src: str) -> str:
    """An address as a finding shows it: whole when short, else its start and its length (a
    data: URI can be 200 KB on one line)."""
    if len(src) <= 80:
        return repr(src)
    return f"{src[:60]!r}... ({len(src):,} characters)"


def _inline_children(token: Token) -> list[tuple[Token, int]]:
    """Each child of an inline token with how many lines into the paragraph it is."""
    offset, out = 0, []
    for child in token.children or []:
        if child.type in ("softbreak", "hardbreak"):
            offset += 1
        out.append((child, offset))
    return out


def _link_message(href: str, what: str = "link") -> str:
    if what == "image":
        return f"image {_shown(href)} is not an absolute https:// address; mail has no folder"
    return (
        f"link {href!r} is not an absolute http(s):// address; a relative link leads "
        "nowhere in an email"
    )


_DAY_NAMED = re.compile(r"\bday\s+(\d{1,3})\b", re.IGNORECASE)
_READS_AS_LAST = re.compile(
    r"\b(?:the\s+)?(?:final|last)\s+(?:lesson|day|email)\b|\bend of (?:the|this) course\b",
    re.IGNORECASE,
)


def _sequence_problems(lessons: list[Lesson]) -> list[Finding]:
    """A lesson whose title or subject names another day than its own, and one that reads as
    the last while later lessons follow (a day added after the course was written)."""
    found = []
    last = max((lesson.day for lesson in lessons), default=0)
    for lesson in lessons:
        for key, text in (("title", lesson.title), ("subject", lesson.subject)):
            named = _DAY_NAMED.search(text)
            if named and int(named.group(1)) != lesson.day:
                found.append(
                    Finding(
                        lesson.path,
                        lesson.line_of(key),
                        "warning",
                        f"the {key} says Day {named.group(1)} but this is Day {lesson.day}",
                        lesson.day,
                    )  # fmt: skip
                )
        ending = _READS_AS_LAST.search(lesson.body)
        if ending and lesson.day < last:
            line = lesson.body_line + lesson.body.count("\n", 0, ending.start())
            found.append(
                Finding(
                    lesson.path,
                    line,
                    "warning",
                    f"reads as the last lesson ({ending.group(0)!r}) but Day {lesson.day + 1} "
                    f"follows; the course now ends with Day {last}",
                    lesson.day,
                )  # fmt: skip
            )
    return found


def _reading_time_outliers(
    lessons: tuple[Lesson, ...], facts_by_day: dict[int, LessonFacts]
) -> list[Finding]:
    times = [f.reading_minutes for f in facts_by_day.values() if f.reading_minutes]
    if len(times) < 3:
        return []
    median = statistics.median(times)
    paths = {lesson.day: lesson.path for lesson in lessons}
    found = []
    for day, facts in facts_by_day.items():
        if facts.reading_minutes > READING_TIME_FACTOR * median:
            found.append(
                Finding(
                    paths[day],
                    1,
                    "warning",
                    f"reading time {facts.reading_minutes:g} min is more than twice the "
                    f"course median ({median:g} min)",
                    day,
                )
            )
    return found


def _sample_message(renderer: Renderer, course: Course, day: int) -> Message:
    who = Personal(
        email="reader@example.org",
        name="Dr. Amara Okafor",
        greeting="Dr. Okafor",
        salutation=course.usual_salutation,
        **SAMPLE_LINKS.samples(day),
    )
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return build_message(
        renderer.lesson(course, day), who, now=now, msg_id=message_id("check.invalid", 1, "")
    )


def _html_part(msg: Message) -> bytes:
    for part in msg.walk():
        if part.get_content_type() == "text/html":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload
    return b""


def _from_error(exc: CourseError, default: Path, day: int | None) -> Finding:
    path = Path(str(exc.path)) if exc.path else default
    return Finding(path, exc.line or 1, "error", exc.detail, day)


def check_layout(emails_dir: Path) -> list[Finding]:
    """The shared layout: language, tables, images, links (warnings and errors)."""
    layout = emails_dir / LAYOUT_DIR
    found = []
    for name in ("base.html", "base.txt", "style.css"):
        if not (layout / name).is_file():
            found.append(Finding(layout / name, 1, "error", LAYOUT_FILE_MISSING))
    path = layout / "base.html"
    if not path.is_file():
        return found
    source = path.read_text(encoding="utf-8")
    doc = lxml.html.document_fromstring(source)
    root = doc.getroottree().getroot()
    if not root.get("lang"):
        found.append(
            Finding(
                path,
                _line(root, source, "<html"),
                "warning",
                '<html> has no lang attribute; screen readers need it, e.g. lang="en"',
            )
        )
    for table in doc.iter("table"):
        if table.get("role") != "presentation":
            found.append(
                Finding(
                    path,
                    table.sourceline or 1,
                    "warning",
                    'layout <table> without role="presentation"; screen readers read it '
                    "as a data table",
                )
            )
    for img in doc.iter("img"):
        if img.get("alt") is None:
            found.append(Finding(path, img.sourceline or 1, "warning", "<img> has no alt text"))
    for anchor in doc.iter("a"):
        href = anchor.get("href", "")
        if "{{" not in href and not _ABSOLUTE.match(href):
            found.append(Finding(path, anchor.sourceline or 1, "error", _link_message(href)))
    return found


def _line(element: lxml.html.HtmlElement, source: str, marker: str) -> int:
    if element.sourceline:
        return int(element.sourceline)
    index = source.find(marker)
    return source.count("\n", 0, index) + 1 if index >= 0 else 1
