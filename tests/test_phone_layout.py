"""On a 375-pixel phone screen the journal, a lesson and the privacy page never scroll sideways.

Real headless Chromium lays each page out; a screenshot of each is kept in the test's folder
(and copied to $DRIPCOURSE_SCREENSHOTS, when set, to look at).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from dripcourse import links
from dripcourse.clock import utcnow
from dripcourse.db import transaction
from dripcourse.models import Enrollment
from dripcourse.people import enrollment as enrollments
from dripcourse.people import rejoining
from dripcourse.reader import held_replies
from dripcourse.runtime import Runtime
from dripcourse.web import create_app
from tests.conftest import IN_CI, make_settings, utc
from tests.headless import Browser, find_chromium
from tests.test_web_support import Clock, enroll, make_app, path, post_form, send_days

PHONE = 375
KATHMANDU_DAY_1 = utc(2025, 3, 3, 1, 15)
# What people paste: a long address with no place to break, and a long line of prose.
LONG_WORD = "https://intranet.example.org/?token=" + "Zm9vYmFyYmF6" * 10
REFLECTION = f"I kept a note of this: {LONG_WORD}\n\n" + "A long thought. " * 60


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    executable = find_chromium()
    if executable is None:
        if IN_CI:
            pytest.fail("Chromium not found; CI=true requires it")
        pytest.skip("Chromium not installed")
    browser = Browser(executable)
    yield browser
    browser.close()


@pytest.fixture
def site(tmp_path: Path, sqlite_url: str) -> Iterator[tuple[Runtime, str]]:
    """The web app on a loopback port, and a subscriber who finished the course."""
    rt = Runtime(make_settings(tmp_path, database_url=sqlite_url, reflections_retention_days=365))
    enrollment_id = enroll(rt, "kiran@example.org", timezone="Asia/Kathmandu")
    send_days(rt, 7, first=KATHMANDU_DAY_1)
    client = make_app(rt, Clock(utc(2025, 3, 9, 15))).test_client()
    for day in (1, 7):
        post_form(client, path(rt, links.REFLECT, enrollment_id, day), reflection=REFLECTION)
    # Enrollment 2 unsubscribed today (its page offers to come back and the journal by
    # email), enrollment 3 came back today (the page resubscribing lands on).
    left, back = enroll(rt, "leila@example.org"), enroll(rt, "omar@example.org")
    with transaction(rt.sessions) as session:
        for each in (left, back):
            enrollments.unsubscribe(session, session.get(Enrollment, each), utcnow())  # type: ignore[arg-type]
        rejoining.resubscribe(session, session.get(Enrollment, back), rt.catalog.course, utcnow())  # type: ignore[arg-type]
    hold_a_reply(rt, enrollment_id)
    server = make_server("127.0.0.1", 0, create_app(rt), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rt, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)
    rt.close()


def hold_a_reply(rt: Runtime, enrollment_id: int) -> None:
    """A reply to Day 2 from a long address that is not theirs, held for the confirm page."""
    with transaction(rt.sessions) as session:
        enrollment = session.get(Enrollment, enrollment_id)
        assert enrollment is not None
        held_replies.hold(
            session,
            enrollment,
            2,
            "kiran.the.registrar.on.call.this.weekend@paediatrics.hospital.example.org",
            REFLECTION,
            "What did you notice?",
            cipher=rt.reflection_cipher,
            links=rt.links,
            max_chars=rt.settings.reflection_max_chars,
            notices_per_day=3,
            now=utcnow(),  # the live server's clock: held for the next 7 days
        )


PAGES = {
    "journal": lambda rt: path(rt, links.JOURNAL, 1),
    "lesson": lambda rt: path(rt, links.LESSON, 1, 7),
    "privacy": lambda rt: "/privacy",
    "reflect": lambda rt: path(rt, links.REFLECT, 1, 1),
    "journal-to-print": lambda rt: path(rt, links.JOURNAL, 1) + "/journal.html",
    "pause": lambda rt: path(rt, links.PAUSE, 1),
    "unsubscribed": lambda rt: path(rt, links.UNSUBSCRIBE, 2),
    "subscribed-again": lambda rt: path(rt, links.UNSUBSCRIBE, 3) + "?back=1",
    "confirm a held reply": lambda rt: path(rt, links.CONFIRM, 1, 1),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", PAGES)
def test_the_page_fits_a_375_pixel_phone_screen(
    chromium: Browser, site: tuple[Runtime, str], tmp_path: Path, name: str
) -> None:
    rt, base = site
    shot = tmp_path / f"{name}-375.png"
    layout = chromium.layout(base + PAGES[name](rt), PHONE, shot)
    assert layout.viewport_width == PHONE
    assert layout.scroll_width <= PHONE, f"{name} scrolls sideways: {layout.scroll_width}px wide"
    assert shot.stat().st_size > 1000
    keep = os.environ.get("DRIPCOURSE_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / shot.name)
