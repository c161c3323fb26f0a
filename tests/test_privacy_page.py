"""The privacy page, complete and true: who sees what, what is encrypted under which key, how
long each thing is kept, and how to reach the course team (also in every lesson's footer).

Each of its claims names the test that proves it in docs/security.md ("The privacy page").
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from dripcourse import links
from dripcourse.errors import ConfigError
from dripcourse.runtime import Runtime
from dripcourse.settings import load_settings
from tests.conftest import make_settings
from tests.test_web_support import DAY, DAY_1_UTC, Clock, enroll, make_app, path, send_days

NOW = DAY_1_UTC + 2 * DAY + dt.timedelta(hours=5)
TEAM = {"team_name": "The Renewal Team", "team_contact": "renewal@example.org"}


@pytest.fixture
def rt(tmp_path: Path, sqlite_url: str) -> Iterator[Runtime]:
    runtime = Runtime(make_settings(tmp_path, database_url=sqlite_url, **TEAM))
    yield runtime
    runtime.close()


def text_of(page: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def test_the_page_says_who_sees_what_what_is_encrypted_and_how_long_each_thing_is_kept(
    rt: Runtime,
) -> None:
    page = make_app(rt, Clock(NOW)).test_client().get("/privacy")
    assert page.status_code == 200
    text = text_of(page.get_data(as_text=True))
    for heading, claim in [
        ("What is encrypted, and with which key", "with a key of their own (the reflections key)"),
        ("What is encrypted, and with which key", "apart from the key that signs your links"),
        ("Who can see what", "You: everything of yours"),
        ("Who can see what", "operators see counts"),
        ("Who can see what", "each export is written in an operator log"),
        ("Who can see what", "never a count of fewer than five people"),
        ("What we store", "check-in questions"),
        ("Who can see what", "they see your name and how the lesson greets you, never your"),
        ("How long we keep it", "is deleted after 7 days"),
        ("How long we keep it", "only your email address stays, on a do-not-mail list"),
        ("How to delete it", "Delete everything about me"),
    ]:
        assert heading in text and claim in text, claim


def test_the_page_and_every_lesson_name_the_course_team_and_how_to_reach_them(
    rt: Runtime,
) -> None:
    enroll(rt, "ana@example.org")
    send_days(rt, 2)
    text = text_of(make_app(rt, Clock(NOW)).test_client().get("/privacy").get_data(as_text=True))
    assert "Who runs this course: The Renewal Team" in text
    assert "write to The Renewal Team at renewal@example.org" in text
    assert rt.outbox is not None
    lessons = sorted(rt.outbox.glob("*.eml"))
    assert len(lessons) == 2
    for lesson in lessons:
        # Soft line breaks undone, and the text part's re-flowed lines joined again.
        raw = " ".join(lesson.read_bytes().replace(b"=\r\n", b"").decode().split())
        footer = "Sent by The Renewal Team. Questions about your data: "
        assert raw.count(footer) == 2, lesson.name  # the plain text and the HTML
        assert 'href=3D"mailto:renewal@example.org"' in raw or "mailto:renewal@example.org" in raw


def test_without_a_contact_address_the_page_says_whom_to_ask(rt: Runtime) -> None:
    runtime = Runtime(dataclasses.replace(rt.settings, team_contact=""))
    try:
        text = text_of(make_app(runtime, Clock(NOW)).test_client().get("/privacy").get_data(True))
        assert "ask The Renewal Team, who enrolled you" in text
    finally:
        runtime.close()


def test_the_journal_opens_the_privacy_page_under_the_course_header_with_a_way_back(
    rt: Runtime,
) -> None:
    ana = enroll(rt, "ana@example.org")
    send_days(rt, 2)
    client = make_app(rt, Clock(NOW)).test_client()
    journal = client.get(path(rt, links.JOURNAL, ana)).get_data(as_text=True)
    (privacy,) = re.findall(r'href="(/j/[^"]+/privacy)"', journal)
    page = client.get(privacy)
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    course = rt.catalog.course("white-coat").title
    assert f'<p class="masthead">{html.escape(course)}</p>' in body
    (back,) = set(re.findall(r'href="([^"]+)">Back to your journal', body))
    assert back == privacy.removesuffix("/privacy")
    assert client.get(back).status_code == 200


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("DRIPCOURSE_TEAM_CONTACT", "not-an-address", "setting team_contact:"),
        ("DRIPCOURSE_TEAM_NAME", "   ", "setting team_name:"),
    ],
)
def test_a_wrong_team_setting_is_one_line_naming_it(name: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_settings(environ={name: value})
