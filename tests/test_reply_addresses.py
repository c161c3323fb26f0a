"""With reply_domain set, every lesson carries a reply address and a bounce envelope sender."""

from __future__ import annotations

import email
import email.policy
import re

import pytest

from dripcourse.courses.course_folder import load_course
from dripcourse.courses.message import build_message, reply_addresses
from dripcourse.courses.render import Personal, Renderer
from dripcourse.courses.wire import envelope, wire_bytes
from dripcourse.errors import ConfigError
from dripcourse.links import BOUNCE, MAX_LOCAL_PART, REPLY, BadToken, Links
from dripcourse.models import MAX_ID
from dripcourse.sending.transport import SMTPTransport
from dripcourse.settings import load_settings
from tests.conftest import EMAILS, utc
from tests.smtp_sink import SMTPSink

LINKS = Links(secret_key="k" * 32, base_url="https://course.example.org")
DOMAIN = "reply.course.example.org"
KEY = "abcdefghij23"  # an enrollment's link key
NOW = utc(2026, 11, 25, 7)
BIGGEST_ID = MAX_ID  # the largest id the tables hold (32 bits on PostgreSQL)


def lesson(domain: str, enrollment_id: int = 42, day: int = 3) -> email.message.EmailMessage:
    course = load_course(EMAILS, "white-coat")
    renderer = Renderer(EMAILS, reply_by_email=bool(domain))
    who = Personal(
        email="amara@example.org",
        name="Amara Okafor",
        **LINKS.for_lesson(enrollment_id, day, KEY),
        **reply_addresses(LINKS, domain, enrollment_id, day, KEY),
    )
    msg = build_message(renderer.lesson(course, day), who, now=NOW, msg_id="<x@example.org>")
    return email.message_from_bytes(wire_bytes(msg), policy=email.policy.default)  # type: ignore[return-value]


def test_a_lesson_carries_reply_to_and_return_path_naming_its_enrollment_and_day() -> None:
    msg = lesson(DOMAIN)
    reply_local, _, reply_domain = msg["Reply-To"].addresses[0].addr_spec.partition("@")
    bounce = msg["Return-Path"].strip().strip("<>")
    assert reply_domain == DOMAIN and reply_local.startswith("reflect+")
    assert LINKS.load_address(REPLY, reply_local) == (42, 3)
    assert bounce.startswith("bounce+") and bounce.endswith("@" + DOMAIN)
    assert LINKS.load_address(BOUNCE, bounce.partition("@")[0]) == (42, 3)


@pytest.mark.parametrize("part", ["text/plain", "text/html"])
def test_the_lesson_says_that_replying_saves_to_the_private_journal(part: str) -> None:
    with_reply = _text(lesson(DOMAIN), part)
    without = _text(lesson(""), part)
    assert "reply to this email" in with_reply and "private" in with_reply
    assert "reply to this email" not in without


def test_without_reply_domain_nothing_changes() -> None:
    msg = lesson("")
    assert msg["Reply-To"] is None and msg["Return-Path"] is None
    text = next(p for p in msg.walk() if p.get_content_type() == "text/plain").get_content()
    # The layout's closing lines exactly as before reply by email existed.
    assert re.search(r"/r/\S+\n\nYour journal of past reflections:", text.replace("\r\n", "\n"))


def _text(msg: email.message.EmailMessage, kind: str) -> str:
    part = next(p for p in msg.walk() if p.get_content_type() == kind)
    return " ".join(part.get_content().split())


@pytest.mark.parametrize(
    ("purpose", "enrollment_id", "day"), [(REPLY, BIGGEST_ID, 999), (BOUNCE, BIGGEST_ID, 999)]
)
def test_the_longest_address_still_fits_a_local_part(purpose: str, enrollment_id: int, day: int):
    local = LINKS.address(purpose, enrollment_id, day, DOMAIN, KEY).partition("@")[0]
    assert len(local) <= MAX_LOCAL_PART
    assert LINKS.load_address(purpose, local) == (enrollment_id, day)


@pytest.mark.parametrize(("enrollment_id", "day"), [(MAX_ID + 1, 3), (42, MAX_ID + 1), (0, 3)])
def test_an_address_naming_an_id_no_table_can_hold_is_not_valid(enrollment_id: int, day: int):
    """Only we can sign such an address, but its ids must never reach a query: past 32 bits
    PostgreSQL fails the whole statement, where a missing row is just not found."""
    local = LINKS.address(REPLY, enrollment_id, day, DOMAIN, KEY).partition("@")[0]
    with pytest.raises(BadToken):
        LINKS.load_address(REPLY, local)


def test_a_server_that_folds_case_does_not_break_the_address() -> None:
    local = LINKS.address(REPLY, 42, 3, DOMAIN, KEY).partition("@")[0]
    assert LINKS.load_address(REPLY, local.upper()) == (42, 3)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda local: local.replace("+16-", "+17-"),  # another enrollment
        lambda local: local[:-1] + ("a" if local[-1] != "a" else "b"),  # the mac changed
        lambda local: local.rsplit("-", 1)[0],  # no mac
        lambda local: "reflect+",
        lambda local: LINKS.address(BOUNCE, 42, 3, DOMAIN, KEY).partition("@")[0],  # wrong purpose
        lambda local: Links(secret_key="x" * 32, base_url="https://x").address(
            REPLY, 42, 3, DOMAIN, KEY
        ),  # another key
    ],
)
def test_a_forged_or_tampered_reply_address_is_refused(tamper) -> None:  # type: ignore[no-untyped-def]
    local = LINKS.address(REPLY, 42, 3, DOMAIN, KEY).partition("@")[0]
    with pytest.raises(BadToken):
        LINKS.load_address(REPLY, tamper(local).partition("@")[0])


def test_inbound_secret_signs_the_addresses_instead_of_the_secret_key() -> None:
    own = Links(secret_key="k" * 32, base_url="https://x", address_key="s" * 32)
    local = own.address(REPLY, 42, 3, DOMAIN, KEY).partition("@")[0]
    assert own.load_address(REPLY, local) == (42, 3)
    with pytest.raises(BadToken):
        LINKS.load_address(REPLY, local)


def test_smtp_envelope_sender_is_the_bounce_address_and_the_header_is_not_sent(
    smtp_sink: SMTPSink,
) -> None:
    course = load_course(EMAILS, "white-coat")
    who = Personal(
        email="amara@example.org",
        name="Amara Okafor",
        **LINKS.for_lesson(42, 3, KEY),
        **reply_addresses(LINKS, DOMAIN, 42, 3, KEY),
    )
    msg = build_message(
        Renderer(EMAILS, reply_by_email=True).lesson(course, 3), who, now=NOW, msg_id="<x@y.org>"
    )
    smtp = SMTPTransport("127.0.0.1", smtp_sink.port, timeout=5)
    try:
        smtp.send(msg)
    finally:
        smtp.close()
    [received] = smtp_sink.handler.messages()
    assert received.mail_from == who.bounce_to
    assert received.message["Return-Path"] is None
    assert received.message["Reply-To"] == who.reply_to
    assert envelope(msg)[0] == who.bounce_to and msg["Return-Path"] == f"<{who.bounce_to}>"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DRIPCOURSE_REPLY_DOMAIN": "not a domain"}, "setting reply_domain"),
        ({"DRIPCOURSE_REPLY_DOMAIN": "x@y.org"}, "setting reply_domain"),
        ({"DRIPCOURSE_INBOUND_SECRET": "short"}, "setting inbound_secret"),
        ({"DRIPCOURSE_INBOUND_MAX_PER_HOUR": "0"}, "setting inbound_max_per_hour"),
    ],
)
def test_wrong_inbound_settings_name_the_setting(env: dict[str, str], message: str, tmp_path):  # type: ignore[no-untyped-def]
    config = tmp_path / "c.toml"
    config.write_text("")
    with pytest.raises(ConfigError, match=message):
        load_settings(config, environ=env)


def test_reply_domain_comes_from_the_environment(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "c.toml"
    config.write_text("")
    settings = load_settings(config, environ={"DRIPCOURSE_REPLY_DOMAIN": DOMAIN})
    assert settings.reply_domain == DOMAIN


@pytest.mark.parametrize("domain", [DOMAIN, ""])
def test_the_privacy_page_says_what_a_reply_by_email_keeps_only_when_replies_are_read(
    tmp_path, domain: str
) -> None:  # type: ignore[no-untyped-def]
    from dripcourse.reader.privacy_notice import privacy_notice
    from tests.conftest import make_settings

    text = " ".join(
        p
        for s in privacy_notice(make_settings(tmp_path, reply_domain=domain))
        for p in s.paragraphs
    )
    assert ("When you reply to a lesson email" in text) == bool(domain)
    assert ("The email itself is not kept" in text) == bool(domain)
