"""Inbound mail: replies become that day's reflection; bounces, complaints and the rest do not."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email.header import Header
from pathlib import Path

import pytest
from sqlalchemy import select

from dripcourse.db import transaction
from dripcourse.inbound import effects
from dripcourse.inbound import route as inbound
from dripcourse.inbound.route import Decision
from dripcourse.links import BOUNCE, REPLY
from dripcourse.models import (
    Delivery,
    Enrollment,
    EnrollmentStatus,
    InboundMessage,
    Reflection,
    Suppression,
)
from dripcourse.models import InboundKind as Kind
from dripcourse.people.status import inbound_counts
from dripcourse.reader import reflections
from dripcourse.runtime import Runtime
from tests.conftest import make_settings, utc
from tests.test_web_support import address, enroll, send_days

MAIL = Path(__file__).parent / "inbound_mail"
DOMAIN = "reply.course.example.org"
ANA = "ana@example.org"
NOW = utc(2025, 3, 5, 21)  # the evening of Day 3


@pytest.fixture
def rt(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    runtime = Runtime(make_settings(tmp_path, database_url=database_url, reply_domain=DOMAIN))
    yield runtime
    runtime.close()


@pytest.fixture
def ana(rt: Runtime) -> int:
    """Enrolled, has had Days 1-3."""
    enrollment_id = enroll(rt, ANA)
    send_days(rt, 3)
    return enrollment_id


def fixture(rt: Runtime, name: str, enrollment_id: int, day: int = 3, sender: str = ANA) -> bytes:
    """A fixture message addressed to this enrollment's reply or bounce address for ``day``."""
    raw = (MAIL / f"{name}.eml").read_bytes()
    for marker, value in (
        (b"@@REPLY@@", address(rt, REPLY, enrollment_id, day, DOMAIN)),
        (b"@@BOUNCE@@", address(rt, BOUNCE, enrollment_id, day, DOMAIN)),
        (b"@@FROM@@", sender),
    ):
        raw = raw.replace(marker, value.encode())
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def receive(rt: Runtime, raw: bytes, now: dt.datetime = NOW, **kw: object) -> Decision:
    with transaction(rt.sessions) as session:
        return inbound.process(session, raw, rt.inbound, now=now, **kw)  # type: ignore[arg-type]


def saved(rt: Runtime, enrollment_id: int, day: int = 3) -> str | None:
    with transaction(rt.sessions) as session:
        found = reflections.get_reflection(session, enrollment_id, day, rt.reflection_cipher)
        return None if found is None else found.body


REPLIES = {
    "gmail": "Leaving the ward by 18:30 on Thursdays, so I can make my daughter's swim class.\n"
    "The handover meeting usually runs over; I will tell the registrar on Monday.",
    "outlook_desktop": "No email after 21:00. It is small, but last week I answered a rota "
    "query at midnight and could not sleep after.",
    "outlook_web": "Lunch away from the ward, twenty minutes, three days out of five.",
    "apple_mail": "Saying no to the extra clinic on Friday. I said yes to the last three.",
    "phone": "On call tonight. Boundary: phone face down during the one meal I get.",
    "interleaved": "> Take a moment to consider this question: Which one small boundary could\n"
    "> you realistically hold for the next week?\n\n"
    "Not checking results from home after 20:00.\n\n"
    ">   - What usually pushes past it?\n\n"
    "A patient I am worried about. Then I call the night team instead.\n\n"
    ">   - Who, if anyone, needs to know about it?\n\n"
    "My consultant, and my partner.",
    "german": "Mittwochs keine Überstunden mehr. Das sage ich der Stationsleitung morgen.",
    "spanish": "Los domingos sin guardias extra. Se lo diré a mi jefa.",
    "signature_dashes": "Ten minutes at the end of each shift to write the handover properly.",
    "signature_plain": "Leaving my pager with the registrar for the whole of my half day.",
    "html_only": "Walking home instead of driving & not opening the rota app on the way.\n\n"
    "It is twenty minutes of nothing.",
}


@pytest.mark.parametrize("name", sorted(REPLIES))
def test_a_reply_is_saved_as_that_days_reflection_without_quote_or_signature(
    rt: Runtime, ana: int, name: str
) -> None:
    decision = receive(rt, fixture(rt, name, ana))
    assert decision == Decision(Kind.REPLY, "", ana, 3)
    assert saved(rt, ana) == REPLIES[name]
    with transaction(rt.sessions) as session:
        row = session.scalar(select(Reflection).where(Reflection.enrollment_id == ana))
        assert row is not None and row.source == "email"
        assert REPLIES[name][:20] not in row.sealed_body  # sealed, never plain text
        assert row.prompt == rt.catalog.course("white-coat").lesson(3).prompt


def test_a_second_reply_is_appended_below_the_first_with_a_dated_separator(
    rt: Runtime, ana: int
) -> None:
    receive(rt, fixture(rt, "phone", ana))
    receive(rt, fixture(rt, "signature_dashes", ana), now=NOW + dt.timedelta(days=1))
    assert saved(rt, ana) == (
        f"{REPLIES['phone']}\n\n--- Replied by email on 06 March 2025 ---\n\n"
        f"{REPLIES['signature_dashes']}"
    )


def test_a_reply_after_writing_on_the_page_keeps_what_was_written(rt: Runtime, ana: int) -> None:
    with transaction(rt.sessions) as session:
        enrollment = session.get(Enrollment, ana)
        assert enrollment is not None
        reflections.save_reflection(
            session,
            enrollment,
            3,
            "The question as asked",
            "Written on the page.",
            cipher=rt.reflection_cipher,
            max_chars=20000,
            now=NOW - dt.timedelta(hours=2),
        )
    receive(rt, fixture(rt, "german", ana))
    assert saved(rt, ana) == (
        f"Written on the page.\n\n--- Replied by email on 05 March 2025 ---\n\n{REPLIES['german']}"
    )


def test_the_same_message_id_is_processed_once(rt: Runtime, ana: int) -> None:
    raw = fixture(rt, "gmail", ana)
    assert receive(rt, raw).kind == Kind.REPLY
    assert receive(rt, raw).kind == Kind.DUPLICATE
    assert saved(rt, ana) == REPLIES["gmail"]


def test_a_reply_from_another_address_is_held_and_not_saved(rt: Runtime, ana: int) -> None:
    decision = receive(rt, fixture(rt, "gmail", ana, sender="someone.else@example.org"))
    assert decision.kind == Kind.HELD
    assert saved(rt, ana) is None
    with transaction(rt.sessions) as session:
        assert inbound_counts(session) == {"held": 1}


def test_the_senders_address_matches_whatever_its_case(rt: Runtime, ana: int) -> None:
    assert receive(rt, fixture(rt, "gmail", ana, sender="Ana@Example.ORG")).kind == Kind.REPLY


@pytest.mark.parametrize("name", ["out_of_office", "out_of_office_subject"])
def test_an_auto_reply_is_dropped_and_counted(rt: Runtime, ana: int, name: str) -> None:
    assert receive(rt, fixture(rt, name, ana)) == Decision(Kind.AUTO_REPLY)
    assert saved(rt, ana) is None


OUT_OF_OFFICE_SUBJECTS = [
    "Risposta automatica",
    "Resposta automática",
    "Automatisch antwoord",
    "Odpowiedź automatyczna",
    "Automatiskt svar",
    "Automatisk svar",
    "Autosvar",
    "Automaattinen vastaus",
    "Автоматический ответ",
    "Автоматична відповідь",
    "Automatická odpověď",
    "Otomatik yanıt",
    "رد تلقائي",
    "תשובה אוטומטית",
    "自动回复",
    "自动答复",
    "自動回覆",
    "自動応答",
    "自動返信",
    "자동 회신",
    "स्वचालित उत्तर",
]


@pytest.mark.parametrize("subject", OUT_OF_OFFICE_SUBJECTS)
def test_an_out_of_office_subject_in_the_courses_languages_is_an_auto_reply(
    rt: Runtime, ana: int, subject: str
) -> None:
    # Without Auto-Submitted, as some servers send it, the subject an encoded word.
    encoded = Header(f"{subject}: Day 3: Small boundaries on a real rota", "utf-8").encode()
    raw = b"\r\n".join(
        f"Subject: {encoded}".encode() if line.startswith(b"Subject:") else line
        for line in fixture(rt, "out_of_office_subject", ana).split(b"\r\n")
    )
    assert receive(rt, raw) == Decision(Kind.AUTO_REPLY)
    assert saved(rt, ana) is None


READ_RECEIPT = """From: Amara Okafor <{sender}>
To: <{to}>
Subject: Read: Day 3: Small boundaries on a real rota
Date: Tue, 24 Nov 2026 08:12:00 +0000
Message-ID: <mdn01@example.org>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=disposition-notification; boundary="m1"

--m1
Content-Type: text/plain; charset=us-ascii

This is a receipt for the mail you sent to {sender}.
This receipt verifies that the message has been displayed on the recipient's computer.

--m1
Content-Type: message/disposition-notification

Final-Recipient: rfc822; {sender}
Disposition: manual-action/MDN-sent-manually; displayed

--m1--
"""


@pytest.mark.parametrize("sender", [ANA, "ana.okafor@hospital.example"])
def test_a_read_receipt_or_any_report_is_never_a_reflection_nor_held(
    rt: Runtime, ana: int, sender: str
) -> None:
    to = address(rt, REPLY, ana, 3, DOMAIN)
    raw = READ_RECEIPT.format(sender=sender, to=to).replace("\n", "\r\n").encode()
    assert receive(rt, raw).kind in (Kind.JUNK, Kind.AUTO_REPLY)
    assert saved(rt, ana) is None
    with transaction(rt.sessions) as session:
        assert "held" not in inbound_counts(session)


@pytest.mark.parametrize("sender", [ANA, "spamfilter@hospital.example"])
@pytest.mark.parametrize("null", [b"<>", b"< >", b"<#@[]>"])
def test_a_message_with_a_null_envelope_sender_is_an_auto_reply(
    rt: Runtime, ana: int, sender: str, null: bytes
) -> None:
    """``Return-Path: <>`` (qmail writes ``<#@[]>``), as the delivering MTA writes it: only
    programs send with a null sender (bounces, out-of-office notices, challenge-response
    filters), whatever the subject says, and such a message is neither saved nor held."""
    raw = b"Return-Path: " + null + b"\r\n" + fixture(rt, "phone", ana, sender=sender)
    assert receive(rt, raw) == Decision(Kind.AUTO_REPLY)
    assert saved(rt, ana) is None


def test_a_forwarded_lesson_is_not_a_reply(rt: Runtime, ana: int) -> None:
    assert receive(rt, fixture(rt, "forwarded", ana)).kind == Kind.JUNK
    assert saved(rt, ana) is None


def test_a_hard_bounce_suppresses_the_address_and_stops_the_enrollment(
    rt: Runtime, ana: int
) -> None:
    decision = receive(rt, fixture(rt, "bounce_hard", ana))
    assert decision == Decision(Kind.BOUNCE, "5.1.1", ana, 3)
    with transaction(rt.sessions) as session:
        suppression = session.scalar(select(Suppression).where(Suppression.email == ANA))
        assert suppression is not None and suppression.reason.startswith("bounced: 5.1.1 smtp; 550")
        enrollment = session.get(Enrollment, ana)
        assert enrollment is not None and enrollment.status == EnrollmentStatus.BOUNCED
        assert enrollment.next_send_at is None
        day3 = session.scalar(
            select(Delivery).where(Delivery.enrollment_id == ana, Delivery.day == 3)
        )
        assert day3 is not None and day3.last_error.startswith("bounced after sending: 5.1.1")


def test_a_soft_bounce_is_recorded_on_the_delivery_and_suppresses_nothing(
    rt: Runtime, ana: int
) -> None:
    assert receive(rt, fixture(rt, "bounce_soft", ana)) == Decision(Kind.DELAY, "4.2.2", ana, 3)
    with transaction(rt.sessions) as session:
        assert session.scalar(select(Suppression)) is None
        enrollment = session.get(Enrollment, ana)
        assert enrollment is not None and enrollment.status == EnrollmentStatus.ACTIVE
        day3 = session.scalar(
            select(Delivery).where(Delivery.enrollment_id == ana, Delivery.day == 3)
        )
        assert day3 is not None
        assert day3.last_error == "delayed after sending: 4.2.2 smtp; 452 4.2.2 Mailbox full"


def test_a_complaint_suppresses_with_reason_complained_and_stops_every_enrollment(
    rt: Runtime, ana: int
) -> None:
    other = enroll(rt, ANA, cohort="autumn")
    assert receive(rt, fixture(rt, "complaint", ana)) == Decision(Kind.COMPLAINT, "", ana, 3)
    with transaction(rt.sessions) as session:
        suppression = session.scalar(select(Suppression).where(Suppression.email == ANA))
        assert suppression is not None and suppression.reason == "complained"
        for each in (ana, other):
            enrollment = session.get(Enrollment, each)
            assert enrollment is not None and enrollment.status != EnrollmentStatus.ACTIVE


def test_a_complaint_is_never_found_through_the_headers_its_sender_wrote(
    rt: Runtime, ana: int
) -> None:
    # The report's Original-Mail-From and the enclosed Return-Path still name the bounce
    # address: anyone can write those.
    raw = fixture(rt, "complaint", ana).replace(
        b"To: <" + address(rt, BOUNCE, ana, 3, DOMAIN).encode(), b"To: <fbl@course.example.org"
    )
    assert receive(rt, raw) == Decision(Kind.JUNK, "a complaint not sent to a bounce address")
    with transaction(rt.sessions) as session:
        assert session.scalar(select(Suppression)) is None


@pytest.mark.parametrize("name", ["bounce_hard", "complaint"])
def test_a_report_sent_to_the_reply_address_suppresses_no_one(
    rt: Runtime, ana: int, name: str
) -> None:
    # The reply address is in every lesson a subscriber can forward; the bounce address is
    # only in the envelope.
    reply_address = address(rt, REPLY, ana, 3, DOMAIN).encode()
    raw = fixture(rt, name, ana).replace(
        address(rt, BOUNCE, ana, 3, DOMAIN).encode(), reply_address
    )
    assert receive(rt, raw).kind == Kind.JUNK
    with transaction(rt.sessions) as session:
        assert session.scalar(select(Suppression)) is None
        enrollment = session.get(Enrollment, ana)
        assert enrollment is not None and enrollment.status == EnrollmentStatus.ACTIVE


@pytest.mark.parametrize("recipient", [b"someone.else@example.org", b""])
def test_a_delivery_report_about_another_recipient_suppresses_no_one(
    rt: Runtime, ana: int, recipient: bytes
) -> None:
    raw = fixture(rt, "bounce_hard", ana).replace(
        b"Final-Recipient: rfc822; " + ANA.encode(), b"Final-Recipient: rfc822; " + recipient
    )
    assert receive(rt, raw).kind == Kind.JUNK
    with transaction(rt.sessions) as session:
        assert session.scalar(select(Suppression)) is None


def test_a_delivery_reports_recipient_matches_whatever_its_case_and_brackets(
    rt: Runtime, ana: int
) -> None:
    raw = fixture(rt, "bounce_hard", ana).replace(
        b"Final-Recipient: rfc822; " + ANA.encode(), b"Final-Recipient: RFC822;<Ana@Example.ORG>"
    )
    assert receive(rt, raw).kind == Kind.BOUNCE


@pytest.mark.parametrize(
    "sender",
    [
        f"{ANA} <evil@example.net>",
        f"<{ANA}>@evil.example.net",
        f"{ANA}, evil@example.net",
        f"evil@example.net, {ANA}",
        f'"{ANA}" <evil@example.net>',
        "=?utf-8?q?ana=40example=2Eorg?= <evil@example.net>",
        "=?utf-8?q?ana@example.org?=",
        f"{ANA} <>",
    ],
)
def test_a_from_header_that_only_looks_like_the_subscribers_is_never_saved(
    rt: Runtime, ana: int, sender: str
) -> None:
    raw = fixture(rt, "gmail", ana, sender="@@SENDER@@")
    raw = raw.replace(b"From: Amara Okafor <@@SENDER@@>", b"From: " + sender.encode())
    assert receive(rt, raw).kind in (Kind.JUNK, Kind.HELD)
    assert saved(rt, ana) is None


def test_a_message_with_two_from_headers_is_never_saved(rt: Runtime, ana: int) -> None:
    raw = fixture(rt, "gmail", ana).replace(b"From: ", b"From: evil@example.net\r\nFrom: ", 1)
    assert receive(rt, raw).kind == Kind.JUNK
    assert saved(rt, ana) is None


@pytest.mark.parametrize(
    "change",
    [
        lambda raw, local: raw.replace(local, local[:-2] + b"zz"),  # tampered token
        lambda raw, local: raw.replace(local, b"reflect+nothing"),
        lambda raw, local: raw.replace(DOMAIN.encode(), b"elsewhere.example.org"),
    ],
)
def test_a_bad_token_is_dropped_with_one_log_line_naming_no_token(
    rt: Runtime, ana: int, change, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    local = address(rt, REPLY, ana, 3, DOMAIN).partition("@")[0].encode()
    with caplog.at_level(logging.INFO, logger="dripcourse.inbound"):
        decision = receive(rt, change(fixture(rt, "gmail", ana), local))
    assert decision.kind == Kind.JUNK
    assert saved(rt, ana) is None
    lines = [r.getMessage() for r in caplog.records if r.name == "dripcourse.inbound.route"]
    assert len(lines) == 1 and "junk" in lines[0]
    assert "+" not in lines[0] and "@" not in lines[0]


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff garbage",
        b"Subject: hello\r\n\r\nno addresses at all",
        b"From: <>\r\n",
        b"Message-ID: <\xff\xfe@x>\r\nFrom: a@b\r\n\r\nhi",
        b"Content-Type: multipart/report; report-type=delivery-status\r\n"
        b"To: bounce+zz@reply.course.example.org\r\n\r\nno boundary",
        b'From: ((((\r\nTo: "unterminated\r\nSubject: =?utf-8?q?broken\r\n\r\n',
        b"Content-Type: text/plain; charset=no-such-charset\r\nFrom: a@b\r\n\r\n\xff",
    ],
)
def test_anything_else_is_junk_never_a_crash(rt: Runtime, raw: bytes) -> None:
    assert receive(rt, raw).kind == Kind.JUNK


def test_replies_past_the_per_subscriber_limit_are_not_saved(rt: Runtime, ana: int) -> None:
    limited = inbound.Inbound(
        **{**rt.inbound.__dict__, "limits": inbound.Limits(per_subscriber_per_day=2)}
    )
    kinds = []
    for n in range(4):
        raw = fixture(rt, "phone", ana).replace(b"<phone01@", f"<phone0{n}x@".encode())
        with transaction(rt.sessions) as session:
            kinds.append(inbound.process(session, raw, limited, now=NOW).kind)
    assert kinds == [Kind.REPLY, Kind.REPLY, Kind.LIMITED, Kind.LIMITED]
    # A day later the subscriber may reply again.
    raw = fixture(rt, "phone", ana).replace(b"<phone01@", b"<later@")
    with transaction(rt.sessions) as session:
        later = inbound.process(session, raw, limited, now=NOW + dt.timedelta(days=1, minutes=1))
    assert later.kind == Kind.REPLY


def test_replies_past_the_global_hourly_limit_are_not_saved(rt: Runtime, ana: int) -> None:
    ben = enroll(rt, "ben@example.org")
    limited = inbound.Inbound(**{**rt.inbound.__dict__, "limits": inbound.Limits(per_hour=1)})
    with transaction(rt.sessions) as session:
        first = inbound.process(session, fixture(rt, "phone", ana), limited, now=NOW)
        second = inbound.process(
            session, fixture(rt, "gmail", ben, sender="ben@example.org"), limited, now=NOW
        )
    assert (first.kind, second.kind) == (Kind.REPLY, Kind.LIMITED)


def test_envelope_recipients_are_used_before_the_headers(rt: Runtime, ana: int) -> None:
    raw = fixture(rt, "gmail", ana).replace(
        address(rt, REPLY, ana, 3, DOMAIN).encode(), b"lessons@course.example.org"
    )
    assert receive(rt, raw).kind == Kind.JUNK
    again = raw.replace(b"CAF3xq1gmail01", b"second")
    decision = receive(rt, again, recipients=[address(rt, REPLY, ana, 3, DOMAIN)])
    assert decision.kind == Kind.REPLY


def test_nothing_of_the_message_is_kept_but_its_kind(rt: Runtime, ana: int) -> None:
    receive(rt, fixture(rt, "gmail", ana))
    with transaction(rt.sessions) as session:
        [row] = session.scalars(select(InboundMessage))
        assert (row.kind, row.enrollment_id, row.day) == ("reply", ana, 3)
        assert "gmail" not in row.digest and len(row.digest) == 64


@pytest.mark.parametrize("page", ["journal", "reflect"])
def test_the_journal_and_reflect_page_say_a_reply_came_from_email_and_when(
    rt: Runtime, ana: int, page: str
) -> None:
    from dripcourse import links
    from tests.test_web_support import Clock, make_app, path

    client = make_app(rt, Clock(NOW)).test_client()
    url = path(rt, links.JOURNAL, ana) if page == "journal" else path(rt, links.REFLECT, ana, 3)
    assert "from your email" not in client.get(url).get_data(as_text=True)
    receive(rt, fixture(rt, "gmail", ana))
    shown = client.get(url).get_data(as_text=True)
    assert "Saved Wednesday 5 March 2025 at 21:00 (UTC) from your email" in shown
    assert "swim class" in shown


def test_a_message_that_breaks_the_reading_halfway_is_junk_and_leaves_nothing_behind(
    rt: Runtime, ana: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kw: object) -> None:
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "a part no decoder can read")

    # The complaint is recorded, then reading fails: the suppression must not stay.
    monkeypatch.setattr(effects, "stop_all", broken)
    assert receive(rt, fixture(rt, "complaint", ana)).kind == Kind.JUNK
    with transaction(rt.sessions) as session:
        assert session.scalar(select(Suppression)) is None
        assert inbound_counts(session) == {"junk": 1}


def test_a_reply_in_an_unknown_charset_is_still_saved(rt: Runtime, ana: int) -> None:
    raw = fixture(rt, "phone", ana).replace(b"charset=utf-8", b"charset=x-no-such-charset")
    assert receive(rt, raw).kind == Kind.REPLY
    assert saved(rt, ana) == REPLIES["phone"]


def test_a_bounces_diagnostic_is_stored_without_control_characters(rt: Runtime, ana: int) -> None:
    """An OSC sequence in a fake bounce was stored as it came and later printed to the
    operator's terminal by `suppressions list`."""
    raw = fixture(rt, "bounce_hard", ana).replace(
        b"Recipient address rejected", b"\x1b]0;pwned\x07 rejected\x1b[2J"
    )
    assert receive(rt, raw).kind == Kind.BOUNCE
    with transaction(rt.sessions) as session:
        stored = [
            session.scalar(select(Suppression.reason).where(Suppression.email == ANA)),
            session.scalar(
                select(Delivery.last_error).where(Delivery.enrollment_id == ana, Delivery.day == 3)
            ),
        ]
    for text in stored:
        assert text is not None and "]0;pwned rejected[2J" in text
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text)


@pytest.mark.parametrize("message_id", [b"<>", b"<@>", b"<a@[b", b"<)x@y>", b"", b"no brackets"])
def test_a_reply_with_a_broken_message_id_is_saved_once_by_the_digest_of_its_bytes(
    rt: Runtime, ana: int, message_id: bytes
) -> None:
    raw = fixture(rt, "gmail", ana).replace(b"<CAF3xq1gmail01@mail.gmail.com>", message_id)
    assert receive(rt, raw) == Decision(Kind.REPLY, "", ana, 3)
    assert receive(rt, raw).kind == Kind.DUPLICATE
    assert saved(rt, ana) == REPLIES["gmail"]


def nested_multipart(depth: int, to: str) -> bytes:
    """A message ``depth`` multiparts deep, a text part at the bottom."""
    head = [f"To: {to}\r\nFrom: {ANA}\r\nMessage-ID: <nested@example.org>\r\n".encode()]
    tail = []
    for level in range(depth):
        head.append(
            f'Content-Type: multipart/mixed; boundary="b{level}"\r\n\r\n--b{level}\r\n'.encode()
        )
        tail.insert(0, f"\r\n--b{level}--\r\n".encode())
    return b"".join(head) + b"Content-Type: text/plain\r\n\r\nDeep down." + b"".join(tail)


@pytest.mark.parametrize("depth", [300, 1000])
def test_a_message_nested_deeper_than_any_real_one_is_junk_at_once_and_recorded(
    rt: Runtime, ana: int, depth: int
) -> None:
    raw = nested_multipart(depth, address(rt, REPLY, ana, 3, DOMAIN))
    started = time.thread_time()  # this thread's work, not the shared machine's load
    assert receive(rt, raw).kind == Kind.JUNK
    assert time.thread_time() - started < 1.0
    assert receive(rt, raw).kind == Kind.DUPLICATE
    with transaction(rt.sessions) as session:
        assert inbound_counts(session) == {"junk": 1}


def test_a_wrong_reflections_key_during_a_reply_is_temporary_and_records_nothing(
    rt: Runtime, ana: int
) -> None:
    from dripcourse.encryption import ReflectionCipher, WrongReflectionsKey, new_key

    receive(rt, fixture(rt, "phone", ana))  # something sealed under the right key
    wrong = inbound.Inbound(**{**rt.inbound.__dict__, "cipher": ReflectionCipher([new_key()])})
    raw = fixture(rt, "gmail", ana)
    with pytest.raises(WrongReflectionsKey), transaction(rt.sessions) as session:
        inbound.process(session, raw, wrong, now=NOW)
    with transaction(rt.sessions) as session:
        assert inbound_counts(session) == {"reply": 1}  # the gmail reply left no row
    # With the right key back, the same message is saved, not taken for a duplicate.
    assert receive(rt, raw).kind == Kind.REPLY
    assert REPLIES["gmail"] in (saved(rt, ana) or "")


@pytest.mark.parametrize("name", ["gmail", "bounce_hard", "complaint"])
def test_a_callers_rollback_after_processing_leaves_nothing(
    rt: Runtime, ana: int, name: str
) -> None:
    with rt.sessions() as session:
        session.begin()
        decision = inbound.process(session, fixture(rt, name, ana), rt.inbound, now=NOW)
        assert decision.kind in (Kind.REPLY, Kind.BOUNCE, Kind.COMPLAINT)
        session.rollback()
    assert saved(rt, ana) is None
    with transaction(rt.sessions) as session:
        assert session.scalar(select(Suppression)) is None
        assert inbound_counts(session) == {}
        enrollment = session.get(Enrollment, ana)
        assert enrollment is not None and enrollment.status == EnrollmentStatus.ACTIVE


def _replies_at_once(rt: Runtime, enrollment_id: int, n: int, limits: object = None) -> list[Kind]:
    """``n`` different replies to Day 3, each processed in its own thread and transaction,
    all let go at the same moment."""
    from dripcourse.inbound.listener import receive as receive_in_own_transaction

    config = (
        rt.inbound
        if limits is None
        else inbound.Inbound(**{**rt.inbound.__dict__, "limits": limits})
    )
    start = threading.Barrier(n)

    def one(i: int) -> Kind:
        raw = (
            fixture(rt, "phone", enrollment_id)
            .replace(b"<phone01@", f"<phone-{i}@".encode())
            .replace(b"On call tonight.", f"Reply number {i}.".encode())
        )
        start.wait()
        return receive_in_own_transaction(rt.sessions, config, raw, now=NOW).kind

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


@pytest.mark.postgres
def test_replies_to_one_day_at_once_on_postgresql_all_keep_their_text(
    postgres_url: str, tmp_path: Path
) -> None:
    rt = Runtime(make_settings(tmp_path, database_url=postgres_url, reply_domain=DOMAIN))
    try:
        enrollment_id = enroll(rt, ANA)
        send_days(rt, 3)
        kinds = _replies_at_once(rt, enrollment_id, 6)
        assert kinds == [Kind.REPLY] * 6
        text = saved(rt, enrollment_id) or ""
        assert sorted(n for n in range(6) if f"Reply number {n}." in text) == list(range(6))
    finally:
        rt.close()


@pytest.mark.postgres
def test_the_per_subscriber_limit_holds_for_replies_at_once_on_postgresql(
    postgres_url: str, tmp_path: Path
) -> None:
    rt = Runtime(make_settings(tmp_path, database_url=postgres_url, reply_domain=DOMAIN))
    try:
        enrollment_id = enroll(rt, ANA)
        send_days(rt, 3)
        limits = inbound.Limits(per_subscriber_per_day=5, max_chars=100_000)
        kinds = _replies_at_once(rt, enrollment_id, 10, limits)
        assert sorted(kinds) == sorted([Kind.REPLY] * 5 + [Kind.LIMITED] * 5)
        with transaction(rt.sessions) as session:
            assert inbound_counts(session) == {"reply": 5, "limited": 5}
    finally:
        rt.close()


MTA = "mx.course.example.org"


@pytest.mark.parametrize(
    ("headers", "kind"),
    [
        ([f"{MTA}; dmarc=pass header.from=example.org"], Kind.REPLY),
        ([f"{MTA}; spf=fail smtp.mailfrom=x@y; dkim=pass header.d=example.org"], Kind.REPLY),
        ([f"{MTA}; spf=pass smtp.mailfrom=ana@example.org"], Kind.REPLY),
        ([f"{MTA.upper()} 1; dmarc=pass (p=reject) header.from=example.org"], Kind.REPLY),
        ([], Kind.JUNK),
        ([f"{MTA}; dmarc=fail header.from=example.org"], Kind.JUNK),
        ([f"{MTA}; none"], Kind.JUNK),
        ([f"{MTA}; dkim=pass header.d=evil.example.net"], Kind.JUNK),
        ([f"{MTA}; dmarc=pass header.from=evil.example.net"], Kind.JUNK),
        ([f"{MTA}; dkim=pass header.d=org"], Kind.JUNK),  # a parent aligns, but not a TLD
        (["mx.evil.example.net; dmarc=pass header.from=example.org"], Kind.JUNK),
        # The MTA's own header comes first; one the sender wrote below it is not read.
        (
            [
                f"{MTA}; dmarc=fail header.from=example.org",
                f"{MTA}; dmarc=pass header.from=example.org",
            ],
            Kind.JUNK,
        ),
        # Only the topmost with the MTA's id is believed, even when it cannot be read: one
        # below it may be the sender's (the MTA writes a sender's HELO or envelope into its
        # own, which can make it unreadable).
        ([f"{MTA}; ((((", f"{MTA}; dmarc=pass header.from=example.org"], Kind.JUNK),
        (
            [
                f"{MTA}; spf=pass smtp.helo=a;b smtp.mailfrom=x; dmarc=fail header.from=x.org",
                f"{MTA}; dmarc=pass header.from=example.org",
            ],
            Kind.JUNK,
        ),
        (
            ["(a comment) " + MTA + "; ((((", f"{MTA}; dmarc=pass header.from=example.org"],
            Kind.JUNK,
        ),
        (["mx.other.example.net; ((((", f"{MTA}; dmarc=pass header.from=example.org"], Kind.REPLY),
        # The domain's own DMARC verdict wins over a DKIM or SPF pass that only looks aligned.
        ([f"{MTA}; dmarc=fail header.from=example.org; dkim=pass header.d=example.org"], Kind.JUNK),
        # A domain without a DMARC policy ("none") still authenticates by an aligned pass.
        (
            [f"{MTA}; dmarc=none header.from=example.org; dkim=pass header.d=example.org"],
            Kind.REPLY,
        ),
        ([f"{MTA}; dmarc=none header.from=example.org"], Kind.JUNK),
    ],
)
def test_with_a_trusted_mta_a_reply_is_saved_only_when_the_from_domain_authenticates(
    rt: Runtime, ana: int, headers: list[str], kind: Kind
) -> None:
    trusting = inbound.Inbound(**{**rt.inbound.__dict__, "trusted_authserv_id": MTA})
    added = b"".join(f"Authentication-Results: {h}\r\n".encode() for h in headers)
    raw = added + fixture(rt, "gmail", ana)
    with transaction(rt.sessions) as session:
        assert inbound.process(session, raw, trusting, now=NOW).kind == kind
    assert (saved(rt, ana) is not None) == (kind == Kind.REPLY)


def test_without_a_trusted_mta_authentication_results_are_not_read(rt: Runtime, ana: int) -> None:
    raw = f"Authentication-Results: {MTA}; dmarc=fail\r\n".encode() + fixture(rt, "gmail", ana)
    assert receive(rt, raw).kind == Kind.REPLY
