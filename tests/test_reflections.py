"""Reflections: one per enrollment and day, the question kept as asked, exported by operators."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from dripcourse.courses.course import Lesson
from dripcourse.db import transaction
from dripcourse.models import Enrollment, Reflection
from dripcourse.people import status
from dripcourse.reader import reflections
from dripcourse.runtime import Runtime
from tests.conftest import make_settings, utc
from tests.test_web_support import DAY, DAY_1_UTC, enroll, run_cli, send_days

WROTE = utc(2025, 3, 5, 20)


@pytest.fixture
def rt(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    """On SQLite and on PostgreSQL alike."""
    runtime = Runtime(make_settings(tmp_path, database_url=database_url))
    yield runtime
    runtime.close()


@pytest.fixture
def ana(rt: Runtime) -> int:
    """Enrolled in cohort spring, has had Days 1-3."""
    enrollment_id = enroll(rt, "ana@example.org")
    send_days(rt, 3)
    return enrollment_id


def write(
    rt: Runtime, enrollment_id: int, day: int, text: str, now: dt.datetime = WROTE
) -> reflections.WrittenReflection:
    with transaction(rt.sessions) as session:
        found = session.get(Enrollment, enrollment_id)
        assert found is not None
        prompt = rt.catalog.course("white-coat").lesson(day).prompt
        return reflections.save_reflection(
            session,
            found,
            day,
            prompt,
            text,
            cipher=rt.reflection_cipher,
            max_chars=rt.settings.reflection_max_chars,
            now=now,
        )


def test_writing_again_edits_the_one_reflection_for_that_day(rt: Runtime, ana: int) -> None:
    first = write(rt, ana, 2, "First draft.")
    second = write(rt, ana, 2, "Second draft.", now=WROTE + dt.timedelta(hours=1))
    assert second.id == first.id
    assert (second.body, second.created_at, second.updated_at) == (
        "Second draft.",
        WROTE,
        WROTE + dt.timedelta(hours=1),
    )
    with transaction(rt.sessions) as session:
        assert session.scalar(select(func.count()).select_from(Reflection)) == 1


def test_an_edit_keeps_the_question_as_first_asked(rt: Runtime, ana: int) -> None:
    with transaction(rt.sessions) as session:
        found = session.get(Enrollment, ana)
        assert found is not None
        reflections.save_reflection(
            session,
            found,
            1,
            "Old wording?",
            "A",
            cipher=rt.reflection_cipher,
            max_chars=99,
            now=WROTE,
        )
        edited = reflections.save_reflection(
            session,
            found,
            1,
            "New wording?",
            "B",
            cipher=rt.reflection_cipher,
            max_chars=99,
            now=WROTE,
        )
        assert (edited.prompt, edited.body) == ("Old wording?", "B")


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("line one\r\nline two\rline three", "line one\nline two\nline three"),
        ("  indented thought  \n\n", "indented thought"),
        ("nul\x00 and bell\x07 gone, tab\tkept", "nul and bell gone, tab\tkept"),
        ("émoji 🩺 and ü", "émoji 🩺 and ü"),
        ("👩\u200d⚕\ufe0f", "👩\u200d⚕\ufe0f"),
    ],
    ids=["line-breaks", "surrounding-space", "control-characters", "unicode", "joined-emoji"],
)
def test_text_is_stored_as_written_less_what_no_one_types(
    rt: Runtime, ana: int, written: str, stored: str
) -> None:
    assert write(rt, ana, 1, written).body == stored


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "\r\n\x00",
        "\u200b",
        "\ufeff\u2060\u200d",
        "\u00a0\u3000\u2028\u2029\u200b\n",
    ],
    ids=[
        "empty",
        "spaces",
        "control-characters",
        "zero-width-space",
        "byte-order-mark-and-word-joiners",
        "unicode-spaces-and-separators",
    ],
)
def test_an_empty_reflection_is_refused(rt: Runtime, ana: int, text: str) -> None:
    with pytest.raises(reflections.ReflectionRejected, match="empty"):
        write(rt, ana, 1, text)


NOW_ASKED = Lesson(
    day=1, title="Day one", subject="s", prompt="As the lesson asks it now?", body="", path=Path()
)


@pytest.mark.parametrize(
    ("lesson", "answered", "shown"),
    [
        (NOW_ASKED, "As first answered?", "As first answered?"),
        (NOW_ASKED, None, "As the lesson asks it now?"),
        (None, "As first answered?", "As first answered?"),
        (None, None, None),
    ],
    ids=["written", "not-written", "written-lesson-gone", "nothing-to-show"],
)
def test_a_days_question_is_the_one_first_answered_else_the_lessons(
    lesson: Lesson | None, answered: str | None, shown: str | None
) -> None:
    reflection = (
        None
        if answered is None
        else reflections.WrittenReflection(0, 0, 1, answered, "An answer.", WROTE, WROTE)
    )
    assert reflections.prompt_for(lesson, reflection) == shown


def test_the_size_limit_names_the_limit_and_the_excess() -> None:
    assert reflections.check_text("x" * 10, 10) == "x" * 10
    with pytest.raises(reflections.ReflectionRejected) as caught:
        reflections.check_text("x" * 1_012, 1_000)
    assert "1,012 characters" in str(caught.value)
    assert "limit is 1,000" in str(caught.value)
    assert "shorten it by 12" in str(caught.value)


def test_journal_is_every_lesson_sent_newest_first(rt: Runtime, ana: int) -> None:
    write(rt, ana, 1, "On day one.")
    with transaction(rt.sessions) as session:
        found = session.get(Enrollment, ana)
        assert found is not None
        entries = reflections.journal(
            session, found, rt.catalog.course("white-coat"), rt.reflection_cipher
        )
        assert [e.day for e in entries] == [3, 2, 1]
        assert [e.reflection.body if e.reflection else None for e in entries] == [
            None,
            None,
            "On day one.",
        ]
        assert entries[1].questions == rt.catalog.course("white-coat").lesson(2).questions


# -- operators: export and status -----------------------------------------------------------


@pytest.fixture
def two_cohorts(rt: Runtime, ana: int) -> None:
    ben = enroll(rt, "ben@example.org", cohort="autumn", now=utc(2025, 3, 3))
    send_days(rt, 1, first=DAY_1_UTC + 3 * DAY)
    write(rt, ana, 1, 'Ana, day 1: "quoted", commas, and\na second line')
    write(rt, ana, 3, "Ana, day 3 <b>raw</b>", now=WROTE + dt.timedelta(days=1))
    write(rt, ben, 1, "=Ben's day 1")


def test_export_csv_has_a_header_and_every_reflection_as_written(
    rt: Runtime, two_cohorts: None
) -> None:
    result = run_cli(rt.settings, "reflections", "export")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert list(rows[0]) == list(reflections.EXPORT_FIELDS)
    assert [(r["cohort"], r["email"], r["day"]) for r in rows] == [
        ("autumn", "ben@example.org", "1"),
        ("spring", "ana@example.org", "1"),
        ("spring", "ana@example.org", "3"),
    ]
    assert rows[1]["text"] == 'Ana, day 1: "quoted", commas, and\na second line'
    assert rows[2]["text"] == "Ana, day 3 <b>raw</b>"
    assert rows[1]["prompt"] == rt.catalog.course("white-coat").lesson(1).prompt
    assert (rows[2]["created_at"], rows[2]["updated_at"]) == ("2025-03-06T20:00:00Z",) * 2


def test_export_json_for_one_cohort_to_a_file(
    rt: Runtime, two_cohorts: None, tmp_path: Path
) -> None:
    out = tmp_path / "spring.json"
    result = run_cli(
        rt.settings,
        "reflections",
        "export",
        "--cohort",
        "spring",
        "--format",
        "json",
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text(encoding="utf-8"))
    assert [(r["email"], r["day"]) for r in rows] == [
        ("ana@example.org", 1),
        ("ana@example.org", 3),
    ]
    assert set(rows[0]) == set(reflections.EXPORT_FIELDS)
    assert "ben@example.org" not in out.read_text(encoding="utf-8")
    assert out.stat().st_mode & 0o777 == 0o600, (
        "an export of private writing is the operator's alone"
    )


def test_export_of_an_unknown_cohort_is_one_clear_line(rt: Runtime) -> None:
    result = run_cli(rt.settings, "reflections", "export", "--cohort", "nope")
    assert result.exit_code == 1
    assert "no cohort named 'nope'" in result.output


def test_status_counts_who_reflected_each_day(rt: Runtime, two_cohorts: None) -> None:
    with transaction(rt.sessions) as session:
        (spring,) = status.cohort_summaries(session, "spring")
    assert [(d.day, d.sent, d.reflected) for d in spring.days] == [
        (1, 1, 1),
        (2, 1, 0),
        (3, 1, 1),
        (4, 1, 0),
    ]
    output = run_cli(rt.settings, "status", "--cohort", "spring").output
    lines = output.splitlines()
    assert lines[1].split() == [
        "day",
        "at",
        "sent",
        "pending",
        "retrying",
        "failed",
        "suppressed",
        "reflected",
    ]
    assert lines[2].split() == ["1", "0", "1", "0", "0", "0", "0", "1"]
    assert lines[3].split() == ["2", "0", "1", "0", "0", "0", "0", "0"]


FORMULAS = ['=HYPERLINK("http://x.example","open")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]


@pytest.mark.parametrize("written", FORMULAS)
def test_export_csv_neutralises_a_cell_a_spreadsheet_would_run_as_a_formula(written: str) -> None:
    """A reflection can arrive by email from anyone with the reply address: as a CSV cell it
    became a live formula in the operator's spreadsheet."""
    row = dict.fromkeys(reflections.EXPORT_FIELDS, "plain") | {"text": written, "day": 1}
    (exported,) = csv.DictReader(io.StringIO(reflections.export_text([row], "csv")))
    assert exported["text"] == "'" + written
    assert exported["prompt"] == "plain" and exported["day"] == "1"
    assert json.loads(reflections.export_text([row], "json"))[0]["text"] == written


def test_export_csv_of_a_formula_reflection_shows_it_as_text(rt: Runtime) -> None:
    ana = enroll(rt, "ana@example.org")
    send_days(rt, 1)
    write(rt, ana, 1, FORMULAS[0])
    exported = run_cli(rt.settings, "reflections", "export").output
    assert next(csv.DictReader(io.StringIO(exported)))["text"] == "'" + FORMULAS[0]
