"""The subscriber's pages say what is true and show every time in the subscriber's own zone."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from dripcourse import links
from dripcourse.runtime import Runtime
from tests.conftest import utc
from tests.test_web_support import Clock, enroll, make_app, path, post_form, send_days

KATHMANDU = "Asia/Kathmandu"  # UTC+05:45, no daylight saving
DAY_1_KATHMANDU = utc(2025, 3, 3, 1, 15)  # Monday 07:00 in Kathmandu
WROTE = utc(2025, 3, 5, 20)  # Wednesday 20:00 UTC: already Thursday 01:45 in Kathmandu


@pytest.fixture
def kiran(rt: Runtime) -> int:
    """A subscriber in Kathmandu who has had Days 1-3."""
    enrollment_id = enroll(rt, "kiran@example.org", timezone=KATHMANDU)
    send_days(rt, 3, first=DAY_1_KATHMANDU)
    return enrollment_id


@pytest.fixture
def client(rt: Runtime) -> FlaskClient:
    return make_app(rt, Clock(WROTE)).test_client()


def test_every_time_on_the_pages_is_the_subscribers_local_time(
    rt: Runtime, client: FlaskClient, kiran: int
) -> None:
    url = path(rt, links.REFLECT, kiran, 3)
    assert post_form(client, url, reflection="Written late at night.").status_code == 303
    local = "Thursday 6 March 2025 at 01:45 (Asia/Kathmandu)"
    pages = {
        "reflect": client.get(url).get_data(as_text=True),
        "journal": client.get(path(rt, links.JOURNAL, kiran)).get_data(as_text=True),
    }
    for name, page in pages.items():
        assert f"Saved {local}" in page, name
        assert "UTC" not in page, name
    pause = client.get(path(rt, links.PAUSE, kiran)).get_data(as_text=True)
    assert "Day 4 is due Thursday 6 March at 07:00 (Asia/Kathmandu)" in pause


@pytest.mark.parametrize("purpose", [links.REFLECT, links.JOURNAL])
def test_the_pages_say_that_anyone_with_the_link_can_open_them(
    rt: Runtime, client: FlaskClient, kiran: int, purpose: str
) -> None:
    ids = (kiran, 1) if purpose == links.REFLECT else (kiran,)
    page = client.get(path(rt, purpose, *ids)).get_data(as_text=True)
    assert "Anyone who has this link can open this page" in page
    assert "don&#39;t forward" in page or "don't forward" in page
    assert "only you" not in page.lower() and "only someone" not in page.lower()


def test_the_lesson_email_says_that_anyone_with_the_link_can_open_it(
    rt: Runtime, kiran: int
) -> None:
    outbox = Path(rt.settings.mail_url.removeprefix("file://"))
    (first, *_) = sorted(outbox.glob("*.eml"))
    raw = first.read_bytes().decode("ascii", "replace")
    flat = raw.replace("=\r\n", "").replace("\r\n", " ").replace("=27", "'")
    assert "Anyone who has this link can open your reflection" in flat
    assert "anyone who has this link can open it; please don't forward this email" in flat
    assert "only you" not in flat.lower()


def test_times_are_local_on_the_day_they_fall_there(rt: Runtime, kiran: int) -> None:
    """Late evening UTC is already the next morning in Kathmandu: the date moves too."""
    from dripcourse.web import _when

    assert _when(WROTE, KATHMANDU) == "Thursday 6 March 2025 at 01:45 (Asia/Kathmandu)"
    assert _when(WROTE - dt.timedelta(hours=20), "UTC") == ("Wednesday 5 March 2025 at 00:00 (UTC)")
