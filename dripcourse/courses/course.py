"""Load and check courses: a folder of course.toml plus day-01.md, day-02.md, ... lessons.

Reading a course collects every problem it finds as a Finding (file, line, severity, message)
rather than stopping at the first, so ``dripcourse check`` can list them all in one run;
``load_course`` is the strict form the scheduler uses, refusing a course with any error.
Line numbers are counted in the file, so they match what an editor shows.

It stays whole (about 480 lines): the lenient reading for ``check`` and the strict load share
one walk over the files and one list of findings, and split they would drift apart.
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.utils import parseaddr
from pathlib import Path
from typing import Literal

import yaml

from dripcourse.courses import support as support_file
from dripcourse.courses.greeting import DEFAULT_SALUTATION_MODE, SALUTATION_MODES
from dripcourse.courses.greeting import salutation as opening_for
from dripcourse.errors import CourseError
from dripcourse.schedule import Cadence, parse_send_time
from dripcourse.validate import check_header_text

LAYOUT_DIR = "_layout"
# A course's name is its folder's name under emails/, one plain word: never a path ("../x",
# "/etc", "a/b"), a hidden folder or the layout. It reaches the file system from a command
# line, a studio URL or a cohort row, so it is checked before any path is made from it.
COURSE_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
LESSON_FILE = re.compile(r"^day-(\d{2,3})\.md$")
# A name meant as a lesson but spelled otherwise ("day-1.md", "Day_02.md"): a mistake, not a note.
LESSON_LIKE = re.compile(r"^day[-_ ]?\d+\.(md|markdown|txt)$", re.IGNORECASE)
REQUIRED_LESSON_KEYS = ("title", "subject", "prompt")
KNOWN_LESSON_KEYS = {"title", "subject", "preheader", "prompt", "questions"}
KNOWN_COURSE_KEYS = {
    "title",
    "description",
    "sender",
    "send_time",
    "latest_send_time",
    "skip_weekends",
    "greeting_fallback",
    "reason",
    *support_file.COURSE_KEYS,
    "salutation",
}
DEFAULT_GREETING_FALLBACK = "there"
# Why a reader gets the lessons, in the footer of each; a course whose readers were enrolled by
# their programme says so in course.toml's ``reason``.
DEFAULT_REASON = "You are receiving this because you enrolled in {title}."
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)^---[ \t]*(?:\r?\n|\Z)", re.S | re.M)

Severity = Literal["error", "warning", "ignored"]


@dataclass(frozen=True)
class Finding:
    """One thing ``check`` reports: where (line counted in the file, from 1) and what."""

    path: Path
    line: int
    severity: Severity
    message: str
    day: int | None = None  # the lesson it is about, if any

    def __str__(self) -> str:
        if self.severity == "error":
            return f"{self.path}:{self.line}: {self.message}"
        return f"{self.path}:{self.line}: {self.severity}: {self.message}"

    def as_dict(self) -> dict[str, object]:
        return {
            "file": str(self.path),
            "line": self.line,
            "severity": self.severity,
            "message": self.message,
            "day": self.day,
        }


@dataclass(frozen=True)
class Lesson:
    day: int
    title: str
    subject: str
    prompt: str
    body: str
    path: Path
    preheader: str = ""
    questions: tuple[str, ...] = ()
    # Where the body starts in the file, and where each front matter key is (both from 1).
    body_line: int = 1
    key_lines: tuple[tuple[str, int], ...] = ()

    def line_of(self, key: str) -> int:
        """The line of a front matter key in the file (1 when it is not there)."""
        return dict(self.key_lines).get(key, 1)


@dataclass(frozen=True)
class Course:
    slug: str
    title: str
    sender: str
    cadence: Cadence
    lessons: tuple[Lesson, ...]
    path: Path
    description: str = ""
    greeting_fallback: str = DEFAULT_GREETING_FALLBACK
    reason: str = ""
    # Where to turn in a dark week: the course's wording and its support.toml (support.py).
    support: support_file.Support = field(default_factory=support_file.Support)
    # How lessons open: "time-of-day" ("Good morning", "Good evening", "Hello" at night, by
    # the reader's local time when it is sent) or "neutral" ("Hello").
    salutation: str = DEFAULT_SALUTATION_MODE

    def salutation_at(self, local: dt.datetime | dt.time) -> str:
        """``{{ salutation }}`` for a lesson sent at ``local`` on the reader's own clock."""
        return opening_for(self.salutation, local)

    @property
    def usual_salutation(self) -> str:
        """``{{ salutation }}`` for a lesson sent at the course's send time, as most are:
        what previews show."""
        return self.salutation_at(self.cadence.send_time)

    @property
    def length(self) -> int:
        return len(self.lessons)

    @property
    def why_you_get_it(self) -> str:
        """The footer's sentence on why this reader gets the course."""
        return self.reason or DEFAULT_REASON.format(title=self.title)

    @property
    def rhythm(self) -> str:
        """How often lessons come, said truly: "One lesson a day, 7 in all." """
        every = "each weekday (Monday to Friday)" if self.cadence.skip_weekends else "a day"
        return f"One lesson {every}, {self.length} in all."

    def lesson(self, day: int) -> Lesson:
        # By day, not position: a course read for ``check`` may lack the lessons with errors.
        for lesson in self.lessons:
            if lesson.day == day:
                return lesson
        raise CourseError(f"{self.path}: course {self.slug!r} has no day {day} (1-{self.length})")


@dataclass
class CourseReading:
    """What reading a course folder found: the course (None if course.toml is unusable), its
    lessons, and every problem.

    Lessons with errors are left out of ``course.lessons``. ``lessons`` holds the ones without
    errors of their own even when course.toml is unusable, and ``unloaded`` the ones whose
    front matter has errors, with what could be read of them: ``check`` still looks at what
    both say, so one run reports every problem rather than the first in each file.
    """

    slug: str
    course: Course | None
    findings: list[Finding] = field(default_factory=list)
    lessons: tuple[Lesson, ...] = ()
    unloaded: tuple[Lesson, ...] = ()

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]


def course_slugs(emails_dir: Path) -> list[str]:
    """Every course folder under ``emails_dir`` (those holding a course.toml)."""
    if not emails_dir.is_dir():
        raise CourseError(f"{emails_dir}: course folder not found (setting emails_dir)")
    return sorted(p.name for p in emails_dir.iterdir() if (p / "course.toml").is_file())


def check_slug(slug: str) -> str:
    """``slug`` unchanged, or CourseError saying what a course name is (no path is made)."""
    if not COURSE_SLUG.match(slug):
        raise CourseError(
            f"{slug!r} is not a course name: a course is a folder in emails/ named with "
            "letters, digits, - and _ (such as white-coat)"
        )
    return slug


def load_course(emails_dir: Path, slug: str) -> Course:
    """Read and check one course; the first error raises CourseError naming the file and line."""
    reading = read_course(emails_dir, slug)
    if reading.errors:
        first = reading.errors[0]
        more = len(reading.errors) > 1
        detail = first.message + (f" (dripcourse check {slug} lists every problem)" if more else "")
        raise CourseError.at(first.path, first.line, detail)
    assert reading.course is not None
    return reading.course


def read_course(emails_dir: Path, slug: str) -> CourseReading:
    """Read one course folder, collecting every problem instead of stopping at the first."""
    folder = emails_dir / check_slug(slug)
    meta_path = folder / "course.toml"
    if not meta_path.is_file():
        known = ", ".join(course_slugs(emails_dir)) or "none"
        raise CourseError(f"{meta_path}: no such course {slug!r} (courses: {known})")
    findings: list[Finding] = []
    settings = _read_course_toml(meta_path, findings)
    lessons, unloaded = _read_lessons(folder, findings)
    default, countries, problems = support_file.read_places(folder)
    for line, severity, message in problems:
        findings.append(Finding(folder / support_file.SUPPORT_FILE, line, severity, message))  # type: ignore[arg-type]
    course = None
    if settings is not None:
        wording = settings.pop("support")
        places = support_file.Support(**wording, default=default, countries=countries)  # type: ignore[arg-type]
        course = Course(slug=slug, lessons=lessons, path=folder, support=places, **settings)  # type: ignore[arg-type]
    return CourseReading(slug, course, findings, lessons, unloaded)


def _read_course_toml(path: Path, findings: list[Finding]) -> dict[str, object] | None:
    def error(key: str | None, message: str) -> None:
        findings.append(Finding(path, _toml_line(text, key), "error", message))

    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        findings.append(Finding(path, 1, "error", "not UTF-8 text"))
        return None
    try:
        meta = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"line (\d+)", str(exc))
        findings.append(
            Finding(path, int(found.group(1)) if found else 1, "error", f"not valid TOML: {exc}")
        )
        return None
    before = len(findings)
    for key in sorted(set(meta) - KNOWN_COURSE_KEYS):
        error(key, f"unknown key {key!r} (known: {', '.join(sorted(KNOWN_COURSE_KEYS))})")
    for key in ("title", "sender"):
        if not isinstance(meta.get(key), str) or not meta[key].strip():
            error(key if key in meta else None, f"{key} is missing or empty")
    sender = meta.get("sender")
    if isinstance(sender, str) and sender.strip():
        if _header_problem(sender):
            error("sender", f"sender: {_header_problem(sender)}")
        elif not _is_sender(sender):
            error("sender", f"sender {sender!r} is not an email address")
    send_time = latest = None
    try:
        send_time = parse_send_time(meta.get("send_time", "07:00"))
    except ValueError as exc:
        error("send_time", str(exc))
    try:
        latest = parse_send_time(meta.get("latest_send_time", "21:00"), "latest_send_time")
    except ValueError as exc:
        error("latest_send_time", str(exc))
    skip_weekends = meta.get("skip_weekends", False)
    if not isinstance(skip_weekends, bool):
        error("skip_weekends", "skip_weekends must be true or false")
    cadence = None
    if send_time is not None and latest is not None and isinstance(skip_weekends, bool):
        try:
            cadence = Cadence(
                send_time=send_time, latest_send_time=latest, skip_weekends=skip_weekends
            )
        except ValueError as exc:
            error("latest_send_time", str(exc))
    fallback = meta.get("greeting_fallback", DEFAULT_GREETING_FALLBACK)
    if not isinstance(fallback, str) or not fallback.strip() or "\n" in fallback:
        error("greeting_fallback", 'greeting_fallback must be one line of text, e.g. "colleague"')
    reason = meta.get("reason", "")
    if not isinstance(reason, str) or "\n" in reason.strip() or len(reason) > 300:
        error(
            "reason",
            'reason must be one sentence, e.g. "Your residency programme enrolled '
            'you in this course."',
        )
    wording, bad = support_file.read_wording(meta)
    for key, message in bad:
        error(key, message)
    mode = meta.get("salutation", DEFAULT_SALUTATION_MODE)
    if mode not in SALUTATION_MODES:
        error(
            "salutation",
            f"salutation must be {' or '.join(repr(m) for m in SALUTATION_MODES)}, got {mode!r}",
        )
    if len(findings) > before or cadence is None:
        return None
    return {
        "title": str(meta["title"]).strip(),
        "sender": str(meta["sender"]).strip(),
        "cadence": cadence,
        "description": str(meta.get("description", "")),
        "greeting_fallback": str(fallback).strip(),
        "reason": str(reason).strip(),
        "support": wording,
        "salutation": mode,
    }


def _toml_line(text: str, key: str | None) -> int:
    if key is not None:
        for number, line in enumerate(text.splitlines(), start=1):
            if re.match(rf"\s*{re.escape(key)}\s*=", line):
                return number
    return 1


def _header_problem(value: str) -> str | None:
    """Why ``value`` cannot go into a mail header (a control or format character), or None."""
    try:
        check_header_text(value)
    except ValueError as exc:
        return str(exc)
    return None


def _is_sender(sender: str) -> bool:
    _name, addr = parseaddr(sender)
    try:
        Address(addr_spec=addr)
    except (ValueError, IndexError):
        return False
    return "@" in addr


def _read_lessons(
    folder: Path, findings: list[Finding]
) -> tuple[tuple[Lesson, ...], tuple[Lesson, ...]]:
    """The lessons without errors of their own, and those read despite errors (see
    CourseReading); the problems go to ``findings``."""
    found: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name in ("course.toml", support_file.SUPPORT_FILE) or path.name.startswith("."):
            continue  # hidden files: editors' swap and backup files
        match = LESSON_FILE.match(path.name)
        if match is None:
            if LESSON_LIKE.match(path.name):
                findings.append(
                    Finding(path, 1, "error", "lesson files are named day-01.md, day-02.md, ...")
                )
            else:
                findings.append(Finding(path, 1, "ignored", "not a lesson (day-NN.md)"))
            continue
        day = int(match.group(1))
        if day in found:
            message = f"day {day} is also in {found[day].name}"
            findings.append(Finding(path, 1, "error", message, day))
            continue
        found[day] = path
    if not found:
        findings.append(Finding(folder, 1, "error", "no lessons (day-01.md, day-02.md, ...)"))
        return (), ()
    days = sorted(found)
    for missing in sorted(set(range(1, days[-1] + 1)) - set(days)):
        after = next(d for d in days if d > missing)
        message = f"day {missing} is missing; lessons must run 1, 2, 3 ... without gaps"
        findings.append(Finding(found[after], 1, "error", message, after))
    lessons: list[Lesson] = []
    unloaded: list[Lesson] = []
    for day in days:
        lesson, whole = _read_lesson(day, found[day], findings)
        if lesson is not None:
            (lessons if whole else unloaded).append(lesson)
    # Possibly incomplete: still useful to ``check``; ``load_course`` refuses it.
    return tuple(lessons), tuple(unloaded)


def _read_lesson(day: int, path: Path, findings: list[Finding]) -> tuple[Lesson | None, bool]:
    """The lesson in ``path``, and whether it has no errors of its own.

    A lesson whose front matter has errors is still returned, with what could be read of it
    (its text above all), so ``check`` can report the text's problems in the same run; only
    a file that cannot be read as text gives None.
    """
    before = len(findings)

    def error(line: int, message: str) -> None:
        findings.append(Finding(path, line, "error", message, day))

    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        error(1, "not UTF-8 text")
        return None, False
    split = _FRONT_MATTER.match(text)
    if split is None:
        error(
            1,
            "no front matter: a lesson starts with a --- line, then title, subject and "
            "prompt, then another --- line",
        )
        return Lesson(day=day, title="", subject="", prompt="", body=text, path=path), False
    source = split.group(1)
    body_line = text.count("\n", 0, split.end()) + 1
    body = text[split.end() :]
    meta, key_lines = _parse_front_matter(source, path, day, findings)
    if meta is None:
        if not body.strip():
            error(body_line, "the lesson has no body")
        return Lesson(
            day=day, title="", subject="", prompt="", body=body, path=path, body_line=body_line
        ), False
    for key in REQUIRED_LESSON_KEYS:
        value = meta.get(key)
        if not isinstance(value, str) or not value.strip():
            where = key_lines.get(key, 1)
            error(where, f"{key} is missing or empty")
    for key in sorted(set(meta) - KNOWN_LESSON_KEYS, key=str):
        error(
            key_lines.get(key, 1),
            f"unknown front matter key {key!r} (known: {', '.join(sorted(KNOWN_LESSON_KEYS))})",
        )
    subject = str(meta.get("subject") or "")
    if "\n" in subject.strip() or "\r" in subject:
        error(key_lines.get("subject", 1), "subject must be one line")
    elif _header_problem(subject.strip()):
        error(key_lines.get("subject", 1), f"subject: {_header_problem(subject.strip())}")
    questions = meta.get("questions", [])
    if not isinstance(questions, list) or not all(
        isinstance(q, str) and q.strip() for q in questions
    ):
        error(key_lines.get("questions", 1), "questions must be a list of text lines")
        questions = []
    if not body.strip():
        error(body_line, "the lesson has no body")
    lesson = Lesson(
        day=day,
        title=str(meta.get("title") or "").strip(),
        subject=subject.strip(),
        prompt=str(meta.get("prompt") or "").strip(),
        preheader=str(meta.get("preheader") or "").strip(),
        questions=tuple(q.strip() for q in questions),
        body=body,
        path=path,
        body_line=body_line,
        key_lines=tuple(sorted(key_lines.items())),
    )
    return lesson, len(findings) == before


def _parse_front_matter(
    source: str, path: Path, day: int, findings: list[Finding]
) -> tuple[dict[str, object] | None, dict[str, int]]:
    """The front matter's keys and values, and the file line of each key (from 1).

    The block starts on the file's second line, after the opening ``---``.
    """
    try:
        node = yaml.compose(source, Loader=yaml.SafeLoader)
        meta = yaml.safe_load(source)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 2 if mark is not None else 1
        findings.append(Finding(path, line, "error", _plain_yaml(exc), day))
        return None, {}
    if meta is None:
        meta = {}
    if not isinstance(meta, dict) or not isinstance(node, yaml.MappingNode | type(None)):
        findings.append(
            Finding(path, 2, "error", "front matter must be lines of `key: value`", day)
        )
        return None, {}
    lines = {}
    if node is not None:
        lines = {str(k.value): k.start_mark.line + 2 for k, _v in node.value}
    return meta, lines


def _plain_yaml(exc: yaml.YAMLError) -> str:
    """Say what is wrong with front matter in words a lesson writer knows."""
    problem = str(getattr(exc, "problem", "") or exc)
    if "mapping values are not allowed" in problem:
        return (
            "front matter: a value holds a colon followed by a space; "
            "put the whole value in double quotes"
        )
    unacceptable = re.search(r"unacceptable character #x([0-9a-fA-F]+)", problem)
    if unacceptable:
        code = int(unacceptable.group(1), 16)
        return f"front matter: unacceptable character U+{code:04X} (a control character); remove it"
    if "'\\t'" in problem or re.search(r"\btabs?\b", problem):
        return "front matter: a tab is used to indent; indent with spaces"
    if "could not find expected ':'" in problem:
        return "front matter: this line is not `key: value` (or a quote before it is not closed)"
    if "end of stream" in problem or "quoted scalar" in str(exc):
        return "front matter: a quote is opened and never closed"
    if "expected <block end>" in problem or "expected <block mapping start>" in problem:
        return "front matter: the indentation is uneven here"
    if "found character" in problem:
        return (
            "front matter: a value starts with a character YAML reserves (such as @ or `); "
            "put the value in double quotes"
        )
    return f"front matter is not valid YAML ({problem})"
