"""Every lesson of every course renders into a message that follows the rules."""

from __future__ import annotations

import dataclasses
import datetime as dt
import email
import email.policy
import re
import shutil
from pathlib import Path

import lxml.html
import premailer
import pytest

from dripcourse.courses.course import course_slugs
from dripcourse.courses.course_folder import load_course
from dripcourse.courses.message import build_message, message_id
from dripcourse.courses.render import Personal, Renderer
from dripcourse.courses.wire import wire_bytes
from dripcourse.links import Links
from tests.conftest import EMAILS, utc

LINKS = Links(secret_key="k", base_url="https://course.example.org")
KEY = "abcdefghij23"  # an enrollment's link key
NOW = utc(2026, 11, 25, 7)
ALL_LESSONS = [
    (slug, lesson.day)
    for slug in course_slugs(EMAILS)
    for lesson in load_course(EMAILS, slug).lessons
]


def reader(name: str = "Amara Okafor", enrollment_id: int = 42, day: int = 1) -> Personal:
    return Personal(
        email="amara@example.org", name=name, **LINKS.for_lesson(enrollment_id, day, KEY)
    )


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(EMAILS)


def render(renderer: Renderer, slug: str, day: int, who: Personal | None = None) -> bytes:
    course = load_course(EMAILS, slug)
    who = who or reader(day=day)
    msg = build_message(
        renderer.lesson(course, day),
        who,
        now=NOW,
        msg_id=message_id("course.example.org", 7, "secret"),
    )
    return wire_bytes(msg)


@pytest.mark.parametrize(("slug", "day"), ALL_LESSONS)
def test_lesson_message_follows_the_rules(renderer: Renderer, slug: str, day: int) -> None:
    who = reader(day=day)
    wire = render(renderer, slug, day, who)

    assert all(line.endswith(b"\r") for line in wire.split(b"\n")[:-1]), "bare LF on the wire"
    assert max(len(line) for line in wire.split(b"\r\n")) <= 998
    msg = email.message_from_bytes(wire, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    for header in ("From", "To", "Subject", "Date", "Message-ID"):
        assert msg[header], header
    assert str(msg["Subject"]).startswith(f"Day {day}:")
    assert "\n" not in str(msg["Subject"])
    assert re.fullmatch(r"<[^@<>]+@course\.example\.org>", msg["Message-ID"])
    assert msg["List-Unsubscribe"].strip() == f"<{who.unsubscribe}>"  # may be folded
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["List-Id"] == "The White Coat Reset <white-coat.dripcourse.example>"
    assert msg["Feedback-ID"] is None  # only when the programme sets one

    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert who.reflect in text
    assert f'href="{who.reflect}"' in html
    assert re.search(f'href="{re.escape(who.unsubscribe)}"[^>]*>Unsubscribe</a>', html)
    assert who.unsubscribe in text
    assert f"Day {day}:" in html and "Take a moment to consider this question" in html
    assert "Amara" in text and "Amara" in html
    assert "{{" not in text + html and "xDRIPx" not in text + html
    assert "<img" not in html, "no tracking pixels"
    assert re.search(r'<h1 style="[^"]+"', html), "stylesheet inlined"
    assert len(html.encode()) < 100_000


def test_names_are_escaped_in_html_and_plain_in_text(renderer: Renderer) -> None:
    name = "<script>alert(1)</script> O'Brien & Co"
    who = dataclasses.replace(reader(name=name), greeting=name)
    msg = email.message_from_bytes(
        render(renderer, "white-coat", 1, who), policy=email.policy.default
    )
    html = msg.get_body(("html",)).get_content()
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "<script>alert(1)</script>" in msg.get_body(("plain",)).get_content()


def test_premailer_runs_once_per_lesson_not_once_per_recipient(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []
    original = premailer.Premailer.transform

    def counting(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(premailer.Premailer, "transform", counting)
    renderer = Renderer(EMAILS)
    course = load_course(EMAILS, "white-coat")
    for n in range(50):
        build_message(
            renderer.lesson(course, 2),
            reader(name=f"Reader {n}", enrollment_id=n),
            now=NOW,
            msg_id=message_id("course.example.org", n, "s"),
        )
    assert len(calls) == 1


def test_each_delivery_keeps_one_message_id_and_each_differs() -> None:
    assert message_id("d.org", 5, "s") == message_id("d.org", 5, "s")
    assert message_id("d.org", 5, "s") != message_id("d.org", 6, "s")
    assert message_id("d.org", 5, "s") != message_id("d.org", 5, "other-secret")


def test_date_header_is_the_send_time() -> None:
    renderer = Renderer(EMAILS)
    course = load_course(EMAILS, "white-coat")
    msg = build_message(
        renderer.lesson(course, 1),
        reader(),
        now=dt.datetime(2026, 3, 8, 12, tzinfo=dt.UTC),
        msg_id="<x@y.org>",
    )
    assert msg["Date"] == "Sun, 08 Mar 2026 12:00:00 +0000"


def test_non_ascii_names_and_subjects_are_encoded_and_read_back_intact(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    emails = tmp_path / "emails"
    shutil.copytree(EMAILS, emails)
    lesson = emails / "white-coat" / "day-01.md"
    lesson.write_text(
        lesson.read_text().replace(
            'subject: "Day 1: Noticing the weight you carry"',
            'subject: "Day 1: Café au lait, {{ first_name }}?"',
        )
    )
    course = load_course(emails, "white-coat")
    who = reader(name="Zoë Núñez-Çelik")
    msg = build_message(Renderer(emails).lesson(course, 1), who, now=NOW, msg_id="<x@y.org>")
    wire = wire_bytes(msg)
    assert wire.isascii(), "headers and bodies are 7-bit on the wire"
    parsed = email.message_from_bytes(wire, policy=email.policy.default)
    assert str(parsed["Subject"]) == "Day 1: Café au lait, Zoë?"
    assert parsed["To"].addresses[0].display_name == "Zoë Núñez-Çelik"
    assert "Zoë" in parsed.get_body(("plain",)).get_content()


def test_a_line_break_smuggled_into_a_header_is_refused(renderer: Renderer) -> None:
    course = load_course(EMAILS, "white-coat")
    who = reader(name="Eve\r\nBcc: victim@example.org")
    with pytest.raises(ValueError, match="line break in the To header"):
        build_message(renderer.lesson(course, 1), who, now=NOW, msg_id="<x@y.org>")


def test_long_non_ascii_subjects_and_names_fold_into_legal_lines(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    emails = tmp_path / "emails"
    shutil.copytree(EMAILS, emails)
    lesson = emails / "white-coat" / "day-02.md"
    subject = "Día 2: Las historias que te mantienen en marcha cada día, {{ first_name }}"
    lesson.write_text(
        re.sub(r'subject: ".*"', f'subject: "{subject}"', lesson.read_text(), count=1)
    )
    course = load_course(emails, "white-coat")
    name = ("Łukasz Żółć-Grzegorzewski 🩺 " * 4)[:100]  # the longest name enroll accepts
    who = reader(name=name.strip(), day=2)
    wire = wire_bytes(
        build_message(Renderer(emails).lesson(course, 2), who, now=NOW, msg_id="<x@y.org>")
    )
    assert max(len(line) for line in wire.split(b"\r\n")) <= 998
    parsed = email.message_from_bytes(wire, policy=email.policy.default)
    assert str(parsed["Subject"]) == subject.replace("{{ first_name }}", "Łukasz")
    assert parsed["To"].addresses[0].display_name == name.strip()
    assert parsed["To"].addresses[0].addr_spec == "amara@example.org"


def test_a_paragraph_starting_with_from_is_not_mangled() -> None:
    renderer = Renderer(EMAILS)
    course = load_course(EMAILS, "white-coat")
    rendered = renderer.lesson(course, 1)
    msg = build_message(rendered, reader(), now=NOW, msg_id="<x@y.org>")
    # Put a line starting "From " into the text part, as a lesson paragraph may.
    text_part = msg.get_payload()[0]
    text_part.set_payload(
        "Hello\nFrom the first night on call, you learn.\n", charset=text_part.get_charset()
    )
    assert b"\r\n>From " not in wire_bytes(msg)
    assert b"From the first night" in wire_bytes(msg).replace(b"=\r\n", b"")


@pytest.mark.parametrize(("slug", "day"), ALL_LESSONS)
def test_every_box_outlook_on_windows_pads_is_a_table_cell(
    renderer: Renderer, slug: str, day: int
) -> None:
    """Outlook on Windows (Word's renderer) keeps padding only on table cells: on a link, a
    paragraph or a div it is dropped, and the button shrinks to its text (the support tables
    of email clients list padding as table-cell-only there)."""
    msg = email.message_from_bytes(render(renderer, slug, day), policy=email.policy.default)
    doc = lxml.html.fromstring(msg.get_body(("html",)).get_content())
    padded = [
        (el.tag, el.get("class"))
        for el in doc.iter("a", "div", "p", "span")
        if "padding" in (el.get("style") or "")
    ]
    assert padded == []
    (button,) = doc.find_class("button")
    cell = button.getparent()
    assert cell.tag == "td" and "padding:12px 22px" in cell.get("style")
    assert cell.get("bgcolor") == "#2f6f61"  # the colour Outlook shows behind the text
    (box,) = doc.find_class("reflection-cell")
    assert box.tag == "td" and "padding:16px 20px" in box.get("style")


@pytest.mark.parametrize(
    ("toml_lines", "says"),
    [
        (
            "",
            "You are receiving this because you enrolled in The White Coat Reset. "
            "One lesson a day, 7 in all.",
        ),
        (
            'reason = "Your hospital\'s wellbeing programme enrolled you in this course."\n',
            "Your hospital's wellbeing programme enrolled you in this course. One lesson a day,",
        ),
        ("skip_weekends = true\n", "One lesson each weekday (Monday to Friday), 7 in all."),
    ],
    ids=["default", "enrolled-by-a-programme", "weekdays-only"],
)
def test_the_footer_says_why_and_how_often_truly(
    tmp_path: Path, toml_lines: str, says: str
) -> None:
    emails = tmp_path / "emails"
    shutil.copytree(EMAILS, emails)
    toml = emails / "white-coat" / "course.toml"
    text = toml.read_text(encoding="utf-8").replace("skip_weekends = false\n", "")
    toml.write_text(text + toml_lines, encoding="utf-8")
    course = load_course(emails, "white-coat")
    msg = build_message(
        Renderer(emails).lesson(course, 1), reader(), now=NOW, msg_id="<x@course.example.org>"
    )
    parsed = email.message_from_bytes(wire_bytes(msg), policy=email.policy.default)
    html = " ".join(parsed.get_body(("html",)).get_content().split())
    text_part = " ".join(parsed.get_body(("plain",)).get_content().split())
    assert says in html.replace("&#39;", "'") and says in text_part
