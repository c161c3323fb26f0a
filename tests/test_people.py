"""Changing one person from the command line: each change goes through the core, re-plans the
next lesson by the schedule's rules, and prints what it was before and after.

The cohort starts Monday 2025-03-03 on the seven-day course, 07:00 local, every day.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from dripcourse.cli import cli
from dripcourse.db import transaction
from dripcourse.errors import DripcourseError
from dripcourse.models import Delivery, DeliveryStatus, Enrollment, EnrollmentStatus, Suppression
from dripcourse.people import changes as people
from dripcourse.runtime import Runtime
from dripcourse.settings import Settings
from tests.conftest import utc
from tests.test_web_support import enroll, load, tick
from tests.workers import settings_env

MONDAY_07_LONDON = utc(2025, 3, 3, 7)  # GMT in March before the 30th
TUESDAY_07_LONDON = utc(2025, 3, 4, 7)


def change(rt: Runtime, enrollment_id: int, what: Callable, now: dt.datetime):  # type: ignore[no-untyped-def, type-arg]
    """Run one people.* change on an enrollment in a transaction, as the commands do."""
    with transaction(rt.sessions) as session:
        found = session.get(Enrollment, enrollment_id)
        assert found is not None
        course = rt.catalog.course(found.cohort.course_slug)
        return what(session, found, course, now)


def set_zone(rt: Runtime, email: str, zone: str, now: dt.datetime) -> list[people.Change]:
    with transaction(rt.sessions) as session:
        person = people.find_person(session, email)
        return people.set_timezone(session, person, zone, rt.catalog.course, now)


@pytest.fixture
def lena(rt: Runtime) -> int:
    """A London subscriber who had Day 1 on Monday at 07:00."""
    enrollment_id = enroll(rt, "lena@example.org", timezone="Europe/London")
    assert len(tick(rt, MONDAY_07_LONDON)) == 1
    assert load(rt, enrollment_id).next_send_at == TUESDAY_07_LONDON
    return enrollment_id


def test_moving_to_tokyo_brings_day_2_to_the_next_tokyo_morning(rt: Runtime, lena: int) -> None:
    changes = set_zone(rt, "lena@example.org", "Asia/Tokyo", utc(2025, 3, 3, 18))
    assert str(changes[0]) == "timezone: Europe/London -> Asia/Tokyo"
    # Day 1 went out at 16:00 Monday in Tokyo; Day 2 is Tuesday 07:00 there.
    assert load(rt, lena).next_send_at == utc(2025, 3, 3, 22)
    assert "Day 2 of 7 due 2025-03-04 07:00 Asia/Tokyo (2025-03-03 22:00 UTC)" in changes[1].after


def test_a_zone_change_after_the_new_morning_has_passed_sends_at_once_not_twice_a_day(
    rt: Runtime, lena: int
) -> None:
    now = utc(2025, 3, 3, 23, 30)  # Tuesday 08:30 in Tokyo
    set_zone(rt, "lena@example.org", "Asia/Tokyo", now)
    assert load(rt, lena).next_send_at == now
    assert len(tick(rt, now)) == 1  # Day 2 on Tuesday in Tokyo; Day 1 was Monday there
    # Day 3 waits for Wednesday 07:00 Tokyo.
    assert load(rt, lena).next_send_at == utc(2025, 3, 4, 22)


@pytest.mark.parametrize(
    ("zone", "message"),
    [
        ("EST", "did you mean America/New_York?"),
        ("Asia/Tokyo ", "in Asia/Tokyo already"),
    ],
)
def test_a_bad_or_same_zone_changes_nothing(
    rt: Runtime, lena: int, zone: str, message: str
) -> None:
    if "already" in message:
        set_zone(rt, "lena@example.org", "Asia/Tokyo", utc(2025, 3, 3, 18))
    before = load(rt, lena).next_send_at
    with pytest.raises(DripcourseError, match=message):
        set_zone(rt, "lena@example.org", zone, utc(2025, 3, 3, 19))
    assert load(rt, lena).next_send_at == before


def test_set_day_skips_forward_and_keeps_the_next_morning(rt: Runtime, lena: int) -> None:
    done = change(
        rt, lena, lambda s, e, c, now: people.set_day(s, e, c, 5, now), utc(2025, 3, 3, 9)
    )
    assert str(done).startswith("next lesson: active, Day 2 of 7 due")
    assert "Day 5 of 7 due 2025-03-04 07:00 Europe/London" in done.after
    assert len(tick(rt, TUESDAY_07_LONDON)) == 1
    with transaction(rt.sessions) as session:
        days = session.scalars(select(Delivery.day).order_by(Delivery.day)).all()
    assert days == [1, 5]


@pytest.mark.parametrize(
    ("day", "message"),
    [(1, "has had Day 1 already"), (0, "days 1-7"), (8, "days 1-7")],
)
def test_set_day_refuses_a_day_already_sent_or_outside_the_course(
    rt: Runtime, lena: int, day: int, message: str
) -> None:
    with pytest.raises(DripcourseError, match=message):
        change(rt, lena, lambda s, e, c, now: people.set_day(s, e, c, day, now), utc(2025, 3, 3, 9))
    assert load(rt, lena).day == 1


def test_pause_for_days_holds_the_next_lesson_and_resume_brings_it_back(
    rt: Runtime, lena: int
) -> None:
    now = utc(2025, 3, 3, 9)
    paused = change(rt, lena, lambda s, e, c, n: people.pause(s, e, c, n, days=3), now)
    assert "paused until" in paused.after and "paused" not in paused.before
    # Back on the morning three days later: Thursday 07:00, not Friday (the pause ends at the
    # start of Thursday, local, whatever the hour it began at).
    assert load(rt, lena).next_send_at == utc(2025, 3, 6, 7)
    assert tick(rt, TUESDAY_07_LONDON) == []
    resumed = change(rt, lena, people.resume, utc(2025, 3, 4, 9))
    assert "paused" not in resumed.after
    assert load(rt, lena).next_send_at == utc(2025, 3, 4, 9)  # Tuesday's 07:00 passed: now


def test_pause_until_a_date_resumes_that_local_morning(rt: Runtime, lena: int) -> None:
    until = dt.date(2025, 3, 10)
    change(rt, lena, lambda s, e, c, n: people.pause(s, e, c, n, until=until), utc(2025, 3, 3, 9))
    assert load(rt, lena).next_send_at == utc(2025, 3, 10, 7)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "either --days N or --until"),
        ({"days": 0}, "at least 1"),
        ({"until": dt.date(2025, 3, 1)}, "not in the future"),
    ],
)
def test_a_bad_pause_is_refused(rt: Runtime, lena: int, kwargs: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(DripcourseError, match=message):
        change(rt, lena, lambda s, e, c, n: people.pause(s, e, c, n, **kwargs), utc(2025, 3, 3, 9))


def test_unenroll_ends_one_cohort_cancels_what_is_pending_and_keeps_the_address_usable(
    rt: Runtime, lena: int
) -> None:
    done = change(rt, lena, people.unenroll, utc(2025, 3, 3, 9))
    assert done.after == "removed after Day 1 of 7"
    assert load(rt, lena).next_send_at is None
    assert tick(rt, TUESDAY_07_LONDON) == []
    with transaction(rt.sessions) as session:
        assert session.scalar(select(Suppression)) is None
    enroll(rt, "lena@example.org", timezone="Europe/London", cohort="autumn")


def test_moving_to_a_later_cohort_of_the_same_course_waits_for_its_start(rt: Runtime) -> None:
    moved_id = enroll(rt, "sam@example.org", timezone="Europe/London")
    enroll(rt, "other@example.org", timezone="UTC", cohort="later", start=dt.date(2025, 3, 17))
    with transaction(rt.sessions) as session:
        target = session.scalar(
            select(Enrollment).join(Enrollment.cohort).where(Enrollment.id != moved_id)
        ).cohort
        found = session.get(Enrollment, moved_id)
        assert found is not None
        done = people.move(session, found, target, rt.catalog.course, utc(2025, 3, 1))
    assert done.before.startswith("spring: ") and done.after.startswith("later: ")
    assert load(rt, moved_id).next_send_at == utc(2025, 3, 17, 7)
    assert tick(rt, MONDAY_07_LONDON) == []


def test_moving_someone_mid_course_keeps_their_day_and_lessons(rt: Runtime, lena: int) -> None:
    enroll(rt, "other@example.org", timezone="UTC", cohort="later", start=dt.date(2025, 3, 17))
    with transaction(rt.sessions) as session:
        found = session.get(Enrollment, lena)
        assert found is not None
        later = people.pick_enrollment(people.find_person(session, "other@example.org"), None)
        people.move(session, found, later.cohort, rt.catalog.course, utc(2025, 3, 3, 9))
    moved = load(rt, lena)
    assert moved.day == 1 and moved.next_send_at == TUESDAY_07_LONDON


# -- the commands ---------------------------------------------------------------------------


@pytest.fixture
def run(settings: Settings):  # type: ignore[no-untyped-def]
    env = settings_env(settings)

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)

    return invoke


@pytest.fixture
def ana(run) -> None:  # type: ignore[no-untyped-def]
    """Ana in cohort 'spring' (Day 1 now), having had Day 1, and 'fall' (starts in a month)."""
    assert (
        run("cohort", "create", "spring", "--course", "white-coat", "--start", "now").exit_code == 0
    )
    start = (dt.date.today() + dt.timedelta(days=30)).isoformat()
    assert (
        run("cohort", "create", "fall", "--course", "white-coat", "--start", start).exit_code == 0
    )
    enrolled = run("enroll", "ana@example.org", "--cohort", "spring", "--timezone", "Europe/Oslo")
    assert enrolled.exit_code == 0, enrolled.output
    assert "1 sent" in run("tick", "--inline").output


def test_show_names_the_person_their_enrollments_and_deliveries(run, ana) -> None:  # type: ignore[no-untyped-def]
    shown = run("show", "ANA@example.org")
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0] == "ana@example.org  (no name)  Europe/Oslo"
    assert "cohort spring (white-coat): active, Day 2 of 7 due" in shown.output
    assert "Europe/Oslo (" in shown.output and "UTC)" in shown.output
    assert "  reflections written: 0" in shown.output
    assert "  day   1  sent" in shown.output and "attempts 1" in shown.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["pause", "ana@example.org", "--days", "3"], "ana@example.org (spring): pause: active, "),
        (["unenroll", "ana@example.org"], "-> removed after Day 1 of 7"),
        (["set-day", "ana@example.org", "--day", "4"], "-> active, Day 4 of 7 due"),
        (["set-timezone", "ana@example.org", "Asia/Tokyo"], "timezone: Europe/Oslo -> Asia/Tokyo"),
        (["move", "ana@example.org", "--to-cohort", "fall"], "cohort: spring: active"),
    ],
)
def test_each_change_prints_before_and_after(run, ana, args: list[str], expected: str) -> None:  # type: ignore[no-untyped-def]
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert expected in result.output and " -> " in result.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["show", "nobody@example.org"], "no subscriber 'nobody@example.org'"),
        (["resume", "ana@example.org"], "ana@example.org is not paused"),
        (["pause", "ana@example.org"], "give either --days N or --until YYYY-MM-DD"),
        (["pause", "ana@example.org", "--cohort", "fall", "--days", "2"], "not in cohort 'fall'"),
        (["move", "ana@example.org", "--to-cohort", "spring"], "in cohort 'spring' already"),
        (["move", "ana@example.org", "--to-cohort", "nope"], "no cohort named 'nope'"),
        (["set-timezone", "ana@example.org", "IST"], "'IST' is ambiguous"),
        (["set-day", "ana@example.org", "--day", "1"], "has had Day 1 already"),
    ],
)
def test_mistakes_about_a_person_are_one_line(run, ana, args: list[str], expected: str) -> None:  # type: ignore[no-untyped-def]
    result = run(*args)
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and expected in result.output
    assert "Traceback" not in result.output


def test_someone_in_two_cohorts_must_say_which(run, ana) -> None:  # type: ignore[no-untyped-def]
    assert run("enroll", "ana@example.org", "--cohort", "fall").exit_code == 0
    result = run("pause", "ana@example.org", "--days", "2")
    assert "is in several cohorts (fall, spring): name one with --cohort" in result.output
    assert run("pause", "ana@example.org", "--days", "2", "--cohort", "fall").exit_code == 0


def test_unenrolled_deliveries_are_cancelled(rt: Runtime, lena: int) -> None:
    with transaction(rt.sessions) as session:
        session.add(
            Delivery(
                enrollment_id=lena,
                day=2,
                status=DeliveryStatus.PENDING,
                created_at=utc(2025, 3, 4, 7),
                updated_at=utc(2025, 3, 4, 7),
            )
        )
        found = session.get(Enrollment, lena)
        assert found is not None
        found.next_send_at = utc(2025, 3, 5, 7)
    change(rt, lena, people.unenroll, utc(2025, 3, 4, 8))
    with transaction(rt.sessions) as session:
        statuses = session.scalars(select(Delivery.status).order_by(Delivery.day)).all()
        status = session.scalar(select(Enrollment.status))
    assert statuses == [DeliveryStatus.SENT, DeliveryStatus.CANCELLED]
    assert status == EnrollmentStatus.REMOVED


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("pause", "ana@example.org", "--until", "9999-12-31"), "a pause of at most 365 days"),
        (("due", "--at", "9999-12-31T23:59"), "out of range"),
        (("preview", "white-coat", "1", "--out", "/nonexistent/dir/x.html"), "No such file"),
    ],
)
def test_out_of_range_values_and_unwritable_files_are_one_line(
    run, ana, args: tuple[str, ...], message: str
) -> None:  # type: ignore[no-untyped-def]
    if args[0] == "pause":
        args = (*args, "--cohort", "spring")
    result = run(*args)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ") and message in result.output
    assert "Traceback" not in result.output


def test_unenrolling_before_the_first_lesson_says_before_day_1(rt: Runtime) -> None:
    early = enroll(rt, "early@example.org", timezone="Europe/London")
    done = change(rt, early, people.unenroll, utc(2025, 2, 20, 9))
    assert done.after == "removed before Day 1 of 7"


def test_a_pause_shorter_than_the_current_one_is_refused_saying_so(rt: Runtime, lena: int) -> None:
    now = utc(2025, 3, 3, 9)
    change(rt, lena, lambda s, e, c, n: people.pause(s, e, c, n, days=10), now)
    before = load(rt, lena).paused_until
    with pytest.raises(
        DripcourseError, match=r"already paused until 2025-03-13 00:00 .*nothing changed"
    ):
        change(
            rt, lena, lambda s, e, c, n: people.pause(s, e, c, n, until=dt.date(2025, 3, 6)), now
        )
    assert load(rt, lena).paused_until == before
