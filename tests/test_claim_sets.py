"""The claim as sets: every rule decided as it is for one person, whatever shares the batch;
the batch's statement reading only what it claims on PostgreSQL; each batch queued as soon as
it has committed, so workers start on a morning before its claim has finished."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from dripcourse import schedule
from dripcourse.db import transaction
from dripcourse.models import Cohort, Delivery, Enrollment, EnrollmentStatus, Subscriber
from dripcourse.people import enrollment
from dripcourse.people.signup import check_signup
from dripcourse.runtime import Runtime
from dripcourse.sending import claim as delivery
from dripcourse.sending import take
from tests.conftest import EMAILS, make_settings, utc
from tests.test_production_claims import SHAPES, START, explain, fill, rows_read

ZONES = [
    "UTC",
    "America/New_York",
    "Europe/London",
    "Asia/Kathmandu",  # +05:45
    "Pacific/Auckland",
    "Pacific/Tongatapu",  # +13:00
    "America/Los_Angeles",
    "Asia/Kolkata",
]
# (name, day reached, paused until, suppressed): each zone gets one of each, in each cohort.
VARIANTS = [
    ("plain", 0, None, False),
    ("day three", 2, None, False),
    ("paused", 1, dt.timedelta(days=2, hours=5), False),
    ("pause just over", 1, -dt.timedelta(minutes=5), False),
    ("finished", 10**4, None, False),  # set to the course's length below
    ("suppressed", 1, None, True),
]


@pytest.fixture
def two_courses(tmp_path: Path) -> Path:
    """The sample course, and the same course on weekdays only."""
    emails = tmp_path / "emails"
    shutil.copytree(EMAILS, emails)
    shutil.copytree(emails / "white-coat", emails / "weekdays")
    meta = emails / "weekdays" / "course.toml"
    text_ = meta.read_text()
    assert "skip_weekends = false" in text_
    meta.write_text(text_.replace("skip_weekends = false", "skip_weekends = true"))
    return emails


def populate(rt: Runtime, now: dt.datetime) -> None:
    """Four cohorts (daily from today, daily started "now", weekdays, a course that has gone
    missing), each with one person per zone and variant, all due at ``now``."""
    with transaction(rt.sessions) as session:
        daily, weekdays = rt.catalog.course("white-coat"), rt.catalog.course("weekdays")
        cohorts = [
            enrollment.create_cohort(session, "daily", daily, "today", now),
            enrollment.create_cohort(session, "now", daily, "now", now),
            enrollment.create_cohort(session, "wd", weekdays, "today", now),
        ]
        for cohort in cohorts:
            course = rt.catalog.course(cohort.course_slug)
            for zone in ZONES:
                for name, *_ in VARIANTS:
                    place = zone.replace("/", ".")
                    address = f"{cohort.name}.{name.replace(' ', '-')}.{place}@x.org"
                    signup = check_signup(address, "", zone)
                    enrollment.enroll(session, cohort, course, signup, now)
    naive = now.astimezone(dt.UTC).replace(tzinfo=None)
    with rt.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO cohorts (name, course_slug, created_at) VALUES ('gone', 'gone', :now)"
            ),
            {"now": naive},
        )
        conn.execute(
            text(
                "INSERT INTO subscribers (email, name, timezone, created_at) "
                "VALUES ('gone@x.org', '', 'UTC', :now)"
            ),
            {"now": naive},
        )
        conn.execute(
            text(
                "INSERT INTO enrollments (subscriber_id, cohort_id, status, day, created_at, "
                "updated_at) SELECT s.id, c.id, 'active', 0, :now, :now FROM subscribers s, "
                "cohorts c WHERE s.email = 'gone@x.org' AND c.name = 'gone'"
            ),
            {"now": naive},
        )
        length = rt.catalog.course("white-coat").length
        for name, day, paused, suppressed in VARIANTS:
            pattern = f"%.{name.replace(' ', '-')}.%"
            conn.execute(
                text(
                    "UPDATE enrollments SET day = :day, paused_until = :paused WHERE "
                    "subscriber_id IN (SELECT id FROM subscribers WHERE email LIKE :pattern)"
                ),
                {
                    "day": min(day, length),
                    "paused": None if paused is None else naive + paused,
                    "pattern": pattern,
                },
            )
            if suppressed:
                conn.execute(
                    text(
                        "INSERT INTO suppressions (email, reason, created_at) SELECT email, "
                        "'bounced', :now FROM subscribers WHERE email LIKE :pattern"
                    ),
                    {"now": naive, "pattern": pattern},
                )
        # Everyone due a minute ago (late by a minute, or by downtime: the rules are the same).
        conn.execute(
            text("UPDATE enrollments SET next_send_at = :due"),
            {"due": naive - dt.timedelta(minutes=1)},
        )


def one_by_one(rt: Runtime, session: Session, now: dt.datetime) -> dict[str, tuple[object, ...]]:
    """What the claim must do with each enrollment, decided alone for each person with the
    schedule's own functions, as the claim did row by row before it worked in sets."""
    later = now + take.seconds(rt.settings.requeue_after_seconds)
    rows = session.execute(
        select(Enrollment, Subscriber, Cohort)
        .join(Subscriber, Enrollment.subscriber_id == Subscriber.id)
        .join(Cohort, Enrollment.cohort_id == Cohort.id)
    ).all()
    suppressed = set(session.scalars(text("SELECT email FROM suppressions")))
    expected: dict[str, tuple[object, ...]] = {}
    for row, person, cohort in rows:
        course = take.course_or_none(rt, cohort.course_slug)
        tz = schedule.zone(person.timezone)
        if course is None:
            expected[person.email] = ("held back", later)
        elif person.email in suppressed:
            expected[person.email] = ("stopped", EnrollmentStatus.BOUNCED)
        elif row.paused_until is not None and row.paused_until > now:
            due = schedule.resume_due(course.cadence, tz, due=now, paused_until=row.paused_until)
            expected[person.email] = ("waits", due)
        elif row.day >= course.length:
            expected[person.email] = ("stopped", EnrollmentStatus.COMPLETED)
        elif take.sendable(course, tz, now, day=row.day + 1, started_at=cohort.started_at):
            expected[person.email] = ("lesson", row.day + 1)
        else:
            expected[person.email] = ("waits", schedule.window_start(course.cadence, tz, now))
    return expected


def outcome(rt: Runtime, session: Session, now: dt.datetime) -> dict[str, tuple[object, ...]]:
    later = now + take.seconds(rt.settings.requeue_after_seconds)
    found: dict[str, tuple[object, ...]] = {}
    rows = session.execute(
        select(Enrollment, Subscriber.email).join(
            Subscriber, Enrollment.subscriber_id == Subscriber.id
        )
    ).all()
    for row, email in rows:
        new = [d.day for d in row.deliveries]
        if new:
            assert row.next_send_at is None and row.status == EnrollmentStatus.ACTIVE
            assert len(new) == 1
            found[email] = ("lesson", new[0])
        elif row.status != EnrollmentStatus.ACTIVE:
            found[email] = ("stopped", row.status)
        elif row.next_send_at == later:
            found[email] = ("held back", later)
        else:
            found[email] = ("waits", row.next_send_at)
    return found


@pytest.mark.parametrize("batch_size", [7, 500])
@pytest.mark.parametrize(
    "now",
    [
        pytest.param(utc(2026, 3, 9, 12), id="monday-noon-utc-after-us-springs-forward"),
        pytest.param(utc(2026, 3, 7, 19), id="saturday-evening-utc"),
        pytest.param(utc(2026, 10, 25, 1, 30), id="europe-falls-back-at-01-00-utc"),
        pytest.param(utc(2026, 4, 5, 18, 15), id="sunday-night-nepal-monday-morning-tonga"),
    ],
)
def test_a_batch_decides_each_person_as_the_rules_decide_them_alone(
    tmp_path: Path, database_url: str, two_courses: Path, now: dt.datetime, batch_size: int
) -> None:
    rt = Runtime(
        make_settings(
            tmp_path, database_url=database_url, emails_dir=str(two_courses), batch_size=batch_size
        )
    )
    try:
        populate(rt, now - dt.timedelta(days=1))
        with transaction(rt.sessions) as session:
            expected = one_by_one(rt, session, now)
        queued: list[int] = []

        claimed = delivery.claim_due_lessons(rt, now, queued.extend)

        with transaction(rt.sessions) as session:
            found = outcome(rt, session, now)
            lessons = set(session.scalars(select(Delivery.id)))
        assert found == expected
        assert claimed == len(queued) == len(lessons)
        assert set(queued) == lessons
        # Every kind of answer is in the batch, or the comparison proves less than it says.
        kinds = {answer[0] for answer in expected.values()}
        assert kinds == {"lesson", "waits", "stopped", "held back"}
        # A second claim at the same instant finds nothing: one lesson a day.
        assert delivery.claim_due_lessons(rt, now, queued.extend) == 0
    finally:
        rt.close()


@pytest.mark.postgres
def test_the_claim_of_a_batch_reads_only_its_rows_and_their_people_by_key(
    postgres_url: str, tmp_path: Path
) -> None:
    """The claim is one statement on PostgreSQL: the pick, the compare-and-set and the read of
    what the rules need. Each part must find its rows by key during a morning rush, however
    large the tables: a scan of the subscribers or the suppression list per batch would make
    a morning of a million readers quadratic."""
    batch = 500
    rt = Runtime(make_settings(tmp_path, database_url=postgres_url, batch_size=batch))
    try:
        fill(rt, 20_000, START, *SHAPES["morning rush"])
        with rt.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO suppressions (email, reason, created_at) SELECT "
                    "'gone' || n || '@example.org', 'bounced', now() "
                    "FROM generate_series(1, 50000) n"
                )
            )
            conn.execute(text("ANALYZE"))
        with rt.engine.connect() as conn, conn.begin():
            statement = delivery.claim_statement(Session(bind=conn), START, batch)
            found = explain(conn, statement, {})
            conn.rollback()
        print(found)
        assert rows_read(found, "ix_enrollments_next_send_at") == batch
        assert rows_read(found, "Update on enrollments") == batch
        for table in ("enrollments", "subscribers", "suppressions"):
            assert f"Seq Scan on {table}" not in found, table
        assert "subscribers_pkey" in found
        assert "Sort" not in found
        assert "Rows Removed by Filter" not in found
    finally:
        rt.close()


class Watcher:
    """An enqueue that looks, from a connection of its own, at what is committed each time
    a batch is handed to it."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.seen: list[tuple[int, int, int]] = []  # (ids, committed deliveries, still due)

    def __call__(self, ids: Sequence[int]) -> None:
        with self.rt.engine.connect() as conn:
            committed = conn.execute(select(Delivery.id).where(Delivery.id.in_(list(ids)))).all()
            due = conn.scalar(
                text("SELECT count(*) FROM enrollments WHERE next_send_at IS NOT NULL")
            )
        self.seen.append((len(ids), len(committed), due))


def test_each_batch_is_queued_as_soon_as_it_commits_before_the_rest_is_claimed(
    tmp_path: Path, database_url: str
) -> None:
    rt = Runtime(make_settings(tmp_path, database_url=database_url, batch_size=10))
    try:
        course = rt.catalog.course("white-coat")
        with transaction(rt.sessions) as session:
            cohort = enrollment.create_cohort(session, "c", course, "now", START)
            for i in range(35):
                signup = check_signup(f"r{i}@x.org", "", "UTC")
                enrollment.enroll(session, cohort, course, signup, START)
        watcher = Watcher(rt)

        assert delivery.tick(rt, START, watcher).claimed == 35

        # The workers can take the first ten while 25 people are still waiting for the claim.
        assert watcher.seen == [(10, 10, 25), (10, 10, 15), (10, 10, 5), (5, 5, 0)]
    finally:
        rt.close()
