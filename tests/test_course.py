"""Courses load from emails/; a broken course is rejected with the file named."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dripcourse.courses.course_folder import load_course
from dripcourse.errors import CourseError
from dripcourse.runtime import Catalog
from tests.conftest import EMAILS


@pytest.fixture
def emails(tmp_path: Path) -> Path:
    target = tmp_path / "emails"
    shutil.copytree(EMAILS, target)
    return target


def test_sample_course_loads_with_its_rules() -> None:
    course = load_course(EMAILS, "white-coat")
    assert course.length == 7
    assert course.cadence.send_time.strftime("%H:%M") == "07:00"
    assert course.cadence.skip_weekends is False
    assert [lesson.day for lesson in course.lessons] == list(range(1, 8))
    assert all(lesson.subject.startswith(f"Day {lesson.day}:") for lesson in course.lessons)
    assert all(lesson.prompt and lesson.questions for lesson in course.lessons)


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    ("breakage", "culprit", "message"),
    [
        (lambda e: (e / "white-coat" / "day-03.md").unlink(), "day-04.md", "day 3 is missing"),
        (
            lambda e: _edit(e / "white-coat" / "day-02.md", "subject:", "subjekt:"),
            "day-02.md",
            "subject is missing",
        ),
        (
            lambda e: _edit(e / "white-coat" / "day-05.md", "{{ greeting }}", "{{ greting }}"),
            "day-05.md",
            "unknown template variable",
        ),
        (
            lambda e: _edit(e / "white-coat" / "day-06.md", "{{ greeting }}", "{{ greeting }"),
            "day-06.md",
            "template syntax error",
        ),
        (
            lambda e: _edit(e / "white-coat" / "course.toml", '"07:00"', '"7am"'),
            "course.toml",
            "send_time",
        ),
        (
            lambda e: _edit(e / "white-coat" / "course.toml", "lessons@", "lessons-at-"),
            "course.toml",
            "not an email address",
        ),
        (
            lambda e: (e / "white-coat" / "day-1.md").write_text("---\nsubject: x\n---\nx"),
            "day-1.md",
            "named day-01.md",
        ),
        (
            lambda e: _edit(e / "white-coat" / "day-07.md", "questions:", "questions: oops\nx:"),
            "day-07.md",
            "front matter",
        ),
    ],
    ids=[
        "gap-in-days",
        "missing-subject",
        "unknown-variable",
        "bad-template",
        "bad-send-time",
        "bad-sender",
        "misnamed-lesson",
        "broken-front-matter",
    ],
)
def test_broken_course_is_rejected_naming_the_file(
    emails: Path, breakage, culprit: str, message: str
) -> None:
    breakage(emails)
    with pytest.raises(CourseError) as caught:
        Catalog(emails).course("white-coat")
    assert culprit in str(caught.value)
    assert message in str(caught.value)


def test_unknown_course_lists_the_ones_there_are() -> None:
    with pytest.raises(CourseError, match="white-coat"):
        Catalog(EMAILS).course("no-such-course")


NOT_COURSE_NAMES = ["../../etc", "..", ".", "/etc", "white-coat/../white-coat", "_layout", ".git"]


class Untouchable:
    """An emails/ folder that fails the test when a path is made in it."""

    def __truediv__(self, other: object) -> Path:
        raise AssertionError(f"a path was made from {other!r}")


@pytest.mark.parametrize("name", [*NOT_COURSE_NAMES, "white coat", ""])
def test_a_name_that_is_not_a_course_slug_is_refused_before_any_path_is_made(name: str) -> None:
    with pytest.raises(CourseError, match=r"is not a course name"):
        load_course(Untouchable(), name)  # type: ignore[arg-type]


def test_a_course_folder_named_otherwise_is_reported_by_check(emails: Path) -> None:
    from dripcourse.courses.checks import check_all

    shutil.copytree(emails / "white-coat", emails / "white coat")
    _layout, reports = check_all(emails)
    by_slug = {r.slug: r for r in reports}
    assert by_slug["white-coat"].findings == []
    [finding] = by_slug["white coat"].findings
    assert (finding.path, finding.line, finding.severity) == (emails / "white coat", 1, "error")
    assert "is not a course name" in finding.message
