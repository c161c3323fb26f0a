"""Pause for a week and resume early: the course carries on with the next lesson, nothing skipped.

A subscriber in New York on the seven-day course, 07:00 local, cohort starting Monday
2025-03-03. US clocks change on Sunday 2025-03-09: 07:00 is 12:00 UTC before, 11:00 UTC after.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from itsdangerous import URLSafeTimedSerializer

from dripcourse import links
from dripcourse.db import transaction
from dripcourse.errors import InputError
from dripcourse.models import Enrollment
from dripcourse.people import enrollment, pausing
from dripcourse.runtime import Runtime
from dripcourse.sending import batch as sending
from dripcourse.sending import claim as delivery
from tests.conftest import make_settings, utc
from tests.test_web_support import Clock, enroll, load, make_app, path, post_form, tick

NEW_YORK = "America/New_York"
HOUR = dt.timedelta(hours=1)
DAY_1 = utc(2025, 3, 3, 12)  # Monday 07:00 EST
DAY_2 = utc(2025, 3, 4, 12)  # Tuesday 07:00 EST
DAY_2_NOON = utc(2025, 3, 4, 17)  # when they press "pause"


@pytest.fixture
def rt(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    """These rules hold on SQLite and on PostgreSQL alike."""
    runtime = Runtime(make_settings(tmp_path, database_url=database_url))
    yield runtime
    runtime.close()


@pytest.fixture
def dana(rt: Runtime) -> int:
    """A New York subscriber who has had Days 1 and 2."""
    enrollment_id = enroll(rt, "dana@example.org", timezone=NEW_YORK)
    assert len(tick(rt, DAY_1)) == 1 and len(tick(rt, DAY_2)) == 1
    return enrollment_id


def act(rt: Runtime, enrollment_id: int, what: str, now: dt.datetime) -> bool:
    """Pause or resume through the core, as the web page does."""
    with transaction(rt.sessions) as session:
        found = session.get(Enrollment, enrollment_id)
        assert found is not None
        course = rt.catalog.course(found.cohort.course_slug)
        return getattr(pausing, what)(session, found, course, now)


def ticks_sent(rt: Runtime, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """Tick hourly from ``start`` up to ``end``; the times at which a lesson went out."""
    sent, now = [], start
    while now <= end:
        if tick(rt, now):
            sent.append(now)
        now += HOUR
    return sent


def test_pausing_on_day_2_brings_day_3_a_week_later_at_local_send_time(
    rt: Runtime, dana: int
) -> None:
    assert act(rt, dana, "pause", DAY_2_NOON)
    paused = load(rt, dana)
    # A week from Tuesday noon is back on the morning seven days later: the pause ends at the
    # start of Tuesday 11 March, local (EDT by then), not at noon, which would lose a day.
    assert paused.paused_until == utc(2025, 3, 11, 4)
    # Day 3 was due Wednesday 07:00 EST; it now comes on Tuesday 11 March, 07:00 EDT.
    assert paused.next_send_at == utc(2025, 3, 11, 11)
    assert ticks_sent(rt, DAY_2_NOON, utc(2025, 3, 11, 10)) == []
    assert ticks_sent(rt, utc(2025, 3, 11, 11), utc(2025, 3, 12, 11)) == [
        utc(2025, 3, 11, 11),  # Day 3
        utc(2025, 3, 12, 11),  # Day 4, the next morning: the course carries on
    ]
    assert load(rt, dana).day == 4


@pytest.mark.parametrize(
    ("resume_at", "day_3", "day_4"),
    [
        # The same evening: Day 3 back on its usual Wednesday morning.
        (utc(2025, 3, 4, 23), utc(2025, 3, 5, 12), utc(2025, 3, 6, 12)),
        # Thursday 02:00 local, after the missed Wednesday: not in the night, at 07:00 that
        # morning, and Day 4 the next morning.
        (utc(2025, 3, 6, 7), utc(2025, 3, 6, 12), utc(2025, 3, 7, 12)),
        # Thursday 10:00 local, after Thursday's send time too: Day 3 at once, not skipped,
        # and Day 4 the next morning, not a second lesson that day.
        (utc(2025, 3, 6, 15), utc(2025, 3, 6, 15), utc(2025, 3, 7, 12)),
    ],
    ids=["same-day", "in-the-night-after-the-missed-morning", "after-the-missed-morning"],
)
def test_resuming_early_brings_the_next_lesson_back(
    rt: Runtime, dana: int, resume_at: dt.datetime, day_3: dt.datetime, day_4: dt.datetime
) -> None:
    act(rt, dana, "pause", DAY_2_NOON)
    assert act(rt, dana, "resume", resume_at)
    resumed = load(rt, dana)
    assert (resumed.paused_until, resumed.next_send_at) == (None, day_3)
    assert ticks_sent(rt, resume_at, day_4) == [day_3, day_4]
    assert load(rt, dana).day == 4


def test_a_pause_that_has_run_out_is_not_resumed(rt: Runtime, dana: int) -> None:
    act(rt, dana, "pause", DAY_2_NOON)
    paused = load(rt, dana)
    assert paused.paused_until is not None
    after_the_week = paused.paused_until + HOUR  # Tuesday 11 March, 01:00 local
    assert not act(rt, dana, "resume", after_the_week)
    after = load(rt, dana)
    assert after.next_send_at == paused.next_send_at == utc(2025, 3, 11, 11)  # Tuesday 07:00
    assert ticks_sent(rt, after_the_week, utc(2025, 3, 11, 10)) == []


def test_pause_before_day_1_and_resume(rt: Runtime) -> None:
    enrollment_id = enroll(rt, "eli@example.org", timezone=NEW_YORK, now=utc(2025, 3, 1))
    act(rt, enrollment_id, "pause", utc(2025, 3, 2))
    # Paused on Saturday evening local: back on the morning a week later, Saturday 07:00 EST.
    assert load(rt, enrollment_id).next_send_at == utc(2025, 3, 8, 12)
    act(rt, enrollment_id, "resume", utc(2025, 3, 2, 1))
    assert load(rt, enrollment_id).next_send_at == DAY_1  # the cohort's start, as planned


def test_pausing_while_a_lesson_is_on_its_way_holds_it_until_the_pause_ends(
    rt: Runtime, dana: int
) -> None:
    wednesday = utc(2025, 3, 5, 12)
    claimed: list[int] = []
    delivery.tick(rt, wednesday, claimed.extend)  # Day 3 claimed and queued, not yet sent
    assert act(rt, dana, "pause", wednesday)
    # Its task comes and finds it waiting for the pause: not sent, no attempt spent.
    assert sending.send_delivery(rt, claimed[0], wednesday) == sending.Outcome.SKIPPED
    assert load(rt, dana).day == 2
    after_the_week = utc(2025, 3, 12, 11)  # the morning a week later, 07:00 EDT
    again: list[int] = []
    delivery.tick(rt, after_the_week - dt.timedelta(minutes=1), again.extend)
    assert again == []
    delivery.tick(rt, after_the_week, again.extend)
    assert again == claimed
    assert sending.send_delivery(rt, claimed[0], after_the_week) == sending.Outcome.SENT
    assert load(rt, dana).day == 3


def test_pause_does_not_undo_a_claim_made_meanwhile(rt: Runtime, dana: int) -> None:
    wednesday = utc(2025, 3, 5, 12)
    with transaction(rt.sessions) as session:
        stale = session.get(Enrollment, dana)
        assert stale is not None and stale.next_send_at == wednesday
        course = rt.catalog.course(stale.cohort.course_slug)
        stale.subscriber  # noqa: B018 - loaded before the claim
        # A beat tick claims Day 3 between our read and our write.
        claimed: list[int] = []
        delivery.tick(rt, wednesday, claimed.extend)
        assert pausing.pause(session, stale, course, wednesday)
    after = load(rt, dana)
    assert after.next_send_at is None  # still in flight, not rescheduled for a second claim
    assert after.paused_until == utc(2025, 3, 12, 4)  # the start of that Wednesday, local
    assert delivery.tick(rt, utc(2025, 3, 20), lambda ids: None).claimed == 0


def test_only_an_active_enrollment_pauses_and_only_a_paused_one_resumes(
    rt: Runtime, dana: int
) -> None:
    assert not act(rt, dana, "resume", DAY_2_NOON)
    with transaction(rt.sessions) as session:
        found = session.get(Enrollment, dana)
        assert found is not None
        enrollment.unsubscribe(session, found, DAY_2_NOON)
    assert not act(rt, dana, "pause", DAY_2_NOON)
    after = load(rt, dana)
    assert (after.paused_until, after.next_send_at) == (None, None)


# -- the pause page ----------------------------------------------------------------------


@pytest.fixture
def client(rt: Runtime) -> FlaskClient:
    return make_app(rt, Clock(DAY_2_NOON)).test_client()


def test_opening_the_pause_page_changes_nothing(
    rt: Runtime, client: FlaskClient, dana: int
) -> None:
    before = load(rt, dana)
    for _ in range(2):
        page = client.get(path(rt, links.PAUSE, dana)).get_data(as_text=True)
        assert "Pause your lessons?" in page
        assert "Wednesday 5 March at 07:00 (America/New_York)" in page
    after = load(rt, dana)
    assert (after.paused_until, after.next_send_at) == (before.paused_until, before.next_send_at)


def test_pause_and_resume_from_the_page(rt: Runtime, client: FlaskClient, dana: int) -> None:
    url = path(rt, links.PAUSE, dana)
    response = post_form(client, url, action="pause")
    assert response.status_code == 303
    page = client.get(url).get_data(as_text=True)
    assert "Your lessons are paused" in page
    assert "Paused until Tuesday 11 March (America/New_York)" in page
    assert "Day 3 will come on Tuesday 11 March at 07:00" in page
    assert (
        "Resuming brings Day 3 back to when it was due before the pause. If that has passed, "
        "it comes at 07:00 today, or at once if 07:00 has passed today." in page
    )
    assert load(rt, dana).next_send_at == utc(2025, 3, 11, 11)

    assert post_form(client, url, action="resume").status_code == 303
    assert "Pause your lessons?" in client.get(url).get_data(as_text=True)
    resumed = load(rt, dana)
    assert (resumed.paused_until, resumed.next_send_at) == (None, utc(2025, 3, 5, 12))


def test_pausing_from_the_page_while_a_lesson_is_queued_holds_it_and_says_when(
    rt: Runtime, dana: int
) -> None:
    wednesday = utc(2025, 3, 5, 12)
    claimed: list[int] = []
    delivery.tick(rt, wednesday, claimed.extend)  # Day 3 claimed and queued
    client = make_app(rt, Clock(wednesday)).test_client()
    url = path(rt, links.PAUSE, dana)
    assert post_form(client, url, action="pause").status_code == 303
    page = client.get(url).get_data(as_text=True)
    assert "Day 3 will come on Wednesday 12 March at 07:00" in page
    assert sending.send_delivery(rt, claimed[0], wednesday) == sending.Outcome.SKIPPED
    # Resuming brings it back at once (the window is open), and it goes out once.
    assert post_form(client, url, action="resume").status_code == 303
    again: list[int] = []
    delivery.tick(rt, wednesday, again.extend)
    assert again == claimed
    assert sending.send_delivery(rt, claimed[0], wednesday) == sending.Outcome.SENT
    assert load(rt, dana).day == 3


@pytest.mark.parametrize(
    ("data", "status"),
    [
        ({"action": "pause"}, 403),
        ({"action": "pause", "form_token": "forged"}, 403),
        ({"action": "sleep"}, 400),
        ({"action": "pause", "days": "365"}, 400),
    ],
    ids=["no form token", "forged form token", "unknown action", "a length not offered"],
)
def test_a_pause_post_not_from_our_page_changes_nothing(
    rt: Runtime, client: FlaskClient, dana: int, data: dict[str, str], status: int
) -> None:
    response = client.post(path(rt, links.PAUSE, dana), data=data)
    assert response.status_code == status
    assert load(rt, dana).paused_until is None


def test_the_pause_page_of_someone_who_left_offers_nothing(
    rt: Runtime, client: FlaskClient, dana: int
) -> None:
    client.post(path(rt, links.UNSUBSCRIBE, dana), data={"List-Unsubscribe": "One-Click"})
    page = client.get(path(rt, links.PAUSE, dana)).get_data(as_text=True)
    assert "not running" in page and "unsubscribed" in page
    # No pause or resume; the one form left emails them a journal link (test_resubscribe.py).
    assert 'name="action"' not in page and "Resume now" not in page
    assert page.count("<form") == 1 and "/journal-link" in page
    genuine = URLSafeTimedSerializer(rt.links.secret_key, salt="dripcourse.form")
    data = {"action": "pause", "form_token": genuine.dumps([links.PAUSE, dana])}
    assert client.post(path(rt, links.PAUSE, dana), data=data).status_code == 303
    assert load(rt, dana).paused_until is None


# -- pause lengths -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("days", "paused_until", "day_7", "shown"),
    [
        # Paused on Saturday 8 March at 13:00 EST, after that morning's lesson; US clocks go
        # forward on Sunday 9 March. N days brings the next lesson on the morning N days later.
        ("1", utc(2025, 3, 9, 5), utc(2025, 3, 9, 11), "Sunday 9 March at 07:00"),
        ("7", utc(2025, 3, 15, 4), utc(2025, 3, 15, 11), "Saturday 15 March at 07:00"),
        ("14", utc(2025, 3, 22, 4), utc(2025, 3, 22, 11), "Saturday 22 March at 07:00"),
    ],
    ids=["1-day", "1-week", "2-weeks"],
)
def test_each_pause_length_brings_the_next_lesson_at_local_send_time_across_dst(
    rt: Runtime, days: str, paused_until: dt.datetime, day_7: dt.datetime, shown: str
) -> None:
    """Each length, chosen on the page, says in local time when the next lesson comes."""
    enrollment_id = enroll(rt, "dana@example.org", timezone=NEW_YORK)
    saturday = utc(2025, 3, 8, 18)  # 13:00 EST, after Day 6 went out that morning
    assert len(ticks_sent(rt, DAY_1, saturday)) == 6
    client = make_app(rt, Clock(saturday)).test_client()
    url = path(rt, links.PAUSE, enrollment_id)
    page = client.get(url).get_data(as_text=True)
    for label in ("1 day", "1 week", "2 weeks"):
        assert f"Pause for {label}</button>" in page
    assert post_form(client, url, action="pause", days=days).status_code == 303
    paused = load(rt, enrollment_id)
    assert (paused.paused_until, paused.next_send_at) == (paused_until, day_7)
    page = client.get(url).get_data(as_text=True)
    assert f"Day 7 will come on {shown} (America/New_York)" in page
    assert ticks_sent(rt, saturday, day_7) == [day_7]


def test_the_core_pause_defaults_to_a_week_and_refuses_no_length(rt: Runtime, dana: int) -> None:
    assert act(rt, dana, "pause", DAY_2_NOON)
    assert load(rt, dana).paused_until == utc(2025, 3, 11, 4)  # Tuesday, a week on, 00:00 EDT
    with transaction(rt.sessions) as session:
        found = session.get(Enrollment, dana)
        assert found is not None
        course = rt.catalog.course(found.cohort.course_slug)
        with pytest.raises(InputError, match="pause length"):
            pausing.pause(session, found, course, DAY_2_NOON, dt.timedelta(0))


def test_a_shorter_pause_never_cuts_a_longer_one_short(rt: Runtime, dana: int) -> None:
    with transaction(rt.sessions) as session:
        found = session.get(Enrollment, dana)
        assert found is not None
        course = rt.catalog.course(found.cohort.course_slug)
        pausing.pause(session, found, course, DAY_2_NOON, dt.timedelta(days=14))
        pausing.pause(session, found, course, DAY_2_NOON, dt.timedelta(days=1))
    assert load(rt, dana).paused_until == utc(2025, 3, 18, 4)  # two weeks on, 00:00 EDT
