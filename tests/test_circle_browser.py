"""The cohort circle in a real browser, at a phone's width: two members of one cohort and one
of another, from sharing to forgetting.

Headless Chromium fills in and submits the forms as a person would (over the DevTools
protocol, tests/headless.py). The screenshots in docs/ are made here: with
DRIPCOURSE_SCREENSHOTS=docs the test writes circle-share-375px.png and
circle-lesson-375px.png there (``make screenshots`` does).
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from werkzeug.serving import make_server

from dripcourse import links
from dripcourse.db import transaction
from dripcourse.models import CircleNote, CirclePost, Subscriber
from dripcourse.runtime import Runtime
from dripcourse.web import create_app
from tests.conftest import IN_CI, make_settings
from tests.headless import Browser, find_chromium
from tests.test_accessibility import axe, serious  # noqa: F401 - axe is a fixture
from tests.test_web_support import enroll, path, run_cli, send_days

PHONE = 375


class FormBrowser(Browser):
    """The layout browser, able to fill in a form and follow where it leads."""

    def page(self, url: str, *, run: str = "", shot: Path | None = None) -> str:
        """Open ``url`` at a phone's width; run ``run`` (which may submit a form, whose answer
        is then waited for); the page's HTML then, with a screenshot if asked."""
        ws = self._open(url, PHONE, bypass_csp=True)
        try:
            if run:
                self._call(ws, "Runtime.evaluate", expression=run)
                self._wait_for(ws, "Page.loadEventFired")
            found = self._call(
                ws,
                "Runtime.evaluate",
                expression="JSON.stringify([document.documentElement.outerHTML, "
                "document.documentElement.scrollWidth])",
                returnByValue=True,
            )
            html, width = json.loads(found["result"]["value"])
            assert width <= PHONE, f"{url} scrolls sideways at {PHONE}px: {width}px wide"
            if shot is not None:
                data = self._call(
                    ws, "Page.captureScreenshot", format="png", captureBeyondViewport=True
                )
                shot.write_bytes(base64.b64decode(data["data"]))
        finally:
            ws.close()
        return html


@pytest.fixture(scope="module")
def chromium() -> Iterator[FormBrowser]:
    executable = find_chromium()
    if executable is None:
        if IN_CI:
            pytest.fail("Chromium not found; CI=true requires it")
        pytest.skip("Chromium not installed")
    browser = FormBrowser(executable)
    yield browser
    browser.close()


@pytest.fixture
def site(tmp_path: Path, sqlite_url: str) -> Iterator[tuple[Runtime, str, dict[str, int]]]:
    """The web app on a loopback port; Ana and Ben in "spring", Cleo in "summer", Day 2 sent."""
    rt = Runtime(make_settings(tmp_path, database_url=sqlite_url))
    people = {
        "ana": enroll(rt, "ana@example.org"),
        "ben": enroll(rt, "ben@example.org"),
        "cleo": enroll(rt, "cleo@example.org", cohort="summer"),
    }
    with transaction(rt.sessions) as session:
        for email, name in (("ana", "Ana Ruiz"), ("ben", "Ben Okafor"), ("cleo", "Cleo Lin")):
            found = session.scalar(select(Subscriber).where(Subscriber.email.startswith(email)))
            assert found is not None
            found.name = name
    send_days(rt, 2)
    server = make_server("127.0.0.1", 0, create_app(rt), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rt, f"http://127.0.0.1:{server.server_port}", people
    server.shutdown()
    thread.join(timeout=5)
    rt.close()


def _fill(selector: str, text: str) -> str:
    return f"document.querySelector({json.dumps(selector)}).value = {json.dumps(text)};"


def _click(selector: str) -> str:
    return f"document.querySelector({json.dumps(selector)}).click();"


def _circle(html: str) -> str:
    return html.partition('id="circle"')[2]


def _count(rt: Runtime, model: type[CirclePost | CircleNote]) -> int:
    with transaction(rt.sessions) as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


@pytest.mark.slow
def test_two_members_share_and_note_another_cohort_sees_nothing_and_all_can_be_taken_back(
    chromium: FormBrowser, site: tuple[Runtime, str, dict[str, int]], tmp_path: Path
) -> None:
    rt, base, people = site
    shots = Path(os.environ.get("DRIPCOURSE_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    ana, ben, cleo = people["ana"], people["ben"], people["cleo"]

    # Ana shares Day 1 under her name: the box is off until she ticks it.
    reflect = base + path(rt, links.REFLECT, ana, 1)
    first = chromium.page(reflect)
    assert 'id="share"' in first and 'id="share" name="share" value="yes" checked' not in first
    words = "The night shift where a patient thanked me by name. It still carries me."
    saved = chromium.page(
        reflect,
        run=_fill("#reflection", words)
        + "document.querySelector('#share').checked = true;"
        + "document.querySelector('#shown-name').checked = true;"
        + _click("form button[type=submit]"),
        shot=shots / "circle-share-375px.png",
    )
    assert "Your reflection is saved." in saved and "This reflection is shared" in saved

    # Ben sees it under the lesson, with the day's question, and leaves a note.
    ben_lesson = base + path(rt, links.LESSON, ben, 1)
    seen = _circle(chromium.page(ben_lesson))
    assert words in seen and "Ana R." in seen and "@" not in seen
    noted = chromium.page(
        ben_lesson,
        run=_fill("textarea[name=text]", "Thank you for this. Mine was a quiet ward at 4 am.")
        + "document.querySelector('textarea[name=text]').form.querySelector('button').click();",
        shot=shots / "circle-lesson-375px.png",
    )
    assert "Your note is posted." in noted and "Mine was a quiet ward" in noted
    journal = chromium.page(base + path(rt, links.JOURNAL, ana))
    assert "Mine was a quiet ward" in journal and "A colleague" in journal  # his default

    # Cleo, in another cohort, sees nothing of it.
    cleo_page = chromium.page(base + path(rt, links.LESSON, cleo, 1))
    assert words not in cleo_page and "Mine was a quiet ward" not in cleo_page

    # Ana withdraws it under the lesson: gone for Ben at once, with the note.
    withdrawn = chromium.page(
        base + path(rt, links.LESSON, ana, 1),
        run="document.querySelector('input[name=action][value=withdraw]').form"
        ".querySelector('button').click();",
    )
    assert "withdrawn from the circle" in withdrawn
    assert words not in chromium.page(ben_lesson)
    assert _count(rt, CirclePost) == 0 and _count(rt, CircleNote) == 0

    # Both share Day 2 (Ana anonymously); a moderator hides Ben's.
    for who, text, shown in (
        (ana, "Day two from Ana.", "anonymous"),
        (ben, "Day two, Ben.", "name"),
    ):
        chromium.page(
            base + path(rt, links.REFLECT, who, 2),
            run=_fill("#reflection", text)
            + "document.querySelector('#share').checked = true;"
            + f"document.querySelector('#shown-{shown}').checked = true;"
            + _click("form button[type=submit]"),
        )
    listed = run_cli(rt.settings, "circle", "list", "--cohort", "spring")
    ben_ref = next(line.split("\t")[0] for line in listed.output.splitlines() if "ben@" in line)
    assert run_cli(rt.settings, "circle", "hide", ben_ref, "--reason", "Off-topic").exit_code == 0
    ana_day2 = _circle(chromium.page(base + path(rt, links.LESSON, ana, 2)))
    assert "Day two, Ben." not in ana_day2 and "Day two from Ana." in ana_day2
    ben_day2 = _circle(chromium.page(base + path(rt, links.LESSON, ben, 2)))
    assert (
        "Day two from Ana." in ben_day2 and "A colleague" in ben_day2 and "Ana R." not in ben_day2
    )
    assert "Off-topic" in ben_day2  # Ben sees his own as hidden, with the reason

    # Forget Ana: the rest of hers is gone.
    assert run_cli(rt.settings, "forget", "ana@example.org", "--yes").exit_code == 0
    assert "Day two from Ana." not in chromium.page(base + path(rt, links.LESSON, ben, 2))
    assert _count(rt, CirclePost) == 1  # Ben's, hidden


@pytest.mark.slow
def test_the_circle_pages_have_no_serious_accessibility_problem(
    chromium: FormBrowser,
    site: tuple[Runtime, str, dict[str, int]],
    axe: str,  # noqa: F811 - the fixture
) -> None:
    """axe-core over the share choice and a lesson's circle with a note, a report form and
    one's own hidden post (see tests/test_accessibility.py for the rules counted)."""
    rt, base, people = site
    for who, shown in ((people["ana"], "name"), (people["ben"], "anonymous")):
        chromium.page(
            base + path(rt, links.REFLECT, who, 1),
            run=_fill("#reflection", "Shared for the check.")
            + "document.querySelector('#share').checked = true;"
            + f"document.querySelector('#shown-{shown}').checked = true;"
            + _click("form button[type=submit]"),
        )
    chromium.page(
        base + path(rt, links.LESSON, people["ben"], 1),
        run=_fill("textarea[name=text]", "A note.")
        + "document.querySelector('textarea[name=text]').form.querySelector('button').click();",
    )
    listed = run_cli(rt.settings, "circle", "list", "--cohort", "spring")
    ben_ref = next(line.split("\t")[0] for line in listed.output.splitlines() if "ben@" in line)
    run_cli(rt.settings, "circle", "hide", ben_ref, "--reason", "For the check")
    for url in (
        path(rt, links.REFLECT, people["ana"], 1),
        path(rt, links.LESSON, people["ben"], 1),
        path(rt, links.LESSON, people["ana"], 1),
        path(rt, links.JOURNAL, people["ana"]),
    ):
        assert serious(chromium.accessibility(base + url, PHONE, axe)) == [], url


def test_screenshots_are_in_docs() -> None:
    """The screenshots this test makes are kept in docs/ (remade by ``make screenshots``)."""
    docs = Path(__file__).resolve().parent.parent / "docs"
    for name in ("circle-share-375px.png", "circle-lesson-375px.png"):
        assert (docs / name).is_file() and (docs / name).stat().st_size > 10_000, name
