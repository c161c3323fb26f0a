"""A reply is saved without the lesson it quotes, whatever language its quote header is in:
routing hands the trimmer the lesson the reply answers (docs/inbound.md, "What is saved")."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from dripcourse.db import transaction
from dripcourse.inbound import route as inbound
from dripcourse.links import REPLY
from dripcourse.models import InboundKind as Kind
from dripcourse.reader import reflections
from dripcourse.runtime import Runtime
from tests.conftest import make_settings, utc
from tests.test_web_support import address, enroll, send_days

DOMAIN = "reply.course.example.org"
ANA = "ana@example.org"
NOW = utc(2025, 3, 5, 21)
WRITTEN = (
    "Ég ætla að hætta að lesa vaktaplanið eftir klukkan níu á kvöldin.\n"
    "Það er lítið, en ég svaf illa síðast þegar ég gerði það."
)


@pytest.fixture
def rt(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    runtime = Runtime(make_settings(tmp_path, database_url=database_url, reply_domain=DOMAIN))
    yield runtime
    runtime.close()


def sent_lesson_text(rt: Runtime, day: int) -> str:
    """The text part of the lesson of ``day`` as it went out (the file transport's outbox)."""
    outbox = Path(rt.settings.mail_url.removeprefix("file://"))
    for path in sorted(outbox.rglob("*.eml")):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        if str(msg["Subject"]).startswith(f"Day {day}:"):
            body = msg.get_body(preferencelist=("plain",))
            assert body is not None
            return str(body.get_content())  # type: ignore[attr-defined]
    raise AssertionError(f"no Day {day} lesson in the outbox")


def icelandic_reply(rt: Runtime, enrollment_id: int, lesson: str, *, marks: bool) -> bytes:
    """A reply from a client that writes its quote header in Icelandic (a header no rule
    here knows, with no address in it) and quotes the lesson whole, with or without ``>``
    marks. Without the lesson known, the unmarked quote was saved as the reflection."""
    quoted = "\n".join(("> " + line).rstrip() if marks else line for line in lesson.split("\n"))
    text = f"{WRITTEN}\n\nÞann 5.3.2025 skrifaði The White Coat Reset:\n\n{quoted}\n"
    msg = EmailMessage()
    msg["From"] = f"Ana <{ANA}>"
    msg["To"] = address(rt, REPLY, enrollment_id, 3, DOMAIN)
    msg["Subject"] = "Sv: Day 3"
    msg["Message-ID"] = f"<is{int(marks)}@mail.example.is>"
    msg.set_content(text)
    return msg.as_bytes(policy=email.policy.SMTP)


@pytest.mark.parametrize("marks", [False, True], ids=["unmarked", "quoted"])
def test_a_reply_quoting_the_lesson_under_an_unknown_header_saves_only_what_was_written(
    rt: Runtime, marks: bool
) -> None:
    enrollment_id = enroll(rt, ANA)
    send_days(rt, 3)
    raw = icelandic_reply(rt, enrollment_id, sent_lesson_text(rt, 3), marks=marks)
    with transaction(rt.sessions) as session:
        decision = inbound.process(session, raw, rt.inbound, now=NOW)
    assert decision.kind == Kind.REPLY
    with transaction(rt.sessions) as session:
        found = reflections.get_reflection(session, enrollment_id, 3, rt.reflection_cipher)
    assert found is not None
    # The header line goes with the lesson below it: nothing of either is kept.
    assert found.body == WRITTEN
