"""Changing a course while people are in it: appending reaches everyone not finished, edits
apply from then on, and `check` refuses removing or renumbering a lesson someone is past.

Each test works on a copy of the sample course (seven lessons, 07:00 every day), with cohorts
starting Monday 2025-03-03; subscribers are in UTC, so 07:00 local is 07:00 UTC.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from dripcourse.cli import cli
from dripcourse.db import transaction
from dripcourse.models import Enrollment, EnrollmentStatus
from dripcourse.reader import reflections
from dripcourse.runtime import Runtime
from dripcourse.settings import Settings
from tests.conftest import EMAILS, make_settings, utc
from tests.test_web_support import enroll, load, tick
from tests.workers import settings_env

MONDAY = dt.date(2025, 3, 3)


@pytest.fixture
def lessons(tmp_path: Path) -> Path:
    """The folder of the course copy, to add, edit, remove or swap lesson files in."""
    shutil.copytree(EMAILS, tmp_path / "emails")
    return tmp_path / "emails" / "white-coat"


@pytest.fixture
def settings(tmp_path: Path, sqlite_url: str, lessons: Path) -> Settings:
    return make_settings(tmp_path, database_url=sqlite_url, emails_dir=str(lessons.parent))


@pytest.fixture
def rt(settings: Settings) -> Iterator[Runtime]:
    runtime = Runtime(settings)
    yield runtime
    runtime.close()


def fresh(rt: Runtime) -> Runtime:
    """A new process's view of the courses, as after restarting the workers."""
    rt.close()
    return Runtime(rt.settings)


def send_mornings(rt: Runtime, first: dt.date, last: dt.date) -> None:
    day = first
    while day <= last:
        tick(rt, dt.datetime.combine(day, dt.time(7), tzinfo=dt.UTC))
        day += dt.timedelta(days=1)


def check(rt: Runtime):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["check"], env=settings_env(rt.settings))


def test_an_appended_lesson_reaches_everyone_not_finished(rt: Runtime, lessons: Path) -> None:
    extra = lessons / "day-07.md"
    kept = extra.read_text()
    extra.unlink()  # a six-lesson course to start with
    rt = fresh(rt)
    finished = enroll(rt, "done@example.org", start=MONDAY)
    later = enroll(rt, "later@example.org", cohort="later", start=MONDAY + dt.timedelta(days=2))
    send_mornings(rt, MONDAY, dt.date(2025, 3, 8))  # Monday to Saturday: six lessons
    assert load(rt, finished).status == EnrollmentStatus.COMPLETED
    assert load(rt, later).day == 4

    extra.write_text(kept)
    rt = fresh(rt)
    assert check(rt).exit_code == 0
    send_mornings(rt, dt.date(2025, 3, 9), dt.date(2025, 3, 14))
    assert (load(rt, later).day, load(rt, later).status) == (7, EnrollmentStatus.COMPLETED)
    assert load(rt, finished).day == 6  # finished before it was added: stays finished
    rt.close()


def test_an_edited_lesson_is_sent_as_edited_from_then_on(rt: Runtime, lessons: Path) -> None:
    enroll(rt, "ana@example.org", start=MONDAY)
    send_mornings(rt, MONDAY, MONDAY)
    day_2 = lessons / "day-02.md"
    day_2.write_text(day_2.read_text() + "\nA sentence added after Day 1 went out.\n")
    rt = fresh(rt)
    assert check(rt).exit_code == 0
    send_mornings(rt, dt.date(2025, 3, 4), dt.date(2025, 3, 4))
    outbox = Path(rt.settings.mail_url.removeprefix("file://"))
    texts = []
    for path in sorted(outbox.glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        texts.append(message.get_body(("plain",)).get_content())  # type: ignore[union-attr]
    assert sum("A sentence added after Day 1" in text for text in texts) == 1
    rt.close()


def test_check_refuses_removing_a_lesson_someone_is_past(rt: Runtime, lessons: Path) -> None:
    enroll(rt, "ana@example.org", start=MONDAY)
    send_mornings(rt, MONDAY, dt.date(2025, 3, 7))  # five lessons
    (lessons / "day-07.md").unlink()
    (lessons / "day-06.md").unlink()
    assert check(fresh(rt)).exit_code == 0  # nobody has had Day 6 or 7: allowed
    (lessons / "day-05.md").unlink()
    refused = check(fresh(rt))
    assert refused.exit_code == 1
    assert "cohort 'spring': 1 people have had Day 5, but the course now has 4 lessons" in (
        refused.output
    )


def test_check_refuses_renumbering_a_lesson_someone_answered(rt: Runtime, lessons: Path) -> None:
    enrollment_id = enroll(rt, "ana@example.org", start=MONDAY)
    send_mornings(rt, MONDAY, dt.date(2025, 3, 4))
    course = rt.catalog.course("white-coat")
    with transaction(rt.sessions) as session:
        found = session.get(Enrollment, enrollment_id)
        assert found is not None
        reflections.save_reflection(
            session,
            found,
            2,
            course.lesson(2).prompt,
            "My answer.",
            cipher=rt.reflection_cipher,
            max_chars=5000,
            now=utc(2025, 3, 4, 9),
        )
    day_2, day_3 = lessons / "day-02.md", lessons / "day-03.md"
    text_2, text_3 = day_2.read_text(), day_3.read_text()
    day_2.write_text(text_3)
    day_3.write_text(text_2)
    refused = check(fresh(rt))
    assert refused.exit_code == 1
    assert "day-03.md: the question 1 people answered as Day 2 is now Day 3's" in refused.output
    # Rewording the question instead is an edit, and allowed.
    day_2.write_text(text_2.replace("prompt:", "prompt: Reworded.", 1))
    day_3.write_text(text_3)
    assert check(fresh(rt)).exit_code == 0


def test_moving_to_a_cohort_of_another_course_starts_it_at_day_1(
    rt: Runtime, lessons: Path
) -> None:
    from sqlalchemy import select

    from dripcourse.people import changes as people

    shutil.copytree(lessons, lessons.parent / "night-shift")
    rt = fresh(rt)
    moved_id = enroll(rt, "ana@example.org", start=MONDAY)
    send_mornings(rt, MONDAY, dt.date(2025, 3, 4))
    with transaction(rt.sessions) as session:
        from dripcourse.people import enrollment as enrollments

        course = rt.catalog.course("night-shift")
        target = enrollments.create_cohort(session, "nights", course, "2025-03-10", utc(2025, 3, 4))
        found = session.get(Enrollment, moved_id)
        assert found is not None
        done = people.move(session, found, target, rt.catalog.course, utc(2025, 3, 4, 9))
    assert done.before.startswith("spring: active, Day 3 of 7")
    assert done.after.startswith("nights: active, Day 1 of 7 due 2025-03-10 07:00")
    assert load(rt, moved_id).status == EnrollmentStatus.REMOVED
    with transaction(rt.sessions) as session:
        rows = session.execute(select(Enrollment.day, Enrollment.status)).all()
    assert sorted(rows) == [(0, EnrollmentStatus.ACTIVE), (2, EnrollmentStatus.REMOVED)]
    rt.close()
