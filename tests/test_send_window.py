"""A lesson goes out only inside [send_time, latest_send_time] of a local sending day.

Whatever made it late: downtime, a queue that drained into the evening, a retry, a cohort that
started "today" where today is already ending. Checked when a lesson is claimed and again when
a worker picks it up, and a delivery picked up outside the window is put back, not sent.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from dripcourse import schedule
from dripcourse.db import transaction
from dripcourse.models import Delivery, DeliveryStatus, Enrollment
from dripcourse.people import enrollment
from dripcourse.people.signup import check_signup
from dripcourse.runtime import Runtime
from dripcourse.sending import batch as sending
from dripcourse.sending import claim as delivery
from dripcourse.sending.take import Outcome
from tests.conftest import EMAILS, make_settings, utc
from tests.smtp_sink import SMTPSink


def emails_with(tmp_path: Path, **settings: str) -> Path:
    """A copy of the sample course with some course.toml lines changed."""
    emails = tmp_path / "emails"
    shutil.copytree(EMAILS, emails)
    meta = emails / "white-coat" / "course.toml"
    text = meta.read_text()
    for key, value in settings.items():
        lines = [line for line in text.splitlines() if not line.startswith(f"{key} =")]
        text = "\n".join(lines) + f"\n{key} = {value}\n"
    meta.write_text(text)
    return emails


@pytest.fixture
def world(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    rt = Runtime(make_settings(tmp_path, database_url=database_url))
    yield rt
    rt.close()


def enroll(rt: Runtime, start: str, now: dt.datetime, people: dict[str, str]) -> None:
    course = rt.catalog.course("white-coat")
    with transaction(rt.sessions) as session:
        cohort = enrollment.create_cohort(session, "c", course, start, now)
        for address, zone in people.items():
            signup = check_signup(address, "", zone)
            enrollment.enroll(session, cohort, course, signup, now)


def claim(rt: Runtime, now: dt.datetime) -> list[int]:
    ids: list[int] = []
    delivery.tick(rt, now, ids.extend)
    return ids


def sent(rt: Runtime) -> list[tuple[int, dt.datetime]]:
    with transaction(rt.sessions) as session:
        return [
            (row.day, row.sent_at)
            for row in session.execute(
                select(Delivery.day, Delivery.sent_at)
                .where(Delivery.status == DeliveryStatus.SENT)
                .order_by(Delivery.sent_at)
            )
        ]


def next_send_at(rt: Runtime) -> dt.datetime | None:
    with transaction(rt.sessions) as session:
        return session.scalars(select(Enrollment.next_send_at)).one()


AUCKLAND = "Pacific/Auckland"


def test_auckland_is_not_woken_at_01_35_after_downtime(world: Runtime) -> None:
    # Day 1 on Monday 2 November 2026 at 07:00 NZDT (18:00 UTC on the 1st).
    enroll(world, "2026-11-02", utc(2026, 10, 30), {"kia@example.org": AUCKLAND})
    for i in claim(world, utc(2026, 11, 1, 18)):
        assert sending.send_delivery(world, i, utc(2026, 11, 1, 18)) == Outcome.SENT
    # The scheduler was down all of Tuesday's morning; it is back at 01:35 on Wednesday there.
    back = utc(2026, 11, 3, 12, 35)
    assert back.astimezone(schedule.zone(AUCKLAND)).time() == dt.time(1, 35)
    assert claim(world, back) == []
    # Day 2 now waits for Wednesday 07:00 local, and goes out then, once.
    wednesday_7am = utc(2026, 11, 3, 18)
    assert next_send_at(world) == wednesday_7am
    assert claim(world, wednesday_7am - dt.timedelta(minutes=1)) == []
    ids = claim(world, wednesday_7am)
    assert [sending.send_delivery(world, i, wednesday_7am) for i in ids] == [Outcome.SENT]
    assert [day for day, _ in sent(world)] == [1, 2]


@pytest.mark.parametrize(
    ("zone", "late_local"),
    [
        ("Asia/Kathmandu", dt.datetime(2026, 11, 2, 21, 5)),  # +05:45
        ("Pacific/Tongatapu", dt.datetime(2026, 11, 2, 23, 50)),  # +13:00
        ("America/Los_Angeles", dt.datetime(2026, 11, 2, 21, 1)),  # -08:00
    ],
)
def test_a_delivery_picked_up_after_the_window_closed_is_put_back_not_sent(
    world: Runtime, zone: str, late_local: dt.datetime
) -> None:
    tz = schedule.zone(zone)
    enroll(world, "2026-11-02", utc(2026, 10, 30), {"late@example.org": zone})
    day1 = schedule.at_local_time(dt.date(2026, 11, 2), dt.time(7), tz)
    (delivery_id,) = claim(world, day1)
    # The queue was long: a worker reaches this task only after 21:00 local.
    late = late_local.replace(tzinfo=tz).astimezone(dt.UTC)
    assert sending.send_delivery(world, delivery_id, late) == Outcome.HELD
    tomorrow_7am = schedule.at_local_time(dt.date(2026, 11, 3), dt.time(7), tz)
    with transaction(world.sessions) as session:
        held = session.get(Delivery, delivery_id)
        assert (held.status, held.attempts, held.next_attempt_at) == (
            DeliveryStatus.WAITING,
            0,
            tomorrow_7am,
        )
    # Another copy of the task (a redelivered message) does not send it either.
    assert sending.send_delivery(world, delivery_id, late) == Outcome.SKIPPED
    assert claim(world, tomorrow_7am - dt.timedelta(minutes=1)) == []
    again = claim(world, tomorrow_7am)
    assert again == [delivery_id]
    assert sending.send_delivery(world, delivery_id, tomorrow_7am) == Outcome.SENT
    assert sent(world) == [(1, tomorrow_7am)]


def test_a_weekday_course_after_downtime_from_thursday_waits_for_monday(
    tmp_path: Path, sqlite_url: str
) -> None:
    emails = emails_with(tmp_path, skip_weekends="true")
    rt = Runtime(make_settings(tmp_path, database_url=sqlite_url, emails_dir=str(emails)))
    london = {"wk@example.org": "Europe/London"}
    enroll(rt, "2026-11-19", utc(2026, 11, 18), london)  # Thursday
    for i in claim(rt, utc(2026, 11, 19, 7)):
        sending.send_delivery(rt, i, utc(2026, 11, 19, 7))
    # Down from Thursday until Saturday 10:00: Day 2 (due Friday) must not go out on Saturday.
    saturday = utc(2026, 11, 21, 10)
    assert claim(rt, saturday) == []
    monday_7am = utc(2026, 11, 23, 7)
    assert next_send_at(rt) == monday_7am
    assert [sending.send_delivery(rt, i, monday_7am) for i in claim(rt, monday_7am)] == [
        Outcome.SENT
    ]
    assert [day for day, _ in sent(rt)] == [1, 2]
    rt.close()


def test_a_weekday_lesson_claimed_on_friday_evening_is_not_sent_on_saturday(
    tmp_path: Path, sqlite_url: str
) -> None:
    emails = emails_with(tmp_path, skip_weekends="true")
    rt = Runtime(make_settings(tmp_path, database_url=sqlite_url, emails_dir=str(emails)))
    enroll(rt, "2026-11-20", utc(2026, 11, 18), {"wk@example.org": "Europe/London"})
    (delivery_id,) = claim(rt, utc(2026, 11, 20, 20, 59))  # Friday, still in the window
    assert sending.send_delivery(rt, delivery_id, utc(2026, 11, 21, 8)) == Outcome.HELD
    with transaction(rt.sessions) as session:
        assert session.get(Delivery, delivery_id).next_attempt_at == utc(2026, 11, 23, 7)
    rt.close()


def test_a_cohort_started_today_means_each_subscribers_own_today(world: Runtime) -> None:
    # 02:00 UTC on Monday 30 November is still Sunday 18:00 in Los Angeles: Day 1 today there,
    # at once (the window is open until 21:00); in London (02:00 Monday) at 07:00 Monday.
    created = utc(2026, 11, 30, 2)
    people = {"la@example.org": "America/Los_Angeles", "ldn@example.org": "Europe/London"}
    enroll(world, "today", created, people)
    with transaction(world.sessions) as session:
        due = dict(
            session.execute(
                select(Enrollment.id, Enrollment.next_send_at).order_by(Enrollment.id)
            ).all()
        )
    assert list(due.values()) == [created, utc(2026, 11, 30, 7)]


def test_a_late_evening_start_waits_for_the_next_morning_and_now_does_not(
    world: Runtime,
) -> None:
    # 22:30 in London: "today" starts tomorrow at 07:00; "now" means now, as the operator asked.
    evening = utc(2026, 11, 30, 22, 30)
    enroll(world, "today", evening, {"a@example.org": "Europe/London"})
    assert next_send_at(world) == utc(2026, 12, 1, 7)
    course = world.catalog.course("white-coat")
    with transaction(world.sessions) as session:
        cohort = enrollment.create_cohort(session, "at-once", course, "now", evening)
        enrollment.enroll(
            session,
            cohort,
            course,
            check_signup("b@example.org", "", "Europe/London"),
            evening,
        )
    ids = claim(world, evening)
    assert [sending.send_delivery(world, i, evening) for i in ids] == [Outcome.SENT]


def test_a_course_may_set_its_own_latest_send_time(tmp_path: Path, sqlite_url: str) -> None:
    emails = emails_with(tmp_path, latest_send_time='"12:00"')
    rt = Runtime(make_settings(tmp_path, database_url=sqlite_url, emails_dir=str(emails)))
    enroll(rt, "2026-11-02", utc(2026, 10, 30), {"noon@example.org": "UTC"})
    assert claim(rt, utc(2026, 11, 2, 12, 1)) == []
    assert next_send_at(rt) == utc(2026, 11, 3, 7)
    rt.close()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('latest_send_time = "06:00"', "must be later than send_time"),
        ('latest_send_time = "9pm"', 'latest_send_time must be local "HH:MM"'),
    ],
)
def test_a_bad_latest_send_time_is_refused_naming_the_file(
    tmp_path: Path, line: str, message: str
) -> None:
    from dripcourse.courses.course_folder import load_course
    from dripcourse.errors import CourseError

    key, value = line.split(" = ")
    emails = emails_with(tmp_path, **{key: value})
    with pytest.raises(CourseError, match=message) as info:
        load_course(emails, "white-coat")
    assert "course.toml" in str(info.value)


def test_a_second_task_for_a_delivery_waiting_for_its_retry_does_not_send_it_early(
    tmp_path: Path, sqlite_url: str, smtp_sink: SMTPSink
) -> None:
    rt = Runtime(make_settings(tmp_path, database_url=sqlite_url, mail_url=smtp_sink.url))
    now = utc(2026, 11, 25, 12)
    enroll(rt, "now", now, {"ana@example.org": "Europe/Madrid"})
    smtp_sink.handler.busy_for = 1
    smtp_sink.handler.busy_reply = "451 4.3.0 Try again later"
    (delivery_id,) = claim(rt, now)
    assert sending.send_delivery(rt, delivery_id, now) == Outcome.RETRY
    # The broker hands the same task out again a second later: it must wait for its backoff.
    soon = now + dt.timedelta(seconds=1)
    assert sending.send_delivery(rt, delivery_id, soon) == Outcome.SKIPPED
    assert smtp_sink.handler.recipients() == []
    later = now + dt.timedelta(minutes=5)
    assert claim(rt, later) == [delivery_id]
    assert sending.send_delivery(rt, delivery_id, later) == Outcome.SENT
    assert smtp_sink.handler.counts() == {"ana@example.org": 1}
    rt.close()


def test_a_lesson_broken_between_claim_and_send_is_held_back_and_sent_once_fixed(
    tmp_path: Path, sqlite_url: str
) -> None:
    emails = emails_with(tmp_path)
    settings = make_settings(tmp_path, database_url=sqlite_url, emails_dir=str(emails))
    scheduler, worker = Runtime(settings), Runtime(settings)
    now = utc(2026, 11, 25, 12)
    enroll(scheduler, "now", now, {"ana@example.org": "Europe/Madrid"})
    (delivery_id,) = claim(scheduler, now)
    lesson = emails / "white-coat" / "day-01.md"
    good = lesson.read_text()
    lesson.write_text(good.replace("{{ greeting }}", "{{ greting }}"))
    # A worker that loads the course now finds it broken: the lesson waits, nobody fails.
    assert sending.send_delivery(worker, delivery_id, now) == Outcome.HELD
    with transaction(worker.sessions) as session:
        held = session.get(Delivery, delivery_id)
        assert (held.status, held.attempts) == (DeliveryStatus.WAITING, 0)
        assert held.enrollment.status == "active"
    lesson.write_text(good)
    fixed = Runtime(settings)  # a restarted worker reads the fixed course
    later = now + dt.timedelta(minutes=20)
    assert claim(fixed, later) == [delivery_id]
    assert sending.send_delivery(fixed, delivery_id, later) == Outcome.SENT
    for rt in (scheduler, worker, fixed):
        rt.close()


def test_a_course_whose_template_raises_type_error_does_not_stop_another_course(
    tmp_path: Path, sqlite_url: str
) -> None:
    emails = emails_with(tmp_path)
    shutil.copytree(emails / "white-coat", emails / "broken")
    broken = emails / "broken" / "day-01.md"
    broken.write_text(broken.read_text().replace("{{ greeting }}", '{{ "Dr " + day }}'))
    (emails / "latin1").mkdir()
    (emails / "latin1" / "course.toml").write_bytes('title = "Caf\xe9"\n'.encode("latin-1"))
    rt = Runtime(make_settings(tmp_path, database_url=sqlite_url, emails_dir=str(emails)))
    now = utc(2026, 11, 25, 12)
    with transaction(rt.sessions) as session:
        for slug in ("broken", "latin1", "white-coat"):
            # The cohort rows are written directly: a broken course cannot be loaded to enroll.
            from dripcourse.models import Cohort, Subscriber

            cohort = Cohort(name=slug, course_slug=slug, started_at=now, created_at=now)
            person = Subscriber(
                email=f"{slug}@example.org", name="", timezone="UTC", created_at=now
            )
            session.add_all([cohort, person])
            session.flush()
            session.add(
                Enrollment(
                    subscriber_id=person.id,
                    cohort_id=cohort.id,
                    next_send_at=now,
                    created_at=now,
                    updated_at=now,
                )
            )
    ids = claim(rt, now)
    assert len(ids) == 1
    assert [sending.send_delivery(rt, i, now) for i in ids] == [Outcome.SENT]
    rt.close()
