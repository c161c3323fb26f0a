"""Hypothesis over the cohort circle's pages: any shared text, note, name or form post is
shown as text, names no address, and never gets a 500."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from hypothesis import example, given, settings
from hypothesis import strategies as st
from itsdangerous import URLSafeTimedSerializer
from markupsafe import escape

from dripcourse import links
from dripcourse.db import transaction
from dripcourse.models import Subscriber
from dripcourse.reader import circle, reflections
from dripcourse.runtime import Runtime
from tests.test_properties import EXAMPLES
from tests.test_web_support import DAY_1_UTC, Clock, enroll, make_app, path, post_form, send_days

FEWER = settings(EXAMPLES, max_examples=60)
HOSTILE = st.text(max_size=200) | st.sampled_from(
    ["</textarea><script>x()</script>", "&amp;", "<b>bold</b>", "ana@example.org"]
)


@pytest.fixture
def pair(rt: Runtime) -> tuple[FlaskClient, int, int]:
    """Two members of one cohort who got Day 1, and a browser."""
    one = enroll(rt, "one@example.org", cohort="c")
    two = enroll(rt, "two@example.org", cohort="c")
    send_days(rt, 1)
    return make_app(rt, Clock(DAY_1_UTC)).test_client(), one, two


def _form_token(rt: Runtime, who: int, day: int) -> str:
    return URLSafeTimedSerializer(rt.links.secret_key, salt="dripcourse.form").dumps(
        ["circle", who, day]
    )


@FEWER
@given(words=HOSTILE, note=HOSTILE, name=st.text(max_size=60))
@example(words="<i>x</i>", note="</div><script>", name="Dr. <Eve> O'Neil")
def test_any_shared_text_note_and_name_is_shown_as_text_without_an_address(
    rt: Runtime, pair: tuple[FlaskClient, int, int], words: str, note: str, name: str
) -> None:
    client, one, two = pair
    with transaction(rt.sessions) as session:
        session.query(Subscriber).filter(Subscriber.email == "one@example.org").update(
            {"name": name}
        )
    saved = post_form(
        client,
        path(rt, links.REFLECT, one, 1),
        reflection=words,
        circle="1",
        share="yes",
        shown_as="name",
    )
    assert saved.status_code in (303, 400)
    with transaction(rt.sessions) as session:
        post = circle.post_of(session, one, 1)
        post_id = post.id if post else 0
    lesson = path(rt, links.LESSON, two, 1)
    noted = client.post(
        lesson + "/circle",
        data={
            "form_token": _form_token(rt, two, 1),
            "action": "note",
            "post": str(post_id),
            "text": note,
        },
    )
    assert noted.status_code == 303
    page = client.get(lesson).get_data(as_text=True)
    assert "<script" not in page
    assert "one@example.org" not in page and "two@example.org" not in page
    if post is not None and saved.status_code == 303:
        shared = reflections.clean_text(words)
        assert str(escape(shared)) in page
        author = circle.shown_name(name)
        assert str(escape(author)) in page and "@" not in author
        if "said=noted" in noted.location:
            assert str(escape(reflections.clean_text(note))) in page
    # Saved or refused, the circle holds the reflection's text as saved on the page.
    with transaction(rt.sessions) as session:
        post = circle.post_of(session, one, 1)
        kept = reflections.get_reflection(session, one, 1, rt.reflection_cipher)
        if post is not None:
            assert kept is not None
            assert rt.reflection_cipher.open(post.sealed_body) == kept.body


@FEWER
@given(
    action=st.sampled_from(["note", "delete-note", "report", "withdraw"]) | st.text(max_size=20),
    post=st.text(max_size=30) | st.integers(-5, 2**40).map(str),
    note=st.text(max_size=30) | st.integers(-5, 2**40).map(str),
    reason=st.text(max_size=30) | st.sampled_from(["spam", "other"]),
    text=st.text(max_size=50),
)
def test_any_post_to_the_circle_is_answered_without_a_server_error(
    rt: Runtime,
    pair: tuple[FlaskClient, int, int],
    action: str,
    post: str,
    note: str,
    reason: str,
    text: str,
) -> None:
    client, one, two = pair
    response = client.post(
        path(rt, links.LESSON, two, 1) + "/circle",
        data={
            "form_token": _form_token(rt, two, 1),
            "action": action,
            "post": post,
            "note": note,
            "reason": reason,
            "text": text,
        },
    )
    assert response.status_code in (303, 400, 404), response.status_code
