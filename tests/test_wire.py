"""The fast path (dripcourse.wire) gives the bytes build_message gives; transports send them."""

from __future__ import annotations

import dataclasses
import datetime as dt
import email
import email.policy
import re
import shutil
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dripcourse.courses.course_folder import load_course
from dripcourse.courses.headers import QP_UTF8 as _QP_UTF8
from dripcourse.courses.headers import WIRE_POLICY
from dripcourse.courses.message import build_message, message_id
from dripcourse.courses.render import (
    _TOKEN,
    PERSONAL_FIELDS,
    Personal,
    Renderer,
    Template,
)
from dripcourse.courses.wire import (
    EncodedBody,
    WireMessage,
    _fold,
    as_wire,
    personalise,
    wire_bytes,
)
from dripcourse.sending.transport import FileTransport, SMTPTransport
from tests.conftest import EMAILS, utc
from tests.smtp_sink import SMTPSink
from tests.test_render import ALL_LESSONS, KEY, LINKS

NOW = utc(2026, 11, 25, 7, 0)

HARD_NAMES = {
    "plain": "Amara Okafor",
    "none": "",
    "accents": "Zoë Núñez-Çelik",
    "longest non-ASCII with emoji": ("Łukasz Żółć-Grzegorzewski 🩺 " * 4)[:100].strip(),
    "quotes": 'Dr. "Bob" O\'Brien',
    "comma": "Smith, John",
    "encoded word": "=?utf-8?b?SGk=?=",
    "markup": "<script>alert(1)</script> & Co",
    "longest ASCII": "A" * 100,
    "spaces and tab": "  Ada  \tLovelace ",
    "right-to-left": "נועה כהן",
    "CJK": "山田 太郎",
}


def reader(name: str, day: int, email: str = "amara.okafor@example.org") -> Personal:
    return Personal(email=email, name=name, **LINKS.for_lesson(42, day, KEY))


def same_boundary(reference: bytes, ours: bytes) -> bytes:
    """``ours`` with its random MIME boundary swapped for the reference's."""

    def boundary(data: bytes) -> bytes:
        found = re.search(rb'boundary="([^"]+)"', data)
        assert found is not None
        return found.group(1)

    return ours.replace(boundary(ours), boundary(reference))


def both_paths(renderer: Renderer, slug: str, day: int, who: Personal) -> tuple[bytes, bytes]:
    rendered = renderer.lesson(load_course(renderer.emails_dir, slug), day)
    msg_id = message_id("course.example.org", 7, "secret")
    reference = wire_bytes(build_message(rendered, who, now=NOW, msg_id=msg_id))
    fast = personalise(rendered, who, now=NOW, msg_id=msg_id)
    return reference, same_boundary(reference, fast.data)


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(EMAILS)


@pytest.mark.parametrize("name", HARD_NAMES.values(), ids=HARD_NAMES.keys())
@pytest.mark.parametrize(("slug", "day"), ALL_LESSONS)
def test_the_fast_path_gives_the_bytes_build_message_gives(
    renderer: Renderer, slug: str, day: int, name: str
) -> None:
    reference, fast = both_paths(renderer, slug, day, reader(name, day))
    assert fast == reference


@pytest.mark.parametrize(("slug", "day"), ALL_LESSONS[:2])
def test_with_a_reply_domain_both_paths_carry_reply_to_and_the_bounce_envelope(
    renderer: Renderer, slug: str, day: int
) -> None:
    from dataclasses import replace

    from dripcourse.courses.message import reply_addresses
    from dripcourse.courses.wire import as_wire

    who = replace(
        reader("Dr. Amara Okafor", day), **reply_addresses(LINKS, "reply.example.org", 42, day, KEY)
    )
    rendered = renderer.lesson(load_course(renderer.emails_dir, slug), day)
    msg_id = message_id("course.example.org", 7, "secret")
    built = as_wire(build_message(rendered, who, now=NOW, msg_id=msg_id))
    quick = personalise(rendered, who, now=NOW, msg_id=msg_id)
    # The bytes go out without Return-Path on both paths; the envelope carries the bounce address.
    assert same_boundary(built.data, quick.data) == built.data
    assert quick.sender == built.sender == who.bounce_to
    assert b"Reply-To: reflect+" in quick.data and b"Return-Path" not in quick.data


@pytest.mark.parametrize(
    "subject",
    [
        "Día 2: Las historias que te mantienen en marcha cada día, {{ first_name }}",
        "Day 2: {{ name }}, {{ name }}",
        'Day 2: "quoted"; with, splitters and a very long tail that has to fold somewhere here',
        # The same for every reader, so folded once per lesson: non-ASCII, long, or both.
        "Día 2: Las historias que te mantienen en marcha cada día, y las que te cansan",
        "Jour 2 : été",
        "Day 2: =?utf-8?q?looks_encoded?=",
    ],
)
@pytest.mark.parametrize("name", HARD_NAMES.values(), ids=HARD_NAMES.keys())
def test_personal_and_non_ascii_subjects_match_too(tmp_path: Path, subject: str, name: str) -> None:
    reference, fast = both_paths(with_subject(tmp_path, subject), "white-coat", 2, reader(name, 2))
    assert fast == reference


def with_subject(tmp_path: Path, subject: str) -> Renderer:
    """A renderer of the sample course whose day 2 has ``subject``."""
    emails = tmp_path / "emails"
    shutil.copytree(EMAILS, emails)
    lesson = emails / "white-coat" / "day-02.md"
    text = re.sub(r'subject: ".*"', f"subject: '{subject}'", lesson.read_text(), count=1)
    lesson.write_text(text)
    return Renderer(emails)


def test_a_subject_folded_once_per_lesson_is_each_readers_own_bytes(tmp_path: Path) -> None:
    renderer = with_subject(tmp_path, "Día 2: Las historias que te mantienen en marcha cada día")
    for name in HARD_NAMES.values():
        reference, fast = both_paths(renderer, "white-coat", 2, reader(name, 2))
        assert fast == reference


@pytest.mark.parametrize(
    "now",
    [
        NOW,
        NOW.replace(microsecond=999_999),
        NOW + dt.timedelta(seconds=1),
        NOW.astimezone(ZoneInfo("America/New_York")).replace(microsecond=500_000),
        NOW,
    ],
)
def test_the_date_line_is_the_second_it_is_sent_in(renderer: Renderer, now: dt.datetime) -> None:
    rendered = renderer.lesson(load_course(EMAILS, "white-coat"), 3)
    who = reader("Amara Okafor", 3)
    reference = wire_bytes(build_message(rendered, who, now=now, msg_id="<d@course.example.org>"))
    fast = personalise(rendered, who, now=now, msg_id="<d@course.example.org>")
    assert same_boundary(reference, fast.data) == reference


ONE_LINE = st.text(max_size=100).filter(lambda v: "\r" not in v and "\n" not in v)


@settings(max_examples=200, deadline=None)
@given(name=ONE_LINE, greeting=ONE_LINE, day=st.sampled_from([1, 3, 7]))
def test_any_name_and_greeting_give_the_bytes_build_message_gives(
    renderer: Renderer, name: str, greeting: str, day: int
) -> None:
    who = dataclasses.replace(reader(name, day), greeting=greeting.strip())
    reference, fast = both_paths(renderer, "white-coat", day, who)
    assert fast == reference


def token(field: str) -> str:
    return _TOKEN.format("abc123", PERSONAL_FIELDS.index(field))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "no placeholder at all\n",
        f"ends without a line break {token('name')}",
        f"{token('name')} opens the body\n\n",
        f"CRLF line\r\n{token('name')}\r\nlone CR\rnext\n",
        f"a trailing space before the name {token('name')} \n",
        "x" * 74 + f"={token('name')}=" + "y" * 80 + "\n",
        f"{'long line ' * 20}{token('email')}{' and more' * 20}\t\n",
        f"{token('name')}{token('first_name')}{token('email')}\n= \t\n",
    ],
)
@pytest.mark.parametrize("name", ["Zoë Núñez-Çelik", "A" * 100, "", "x = y "])
def test_a_body_encodes_as_the_email_package_encodes_it(text: str, name: str) -> None:
    who = reader(name, 1)
    template = Template(text, html=False)
    expected = re.sub(r"\r\n|\r|\n", "\r\n", _QP_UTF8.body_encode(template.render(who)))
    values = tuple(who.value(field) for field in PERSONAL_FIELDS)
    assert EncodedBody(template).encode(values) == expected


# Lines around a personal value where the cutting at 76 characters is hard: escapes ("=" is
# "=3D", a non-ASCII letter two or more) at every place near a cut, spaces and tabs at the end.
LINE_TEXT = st.text(
    alphabet=st.sampled_from(["x", "=", " ", "\t", "é", "✓", "🩺", "\x0b", "<", "a"]), max_size=200
)
# No line break in a value: headers refuse one in a name or an address, and a greeting is one line.
VALUE = st.text(
    alphabet=st.sampled_from(["y", "=", " ", "\t", "ü", "\x85", "\u2028", "\x0c", "-"]),
    max_size=120,
)


@settings(max_examples=500, deadline=None)
@given(before=LINE_TEXT, after=LINE_TEXT, value=VALUE, other=VALUE)
def test_a_personal_line_is_cut_as_the_email_package_cuts_it(
    before: str, after: str, value: str, other: str
) -> None:
    # Escaped once per lesson around the values, escaped per reader, then cut: the same text as
    # the email package's encoder gives the whole body, for any values and any cut.
    text = f"{before}{token('name')}{after}{token('email')}\n{after}{token('name')}{before}"
    who = reader("", 1)
    who = dataclasses.replace(who, name=value, email=other)
    template = Template(text, html=False)
    expected = re.sub(r"\r\n|\r|\n", "\r\n", _QP_UTF8.body_encode(template.render(who)))
    values = tuple(who.value(field) for field in PERSONAL_FIELDS)
    assert EncodedBody(template).encode(values) == expected


@pytest.mark.parametrize(
    "value",
    [
        "x" * 74,  # "To: " + 74 = 78, the longest line left alone
        "x" * 75,
        "<https://course.example.org/u/" + "A" * 90 + ">",
        "<https://course.example.org/u/" + "A" * 30 + ">",
        "a" * 50 + ", " + "b" * 50,
        "a" * 50 + ";" + "b" * 50,
        "a" * 50 + "\t" + "b" * 50,
        '"' + "q" * 90 + '"',
        "  leading and trailing spaces  ",
        "",
        "Zoë",
    ],
)
def test_a_header_folds_as_compat32_folds_it(value: str) -> None:
    assert _fold("To", value) == WIRE_POLICY.fold("To", value)


@pytest.mark.parametrize(
    ("name", "email"),
    [("Eve\r\nBcc: victim@example.org", "eve@example.org"), ("Eve", "eve@example.org\nBcc: x")],
)
def test_the_fast_path_refuses_a_line_break_in_a_header(
    renderer: Renderer, name: str, email: str
) -> None:
    rendered = renderer.lesson(load_course(EMAILS, "white-coat"), 1)
    with pytest.raises(ValueError, match="line break in the To header"):
        personalise(rendered, reader(name, 1, email), now=NOW, msg_id="<x@y.org>")


def test_the_envelope_names_the_course_sender_and_the_subscriber(renderer: Renderer) -> None:
    course = load_course(EMAILS, "white-coat")
    wire = personalise(
        renderer.lesson(course, 1), reader("Zoë", 1), now=NOW, msg_id="<x@course.example.org>"
    )
    assert wire.sender == "lessons@dripcourse.example"
    assert wire.recipients == ("amara.okafor@example.org",)
    assert wire.data.isascii()


def test_smtp_sends_wire_bytes_as_they_are_with_their_envelope(
    renderer: Renderer, smtp_sink: SMTPSink
) -> None:
    rendered = renderer.lesson(load_course(EMAILS, "white-coat"), 3)
    wire = personalise(rendered, reader("Zoë Núñez-Çelik", 3), now=NOW, msg_id="<x@y.org>")
    smtp = SMTPTransport("127.0.0.1", smtp_sink.port, timeout=5)
    try:
        smtp.send(wire)
    finally:
        smtp.close()
    (got,) = smtp_sink.handler.messages()
    assert got.mail_from == "lessons@dripcourse.example"
    assert got.rcpt_tos == ["amara.okafor@example.org"]
    assert got.data == wire.data
    assert "Zoë" in got.message.get_body(("plain",)).get_content()


def test_the_file_transport_writes_wire_bytes_as_they_are(
    renderer: Renderer, tmp_path: Path
) -> None:
    rendered = renderer.lesson(load_course(EMAILS, "white-coat"), 1)
    wire = personalise(rendered, reader("Amara", 1), now=NOW, msg_id="<x@y.org>")
    FileTransport(tmp_path).send(wire)
    (written,) = tmp_path.glob("*.eml")
    assert written.read_bytes() == wire.data


def test_a_mime_message_becomes_wire_bytes_with_its_envelope(renderer: Renderer) -> None:
    rendered = renderer.lesson(load_course(EMAILS, "white-coat"), 1)
    msg = build_message(rendered, reader("Amara", 1), now=NOW, msg_id="<x@y.org>")
    assert as_wire(msg) == WireMessage(
        "lessons@dripcourse.example", ("amara.okafor@example.org",), wire_bytes(msg)
    )


@pytest.mark.parametrize("title", ["The White Coat Reset", "Renouveau de la blouse — été"])
def test_both_paths_carry_the_list_id_and_a_feedback_id_when_one_is_set(
    tmp_path: Path, title: str
) -> None:
    emails = tmp_path / "emails"
    shutil.copytree(EMAILS, emails)
    toml = emails / "white-coat" / "course.toml"
    toml.write_text(
        toml.read_text(encoding="utf-8").replace(
            'title = "The White Coat Reset"', f'title = "{title}"'
        ),
        encoding="utf-8",
    )
    renderer = Renderer(emails, feedback_id="lessons:programme:dripcourse")
    reference, fast = both_paths(renderer, "white-coat", 1, reader("Amara Okafor", 1))
    assert fast == reference
    msg = email.message_from_bytes(fast, policy=email.policy.default)
    assert msg["List-Id"] == f"{title} <white-coat.dripcourse.example>"
    assert msg["Feedback-ID"] == "lessons:programme:dripcourse"


@pytest.mark.parametrize(
    ("data", "label", "to", "name"),
    [
        (
            b"Date: Mon, 24 Nov 2025 07:00:00 -0500\r\nTo: x\r\n\r\nbody",
            "white-coat-day03",
            "ana@example.org",
            r"20251124-120000-white-coat-day03-ana@example.org-[0-9a-f]{8}\.eml",
        ),
        (
            b"To: x\r\n\r\nno date",
            "",
            "b@example.org",
            r"undated-message-b@example.org-[0-9a-f]{8}\.eml",
        ),
        (
            b"Date: not a date\r\n\r\n",
            "c",
            "../../etc/passwd",
            r"undated-c-.._.._etc_passwd-[0-9a-f]{8}\.eml",
        ),
    ],
    ids=["a lesson", "no date or label", "nothing unsafe in a name"],
)
def test_an_outbox_file_is_named_by_date_course_day_and_address(
    data: bytes, label: str, to: str, name: str
) -> None:
    from dripcourse.sending.transport import outbox_name

    got = outbox_name(WireMessage(sender="s@example.org", recipients=(to,), data=data, label=label))
    assert re.fullmatch(name, got), got
    assert "/" not in got
