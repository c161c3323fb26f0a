"""Where to turn, in real Chromium at a phone's 375 pixels: the line is on screen on every
page a reader writes on, the places after words of despair and the support page fit the
screen, and axe-core finds no serious accessibility problem on them."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from werkzeug.serving import make_server

from dripcourse import links
from dripcourse.runtime import Runtime
from dripcourse.web import create_app
from tests.conftest import make_settings, utc
from tests.headless import Browser
from tests.test_accessibility import axe, serious  # noqa: F401 - a fixture
from tests.test_care import DESPAIR
from tests.test_phone_layout import PHONE, chromium  # noqa: F401 - a fixture
from tests.test_web_support import Clock, enroll, make_app, path, post_form, send_days

pytestmark = pytest.mark.slow

# Where the line is, and whether the page scrolls sideways.
LINE_BOX = (
    "JSON.stringify((() => { const a = document.querySelector('.support-line a');"
    " const box = a && a.getBoundingClientRect();"
    " return {width: document.documentElement.scrollWidth,"
    " line: box && [box.left, box.right, box.width, box.height, a.textContent]}; })())"
)
PLACES_BOX = (
    "JSON.stringify((() => { const s = document.querySelector('.care, .places');"
    " const box = s && s.getBoundingClientRect();"
    " return {width: document.documentElement.scrollWidth,"
    " places: box && [box.left, box.right, box.height],"
    " first: s && s.querySelector('.place strong').textContent}; })())"
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, str]]:
    """The web app on a loopback port; a reader in London who wrote in despair on Day 2."""
    from dripcourse import db

    folder = tmp_path_factory.mktemp("care-site")
    url = f"sqlite:///{folder / 'site.sqlite3'}"
    engine = db.make_engine(url)
    db.upgrade(engine)
    engine.dispose()
    rt = Runtime(make_settings(folder, database_url=url))
    enrollment_id = enroll(rt, "daniel@example.org", timezone="Europe/London")
    send_days(rt, 7)
    client = make_app(rt, Clock(utc(2025, 3, 9, 15))).test_client()
    post_form(client, path(rt, links.REFLECT, enrollment_id, 2), reflection=DESPAIR["en"][6])
    server = make_server("127.0.0.1", 0, create_app(rt), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rt, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)
    rt.close()


WRITING_PAGES = {
    "reflect": lambda rt: path(rt, links.REFLECT, 1, 3),
    "journal": lambda rt: path(rt, links.JOURNAL, 1),
    "lesson": lambda rt: path(rt, links.LESSON, 1, 7),
}
PLACES_PAGES = {
    "support": lambda rt: path(rt, links.SUPPORT, 1),
    "saved-in-despair": lambda rt: path(rt, links.REFLECT, 1, 2) + "?saved=1",
}


@pytest.mark.parametrize("name", WRITING_PAGES)
def test_the_line_is_on_a_375_pixel_screen_on_every_page_a_reader_writes_on(
    chromium: Browser,  # noqa: F811
    site: tuple[Runtime, str],
    name: str,
) -> None:
    rt, base = site
    found = chromium.evaluate(base + WRITING_PAGES[name](rt), PHONE, LINE_BOX)
    assert isinstance(found, dict) and found["line"], f"{name}: no support line"
    left, right, width, height, words = found["line"]
    assert left >= 0 and right <= PHONE and width > 0 and height > 0, found
    assert words == "Having a hard week? Where to turn, any hour"
    assert found["width"] <= PHONE, f"{name} scrolls sideways"


@pytest.mark.parametrize("name", PLACES_PAGES)
def test_the_places_fit_a_375_pixel_screen(
    chromium: Browser,  # noqa: F811
    site: tuple[Runtime, str],
    name: str,
) -> None:
    rt, base = site
    found = chromium.evaluate(base + PLACES_PAGES[name](rt), PHONE, PLACES_BOX)
    assert isinstance(found, dict) and found["places"], f"{name}: no places shown"
    left, right, height = found["places"]
    assert left >= 0 and right <= PHONE and height > 0, found
    assert found["first"] == "Samaritans"
    assert found["width"] <= PHONE, f"{name} scrolls sideways"


@pytest.mark.parametrize("name", [*WRITING_PAGES, *PLACES_PAGES])
def test_the_pages_with_the_line_or_the_places_have_no_serious_accessibility_problem(
    chromium: Browser,  # noqa: F811
    axe: str,  # noqa: F811
    site: tuple[Runtime, str],
    name: str,
) -> None:
    rt, base = site
    url = base + {**WRITING_PAGES, **PLACES_PAGES}[name](rt)
    assert serious(chromium.accessibility(url, PHONE, axe)) == []
