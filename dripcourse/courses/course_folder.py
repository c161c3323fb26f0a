"""Reading a course folder whole: every Finding for ``check``, or the strict load.

``read_course`` collects every problem in course.toml, support.toml and the lessons rather than
stopping at the first, so ``dripcourse check`` can list them all in one run; ``load_course`` is
the strict form the scheduler uses, refusing a course with any error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dripcourse.courses import support as support_file
from dripcourse.courses.course import Course, Finding, Lesson, check_slug, course_slugs
from dripcourse.courses.course_toml import read_course_toml
from dripcourse.courses.lesson_files import read_lessons
from dripcourse.errors import CourseError


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
    settings = read_course_toml(meta_path, findings)
    lessons, unloaded = read_lessons(folder, findings)
    default, countries, problems = support_file.read_places(folder)
    for line, severity, message in problems:
        findings.append(Finding(folder / support_file.SUPPORT_FILE, line, severity, message))  # type: ignore[arg-type]
    course = None
    if settings is not None:
        wording = settings.pop("support")
        places = support_file.Support(**wording, default=default, countries=countries)  # type: ignore[arg-type]
        course = Course(slug=slug, lessons=lessons, path=folder, support=places, **settings)  # type: ignore[arg-type]
    return CourseReading(slug, course, findings, lessons, unloaded)
