"""A whole course, tick by tick, for subscribers around the world, across DST changes.

The scheduler runs with an explicit ``now``: days of schedule pass in milliseconds.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from dripcourse import schedule
from dripcourse.db import transaction
from dripcourse.models import Delivery, DeliveryStatus, Enrollment, EnrollmentStatus, Subscriber
from dripcourse.people import enrollment
from dripcourse.people.signup import check_signup
from dripcourse.runtime import Runtime
from dripcourse.sending import batch as sending
from dripcourse.sending import claim as delivery
from tests.conftest import EMAILS, make_settings, utc

ZONES = {
    "ny@example.org": "America/New_York",
    "london@example.org": "Europe/London",
    "kolkata@example.org": "Asia/Kolkata",
    "adelaide@example.org": "Australia/Adelaide",
    "auckland@example.org": "Pacific/Auckland",
    "kathmandu@example.org": "Asia/Kathmandu",  # +05:45
    "tonga@example.org": "Pacific/Tongatapu",  # +13:00
}
TICK = dt.timedelta(minutes=15)  # every zone here has its 07:00 on a quarter hour
SEND_TIME = dt.time(7, 0)


@pytest.fixture
def world(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    rt = Runtime(make_settings(tmp_path, database_url=database_url))
    yield rt
    rt.close()


def enroll_everyone(
    rt: Runtime, start: str, now: dt.datetime, course_slug: str = "white-coat"
) -> None:
    course = rt.catalog.course(course_slug)
    with transaction(rt.sessions) as session:
        cohort = enrollment.create_cohort(session, "world", course, start, now)
        for address, zone in ZONES.items():
            signup = check_signup(address, address.split("@")[0].title(), zone)
            enrollment.enroll(session, cohort, course, signup, now)


def tick_inline(rt: Runtime, now: dt.datetime) -> int:
    """One beat tick at ``now``, its deliveries sent in this process; returns how many were sent."""
    sent = 0

    def send(ids: list[int]) -> None:
        nonlocal sent
        for delivery_id in ids:
            if sending.send_delivery(rt, delivery_id, now) == sending.Outcome.SENT:
                sent += 1

    delivery.tick(rt, now, send)
    return sent


def run_clock(rt: Runtime, start: dt.datetime, end: dt.datetime, *, replay: bool = True) -> None:
    now = start
    while now <= end:
        tick_inline(rt, now)
        if replay:
            # The same tick again (a restarted beat, a second beat): nothing more goes out.
            assert tick_inline(rt, now) == 0, f"replayed tick at {now} sent again"
        now += TICK


def sent_log(rt: Runtime) -> dict[str, list[tuple[int, dt.datetime]]]:
    with transaction(rt.sessions) as session:
        rows = session.execute(
            select(Subscriber.email, Delivery.day, Delivery.sent_at)
            .join(Enrollment, Delivery.enrollment_id == Enrollment.id)
            .join(Subscriber, Enrollment.subscriber_id == Subscriber.id)
            .where(Delivery.status == DeliveryStatus.SENT)
            .order_by(Delivery.sent_at, Delivery.day)
        ).all()
    log: dict[str, list[tuple[int, dt.datetime]]] = {address: [] for address in ZONES}
    for address, day, sent_at in rows:
        log[address].append((day, sent_at))
    return log


def outbox_days(rt: Runtime) -> dict[str, list[int]]:
    """What actually reached the outbox, read back from the .eml files."""
    folder = Path(rt.settings.mail_url.removeprefix("file://"))
    days: dict[str, list[int]] = {address: [] for address in ZONES}
    for path in folder.glob("*.eml"):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        to = msg["To"].addresses[0].addr_spec
        days[to].append(int(str(msg["Subject"]).split(":")[0].removeprefix("Day ")))
    return {address: sorted(found) for address, found in days.items()}


@pytest.mark.parametrize(
    "start",
    [
        pytest.param("2026-10-22", id="europe-falls-back-25-oct"),
        pytest.param("2026-10-29", id="us-falls-back-1-nov"),
        pytest.param("2026-04-02", id="adelaide-auckland-fall-back-5-apr"),
        pytest.param("2026-03-05", id="us-springs-forward-8-mar"),
        pytest.param("2026-09-24", id="auckland-springs-forward-27-sep"),
    ],
)
def test_whole_course_goes_out_once_in_order_at_local_7am_one_per_day(
    world: Runtime, start: str
) -> None:
    start_date = dt.date.fromisoformat(start)
    clock_start = utc(start_date.year, start_date.month, start_date.day) - dt.timedelta(days=1)
    enroll_everyone(world, start, clock_start - dt.timedelta(days=3))

    run_clock(world, clock_start, clock_start + dt.timedelta(days=10))

    log = sent_log(world)
    for address, zone_name in ZONES.items():
        tz = schedule.zone(zone_name)
        days = [day for day, _ in log[address]]
        assert days == [1, 2, 3, 4, 5, 6, 7], address
        local = [sent_at.astimezone(tz) for _, sent_at in log[address]]
        assert all(t.time() == SEND_TIME for t in local), (address, local)
        dates = [t.date() for t in local]
        assert dates == [start_date + dt.timedelta(days=n) for n in range(7)], (address, dates)
    assert outbox_days(world) == {address: [1, 2, 3, 4, 5, 6, 7] for address in ZONES}
    with transaction(world.sessions) as session:
        states = session.execute(
            select(Enrollment.status, Enrollment.day, Enrollment.next_send_at)
        ).all()
    assert states == [(EnrollmentStatus.COMPLETED, 7, None)] * len(ZONES)


@pytest.mark.parametrize(
    "back",
    [utc(2026, 11, 6, 0), utc(2026, 11, 6, 12, 30)],
    ids=["back-at-00:00-utc", "back-at-12:30-utc"],
)
def test_after_two_days_down_each_gets_the_next_lesson_at_their_first_local_morning(
    world: Runtime, back: dt.datetime
) -> None:
    start = utc(2026, 11, 1)
    enroll_everyone(world, "2026-11-02", start)
    run_clock(world, start, utc(2026, 11, 3, 13))  # days 1 and 2 everywhere, day 3 nowhere yet
    assert {address: [d for d, _ in sent] for address, sent in sent_log(world).items()} == {
        address: [1, 2] for address in ZONES
    }

    # The scheduler is down for two whole days. The first tick back sends Day 3 only to those
    # whose local window is open; the others get it when their morning comes, not in the night.
    window = rt_cadence(world)
    awake = {a for a, z in ZONES.items() if schedule.in_window(window, schedule.zone(z), back)}
    assert tick_inline(world, back) == len(awake)
    assert tick_inline(world, back) == 0
    run_clock(world, back + TICK, back + dt.timedelta(days=3), replay=False)

    for address, zone_name in ZONES.items():
        tz = schedule.zone(zone_name)
        sent = sent_log(world)[address]
        assert [d for d, _ in sent][:4] == [1, 2, 3, 4]
        day3, day4 = sent[2][1], sent[3][1]
        # Day 3 at the first moment inside the window (to the tick), never a burst.
        first_allowed = schedule.window_start(window, tz, back)
        assert first_allowed <= day3 < first_allowed + TICK
        assert all(schedule.in_window(window, tz, t) for _, t in sent), sent
        # Day 4 waits for the next local morning after Day 3, whatever Day 3's local date was.
        assert day4.astimezone(tz).date() == day3.astimezone(tz).date() + dt.timedelta(days=1)
        assert day4.astimezone(tz).time() == SEND_TIME
        local_dates = [t.astimezone(tz).date() for _, t in sent]
        assert len(local_dates) == len(set(local_dates)), "two lessons on one local day"


def rt_cadence(rt: Runtime) -> schedule.Cadence:
    return rt.catalog.course("white-coat").cadence


def test_cohort_started_now_sends_day_one_at_once_then_local_mornings(world: Runtime) -> None:
    now = utc(2026, 11, 25, 15, 7)
    enroll_everyone(world, "now", now)
    assert tick_inline(world, now) == len(ZONES)
    run_clock(world, now + TICK, now + dt.timedelta(days=2), replay=False)
    for address, zone_name in ZONES.items():
        tz = schedule.zone(zone_name)
        sent = sent_log(world)[address]
        assert sent[0] == (1, now)
        day2 = sent[1][1].astimezone(tz)
        # Ticks fall at :07, :22, :37, :52: Day 2 goes at the first tick at or after 07:00 local.
        assert dt.time(7, 0) <= day2.time() < dt.time(7, 15), (address, day2)
        assert day2.date() == now.astimezone(tz).date() + dt.timedelta(days=1)


@pytest.fixture
def weekday_course(tmp_path: Path) -> Path:
    emails = tmp_path / "emails"
    shutil.copytree(EMAILS, emails)
    meta = emails / "white-coat" / "course.toml"
    meta.write_text(meta.read_text().replace("skip_weekends = false", "skip_weekends = true"))
    return emails


def test_weekday_course_skips_each_subscribers_local_weekend(
    tmp_path: Path, sqlite_url: str, weekday_course: Path
) -> None:
    rt = Runtime(make_settings(tmp_path, database_url=sqlite_url, emails_dir=str(weekday_course)))
    start = utc(2026, 11, 18)
    enroll_everyone(rt, "2026-11-19", start)  # a Thursday
    run_clock(rt, start, utc(2026, 12, 2), replay=False)
    for address, zone_name in ZONES.items():
        tz = schedule.zone(zone_name)
        sent = sent_log(rt)[address]
        assert [d for d, _ in sent] == [1, 2, 3, 4, 5, 6, 7]
        dates = [t.astimezone(tz).date() for _, t in sent]
        assert all(d.weekday() < 5 for d in dates), (address, dates)
        # Thu, Fri, then Mon-Fri: the weekend is a gap, not a loss.
        assert dates == [dt.date(2026, 11, d) for d in (19, 20, 23, 24, 25, 26, 27)], address
    rt.close()
