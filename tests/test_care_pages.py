"""Where to turn, on the pages: the line on every page a reader writes on, the support page,
the places shown first after words of despair (by the page or by a reply), and nothing about
that written to the database, the logs or the operator log."""

from __future__ import annotations

import datetime as dt
import logging
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from dripcourse import links
from dripcourse.courses.course_folder import load_course
from dripcourse.courses.message import build_message, message_id
from dripcourse.courses.render import Renderer
from dripcourse.db import transaction
from dripcourse.inbound import route as inbound
from dripcourse.links import REPLY
from dripcourse.models import Enrollment
from dripcourse.reader import privacy
from dripcourse.runtime import Runtime
from tests.conftest import EMAILS, make_settings, utc
from tests.test_care import DESPAIR, every_row, log_mentions
from tests.test_render import LINKS, NOW, reader
from tests.test_web_support import (
    Clock,
    address,
    enroll,
    key_of,
    linked,
    make_app,
    path,
    post_form,
    send_days,
)

DOMAIN = "reply.course.example.org"
AFTER_DAY_3 = utc(2025, 3, 5, 20)  # the evening of Day 3 in London
CALM = "A long week, but the team was kind and I slept well."
AFTER_WRITING = "Thank you for writing that down."  # the start of the course's words


@pytest.fixture
def rt(tmp_path: Path, sqlite_url: str) -> Iterator[Runtime]:
    runtime = Runtime(make_settings(tmp_path, database_url=sqlite_url, reply_domain=DOMAIN))
    yield runtime
    runtime.close()


@pytest.fixture
def london(rt: Runtime) -> int:
    """A reader in London who has had Days 1-3."""
    enrollment_id = enroll(rt, "daniel@example.org", timezone="Europe/London")
    send_days(rt, 3)
    return enrollment_id


@pytest.fixture
def client(rt: Runtime) -> FlaskClient:
    return make_app(rt, Clock(AFTER_DAY_3)).test_client()


def write(client: FlaskClient, rt: Runtime, enrollment_id: int, day: int, text: str) -> str:
    """Save a reflection through the page as a browser does; the page that confirms it."""
    url = path(rt, links.REFLECT, enrollment_id, day)
    posted = post_form(client, url, reflection=text)
    assert posted.status_code == 303
    return client.get(posted.headers["Location"]).get_data(as_text=True)


def places_shown_first(page: str) -> bool:
    """Whether the places to turn come before the page's "saved" confirmation and its form."""
    care = page.find('<section class="care"')
    return -1 < care < page.find("<form") and AFTER_WRITING in page


# -- the line and the page ------------------------------------------------------------------


@pytest.mark.parametrize(
    "page",
    [
        lambda rt, e: path(rt, links.REFLECT, e, 2),
        lambda rt, e: path(rt, links.JOURNAL, e),
        lambda rt, e: path(rt, links.LESSON, e, 2),
    ],
    ids=["reflect", "journal", "lesson"],
)
def test_every_page_a_reader_writes_on_links_to_their_places_to_turn(
    rt: Runtime, london: int, client: FlaskClient, page
) -> None:  # type: ignore[no-untyped-def]
    html = client.get(page(rt, london)).get_data(as_text=True)
    line = re.search(r'<p class="support-line"><a href="(/s/[^"]+)">([^<]+)</a></p>', html)
    assert line, "no support line"
    assert line.group(2) == "Having a hard week? Where to turn, any hour"
    assert linked(rt, line.group(1), links.SUPPORT) == [[london]]
    support = client.get(line.group(1)).get_data(as_text=True)
    assert "Samaritans" in support and 'href="tel:116123"' in support


def test_the_support_page_shows_the_readers_list_and_says_how_it_was_chosen(
    rt: Runtime, london: int, client: FlaskClient
) -> None:
    page = client.get(path(rt, links.SUPPORT, london))
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    mine = html[: html.index("<details")]
    assert "Samaritans" in mine and "988" not in mine
    assert "where your time zone (Europe/London) is" in mine
    assert "Places in other countries" in html and "988 Suicide" in html  # further down
    assert page.headers["Cache-Control"] == "no-store"


def test_a_support_link_still_opens_after_the_other_links_expired(
    tmp_path: Path, sqlite_url: str
) -> None:
    rt = Runtime(make_settings(tmp_path, database_url=sqlite_url, reflect_max_age_days=30))
    enrollment_id = enroll(rt, "daniel@example.org", timezone="Europe/London")
    send_days(rt, 1)
    key, long_ago = key_of(rt, enrollment_id), utc(2024, 1, 1)  # as in an email 30+ days old
    client = make_app(rt, Clock(utc(2025, 3, 4))).test_client()
    for purpose, status in ((links.JOURNAL, 404), (links.SUPPORT, 200)):
        old = rt.links.token(purpose, enrollment_id, key=key, issued_at=long_ago)
        assert client.get(f"/{links.PATHS[purpose]}/{old}").status_code == status, purpose
    rt.close()


def test_a_forged_support_link_is_not_found_and_a_deleted_readers_still_says_where_to_turn(
    rt: Runtime, london: int, client: FlaskClient
) -> None:
    assert client.get("/s/not-a-token").status_code == 404
    url = path(rt, links.SUPPORT, london)
    with transaction(rt.sessions) as session:
        found = session.get(Enrollment, london)
        assert found is not None
        privacy.forget_subscriber(session, found.subscriber, AFTER_DAY_3)
    gone = client.get(url)
    assert gone.status_code == 410
    assert "call your local emergency number" in gone.get_data(as_text=True)


def test_a_country_set_for_the_reader_picks_their_list(rt: Runtime, client: FlaskClient) -> None:
    enrollment_id = enroll(rt, "ana@example.org", timezone="UTC")
    with transaction(rt.sessions) as session:
        found = session.get(Enrollment, enrollment_id)
        assert found is not None
        found.subscriber.country = "NZ"
    html = client.get(path(rt, links.SUPPORT, enrollment_id)).get_data(as_text=True)
    mine = html[: html.index("<details")]
    assert "1737" in mine and "the country the course team set for you" in mine


# -- after writing --------------------------------------------------------------------------


@pytest.mark.parametrize("lang", sorted(DESPAIR))
def test_a_reflection_with_words_of_despair_is_confirmed_with_the_places_first(
    rt: Runtime, london: int, client: FlaskClient, lang: str
) -> None:
    page = write(client, rt, london, 2, f"{CALM}\n\n{DESPAIR[lang][0]}")
    assert places_shown_first(page)
    care = page[page.index('<section class="care"') : page.index("</section>")]
    assert "Samaritans" in care and 'href="tel:999"' in care
    assert "Your reflection is saved." in page


def test_a_calm_reflection_is_confirmed_without_them(
    rt: Runtime, london: int, client: FlaskClient
) -> None:
    page = write(client, rt, london, 2, CALM)
    assert "Your reflection is saved." in page
    assert '<section class="care"' not in page and AFTER_WRITING not in page
    # Opening the page again without saving shows the line, not the places.
    again = client.get(path(rt, links.REFLECT, london, 2)).get_data(as_text=True)
    assert '<section class="care"' not in again and "support-line" in again


def test_saving_words_of_despair_writes_nothing_a_calm_reflection_would_not(
    rt: Runtime, london: int, client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The check leaves no trace: the database changes exactly as for a calm reflection (one
    reflection row, sealed), no log line mentions it, the operator log stays empty and no
    mail goes out."""
    operator_log = Path(rt.settings.var_dir) / "operator.log"
    outbox = Path(rt.settings.mail_url.removeprefix("file://"))
    mailed = sorted(outbox.iterdir())
    changed = {}
    for day, text in ((1, CALM), (2, DESPAIR["en"][4])):
        before = every_row(rt.engine)
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            page = write(client, rt, london, day, text)
            journal = client.get(path(rt, links.JOURNAL, london)).get_data(as_text=True)
        after = every_row(rt.engine)
        changed[text] = {t for t in after if after[t] != before[t]}
        assert log_mentions(caplog.records, text, "despair", "care", "support", "turn") == []
        if text != CALM:
            assert places_shown_first(page) and '<section class="care"' in journal
    assert changed[CALM] == changed[DESPAIR["en"][4]] == {"reflections"}
    assert not operator_log.exists()
    assert sorted(outbox.iterdir()) == mailed


# -- a reply by email: the journal is its confirmation --------------------------------------


def reply(rt: Runtime, enrollment_id: int, day: int, text: str, when: dt.datetime) -> None:
    """A reply to Day ``day``'s lesson, through the one inbound routing step."""
    to = address(rt, REPLY, enrollment_id, day, DOMAIN)
    raw = (
        f"From: Daniel <daniel@example.org>\r\nTo: <{to}>\r\n"
        f"Subject: Re: Day {day}\r\nMessage-ID: <{day}.{abs(hash(text))}@example.org>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"{text}\r\n"
    ).encode()
    with transaction(rt.sessions) as session:
        decision = inbound.process(session, raw, rt.inbound, now=when)
    assert decision.kind == "reply", decision.describe()


def test_a_reply_in_despair_shows_the_places_at_the_top_of_the_journal_that_day(
    rt: Runtime, london: int, caplog: pytest.LogCaptureFixture
) -> None:
    reply(rt, london, 3, DESPAIR["en"][0], AFTER_DAY_3)
    before = every_row(rt.engine)
    with caplog.at_level(logging.DEBUG):
        same_day = make_app(rt, Clock(AFTER_DAY_3)).test_client()
        html = same_day.get(path(rt, links.JOURNAL, london)).get_data(as_text=True)
    assert -1 < html.find('<section class="care"') < html.find('<section class="entry">')
    assert "Samaritans" in html[: html.find('<section class="entry">')]
    assert every_row(rt.engine) == before, "viewing the journal wrote something"
    assert log_mentions(caplog.records, "despair", "care", "support", "turn") == []
    # Next day, the journal is a journal again: the places were never stored anywhere.
    next_day = make_app(rt, Clock(utc(2025, 3, 6, 12))).test_client()
    html = next_day.get(path(rt, links.JOURNAL, london)).get_data(as_text=True)
    assert '<section class="care"' not in html and "support-line" in html


def test_a_calm_reply_leaves_the_journal_as_it_is(rt: Runtime, london: int) -> None:
    reply(rt, london, 3, CALM, AFTER_DAY_3)
    html = make_app(rt, Clock(AFTER_DAY_3)).test_client().get(path(rt, links.JOURNAL, london))
    assert '<section class="care"' not in html.get_data(as_text=True)


# -- the last lesson and the completion note ------------------------------------------------


def test_the_completion_note_points_to_the_places_to_turn(rt: Runtime) -> None:
    enrollment_id = enroll(rt, "daniel@example.org", timezone="Europe/London")
    send_days(rt, 7)
    client = make_app(rt, Clock(utc(2025, 3, 9, 20))).test_client()
    for url in (path(rt, links.JOURNAL, enrollment_id), path(rt, links.LESSON, enrollment_id, 7)):
        html = client.get(url).get_data(as_text=True)
        note = html[
            html.index("Course completed.") : html.index("</div>", html.index("Course completed."))
        ]
        found = re.search(r'href="(/s/[^"]+)">where to turn, any hour', note)
        assert found, url
        assert linked(rt, found.group(1), links.SUPPORT) == [[enrollment_id]]


def test_a_support_link_is_logged_without_its_token() -> None:
    from dripcourse.web import redact

    assert redact("GET /s/WzEsInVtcTd3eGFodnM1bSJd.axb0cA.-DRvxGYD5rCk HTTP/1.1") == (
        "GET /s/<token> HTTP/1.1"
    )


def test_a_course_without_a_list_still_says_call_your_local_emergency_number(
    tmp_path: Path, sqlite_url: str
) -> None:
    emails = tmp_path / "emails"
    shutil.copytree(EMAILS, emails)
    (emails / "white-coat" / "support.toml").unlink()
    rt = Runtime(make_settings(tmp_path, database_url=sqlite_url, emails_dir=str(emails)))
    enrollment_id = enroll(rt, "daniel@example.org", timezone="Europe/London")
    send_days(rt, 1)
    html = (
        make_app(rt, Clock(AFTER_DAY_3)).test_client().get(path(rt, links.SUPPORT, enrollment_id))
    )
    assert "Call your local emergency number, or your own doctor." in html.get_data(as_text=True)
    rt.close()


# -- the lessons ----------------------------------------------------------------------------


def lesson_parts(emails: Path, day: int) -> tuple[str, str]:
    """The HTML and plain text of Day ``day`` as Amara (enrollment 42) receives it."""
    rendered = Renderer(emails).lesson(load_course(emails, "white-coat"), day)
    msg = build_message(rendered, reader(day=day), now=NOW, msg_id=message_id("e.org", 7, "s"))
    text, html = (part.get_payload(decode=True).decode() for part in msg.get_payload())
    return html, text


def support_links(part: str) -> list[list[int]]:
    """The ids behind each support link in a lesson's HTML or text."""
    found = re.findall(r"https://course\.example\.org/s/([\w.\-]+)", part)
    return [LINKS.load(links.SUPPORT, token) for token in found]


@pytest.mark.parametrize("day", range(1, 8))
def test_every_lesson_footer_links_to_the_readers_places_when_the_course_says_so(
    day: int,
) -> None:
    html, text = lesson_parts(EMAILS, day)
    assert support_links(html) == support_links(text) == [[42]]
    assert "Having a hard week? Where to turn, any hour</a>" in html
    assert "Having a hard week? Where to turn, any hour:\nhttps://course.example.org/s/" in text


def test_without_support_in_footer_only_the_last_lesson_carries_the_link(
    tmp_path: Path,
) -> None:
    emails = tmp_path / "emails"
    shutil.copytree(EMAILS, emails)
    course = emails / "white-coat" / "course.toml"
    course.write_text(
        course.read_text(encoding="utf-8").replace(
            "support_in_footer = true", "support_in_footer = false"
        ),
        encoding="utf-8",
    )
    for day in range(1, 8):
        html, text = lesson_parts(emails, day)
        last = [[42]] if day == 7 else []
        assert (support_links(html), support_links(text)) == (last, last), day
    html, _text = lesson_parts(emails, 7)
    assert "lists\nservices near you" in (emails / "white-coat" / "day-07.md").read_text()
    assert "The link at the end of this lesson, to where to turn at any hour" in html


def test_the_privacy_page_says_what_the_check_does_and_does_not_do(
    rt: Runtime, client: FlaskClient
) -> None:
    page = client.get("/privacy").get_data(as_text=True)
    text = " ".join(re.sub(r"<[^>]+>", " ", page).replace("&#39;", "'").split())
    for claim in [
        "Your country, only if the course team set it",
        "Where to turn, and what happens when you write about a dark time",
        "the list for the country of your time zone, or for the country the course team set",
        "holds words of despair or self-harm (from a short list kept with the program), the "
        "page that confirms it shows those places first",
        "For a reply by email, your journal shows them at its top that day",
        "That check reads only the words you just wrote, while the page is being made",
        "Nothing about it is stored, logged, counted or sent, and no one is alerted",
        "no one will contact you because of it",
    ]:
        assert claim in text, claim
