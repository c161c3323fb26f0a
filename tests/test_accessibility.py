"""axe-core, in real Chromium at a phone's 375 pixels, finds no serious accessibility problem in
any lesson email, any subscriber page or the staff's studio.

axe-core is the rule engine most accessibility checkers are built on; `make test` installs it
from npm into .venv/axe (Makefile). The check counts axe's ``serious`` and ``critical``
findings against WCAG 2.0/2.1 A and AA and its best practices; ``moderate`` and ``minor`` ones
are printed, not failed. Without Chromium or axe-core the tests are skipped on a laptop and
fail in CI.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from dripcourse import links
from dripcourse.courses.course_folder import load_course
from dripcourse.courses.message import build_message, message_id
from dripcourse.courses.render import Renderer
from dripcourse.courses.studio import create_studio
from dripcourse.runtime import Runtime
from tests.conftest import EMAILS, ROOT, service_missing
from tests.headless import Browser
from tests.test_phone_layout import PHONE, chromium, site  # noqa: F401 - fixtures
from tests.test_render import ALL_LESSONS, NOW, reader
from tests.test_web_support import path

pytestmark = pytest.mark.slow

AXE = Path(os.environ.get("DRIPCOURSE_AXE_JS", ROOT / ".venv/axe/node_modules/axe-core/axe.min.js"))
FAILING = ("serious", "critical")


@pytest.fixture(scope="module")
def axe() -> str:
    if not AXE.is_file():
        service_missing("axe-core", f"{AXE} is missing (make test installs it with npm)")
    return AXE.read_text(encoding="utf-8")


def serious(found: list[dict]) -> list[str]:
    for each in found:
        if each["impact"] not in FAILING:
            print(f"axe ({each['impact']}): {each['id']}: {each['help']}")
    return [
        f"{each['id']} ({each['impact']}): {each['help']} at {each['nodes'][:3]}"
        for each in found
        if each["impact"] in FAILING
    ]


@pytest.mark.parametrize(("slug", "day"), ALL_LESSONS)
def test_every_lesson_email_has_no_serious_accessibility_problem(
    chromium: Browser,  # noqa: F811
    axe: str,
    tmp_path: Path,
    slug: str,
    day: int,
) -> None:
    rendered = Renderer(EMAILS).lesson(load_course(EMAILS, slug), day)
    msg = build_message(rendered, reader(day=day), now=NOW, msg_id=message_id("e.org", 7, "s"))
    html = msg.get_payload()[1].get_payload(decode=True)
    page = tmp_path / f"{slug}-{day}.html"
    page.write_bytes(html)
    assert serious(chromium.accessibility(page.as_uri(), PHONE, axe)) == []


SUBSCRIBER_PAGES = {
    "journal": lambda rt: path(rt, links.JOURNAL, 1),
    "lesson": lambda rt: path(rt, links.LESSON, 1, 7),
    "privacy": lambda rt: "/privacy",
    "reflect": lambda rt: path(rt, links.REFLECT, 1, 1),
    "journal-to-print": lambda rt: path(rt, links.JOURNAL, 1) + "/journal.html",
    "pause": lambda rt: path(rt, links.PAUSE, 1),
    "unsubscribe": lambda rt: path(rt, links.UNSUBSCRIBE, 1),
    "unsubscribed": lambda rt: path(rt, links.UNSUBSCRIBE, 2),
    "subscribed-again": lambda rt: path(rt, links.UNSUBSCRIBE, 3) + "?back=1",
    "delete-everything": lambda rt: path(rt, links.JOURNAL, 1) + "/delete/everything",
    "confirm a held reply": lambda rt: path(rt, links.CONFIRM, 1, 1),
    "not-found": lambda rt: "/j/not-a-token",
}


@pytest.mark.parametrize("name", SUBSCRIBER_PAGES)
def test_every_subscriber_page_has_no_serious_accessibility_problem(
    chromium: Browser,  # noqa: F811
    axe: str,
    site: tuple[Runtime, str],  # noqa: F811
    name: str,
) -> None:
    rt, base = site
    found = chromium.accessibility(base + SUBSCRIBER_PAGES[name](rt), PHONE, axe)
    assert serious(found) == []


@pytest.fixture
def studio(site: tuple[Runtime, str]) -> Iterator[str]:  # noqa: F811
    rt, _ = site
    server = make_server("127.0.0.1", 0, create_studio(rt), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)


@pytest.mark.parametrize("page", ["/", "/course/white-coat/1", "/course/white-coat/1/html"])
def test_the_studio_has_no_serious_accessibility_problem(
    chromium: Browser,  # noqa: F811
    axe: str,
    studio: str,
    page: str,
) -> None:
    assert serious(chromium.accessibility(studio + page, PHONE, axe)) == []


def test_the_check_finds_a_problem_when_there_is_one(
    chromium: Browser,  # noqa: F811
    axe: str,
    tmp_path: Path,
) -> None:
    """Text as light as the old footer's #777 on white at 12 px, and an image with no text:
    axe must call both serious, or the tests above prove nothing."""
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><html lang="en"><head><title>t</title></head><body><main>'
        '<p style="color:#999;background:#fff;font-size:12px">Pause lessons</p>'
        '<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=">'
        "</main></body></html>",
        encoding="utf-8",
    )
    found = " ".join(serious(chromium.accessibility(page.as_uri(), PHONE, axe)))
    assert "color-contrast" in found
    assert "image-alt" in found


def test_the_programmes_report_has_no_serious_accessibility_problem(
    chromium: Browser,  # noqa: F811
    axe: str,
    tmp_path: Path,
) -> None:
    from tests import report_scenario

    page = tmp_path / "report.html"
    page.write_text(report_scenario.sample_page(tmp_path), encoding="utf-8")
    assert serious(chromium.accessibility(page.as_uri(), PHONE, axe)) == []


@pytest.mark.parametrize("day", [1, 7])
def test_a_lesson_asking_check_in_questions_has_no_serious_accessibility_problem(
    chromium: Browser,  # noqa: F811
    axe: str,
    tmp_path: Path,
    day: int,
) -> None:
    from tests.test_checkins import with_checkins

    emails = with_checkins(tmp_path)
    rendered = Renderer(emails).lesson(load_course(emails, "white-coat"), day)
    assert rendered.course.checkins
    msg = build_message(rendered, reader(day=day), now=NOW, msg_id=message_id("e.org", 7, "s"))
    page = tmp_path / f"checkin-{day}.html"
    page.write_bytes(msg.get_payload()[1].get_payload(decode=True))
    assert serious(chromium.accessibility(page.as_uri(), PHONE, axe)) == []


@pytest.fixture
def checkin_site(tmp_path: Path, sqlite_url: str) -> Iterator[tuple[Runtime, str, int]]:
    """The web app over a course asking check-in questions, one of them answered."""
    from tests.conftest import make_settings
    from tests.test_checkins import with_checkins
    from tests.test_web_support import DAY, DAY_1_UTC, Clock, enroll, make_app, send_days

    emails = with_checkins(tmp_path)
    rt = Runtime(make_settings(tmp_path, database_url=sqlite_url, emails_dir=str(emails)))
    who = enroll(rt, "ana@example.org")
    send_days(rt, 1)
    client = make_app(rt, Clock(DAY_1_UTC + DAY)).test_client()
    client.get(path(rt, links.CHECKIN, who, 1) + "/1/4")
    from dripcourse.web import create_app

    server = make_server("127.0.0.1", 0, create_app(rt), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rt, f"http://127.0.0.1:{server.server_port}", who
    server.shutdown()
    thread.join(timeout=5)
    rt.close()


@pytest.mark.parametrize("page", ["checkin", "journal"])
def test_the_check_in_page_and_a_journal_with_answers_have_no_serious_problem(
    chromium: Browser,  # noqa: F811
    axe: str,
    checkin_site: tuple[Runtime, str, int],
    page: str,
) -> None:
    rt, base, who = checkin_site
    url = path(rt, links.CHECKIN, who, 1) + "?saved=1" if page == "checkin" else ""
    url = url or path(rt, links.JOURNAL, who)
    assert serious(chromium.accessibility(base + url, PHONE, axe)) == []
