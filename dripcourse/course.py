"""Load and check courses: a folder of course.toml plus day-01.md, day-02.md, ... lessons."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from email.headerregistry import Address
from email.utils import parseaddr
from pathlib import Path

import frontmatter
import yaml

from dripcourse.errors import CourseError
from dripcourse.schedule import Cadence, parse_send_time

LAYOUT_DIR = "_layout"
LESSON_FILE = re.compile(r"^day-(\d{2,3})\.md$")
REQUIRED_LESSON_KEYS = ("title", "subject", "prompt")
KNOWN_LESSON_KEYS = {"title", "subject", "preheader", "prompt", "questions"}
KNOWN_COURSE_KEYS = {
    "title",
    "description",
    "sender",
    "send_time",
    "latest_send_time",
    "skip_weekends",
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


@dataclass(frozen=True)
class Course:
    slug: str
    title: str
    sender: str
    cadence: Cadence
    lessons: tuple[Lesson, ...]
    path: Path
    description: str = ""

    @property
    def length(self) -> int:
        return len(self.lessons)

    def lesson(self, day: int) -> Lesson:
        if not 1 <= day <= self.length:
            raise CourseError(
                f"{self.path}: course {self.slug!r} has no day {day} (1-{self.length})"
            )
        return self.lessons[day - 1]


def course_slugs(emails_dir: Path) -> list[str]:
    """Every course folder under ``emails_dir`` (those holding a course.toml)."""
    if not emails_dir.is_dir():
        raise CourseError(f"{emails_dir}: course folder not found (setting emails_dir)")
    return sorted(p.name for p in emails_dir.iterdir() if (p / "course.toml").is_file())


def load_course(emails_dir: Path, slug: str) -> Course:
    """Read and check one course; any problem raises CourseError naming the file."""
    folder = emails_dir / slug
    meta_path = folder / "course.toml"
    if not meta_path.is_file():
        known = ", ".join(course_slugs(emails_dir)) or "none"
        raise CourseError(f"{meta_path}: no such course {slug!r} (courses: {known})")
    try:
        meta = tomllib.loads(meta_path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise CourseError(f"{meta_path}: {exc}") from None
    except UnicodeDecodeError:
        raise CourseError(f"{meta_path}: not UTF-8 text") from None
    unknown = set(meta) - KNOWN_COURSE_KEYS
    if unknown:
        raise CourseError(f"{meta_path}: unknown key(s) {', '.join(sorted(unknown))}")
    title = _text(meta, "title", meta_path)
    sender = _text(meta, "sender", meta_path)
    _check_sender(sender, meta_path)
    skip_weekends = meta.get("skip_weekends", False)
    if not isinstance(skip_weekends, bool):
        raise CourseError(f"{meta_path}: skip_weekends must be true or false")
    try:
        cadence = Cadence(
            send_time=parse_send_time(meta.get("send_time", "07:00")),
            latest_send_time=parse_send_time(
                meta.get("latest_send_time", "21:00"), "latest_send_time"
            ),
            skip_weekends=skip_weekends,
        )
    except ValueError as exc:
        raise CourseError(f"{meta_path}: {exc}") from None
    lessons = _load_lessons(folder)
    return Course(
        slug=slug,
        title=title,
        sender=sender,
        cadence=cadence,
        lessons=lessons,
        path=folder,
        description=str(meta.get("description", "")),
    )


def _load_lessons(folder: Path) -> tuple[Lesson, ...]:
    found: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        match = LESSON_FILE.match(path.name)
        if match is None:
            if path.suffix == ".md":
                raise CourseError(f"{path}: lesson files are named day-01.md, day-02.md, ...")
            continue
        day = int(match.group(1))
        if day in found:
            raise CourseError(f"{path}: day {day} is also in {found[day].name}")
        found[day] = path
    if not found:
        raise CourseError(f"{folder}: no lessons (day-01.md, day-02.md, ...)")
    for expected, day in enumerate(sorted(found), start=1):
        if day != expected:
            where = found[day]
            raise CourseError(
                f"{where}: day {expected} is missing; lessons must run 1, 2, 3 ... without gaps"
            )
    return tuple(_load_lesson(day, found[day]) for day in sorted(found))


def _load_lesson(day: int, path: Path) -> Lesson:
    try:
        post = frontmatter.loads(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, ValueError) as exc:
        raise CourseError(f"{path}: front matter: {exc}") from None
    except UnicodeDecodeError:
        raise CourseError(f"{path}: not UTF-8 text") from None
    meta = post.metadata
    for key in REQUIRED_LESSON_KEYS:
        _text(meta, key, path)
    unknown = set(meta) - KNOWN_LESSON_KEYS
    if unknown:
        raise CourseError(f"{path}: unknown front matter key(s) {', '.join(sorted(unknown))}")
    subject = str(meta["subject"])
    if "\n" in subject or "\r" in subject:
        raise CourseError(f"{path}: subject must be one line")
    questions = meta.get("questions", [])
    if not isinstance(questions, list) or not all(
        isinstance(q, str) and q.strip() for q in questions
    ):
        raise CourseError(f"{path}: questions must be a list of text lines")
    if not post.content.strip():
        raise CourseError(f"{path}: the lesson has no body")
    return Lesson(
        day=day,
        title=str(meta["title"]).strip(),
        subject=subject.strip(),
        prompt=str(meta["prompt"]).strip(),
        preheader=str(meta.get("preheader", "")).strip(),
        questions=tuple(q.strip() for q in questions),
        body=post.content,
        path=path,
    )


def _text(meta: dict[str, object], key: str, path: Path) -> str:
    value = meta.get(key)
    if not isinstance(value, str) or not value.strip():
        raise CourseError(f"{path}: {key} is missing or empty")
    return value


def _check_sender(sender: str, path: Path) -> None:
    _name, addr = parseaddr(sender)
    try:
        Address(addr_spec=addr)
    except (ValueError, IndexError):
        addr = ""
    if "@" not in addr:
        raise CourseError(f"{path}: sender {sender!r} is not an email address")
