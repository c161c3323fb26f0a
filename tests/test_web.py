"""The pages behind the links in every lesson: reflect, journal, unsubscribe, and their guards."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import html
import http.client
import io
import json
import logging
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from freezegun import freeze_time
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy import select
from werkzeug.serving import make_server

from dripcourse import db, links
from dripcourse.db import transaction
from dripcourse.models import Delivery, DeliveryStatus, Enrollment, EnrollmentStatus, Reflection
from dripcourse.reader import reflections
from dripcourse.reader.pages import leaving, reflecting
from dripcourse.runtime import Runtime
from dripcourse.sending import batch as sending
from dripcourse.sending import claim as delivery
from dripcourse.web import RedactingRequestHandler, create_app, redact
from tests.conftest import make_settings
from tests.smtp_sink import SMTPSink
from tests.test_web_support import (
    DAY,
    DAY_1_UTC,
    Clock,
    enroll,
    form_token,
    linked,
    load,
    make_app,
    path,
    post_form,
    run_cli,
    send_days,
    tick,
    token,
)
from tests.workers import settings_env

NOW = DAY_1_UTC + 2 * DAY + dt.timedelta(hours=5)  # Wednesday noon, after Day 3 went out


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def client(rt: Runtime, clock: Clock) -> FlaskClient:
    return make_app(rt, clock).test_client()


@pytest.fixture
def ana(rt: Runtime) -> int:
    """A subscriber who has received Days 1-3 of seven."""
    enrollment_id = enroll(rt, "ana@example.org")
    send_days(rt, 3)
    assert load(rt, enrollment_id).day == 3
    return enrollment_id


def stored(rt: Runtime) -> list[reflections.WrittenReflection]:
    with transaction(rt.sessions) as session:
        rows = session.scalars(select(Reflection).order_by(Reflection.day))
        return [reflections.WrittenReflection.opened(r, rt.reflection_cipher) for r in rows]


# -- reflecting --------------------------------------------------------------------------


def test_reflect_page_shows_the_days_question_and_a_form(
    rt: Runtime, client: FlaskClient, ana: int
) -> None:
    lesson = rt.catalog.course("white-coat").lesson(2)
    response = client.get(path(rt, links.REFLECT, ana, 2))
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert f"Day 2: {lesson.title}" in page
    assert str(lesson.prompt) in page
    for question in lesson.questions:
        assert question.replace("'", "&#39;") in page
    assert '<textarea id="reflection" name="reflection"' in page
    assert 'name="viewport"' in page and 'content="noindex' in page
    assert [ana] in linked(rt, page, links.JOURNAL)
    assert "ana@example.org" not in page


def test_saving_a_reflection_shows_when_it_was_saved(
    rt: Runtime, client: FlaskClient, clock: Clock, ana: int
) -> None:
    url = path(rt, links.REFLECT, ana, 2)
    response = post_form(client, url, reflection="The story: I must never be tired.")
    assert response.status_code == 303
    assert response.headers["Location"].startswith(url)
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "The story: I must never be tired." in page
    assert "Saved Wednesday 5 March 2025 at 12:00 (UTC)" in page
    (saved,) = stored(rt)
    assert (saved.day, saved.prompt) == (2, rt.catalog.course("white-coat").lesson(2).prompt)


@pytest.mark.parametrize(
    ("text", "notice"),
    [("Written down.", True), (None, False)],
    ids=["written", "nothing-written"],
)
def test_the_saved_notice_shows_only_when_there_is_a_saved_reflection(
    rt: Runtime, client: FlaskClient, ana: int, text: str | None, notice: bool
) -> None:
    url = path(rt, links.REFLECT, ana, 2)
    if text is not None:
        post_form(client, url, reflection=text)
    page = client.get(f"{url}?saved=1").get_data(as_text=True)
    assert ("Your reflection is saved." in page) is notice


def test_writing_again_edits_the_same_reflection(
    rt: Runtime, client: FlaskClient, clock: Clock, ana: int
) -> None:
    url = path(rt, links.REFLECT, ana, 1)
    post_form(client, url, reflection="First thoughts.")
    clock.now = NOW + dt.timedelta(hours=3)
    post_form(client, url, reflection="Second thoughts,\r\non reflection.")
    (saved,) = stored(rt)
    assert saved.body == "Second thoughts,\non reflection."
    assert (saved.created_at, saved.updated_at) == (NOW, NOW + dt.timedelta(hours=3))
    page = client.get(url).get_data(as_text=True)
    assert "Saved Wednesday 5 March 2025 at 15:00 (UTC)" in page
    assert "; first written Wednesday 5 March 2025 at 12:00 (UTC)." in page
    assert "(UTC))" not in page, "no brackets inside brackets"
    assert "First thoughts." not in page


def test_saving_an_emptied_box_says_the_earlier_reflection_is_kept(
    rt: Runtime, client: FlaskClient, ana: int
) -> None:
    url = path(rt, links.REFLECT, ana, 1)
    post_form(client, url, reflection="First thoughts.")
    response = post_form(client, url, reflection="   ")
    assert response.status_code == 400
    page = " ".join(response.get_data(as_text=True).split())
    assert "The box was empty, so nothing was saved: your reflection for this day is kept" in page
    assert "First thoughts." in page  # shown again, not an empty box
    (saved,) = stored(rt)
    assert saved.body == "First thoughts."


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "Your reflection is empty"),
        (" \r\n\t ", "Your reflection is empty"),
        ("\u200b\ufeff", "Your reflection is empty"),
        ("x" * 41, "the limit is 40"),
    ],
    ids=["empty", "blank", "zero-width", "one-over-the-limit"],
)
def test_rejected_reflection_keeps_the_text_and_says_why(
    tmp_path: Path, sqlite_url: str, clock: Clock, text: str, message: str
) -> None:
    rt = Runtime(make_settings(tmp_path, database_url=sqlite_url, reflection_max_chars=40))
    enrollment_id = enroll(rt)
    send_days(rt, 1)
    client = make_app(rt, clock).test_client()
    response = post_form(client, path(rt, links.REFLECT, enrollment_id, 1), reflection=text)
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert message in page
    assert f">{text}</textarea>" in page
    assert stored(rt) == []
    rt.close()


def test_reflection_at_the_limit_is_saved(tmp_path: Path, sqlite_url: str, clock: Clock) -> None:
    rt = Runtime(make_settings(tmp_path, database_url=sqlite_url, reflection_max_chars=40))
    enrollment_id = enroll(rt)
    send_days(rt, 1)
    client = make_app(rt, clock).test_client()
    response = post_form(client, path(rt, links.REFLECT, enrollment_id, 1), reflection="é" * 40)
    assert response.status_code == 303
    assert [r.body for r in stored(rt)] == ["é" * 40]
    rt.close()


def test_a_huge_post_is_refused_before_it_is_read(
    rt: Runtime, client: FlaskClient, ana: int
) -> None:
    url = path(rt, links.REFLECT, ana, 1)
    token = form_token(client.get(url).get_data(as_text=True))
    big = "x" * (rt.settings.reflection_max_chars * 12 + 100 * 1024)
    response = client.post(url, data={"form_token": token, "reflection": big})
    assert response.status_code == 413
    assert "too long" in response.get_data(as_text=True)
    assert stored(rt) == []


# Each form post, and the fields it sends besides the page's form token (None: no form token).
FORM_POSTS = {
    "reflect": (lambda rt: path(rt, links.REFLECT, 1, 2), {"reflection": "Slowly sent. " * 1500}),
    "pause": (lambda rt: path(rt, links.PAUSE, 1), {"action": "pause"}),
    "unsubscribe": (lambda rt: path(rt, links.UNSUBSCRIBE, 1), {}),
    "one-click unsubscribe": (
        lambda rt: path(rt, links.UNSUBSCRIBE, 1),
        {"List-Unsubscribe": "One-Click", "form_token": None},
    ),
}


@pytest.mark.parametrize(("make_url", "fields"), FORM_POSTS.values(), ids=FORM_POSTS.keys())
def test_a_post_is_read_in_full_before_a_database_connection_is_taken(
    rt: Runtime,
    client: FlaskClient,
    ana: int,
    monkeypatch: pytest.MonkeyPatch,
    make_url,  # type: ignore[no-untyped-def]
    fields: dict[str, str | None],
) -> None:
    """A slow upload must not hold a pooled connection while it trickles in."""
    url = make_url(rt)
    data = {"form_token": form_token(client.get(url).get_data(as_text=True)), **fields}
    body = io.BytesIO(urllib.parse.urlencode({k: v for k, v in data.items() if v}).encode())
    read_when_opened: list[int] = []
    real_transaction = transaction

    @contextlib.contextmanager
    def watched(sessions):  # type: ignore[no-untyped-def]
        read_when_opened.append(body.tell())
        with real_transaction(sessions) as session:
            yield session

    for pages in (reflecting, leaving):
        monkeypatch.setattr(pages, "transaction", watched)
    response = client.post(
        url,
        input_stream=body,
        content_length=len(body.getvalue()),
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code in (200, 303)
    assert read_when_opened == [len(body.getvalue())]


# -- the journal and escaping ------------------------------------------------------------


def test_journal_lists_every_past_question_newest_first(
    rt: Runtime, client: FlaskClient, ana: int
) -> None:
    post_form(client, path(rt, links.REFLECT, ana, 1), reflection="Day one, written.")
    page = client.get(path(rt, links.JOURNAL, ana)).get_data(as_text=True)
    course = rt.catalog.course("white-coat")
    headings = re.findall(r"<h2>Day (\d+):", page)
    assert headings == ["3", "2", "1"]
    assert "Day one, written." in page
    assert page.count("Not written yet") == 2
    assert course.lesson(4).prompt not in page  # not sent yet
    assert [ana, 3] in linked(rt, page, links.REFLECT)


def test_journal_shows_only_the_token_holders_reflections(
    rt: Runtime, client: FlaskClient, ana: int
) -> None:
    ben = enroll(rt, "ben@example.org")
    send_days(rt, 1, first=DAY_1_UTC + 3 * DAY)
    post_form(client, path(rt, links.REFLECT, ana, 1), reflection="Ana's private words.")
    post_form(client, path(rt, links.REFLECT, ben, 1), reflection="Ben's private words.")
    page = client.get(path(rt, links.JOURNAL, ben)).get_data(as_text=True)
    assert "Ben&#39;s private words." in page
    assert "Ana" not in page


def test_reflection_markup_is_shown_as_text_everywhere_and_exported_raw(
    rt: Runtime, client: FlaskClient, ana: int
) -> None:
    attack = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    post_form(client, path(rt, links.REFLECT, ana, 2), reflection=attack)
    for url in (path(rt, links.JOURNAL, ana), path(rt, links.REFLECT, ana, 2)):
        page = client.get(url).get_data(as_text=True)
        assert "<script>" not in page and "<img" not in page
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img" in page
    exported = run_cli(rt.settings, "reflections", "export", "--format", "json")
    assert [row["text"] for row in json.loads(exported.output)] == [attack]


@pytest.mark.parametrize(
    "make_url",
    [lambda rt: path(rt, links.REFLECT, 1, 2), lambda rt: path(rt, links.JOURNAL, 1)],
    ids=["reflect", "journal"],
)
def test_a_written_day_shows_the_question_as_first_answered(
    rt: Runtime,
    client: FlaskClient,
    ana: int,
    make_url,  # type: ignore[no-untyped-def]
) -> None:
    """The lesson's wording may change later; an answer stays beside the question it answered."""
    with transaction(rt.sessions) as session:
        found = session.get(Enrollment, ana)
        assert found is not None
        reflections.save_reflection(
            session,
            found,
            2,
            "The old wording?",
            "My answer.",
            cipher=rt.reflection_cipher,
            max_chars=99,
            now=NOW,
        )
    page = html.unescape(client.get(make_url(rt)).get_data(as_text=True))
    course = rt.catalog.course("white-coat")
    assert "The old wording?" in page and "My answer." in page
    assert course.lesson(2).prompt not in page


# -- tokens ------------------------------------------------------------------------------


def _with_ids(token: str, ids: list[int]) -> str:
    """The same signature over other ids: what someone guessing at a neighbour would try."""
    payload, rest = token.split(".", 1)
    other = base64.urlsafe_b64encode(json.dumps(ids, separators=(",", ":")).encode())
    return f"{other.rstrip(b'=').decode()}.{rest}"


def _flip_signature(token: str) -> str:
    """One character of the signature changed (the first: the last one's low bits are padding,
    so changing it may decode to the very same signature)."""
    rest, signature = token.rsplit(".", 1)
    return f"{rest}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"


# Ana is enrollment 1 and has had Days 1-4; Ben is enrollment 2 and has had Day 1.
BAD_LINKS = {
    "forged with another key": lambda rt: (
        "/j/" + URLSafeTimedSerializer("not-our-key", salt="dripcourse.journal").dumps([2])
    ),
    "tampered ids": lambda rt: "/j/" + _with_ids(token(rt, links.JOURNAL, 1), [2]),
    "tampered signature": lambda rt: "/j/" + _flip_signature(token(rt, links.JOURNAL, 2)),
    "truncated": lambda rt: "/r/" + token(rt, links.REFLECT, 2, 1)[:-6],
    "only the payload": lambda rt: "/r/" + token(rt, links.REFLECT, 2, 1).split(".")[0],
    "garbage": lambda rt: "/r/%00%ff..%3Cscript%3E",
    "very long": lambda rt: "/j/" + "A" * 5000,
    "unsubscribe token on the journal": lambda rt: "/j/" + token(rt, links.UNSUBSCRIBE, 2),
    "journal token on reflect": lambda rt: "/r/" + token(rt, links.JOURNAL, 2),
    "reflect token on unsubscribe": lambda rt: "/u/" + token(rt, links.REFLECT, 2, 1),
    "pause token on unsubscribe": lambda rt: "/u/" + token(rt, links.PAUSE, 2),
    "journal token on pause": lambda rt: "/p/" + token(rt, links.JOURNAL, 2),
    "wrong number of ids": lambda rt: "/r/" + token(rt, links.REFLECT, 2),
    # (A genuine token for an enrollment no longer there is a deleted person's link: it gets
    # "no longer available", 410; see test_privacy.py.)
    "a day not sent yet": lambda rt: "/r/" + token(rt, links.REFLECT, 1, 5),
    "day zero": lambda rt: "/r/" + token(rt, links.REFLECT, 1, 0),
    "a day past the course": lambda rt: "/r/" + token(rt, links.REFLECT, 1, 99),
}


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("make_url", BAD_LINKS.values(), ids=BAD_LINKS.keys())
def test_bad_link_gets_a_plain_404_and_nobodys_data(
    rt: Runtime, client: FlaskClient, ana: int, make_url, method: str
) -> None:  # type: ignore[no-untyped-def]
    ben = enroll(rt, "ben@example.org")
    assert (ana, ben) == (1, 2)
    send_days(rt, 1, first=DAY_1_UTC + 3 * DAY)
    post_form(client, path(rt, links.REFLECT, ben, 1), reflection="Ben's private words.")
    url = make_url(rt)
    data = {"List-Unsubscribe": "One-Click", "reflection": "overwritten"}
    response = client.open(url, method=method, data=data if method == "POST" else None)
    page = response.get_data(as_text=True)
    journal_post = method == "POST" and url.startswith("/j/")  # the journal is read-only
    assert response.status_code == (405 if journal_post else 404)
    assert journal_post or "This link is not valid" in page
    assert "private words" not in page
    assert [r.body for r in stored(rt)] == ["Ben's private words."]
    assert load(rt, ben).status == EnrollmentStatus.ACTIVE


def test_reflection_links_never_expire_unless_configured(
    tmp_path: Path, sqlite_url: str, clock: Clock
) -> None:
    rt = Runtime(make_settings(tmp_path, database_url=sqlite_url, reflect_max_age_days=30))
    enrollment_id = enroll(rt)
    send_days(rt, 1)
    client = make_app(rt, clock).test_client()
    with freeze_time("2025-03-03 08:00"):
        reflect = path(rt, links.REFLECT, enrollment_id, 1)
        journal = path(rt, links.JOURNAL, enrollment_id)
        unsubscribe = path(rt, links.UNSUBSCRIBE, enrollment_id)
    with freeze_time("2025-03-30 08:00"):
        assert [client.get(u).status_code for u in (reflect, journal)] == [200, 200]
    with freeze_time("2025-04-03 08:00"):
        assert [client.get(u).status_code for u in (reflect, journal)] == [404, 404]
        assert client.get(unsubscribe).status_code == 200  # leaving always works
    rt.close()


def test_reflection_links_do_not_expire_by_default(
    rt: Runtime, client: FlaskClient, ana: int
) -> None:
    with freeze_time("2025-03-03 08:00"):
        url = path(rt, links.REFLECT, ana, 1)
    with freeze_time("2035-03-03 08:00"):
        assert client.get(url).status_code == 200


# -- forms only from our own pages ---------------------------------------------------------


FORGED_POSTS = {
    "no form token": lambda rt, page: {},
    "form token for another day": lambda rt, page: {"form_token": _form_token_for(rt, 1, 2)},
    "form token of another purpose": lambda rt, page: {
        "form_token": _form_token_for(rt, 1, purpose=links.PAUSE)
    },
    "form token signed with another key": lambda rt, page: {
        "form_token": URLSafeTimedSerializer("x", salt="dripcourse.form").dumps(["reflect", 1, 1])
    },
    "the link token as form token": lambda rt, page: {"form_token": token(rt, links.REFLECT, 1, 1)},
}


def _form_token_for(rt: Runtime, *ids: int, purpose: str = links.REFLECT) -> str:
    signer = URLSafeTimedSerializer(rt.links.secret_key, salt="dripcourse.form")
    return signer.dumps([purpose, *ids])


@pytest.mark.parametrize("forge", FORGED_POSTS.values(), ids=FORGED_POSTS.keys())
def test_reflection_post_without_our_form_token_is_refused(
    rt: Runtime, client: FlaskClient, ana: int, forge
) -> None:  # type: ignore[no-untyped-def]
    url = path(rt, links.REFLECT, ana, 1)
    page = client.get(url).get_data(as_text=True)
    response = client.post(url, data={"reflection": "planted", **forge(rt, page)})
    assert response.status_code == 403
    assert stored(rt) == []


def test_reflection_post_from_another_site_is_refused(
    rt: Runtime, client: FlaskClient, ana: int
) -> None:
    url = path(rt, links.REFLECT, ana, 1)
    token = form_token(client.get(url).get_data(as_text=True))
    data = {"form_token": token, "reflection": "planted"}
    for site in ("cross-site", "same-site"):
        assert client.post(url, data=data, headers={"Sec-Fetch-Site": site}).status_code == 403
    assert stored(rt) == []
    assert client.post(url, data=data, headers={"Sec-Fetch-Site": "same-origin"}).status_code == 303


def test_a_form_left_open_too_long_keeps_the_text_to_save_again(
    rt: Runtime, clock: Clock, ana: int
) -> None:
    client = make_app(rt, clock, FORM_MAX_AGE_SECONDS=-1).test_client()
    response = post_form(client, path(rt, links.REFLECT, ana, 1), reflection="Long thoughts.")
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "press Save again" in page
    assert ">Long thoughts.</textarea>" in page
    assert stored(rt) == []


# -- on every response -------------------------------------------------------------------


PAGES = {
    "reflect": lambda rt: path(rt, links.REFLECT, 1, 1),
    "journal": lambda rt: path(rt, links.JOURNAL, 1),
    "pause": lambda rt: path(rt, links.PAUSE, 1),
    "unsubscribe": lambda rt: path(rt, links.UNSUBSCRIBE, 1),
    "bad link": lambda rt: "/r/nonsense",
    "no such page": lambda rt: "/",
}


@pytest.mark.parametrize("make_url", PAGES.values(), ids=PAGES.keys())
def test_every_page_is_private_and_locked_down(
    rt: Runtime, client: FlaskClient, ana: int, make_url
) -> None:  # type: ignore[no-untyped-def]
    response = client.get(make_url(rt))
    csp = response.headers["Content-Security-Policy"]
    for rule in ("default-src 'none'", "style-src 'self'", "form-action 'self'"):
        assert rule in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    page = response.get_data(as_text=True)
    assert '<meta name="robots" content="noindex' in page
    assert "<script" not in page and "http" not in page.split("</head>")[1]  # no outside assets
    assert "Set-Cookie" not in response.headers


def test_the_stylesheet_is_ours_and_in_the_course_colours(client: FlaskClient) -> None:
    response = client.get("/static/web.css")
    assert response.status_code == 200
    assert response.mimetype == "text/css"
    assert "#2f6f61" in response.get_data(as_text=True)
    assert response.headers["X-Content-Type-Options"] == "nosniff"


# -- unsubscribing -----------------------------------------------------------------------


def _statuses(rt: Runtime) -> dict[str, str]:
    rows = json.loads(run_cli(rt.settings, "status", "--json").output)
    return {row["email"]: row["status"] for row in rows}


def test_one_click_unsubscribe_works_with_no_cookie_or_form_and_is_final(
    rt: Runtime, client: FlaskClient, ana: int
) -> None:
    ben = enroll(rt, "ben@example.org")
    url = path(rt, links.UNSUBSCRIBE, ana)
    provider = make_app(rt, Clock(NOW)).test_client(use_cookies=False)
    response = provider.post(
        url,
        data="List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200
    assert "You are unsubscribed" in response.get_data(as_text=True)
    assert _statuses(rt) == {"ana@example.org": "unsubscribed", "ben@example.org": "active"}
    # The rest of the course comes due for Ben; nothing more goes to Ana.
    outbox = Path(rt.settings.mail_url.removeprefix("file://"))
    before = set(outbox.iterdir())
    send_days(rt, 7, first=DAY_1_UTC + 3 * DAY)
    new = [p.read_bytes() for p in set(outbox.iterdir()) - before]
    assert len(new) == 7 and all(b"ben@example.org" in m for m in new)
    assert not any(b"ana@example.org" in m for m in new)
    assert load(rt, ben).day == 7 and load(rt, ana).day == 3
    status = run_cli(rt.settings, "status").output
    assert "1 unsubscribed" in status


# RFC 8058 asks for a form-encoded body; providers differ in what else they send with it.
ONE_CLICK_POSTS = {
    "form-encoded": ("List-Unsubscribe=One-Click", "application/x-www-form-urlencoded"),
    "form-encoded, trailing CRLF": (
        "List-Unsubscribe=One-Click\r\n",
        "application/x-www-form-urlencoded",
    ),
    "form-encoded, charset": (
        "List-Unsubscribe=One-Click\n",
        "application/x-www-form-urlencoded; charset=utf-8",
    ),
    "multipart": ({"List-Unsubscribe": "One-Click"}, "multipart/form-data"),
    "multipart, trailing CRLF": ({"List-Unsubscribe": "One-Click\r\n"}, "multipart/form-data"),
    "text/plain, trailing CRLF": ("List-Unsubscribe=One-Click\r\n", "text/plain"),
    "no content type": ("List-Unsubscribe=One-Click", None),
}


@pytest.mark.parametrize(
    ("body", "content_type"), ONE_CLICK_POSTS.values(), ids=ONE_CLICK_POSTS.keys()
)
def test_one_click_is_accepted_however_the_provider_encodes_it(
    rt: Runtime, ana: int, body: str | dict[str, str], content_type: str | None
) -> None:
    provider = make_app(rt, Clock(NOW)).test_client(use_cookies=False)
    response = provider.post(path(rt, links.UNSUBSCRIBE, ana), data=body, content_type=content_type)
    assert response.status_code == 200
    assert "You are unsubscribed" in response.get_data(as_text=True)
    assert load(rt, ana).status == EnrollmentStatus.UNSUBSCRIBED


def test_unsubscribe_cancels_a_lesson_waiting_to_go_out(
    rt: Runtime, client: FlaskClient, ana: int
) -> None:
    claimed: list[int] = []
    delivery.tick(rt, DAY_1_UTC + 3 * DAY, claimed.extend)  # Day 4 claimed, not yet sent
    client.post(path(rt, links.UNSUBSCRIBE, ana), data={"List-Unsubscribe": "One-Click"})
    with transaction(rt.sessions) as session:
        day_4 = session.get(Delivery, claimed[0])
        assert day_4 is not None and day_4.status == DeliveryStatus.CANCELLED
    assert sending.send_delivery(rt, claimed[0], DAY_1_UTC + 3 * DAY) != sending.Outcome.SENT
    assert load(rt, ana).day == 3


def test_opening_the_unsubscribe_link_only_asks(rt: Runtime, client: FlaskClient, ana: int) -> None:
    for _ in range(3):  # a mail scanner following the link, more than once
        response = client.get(path(rt, links.UNSUBSCRIBE, ana))
        assert response.status_code == 200
        page = response.get_data(as_text=True)
        assert "Unsubscribe?" in page and '<form method="post"' in page
    assert load(rt, ana).status == EnrollmentStatus.ACTIVE
    assert [ana] in linked(rt, page, links.PAUSE)  # offered a pause instead


def test_unsubscribe_button_unsubscribes_and_a_second_time_is_harmless(
    rt: Runtime, client: FlaskClient, ana: int
) -> None:
    url = path(rt, links.UNSUBSCRIBE, ana)
    first = post_form(client, url)
    assert first.status_code == 200 and "You are unsubscribed" in first.get_data(as_text=True)
    again = client.post(url, data={"List-Unsubscribe": "One-Click"})
    assert again.status_code == 200
    assert "You are unsubscribed" in client.get(url).get_data(as_text=True)
    assert load(rt, ana).status == EnrollmentStatus.UNSUBSCRIBED


REFUSED_POSTS = {
    "empty": ({}, None),
    "not one-click": ({"List-Unsubscribe": "yes"}, None),
    "forged form token": ({"form_token": "forged"}, None),
    "one-click with more after it": ("List-Unsubscribe=One-Click-Later", "text/plain"),
    "one-click as another field's value": ("note=List-Unsubscribe=One-Click", "text/plain"),
}


@pytest.mark.parametrize(("data", "content_type"), REFUSED_POSTS.values(), ids=REFUSED_POSTS.keys())
def test_unsubscribe_post_neither_one_click_nor_from_our_page_is_refused(
    rt: Runtime,
    client: FlaskClient,
    ana: int,
    data: str | dict[str, str],
    content_type: str | None,
) -> None:
    response = client.post(path(rt, links.UNSUBSCRIBE, ana), data=data, content_type=content_type)
    assert response.status_code == 403
    assert load(rt, ana).status == EnrollmentStatus.ACTIVE


# -- over real HTTP, from a delivered lesson ------------------------------------------------


@pytest.fixture
def live(tmp_path: Path, sqlite_url: str, smtp_sink: SMTPSink) -> Iterator[Runtime]:
    """The web app on a loopback port, with lessons mailed to ``smtp_sink`` linking to it."""
    holder: dict[str, Flask] = {}
    # The server comes first so the settings' base_url can name its port.
    server = make_server(
        "127.0.0.1",
        0,
        lambda env, start: holder["app"](env, start),
        threaded=True,
        request_handler=RedactingRequestHandler,
    )
    base_url = f"http://127.0.0.1:{server.server_port}"
    rt = Runtime(
        make_settings(tmp_path, database_url=sqlite_url, mail_url=smtp_sink.url, base_url=base_url)
    )
    holder["app"] = create_app(rt)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rt
    server.shutdown()
    thread.join(timeout=5)
    rt.close()


def _fetch(url: str, data: dict[str, str] | None = None) -> tuple[int, str]:
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    try:
        with urllib.request.urlopen(url, data=body, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.slow
def test_reflecting_from_a_delivered_lesson_over_real_http(
    live: Runtime, smtp_sink: SMTPSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="werkzeug")
    enrollment_id = enroll(live, "ana@example.org")
    tick(live, DAY_1_UTC)
    (received,) = smtp_sink.handler.received
    message = received.message
    text = message.get_body(("plain",)).get_content()
    reflect = re.search(r"http://127\.0\.0\.1:\d+/r/[\w.-]+", text)
    journal = re.search(r"http://127\.0\.0\.1:\d+/j/[\w.-]+", text)
    assert reflect and journal, text
    # No tracking: no images at all, and every link goes straight to its page, not a redirect.
    lesson_html = message.get_body(("html",)).get_content()
    assert "<img" not in lesson_html
    hrefs = re.findall(r'href="([^"]+)"', lesson_html)
    pages = {urllib.parse.urlsplit(h).path.split("/")[1] for h in hrefs}
    assert pages == {"r", "j", "p", "u", "l", "s", "privacy"}
    assert {h.split("/")[2] for h in hrefs} == {live.settings.base_url.split("/")[2]}

    status, page = _fetch(reflect.group())
    assert status == 200
    assert live.catalog.course("white-coat").lesson(1).prompt in html.unescape(page)
    status, page = _fetch(
        reflect.group(),
        {"form_token": form_token(page), "reflection": "What I noticed: <b>tired</b>."},
    )
    assert status == 200  # after the redirect back to the page
    assert "What I noticed: &lt;b&gt;tired&lt;/b&gt;." in page and "Saved " in page
    assert [(r.enrollment_id, r.day, r.body) for r in stored(live)] == [
        (enrollment_id, 1, "What I noticed: <b>tired</b>.")
    ]
    status, page = _fetch(journal.group())
    assert status == 200 and "What I noticed: &lt;b&gt;tired&lt;/b&gt;." in page

    # The header a mail provider uses for its one-click button, posted the way it would be.
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    (header,) = re.findall(r"<([^>]+)>", str(message["List-Unsubscribe"]))
    unsubscribe = urllib.parse.urlsplit(header)
    connection = http.client.HTTPConnection(unsubscribe.hostname, unsubscribe.port, timeout=10)
    connection.request(
        "POST",
        unsubscribe.path,
        body="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    response = connection.getresponse()
    assert response.status == 200
    assert "Set-Cookie" not in response.headers
    connection.close()
    assert tick(live, DAY_1_UTC + DAY) == []
    assert len(smtp_sink.handler.received) == 1

    # The server's request log shows which page, never whose.
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "werkzeug")
    assert "POST /r/<token> HTTP/1.1" in logged
    assert reflect.group().rsplit("/", 1)[1] not in logged


@pytest.mark.parametrize(
    ("line", "logged"),
    [
        ("GET /r/WzEsMV0.awbPug.Q_QL HTTP/1.1", "GET /r/<token> HTTP/1.1"),
        ("POST /u/WzFd.awbPug.MlJW?x=1 HTTP/1.1", "POST /u/<token>?x=1 HTTP/1.1"),
        ("POST /c/WzEsMSwiayJd.awbPug.Q_QL HTTP/1.1", "POST /c/<token> HTTP/1.1"),
        ("POST /h/WzEsMSwiayJd.awbPug.Q_QL HTTP/1.1", "POST /h/<token> HTTP/1.1"),
        ("GET /s/WzEsMSwiayJd.awbPug.Q_QL HTTP/1.1", "GET /s/<token> HTTP/1.1"),
        ("GET /static/web.css HTTP/1.1", "GET /static/web.css HTTP/1.1"),
    ],
)
def test_request_logs_leave_out_the_token(line: str, logged: str) -> None:
    assert redact(line) == logged


# Which core function fails, and on which page.
FAILURES = {
    "journal": ("journal", lambda rt: path(rt, links.JOURNAL, 1)),
    "reflect": ("get_reflection", lambda rt: path(rt, links.REFLECT, 1, 2)),
}


@pytest.mark.parametrize(("broken", "make_url"), FAILURES.values(), ids=FAILURES.keys())
def test_an_unexpected_failure_is_a_plain_500_logged_without_the_token(
    rt: Runtime,
    clock: Clock,
    ana: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    broken: str,
    make_url,  # type: ignore[no-untyped-def]
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(reflections, broken, fail)
    # As in production: the error becomes a response instead of reaching the test.
    client = make_app(rt, clock, PROPAGATE_EXCEPTIONS=False).test_client()
    url = make_url(rt)
    page_path, token = url.rsplit("/", 1)
    with caplog.at_level(logging.ERROR):
        response = client.get(url)
    page = response.get_data(as_text=True)
    assert response.status_code == 500
    assert "Something went wrong" in page
    assert "the database went away" not in page and "Traceback" not in page
    assert response.headers["Referrer-Policy"] == "no-referrer"
    # The log says which page failed and why, never whose page it was.
    assert f"Exception on {page_path}/<token> [GET]" in caplog.text
    assert "RuntimeError: the database went away" in caplog.text
    assert token not in caplog.text


# -- serving -------------------------------------------------------------------------------


def test_create_app_with_no_arguments_reads_the_settings_like_gunicorn_would(
    rt: Runtime, ana: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in settings_env(rt.settings).items():
        monkeypatch.setenv(name, value)
    app = create_app()  # as in: gunicorn 'dripcourse.web:create_app()'
    response = app.test_client().get(path(rt, links.JOURNAL, ana))
    assert response.status_code == 200
    app.extensions["dripcourse"].close()


@pytest.mark.parametrize(
    ("args", "where"),
    [([], ("127.0.0.1", 8000)), (["--host", "0.0.0.0", "--port", "8123"], ("0.0.0.0", 8123))],
    ids=["settings", "options"],
)
def test_web_command_serves_where_it_is_told(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, args: list[str], where: tuple[str, int]
) -> None:
    served: list[tuple[str, int]] = []
    monkeypatch.setattr(Flask, "run", lambda app, host, port, **_: served.append((host, port)))
    result = run_cli(rt.settings, "web", *args)
    assert result.exit_code == 0, result.output
    assert served == [where]
    assert f"http://{where[0]}:{where[1]}/" in result.output


def test_the_web_app_started_before_init_makes_no_database_and_says_it_is_not_ready(
    tmp_path: Path,
) -> None:
    """gunicorn started before `dripcourse init` made an empty SQLite file, and every page
    then failed on missing tables (a 500), while other commands took the file for set up."""
    settings = make_settings(tmp_path)
    app = create_app(settings)
    rt = Runtime(settings)
    response = app.test_client().get(f"/r/{rt.links.token(links.REFLECT, 1, 1, key='k')}")
    assert response.status_code == 503
    assert "Please try again in a few minutes" in response.get_data(as_text=True)
    assert not (tmp_path / "dripcourse.sqlite3").exists()


def test_the_web_app_started_before_init_makes_no_key_file_either(tmp_path: Path) -> None:
    """With the embedded key (kept in var/), it made var/secret_key before answering 503."""
    settings = make_settings(tmp_path, secret_key="")
    response = create_app(settings).test_client().get("/privacy")
    assert response.status_code == 503
    assert not (tmp_path / "var").exists()


@pytest.mark.parametrize("revision", ["base", "-1"], ids=["not-set-up", "older"])
def test_the_web_app_on_a_database_init_has_not_brought_to_this_version_says_it_is_not_ready(
    tmp_path: Path, database_url: str, revision: str
) -> None:
    """A PostgreSQL database is made by its administrator, not by `dripcourse init`: gunicorn
    started on it before `init` (or before the `init` of a new release) answered every page
    with a 500 and a traceback in the log ("relation enrollments does not exist", a column
    missing), not with the "try again" the pages give until `init` has run."""
    engine = db.make_engine(database_url)
    db.downgrade(engine, revision)
    engine.dispose()
    settings = make_settings(tmp_path, database_url=database_url)
    app = create_app(settings)
    rt = Runtime(settings)
    try:
        response = app.test_client().get(path(rt, links.REFLECT, 1, 1))
        assert response.status_code == 503
        assert "Please try again in a few minutes" in response.get_data(as_text=True)
        assert app.test_client().get("/static/web.css").status_code == 200
        # Once `init` has run, the pages work without a restart.
        engine = db.make_engine(database_url)
        db.upgrade(engine)
        engine.dispose()
        assert app.test_client().get(path(rt, links.REFLECT, 1, 1)).status_code == 410  # no one
    finally:
        rt.close()
        app.extensions["dripcourse"].close()
