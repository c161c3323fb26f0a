"""Check-in questions: asked in the first and last lesson, answered in one click, kept by the
subscriber, counted by the report."""

from __future__ import annotations

import email
import email.policy
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from dripcourse import links
from dripcourse.courses.course_folder import read_course
from dripcourse.db import transaction
from dripcourse.models import CheckinAnswer
from dripcourse.people import report
from dripcourse.reader import privacy
from dripcourse.runtime import Runtime
from tests import report_scenario as scenario
from tests.conftest import EMAILS, make_settings, utc
from tests.test_web_support import DAY, DAY_1_UTC, Clock, enroll, make_app, path, send_days

CHECKINS = """
[[checkin]]
question = "How rested do you feel this week?"
low = "not at all"
high = "fully"

[[checkin]]
question = "How connected do you feel to colleagues?"
"""
FIRST = "How rested do you feel this week?"


def with_checkins(tmp_path: Path, extra: str = CHECKINS) -> Path:
    """A copy of the sample courses whose course.toml adds ``extra``."""
    emails = tmp_path / "emails"
    shutil.copytree(EMAILS, emails)
    toml = emails / "white-coat" / "course.toml"
    toml.write_text(toml.read_text() + extra)
    return emails


@pytest.fixture
def checkin_rt(tmp_path: Path, sqlite_url: str) -> Iterator[Runtime]:
    emails = with_checkins(tmp_path)
    runtime = Runtime(make_settings(tmp_path, database_url=sqlite_url, emails_dir=str(emails)))
    yield runtime
    runtime.close()


def sent_messages(rt: Runtime) -> dict[str, email.message.EmailMessage]:
    """Each lesson in the outbox by its subject's "Day N"."""
    out = {}
    for file in Path(rt.settings.mail_url.removeprefix("file://")).glob("*.eml"):
        msg = email.message_from_bytes(file.read_bytes(), policy=email.policy.default)
        day = re.search(r"Day (\d+)", str(msg["Subject"]))
        out[day.group(1) if day else file.name] = msg
    return out


# -- course.toml ----------------------------------------------------------------------------


def test_course_toml_gives_the_questions_and_the_ends_of_the_scale(tmp_path: Path) -> None:
    course = read_course(with_checkins(tmp_path), "white-coat").course
    assert course is not None
    first, second = course.checkins
    assert (first.number, first.question, first.low, first.high) == (
        1,
        FIRST,
        "not at all",
        "fully",
    )
    assert (second.low, second.high, second.scale) == ("", "", "1 to 5")
    assert first.scale == "1 = not at all, 5 = fully"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("\n[[checkin]]\nquestion = 'a'\n" * 3, "checkin: at most 2 questions (there are 3)"),
        ("\n[[checkin]]\nquestion = 'a'\nscale = 7\n", "checkin 1: unknown key 'scale'"),
        ("\n[[checkin]]\nlow = 'never'\n", "checkin 1: question must be one line"),
        ("\ncheckin = 'How are you?'\n", "write each question as a [[checkin]] table"),
    ],
)
def test_a_wrong_checkin_is_an_error_naming_the_file_and_line(
    tmp_path: Path, extra: str, message: str
) -> None:
    emails = with_checkins(tmp_path, extra)
    reading = read_course(emails, "white-coat")
    assert reading.course is None
    (found,) = [f for f in reading.findings if "checkin" in f.message]
    assert message in found.message
    toml = (emails / "white-coat" / "course.toml").read_text().splitlines()
    assert "checkin" in toml[found.line - 1]
    assert found.path.name == "course.toml"


# -- the lessons ----------------------------------------------------------------------------


def test_the_first_and_last_lesson_ask_with_one_click_links_and_no_other(
    checkin_rt: Runtime,
) -> None:
    rt = checkin_rt
    who = enroll(rt, "ana@example.org")
    send_days(rt, 7)
    sent = sent_messages(rt)
    for day in ("1", "7"):
        html = sent[day].get_body(("html",)).get_content()
        answers = re.findall(r'href="[^"]*/c/([A-Za-z0-9_.-]+)/(\d)/(\d)"', html)
        assert [(q, a) for _t, q, a in answers] == [(q, a) for q in "12" for a in "12345"], (
            f"day {day}"
        )
        assert {tuple(rt.links.load(links.CHECKIN, t)) for t, _q, _a in answers} == {
            (who, int(day))
        }
        assert FIRST in html and "(1 = not at all, 5 = fully)" in html
        text = sent[day].get_body(("plain",)).get_content()
        assert "A quick check-in: open this link and choose 1 to 5 for each question." in text
        assert f"  - {FIRST} (1 = not at all, 5 = fully)" in text
    for day in ("2", "6"):
        assert "/c/" not in sent[day].get_body(("html",)).get_content()
        assert "check-in" not in sent[day].get_body(("plain",)).get_content()


@pytest.mark.parametrize("day", [1, 2, 7])
def test_the_fast_path_gives_the_same_bytes_for_a_lesson_with_check_ins(
    tmp_path: Path, day: int
) -> None:
    from dripcourse.courses.render import Renderer
    from tests.test_wire import both_paths, reader

    reference, fast = both_paths(
        Renderer(with_checkins(tmp_path)), "white-coat", day, reader("Zoë Núñez", day)
    )
    assert fast == reference
    assert (b"/c/" in reference) == (day != 2)


def test_the_sample_course_asks_nothing(rt: Runtime) -> None:
    enroll(rt, "ana@example.org")
    send_days(rt, 1)
    (msg,) = sent_messages(rt).values()
    assert "/c/" not in msg.get_body(("html",)).get_content()


# -- answering ------------------------------------------------------------------------------


def answers(rt: Runtime) -> list[tuple[int, int, int, str]]:
    with transaction(rt.sessions) as session:
        return [
            (r.day, r.question, r.answer, r.wording)
            for r in session.scalars(
                select(CheckinAnswer).order_by(CheckinAnswer.day, CheckinAnswer.question)
            )
        ]


def test_one_click_records_once_and_another_click_changes_it(checkin_rt: Runtime) -> None:
    rt = checkin_rt
    who = enroll(rt, "ana@example.org")
    send_days(rt, 1)
    client = make_app(rt, Clock(DAY_1_UTC + DAY)).test_client()
    base = path(rt, links.CHECKIN, who, 1)
    first = client.get(f"{base}/1/4")
    assert first.status_code == 303 and first.location.endswith("?saved=1")
    page = client.get(first.location).get_data(as_text=True)
    assert "Thank you: your answer is saved." in page
    assert "Your answer: <strong>4</strong>" in page
    assert re.search(r'href="/j/[^"]+">your journal</a>', page)
    client.get(f"{base}/1/4")  # a second click changes nothing
    assert answers(rt) == [(1, 1, 4, FIRST)]
    client.get(f"{base}/1/2")
    assert answers(rt) == [(1, 1, 2, FIRST)]
    # The page's own buttons change it too.
    from tests.test_web_support import form_token

    done = client.post(base, data={"form_token": form_token(page), "question": "2", "answer": "5"})
    assert done.status_code == 303
    assert answers(rt) == [
        (1, 1, 2, FIRST),
        (1, 2, 5, "How connected do you feel to colleagues?"),
    ]
    assert client.head(f"{base}/1/1").status_code == 303
    assert answers(rt)[0][2] == 2  # a HEAD request (a link checker) records nothing


@pytest.mark.parametrize("suffix", ["/3/4", "/1/6", "/1/0", "/one/4", "/1/4.0"])
def test_an_answer_not_on_offer_is_not_found(checkin_rt: Runtime, suffix: str) -> None:
    rt = checkin_rt
    who = enroll(rt, "ana@example.org")
    send_days(rt, 1)
    client = make_app(rt, Clock(DAY_1_UTC + DAY)).test_client()
    assert client.get(path(rt, links.CHECKIN, who, 1) + suffix).status_code == 404
    assert answers(rt) == []


def test_a_lesson_that_asks_nothing_or_was_not_sent_and_a_forged_link_open_nothing(
    checkin_rt: Runtime,
) -> None:
    rt = checkin_rt
    who = enroll(rt, "ana@example.org")
    send_days(rt, 2)
    client = make_app(rt, Clock(DAY_1_UTC + 2 * DAY)).test_client()
    assert client.get(path(rt, links.CHECKIN, who, 2) + "/1/4").status_code == 404
    assert client.get(path(rt, links.CHECKIN, who, 7) + "/1/4").status_code == 404  # not yet
    # A journal token is not a check-in token.
    assert client.get(f"/c/{rt.links.token(links.JOURNAL, who, 1, key='x')}/1/4").status_code == 404
    assert client.get("/c/forged/1/4").status_code == 404
    assert answers(rt) == []


def test_answers_are_in_the_journal_and_its_downloads(checkin_rt: Runtime) -> None:
    rt = checkin_rt
    who = enroll(rt, "ana@example.org")
    send_days(rt, 1)
    client = make_app(rt, Clock(DAY_1_UTC + DAY)).test_client()
    client.get(path(rt, links.CHECKIN, who, 1) + "/1/3")
    journal = path(rt, links.JOURNAL, who)
    page = client.get(journal).get_data(as_text=True)
    assert f"Check-in: {FIRST} Your answer: <strong>3 of 5</strong>" in page
    assert re.search(r'<a href="/c/[^"]+">Change</a>', page)
    md = client.get(f"{journal}/journal.md").get_data(as_text=True)
    assert f"Check-in: {FIRST} My answer: **3 of 5**" in md
    txt = client.get(f"{journal}/journal.txt").get_data(as_text=True)
    assert f"Check-in: {FIRST} My answer: 3 of 5" in txt
    printed = client.get(f"{journal}/journal.html").get_data(as_text=True)
    assert f"Check-in: {FIRST} Your answer: 3 of 5" in printed


def test_forget_and_the_subscribers_own_delete_remove_the_answers(
    checkin_rt: Runtime,
) -> None:
    rt = checkin_rt
    ana = enroll(rt, "ana@example.org")
    bo = enroll(rt, "bo@example.org")
    send_days(rt, 1)
    client = make_app(rt, Clock(DAY_1_UTC + DAY)).test_client()
    for who in (ana, bo):
        client.get(path(rt, links.CHECKIN, who, 1) + "/1/3")
    assert len(answers(rt)) == 2
    with transaction(rt.sessions) as session:
        privacy.forget_subscriber(
            session, privacy.find_subscriber(session, "ana@example.org"), utc(2025, 3, 5)
        )
    assert len(answers(rt)) == 1
    from tests.test_web_support import post_form

    asked = client.get(path(rt, links.JOURNAL, bo) + "/delete/everything").get_data(as_text=True)
    assert "any check-in answers" in asked
    gone = post_form(client, path(rt, links.JOURNAL, bo) + "/delete/everything")
    assert gone.status_code == 200, gone.get_data(as_text=True)
    with transaction(rt.sessions) as session:
        assert session.scalar(select(func.count()).select_from(CheckinAnswer)) == 0


# -- the report -----------------------------------------------------------------------------


def test_the_report_shows_each_answer_at_the_start_and_the_end_small_counts_hidden(
    checkin_rt: Runtime,
) -> None:
    rt = checkin_rt
    ids = scenario.build(rt)
    course = rt.catalog.course("white-coat")
    q1, q2 = course.checkins
    given = [
        *[(f"p{n:02d}", 1, q1, 2) for n in range(1, 4)],
        *[(f"p{n:02d}", 1, q1, 3) for n in range(4, 10)],
        *[(f"p{n:02d}", 1, q1, 4) for n in range(10, 15)],
        ("p01", 1, q2, 5),
        *[(f"p{n:02d}", 7, q1, 3) for n in range(1, 3)],
        *[(f"p{n:02d}", 7, q1, 4) for n in range(3, 8)],
        *[(f"p{n:02d}", 7, q1, 5) for n in range(8, 13)],
        ("p03", 4, q1, 1),  # a lesson that asks nothing: never counted
    ]
    with transaction(rt.sessions) as session:
        for name, day, q, a in given:
            session.add(
                CheckinAnswer(
                    enrollment_id=ids[name],
                    day=day,
                    question=q.number,
                    wording=q.question,
                    answer=a,
                    created_at=scenario.NOW,
                    updated_at=scenario.NOW,
                )
            )
    with transaction(rt.sessions) as session:
        data = report.build(session, scenario.NOW, lambda slug: course, cohorts=["spring"])
    first, second = data["cohorts"][0]["checkins"]
    F = "fewer than 5"

    def shown(part: dict) -> list[object]:  # type: ignore[type-arg]
        return [a["people"] for a in part["answers"]]

    assert (first["wording"], first["low"], first["high"]) == (FIRST, "not at all", "fully")
    # Start: 3 said 2 (hidden), 6 said 3, 5 said 4 (hidden too: 14 - 6 - 5 would give the 3).
    assert (first["start"]["answered"], shown(first["start"])) == (14, [0, F, 6, F, 0])
    # End: 2 said 3 (hidden); of the two fives, the first goes with it.
    assert (first["end"]["answered"], shown(first["end"])) == (12, [0, 0, F, F, 5])
    assert (second["start"]["answered"], shown(second["start"])) == (F, [0, 0, 0, 0, F])
    assert (second["end"]["answered"], shown(second["end"])) == (0, [0, 0, 0, 0, 0])

    from dripcourse.people import report_html

    html = report_html.page(data)
    assert 'aria-label="spring: check-in 1, start and end"' in html
    assert '<th scope="row">Answered</th><td>14</td><td>12</td>' in html


def test_two_clicks_at_once_end_in_one_answer_the_later_one(
    checkin_rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second click's look finds no answer (the first is not committed yet when it looks);
    its insert meets the unique constraint and it changes the first one's row instead."""
    from dripcourse.reader import checkins

    rt = checkin_rt
    who = enroll(rt, "ana@example.org")
    send_days(rt, 1)
    (question, _) = rt.catalog.course("white-coat").checkins
    with transaction(rt.sessions) as session:
        assert checkins.record(session, who, 1, question, 2, utc(2025, 3, 3, 8))
    looked = checkins._answer_row
    calls = []

    def late(*args: object) -> object:
        calls.append(args)
        return None if len(calls) == 1 else looked(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(checkins, "_answer_row", late)
    with transaction(rt.sessions) as session:
        assert checkins.record(session, who, 1, question, 5, utc(2025, 3, 3, 9))
    assert len(calls) == 2
    assert answers(rt) == [(1, 1, 5, FIRST)]
