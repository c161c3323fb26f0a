"""A course and its lessons as the rest of dripcourse reads them, and a Finding about them.

``Course``, ``Lesson`` and ``Finding`` are plain values: ``course_folder`` builds them from a
folder under emails/ (``course_toml`` and ``lesson_files`` read its files), and everything
else, from the scheduler to the studio, only reads them. A course's name is its folder's name,
checked here before any path is made from it.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dripcourse.courses import support as support_file
from dripcourse.courses.checkins import Checkin
from dripcourse.courses.greeting import DEFAULT_SALUTATION_MODE
from dripcourse.courses.greeting import salutation as opening_for
from dripcourse.errors import CourseError
from dripcourse.schedule import Cadence
from dripcourse.validate import check_header_text

LAYOUT_DIR = "_layout"
# A course's name is its folder's name under emails/, one plain word: never a path ("../x",
# "/etc", "a/b"), a hidden folder or the layout. It reaches the file system from a command
# line, a studio URL or a cohort row, so it is checked before any path is made from it.
COURSE_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
DEFAULT_GREETING_FALLBACK = "there"
# Why a reader gets the lessons, in the footer of each; a course whose readers were enrolled by
# their programme says so in course.toml's ``reason``.
DEFAULT_REASON = "You are receiving this because you enrolled in {title}."

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

    checkins: tuple[Checkin, ...] = ()  # asked in the first and last lesson
    # Whether cohorts of this course may share reflections with each other (the circle).
    circle: bool = False

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


def header_problem(value: str) -> str | None:
    """Why ``value`` cannot go into a mail header (a control or format character), or None."""
    try:
        check_header_text(value)
    except ValueError as exc:
        return str(exc)
    return None
