"""The next lesson says how many colleagues shared, when at least two did: a count and a link,
never a word of theirs."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from dripcourse import links
from dripcourse.db import transaction
from dripcourse.reader import circle_moderation
from dripcourse.runtime import Runtime
from tests.test_web_support import DAY, DAY_1_UTC, Clock, enroll, make_app, path, post_form, tick

WORDS = {"ana": "Ana's own words stay out of email.", "cleo": "Cleo's words, not in email."}


@pytest.fixture
def spring(rt: Runtime) -> dict[str, int]:
    """Ana, Ben and Cleo in one cohort, Day 1 sent."""
    found = {name: enroll(rt, f"{name}@example.org") for name in ("ana", "ben", "cleo")}
    tick(rt, DAY_1_UTC)
    return found


def _share(rt: Runtime, client: FlaskClient, who: int, words: str) -> None:
    post_form(
        client,
        path(rt, links.REFLECT, who, 1),
        reflection=words,
        circle="1",
        share="yes",
        shown_as="name",
    )


def _day_2(rt: Runtime, name: str) -> tuple[str, str]:
    """The text and HTML parts of the Day 2 lesson sent to ``name``."""
    outbox = Path(rt.settings.mail_url.removeprefix("file://"))
    (found,) = [p for p in outbox.glob("*day02*.eml") if f"-{name}@" in p.name]
    msg = email.message_from_bytes(found.read_bytes(), policy=email.policy.default)
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    return text, html


def test_the_next_lesson_counts_colleagues_who_shared_and_links_to_them(
    rt: Runtime, spring: dict[str, int]
) -> None:
    client = make_app(rt, Clock(DAY_1_UTC + DAY / 2)).test_client()
    for name in ("ana", "cleo"):
        _share(rt, client, spring[name], WORDS[name])
    tick(rt, DAY_1_UTC + DAY)
    text, html = _day_2(rt, "ben")
    line = "2 colleagues in your cohort shared their reflection on Day 1"
    assert line in " ".join(text.split()) and line in html
    linked = [
        rt.links.load(links.LESSON, token)
        for token in __import__("re").findall(r"/l/([A-Za-z0-9_.-]+)#circle", html)
    ]
    assert linked == [[spring["ben"], 1]]
    for name in ("ana", "ben", "cleo"):
        text, html = _day_2(rt, name)
        for words in WORDS.values():
            assert words not in text and words.replace("'", "&#39;") not in html
    # Ana and Cleo each have only one other who shared: no line for them.
    for name in ("ana", "cleo"):
        text, html = _day_2(rt, name)
        assert "colleagues in your cohort shared" not in text + html


def test_one_sharer_or_a_hidden_one_makes_no_line(rt: Runtime, spring: dict[str, int]) -> None:
    client = make_app(rt, Clock(DAY_1_UTC + DAY / 2)).test_client()
    for name in ("ana", "cleo"):
        _share(rt, client, spring[name], WORDS[name])
    with transaction(rt.sessions) as session:
        first = circle_moderation.items(session, "spring", rt.reflection_cipher)[0]
        circle_moderation.hide(session, first.ref, "hidden for the test")
    tick(rt, DAY_1_UTC + DAY)
    text, html = _day_2(rt, "ben")
    assert "colleagues in your cohort shared" not in text + html
