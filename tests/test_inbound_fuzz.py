"""The whole inbound core against generated hostile mail: it always decides, and quickly.

Hypothesis builds messages byte by byte (headers that break the parser, MIME trees of every
shape, charsets and transfer encodings that lie, bodies of text, bytes, quotes and delivery
reports) and sends each to the reply, bounce or no address of an enrolled subscriber through
``inbound.process``. No exception may escape and each message must take under a second of
CPU time.

CI runs ``DRIPCOURSE_FUZZ_EXAMPLES`` examples (2,000 by default); for a longer hunt:

    DRIPCOURSE_FUZZ_EXAMPLES=100000 .venv/bin/python -m pytest tests/test_inbound_fuzz.py

A failing input is printed by Hypothesis: add it as an ``@example`` so every run tries it.
"""

from __future__ import annotations

import base64
import gc
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dripcourse.inbound import route as inbound
from dripcourse.links import BOUNCE, REPLY
from dripcourse.models import InboundKind
from dripcourse.runtime import Runtime
from tests.conftest import make_settings
from tests.test_inbound import ANA, DOMAIN, NOW
from tests.test_web_support import address, enroll, send_days

EXAMPLES = int(os.environ.get("DRIPCOURSE_FUZZ_EXAMPLES", "2000"))
SECONDS_PER_MESSAGE = 1.0


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, migrated_sqlite: Path
) -> Iterator[tuple[Runtime, int]]:
    """One SQLite database with Ana enrolled and sent Days 1-3, shared by every example."""
    tmp_path = tmp_path_factory.mktemp("fuzz")
    shutil.copy(migrated_sqlite, tmp_path / "fuzz.sqlite3")
    url = f"sqlite:///{tmp_path / 'fuzz.sqlite3'}"
    rt = Runtime(make_settings(tmp_path, database_url=url, reply_domain=DOMAIN))
    enrollment_id = enroll(rt, ANA)
    send_days(rt, 3)
    yield rt, enrollment_id
    rt.close()


# Header values the parser is known to choke on or that try to fool the sender check.
NASTY_VALUES = [
    "<>",
    "<@>",
    "<a@[b",
    "<)x@y>",
    "=?utf-8?q?broken",
    "=?x-no-such?b?////?=",
    "=?utf-8?b?" + base64.b64encode("Ünïcødé".encode()).decode() + "?=",
    '"unterminated',
    "((((",
    ")",
    "a@b, c@d",
    "<alice@x>@evil",
    "alice@x <evil@y>",
    '"ana@example.org" <evil@example.net>',
    "undisclosed-recipients:;",
    "multipart/report; report-type=delivery-status",
    "multipart/mixed; boundary=",
    'text/plain; charset="x-no-such"',
    "auto-replied",
    "no",
    ANA,
]
HEADER_NAMES = [
    "From",
    "To",
    "Cc",
    "Subject",
    "Message-ID",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Auto-Submitted",
    "Precedence",
    "Delivered-To",
    "X-Original-To",
    "Reply-To",
    "References",
    "Date",
    "Authentication-Results",
    "Final-Recipient",
    "Status",
    "Feedback-Type",
]
CHARSETS = ["utf-8", "latin-1", "koi8-r", "iso-2022-jp", "utf-16", "x-no-such", "", "us-ascii"]
ENCODINGS = ["", "7bit", "8bit", "base64", "quoted-printable", "x-uuencode", "nonsense"]
LEAF_TYPES = [
    "text/plain",
    "text/html",
    "application/octet-stream",
    "message/delivery-status",
    "message/feedback-report",
    "text/rfc822-headers",
    "message/rfc822",
]
MULTIPART_TYPES = [
    "mixed",
    "alternative",
    "related",
    "report; report-type=delivery-status",
    "report; report-type=feedback-report",
]

header_values = st.one_of(
    st.sampled_from(NASTY_VALUES),
    st.text(max_size=60),
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
)
headers = st.lists(st.tuples(st.sampled_from(HEADER_NAMES), header_values), max_size=12)

report_fields = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "Final-Recipient",
                "Original-Recipient",
                "Action",
                "Status",
                "Diagnostic-Code",
                "Reporting-MTA",
                "Feedback-Type",
                "Original-Rcpt-To",
                "Original-Mail-From",
            ]
        ),
        st.one_of(
            st.sampled_from(
                [
                    "rfc822; " + ANA,
                    "failed",
                    "delayed",
                    "5.1.1",
                    "4.2.2",
                    "5.0.0",
                    "2.0.0",
                    "smtp; 550 5.1.1 no such user",
                    "abuse",
                    "opt-out",
                    "9.9.9",
                    "",
                ]
            ),
            st.text(max_size=30),
        ),
    ),
    max_size=8,
).map(lambda fields: "\r\n".join(f"{k}: {v}" for k, v in fields))

bodies = st.one_of(
    st.text(max_size=400),
    st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
    st.lists(st.text(max_size=40), max_size=12).map(
        lambda lines: "\n".join(f"> {line}" if i % 2 else line for i, line in enumerate(lines))
    ),
    report_fields.map(lambda block: "Reporting-MTA: dns; mx.example\r\n\r\n" + block),
)


def _header_block(pairs: list[tuple[str, str]]) -> bytes:
    return b"".join(
        f"{name}: {value}\r\n".encode("utf-8", "surrogateescape") for name, value in pairs
    )


@st.composite
def leaves(draw: st.DrawFn) -> bytes:
    kind, charset, cte = (
        draw(st.sampled_from(LEAF_TYPES)),
        draw(st.sampled_from(CHARSETS)),
        draw(st.sampled_from(ENCODINGS)),
    )
    text = draw(bodies)
    try:
        payload = text.encode(charset or "utf-8", "replace")
    except LookupError:
        payload = text.encode("utf-8", "surrogateescape")
    if cte == "base64" and draw(st.booleans()):
        payload = base64.encodebytes(payload)
    head = f"Content-Type: {kind}" + (f"; charset={charset}" if charset else "") + "\r\n"
    if cte:
        head += f"Content-Transfer-Encoding: {cte}\r\n"
    return (
        head.encode()
        + _header_block(
            draw(st.lists(st.tuples(st.sampled_from(HEADER_NAMES), header_values), max_size=2))
        )
        + b"\r\n"
        + payload
    )


def _multipart(subtype: str, boundary: str, parts: list[bytes], closed: bool) -> bytes:
    head = f'Content-Type: multipart/{subtype}; boundary="{boundary}"\r\n\r\n'.encode()
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    return head + body + (b"--" + boundary.encode() + b"--\r\n" if closed else b"")


trees = st.recursive(
    leaves(),
    lambda children: st.builds(
        _multipart,
        st.sampled_from(MULTIPART_TYPES),
        st.sampled_from(["b1", "b2", "=_x", "", "a b", "b1"]),  # repeated and empty ones too
        st.lists(children, max_size=4),
        st.booleans(),
    ),
    max_leaves=10,
)


@st.composite
def messages(draw: st.DrawFn) -> tuple[bytes, str]:
    """Raw bytes and which of our addresses they go to ("reply", "bounce" or "none")."""
    return (
        _header_block(draw(headers)) + draw(trees),
        draw(st.sampled_from(["reply", "bounce", "none"])),
    )


@pytest.mark.timeout(300 + EXAMPLES // 10)  # a long run by hand is not cut off
@settings(
    max_examples=EXAMPLES,
    deadline=None,  # timed below, per message, without Hypothesis's own overhead
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(message=messages())
@example(message=(b"Message-ID: <>\r\nFrom: " + ANA.encode() + b"\r\n\r\nhi", "reply"))
@example(message=(b"Message-ID: <a@[b\r\n\r\n", "bounce"))
@example(message=(b"From: <alice@x>@evil\r\nSubject: =?utf-8?q?broken\r\n\r\nhi", "reply"))
def test_no_message_escapes_the_inbound_core_and_each_takes_under_a_second(
    world: tuple[Runtime, int], message: tuple[bytes, str]
) -> None:
    rt, enrollment_id = world
    raw, to = message
    recipients = {
        "reply": [address(rt, REPLY, enrollment_id, 3, DOMAIN)],
        "bounce": [address(rt, BOUNCE, enrollment_id, 3, DOMAIN)],
        "none": [],
    }[to]
    with rt.sessions() as session:
        # The time this thread spent working: the message's cost, not the machine's load
        # (several test runs share two cores here, and a stall there is no slow message), nor
        # a collection of what earlier examples left behind (deferred until after).
        gc.disable()
        try:
            started = time.thread_time()
            decision = inbound.process(session, raw, rt.inbound, now=NOW, recipients=recipients)
            took = time.thread_time() - started
        finally:
            gc.enable()
        session.rollback()  # every example meets the same database
    assert decision.kind in set(InboundKind)
    assert took < SECONDS_PER_MESSAGE, f"{took:.2f}s for one message"


def _enormous(reply_to: str) -> dict[str, bytes]:
    """Messages at the size limit (1 MB) in the shapes that cost the parser most: many small
    MIME parts, and many address headers, which the parser reads one by one."""
    head = f"From: {ANA}\r\nSubject: Re: Day 3\r\nMessage-ID: <big@example.org>\r\n"
    mixed = 'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
    shapes = {
        "parts with a type": "".join(
            f"--b\r\nContent-Type: text/plain\r\n\r\n{i}\r\n" for i in range(40000)
        ),
        "parts without headers": "".join(f"--b\r\n\r\n{i}\r\n" for i in range(60000)),
    }
    messages = {name: head + mixed + parts for name, parts in shapes.items()}
    for name in ("To", "Cc", "Delivered-To", "From"):
        many = "".join(f"{name}: someone{i}@example.net\r\n" for i in range(40000))
        messages[f"many {name} headers"] = f"{head}{many}To: {reply_to}\r\n\r\nhello\r\n"
    return {name: raw.encode()[:1_000_000] for name, raw in messages.items()}


@pytest.mark.parametrize(
    "shape",
    [
        "parts with a type",
        "parts without headers",
        "many To headers",
        "many Cc headers",
        "many Delivered-To headers",
        "many From headers",
    ],
)
def test_an_enormous_message_of_the_costliest_shapes_takes_under_a_second(
    world: tuple[Runtime, int], shape: str
) -> None:
    rt, enrollment_id = world
    raw = _enormous(address(rt, REPLY, enrollment_id, 3, DOMAIN))[shape]
    with rt.sessions() as session:
        gc.disable()
        try:
            started = time.thread_time()
            # No envelope recipients: as `inbound poll` reads a mailbox, from the headers.
            decision = inbound.process(session, raw, rt.inbound, now=NOW)
            took = time.thread_time() - started
        finally:
            gc.enable()
        session.rollback()
    assert decision.kind in set(InboundKind)
    assert took < SECONDS_PER_MESSAGE, f"{took:.2f}s for one message"


def test_an_enormous_message_of_authentication_results_takes_under_a_second(
    world: tuple[Runtime, int],
) -> None:
    """With a trusted MTA named, headers of other ids are passed over unparsed: the library
    spends about 0.3 ms on each, and 1 MB holds 10,000 of them above the MTA's own."""
    rt, enrollment_id = world
    trusting = inbound.Inbound(**{**rt.inbound.__dict__, "trusted_authserv_id": "mx.ours.example"})
    other = "Authentication-Results: mx.other.example; dkim=pass header.d=example.net\r\n"
    head = other * (900_000 // len(other))
    raw = (
        f"{head}Authentication-Results: mx.ours.example; dmarc=pass header.from=example.org\r\n"
        f"From: {ANA}\r\nTo: {address(rt, REPLY, enrollment_id, 3, DOMAIN)}\r\n"
        "Subject: Re: Day 3\r\nMessage-ID: <many-ar@example.org>\r\n\r\nStill on call.\r\n"
    ).encode()
    with rt.sessions() as session:
        gc.disable()
        try:
            started = time.thread_time()
            decision = inbound.process(session, raw, trusting, now=NOW)
            took = time.thread_time() - started
        finally:
            gc.enable()
        session.rollback()
    assert decision.kind == InboundKind.REPLY
    assert took < SECONDS_PER_MESSAGE, f"{took:.2f}s for one message"
