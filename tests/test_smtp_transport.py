"""SMTPTransport against a real SMTP server: one reused connection, reopened when it drops,
every failure sorted into "try again later" or "never for this address"."""

from __future__ import annotations

import shutil
import smtplib
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from dripcourse.courses.wire import WireMessage
from dripcourse.sending.transport import (
    _PLAIN_ADDRESS,
    PermanentMailError,
    RelayError,
    SMTPTransport,
    TransientMailError,
    transport_from_url,
)
from tests.conftest import service_missing
from tests.smtp_sink import SMTPSink, _free_port
from tests.workers import wait_until

# The sink asks for a password over plain text in some tests; aiosmtpd rightly warns of it.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


def lesson_to(address: str, n: int = 1) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "lessons@course.example.org"
    msg["To"] = address
    msg["Subject"] = f"Day {n}"
    msg.set_content(f"Lesson {n}\n")
    return msg


@pytest.fixture
def transport(smtp_sink: SMTPSink) -> Iterator[SMTPTransport]:
    smtp = SMTPTransport("127.0.0.1", smtp_sink.port, timeout=5)
    yield smtp
    smtp.close()


def test_one_connection_carries_many_messages(smtp_sink: SMTPSink, transport: SMTPTransport):
    for n in range(1, 6):
        transport.send(lesson_to(f"reader{n}@example.org", n))

    assert smtp_sink.handler.connections == 1
    assert len({m.peer for m in smtp_sink.handler.messages()}) == 1
    assert smtp_sink.handler.recipients() == [f"reader{n}@example.org" for n in range(1, 6)]


# Plain addresses (written in angle brackets as they are) and ones smtplib must parse first.
ENVELOPES = [
    ("bounce+1a-2-abc123def456-xyz@course.example.org", "reader.one+tag@example.org"),
    ("lessons@course.example.org", "o'neil=x{1}@mail-1.example.ie"),
    ("Lessons <lessons@course.example.org>", "Reader One <reader1@example.org>"),
    ("lessons@course.example.org", '"reader one"@example.org'),
]


@pytest.mark.parametrize(("sender", "recipient"), ENVELOPES)
def test_the_envelope_is_what_smtplib_would_write(
    smtp_sink: SMTPSink, transport: SMTPTransport, sender: str, recipient: str
) -> None:
    # Our client writes a plain address's MAIL and RCPT without parsing it (it cost a tenth of
    # our CPU per message); anything else goes through smtplib's own parse.
    plain = smtplib.SMTP("127.0.0.1", smtp_sink.port)
    try:
        plain.sendmail(sender, [recipient], b"Subject: x\r\n\r\nbody\r\n")
    finally:
        plain.quit()
    transport.send(WireMessage(sender, (recipient,), b"Subject: x\r\n\r\nbody\r\n"))

    theirs, ours = smtp_sink.handler.messages()
    assert (ours.mail_from, ours.rcpt_tos) == (theirs.mail_from, theirs.rcpt_tos)
    assert ours.rcpt_tos == [smtplib.quoteaddr(recipient)[1:-1]]
    assert bool(_PLAIN_ADDRESS.fullmatch(recipient)) == (
        "<" not in recipient and " " not in recipient
    )


@pytest.mark.parametrize(
    "address",
    ["a@b", "a.b.c@d.e.f", "x!#$%&'*+/=?^_`{|}~-y@ex-ample.org", "bounce+1a-2-k-m@c.example.org"],
)
def test_a_plain_address_is_one_smtplib_writes_unchanged(address: str) -> None:
    assert _PLAIN_ADDRESS.fullmatch(address)
    assert smtplib.quoteaddr(address) == f"<{address}>"


@pytest.mark.parametrize(
    "address", ["a..b@c", ".a@c", "a@b..c", "a b@c", '"a"@b', "a@[1.2.3.4]", "<a@b>", "a@b,c@d"]
)
def test_anything_else_is_left_to_smtplib(address: str) -> None:
    assert not _PLAIN_ADDRESS.fullmatch(address)


def test_reopens_the_connection_after_the_server_hangs_up(
    smtp_sink: SMTPSink, transport: SMTPTransport
):
    transport.send(lesson_to("first@example.org"))
    smtp_sink.drop_connections()

    transport.send(lesson_to("second@example.org"))

    assert smtp_sink.handler.recipients() == ["first@example.org", "second@example.org"]
    assert smtp_sink.handler.connections == 2


def test_reopens_the_connection_after_the_server_timed_it_out():
    # Real servers answer an idle connection with "421 timeout" and hang up; the next message
    # must go out on a new connection, not come back as a failure to retry later.
    sink = SMTPSink(idle_timeout=0.3).start()
    smtp = SMTPTransport("127.0.0.1", sink.port, timeout=5)
    try:
        smtp.send(lesson_to("first@example.org"))
        wait_until(lambda: not sink.handler.live, 10, "the server to time out the idle client")

        smtp.send(lesson_to("second@example.org"))

        assert sink.handler.recipients() == ["first@example.org", "second@example.org"]
        assert sink.handler.connections == 2
    finally:
        smtp.close()
        sink.stop()


def test_threads_send_side_by_side_each_on_a_connection_of_its_own(smtp_sink: SMTPSink):
    """A thread-pool worker sends on as many connections as it has threads sending: with a
    relay slow to answer, threads that took turns on one connection gained nothing."""
    smtp_sink.handler.delay = 1.0  # every 250 after DATA comes a second late
    smtp = SMTPTransport("127.0.0.1", smtp_sink.port, timeout=5)
    start = threading.Barrier(3)

    def send(n: int) -> None:
        start.wait()
        smtp.send(lesson_to(f"reader{n}@example.org", n))

    try:
        threads = [threading.Thread(target=send, args=(n,)) for n in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        got = smtp_sink.handler.messages()
        assert len(got) == 3
        assert len({m.peer for m in got}) == 3  # three connections
        # All three were with the server at once, not one after another.
        assert max(m.started for m in got) < min(m.finished for m in got)

        smtp_sink.handler.delay = 0
        for n in range(3, 6):  # one thread again: an open connection is reused, none opened
            smtp.send(lesson_to(f"reader{n}@example.org", n))
        assert smtp_sink.handler.connections == 3
    finally:
        smtp.close()
    # Closing the transport closes every connection it kept.
    wait_until(lambda: not smtp_sink.handler.live, 10, "the connections to close")


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ("550 5.1.1 No such user here", PermanentMailError),
        ("553 5.1.3 Bad recipient address syntax", PermanentMailError),
        ("450 4.2.1 Mailbox busy", TransientMailError),
        ("452 4.2.2 Mailbox full", TransientMailError),
    ],
)
def test_refused_recipient_is_permanent_only_for_5xx(
    smtp_sink: SMTPSink, transport: SMTPTransport, reply: str, error: type[Exception]
):
    smtp_sink.handler.reject["gone@example.org"] = reply

    with pytest.raises(error) as caught:
        transport.send(lesson_to("gone@example.org"))

    # The server's own words are what the operator sees in `status`.
    assert reply in str(caught.value)
    # A refused recipient does not cost the connection: the next message reuses it.
    transport.send(lesson_to("here@example.org"))
    assert smtp_sink.handler.recipients() == ["here@example.org"]
    assert smtp_sink.handler.connections == 1


def test_421_at_data_is_transient_and_the_next_message_reconnects(
    smtp_sink: SMTPSink, transport: SMTPTransport
):
    smtp_sink.handler.busy_for = 1

    with pytest.raises(TransientMailError, match="421"):
        transport.send(lesson_to("a@example.org"))
    transport.send(lesson_to("a@example.org"))

    assert smtp_sink.handler.recipients() == ["a@example.org"]
    assert smtp_sink.handler.connections == 2


def test_refused_connection_is_transient():
    smtp = SMTPTransport("127.0.0.1", _free_port(), timeout=2)

    with pytest.raises(TransientMailError, match="cannot reach"):
        smtp.send(lesson_to("a@example.org"))


def test_a_server_that_stops_answering_times_out_as_transient(smtp_sink: SMTPSink):
    smtp_sink.handler.delay = 3
    smtp = SMTPTransport("127.0.0.1", smtp_sink.port, timeout=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(TransientMailError):
            smtp.send(lesson_to("a@example.org"))
        assert time.monotonic() - started < 2.5

        smtp_sink.handler.delay = 0
        smtp.send(lesson_to("b@example.org"))
        # The timed-out connection was given up; the next message opened a fresh one.
        assert smtp_sink.handler.connections == 2
    finally:
        smtp.close()


def test_a_message_the_server_was_slow_to_take_is_not_sent_again_at_once(
    smtp_sink: SMTPSink,
):
    """On a connection used before, a 250 that came later than the timeout was taken for a
    hang-up of an idle connection, and the message went out again at once on a new one: a
    relay slow to answer got every message twice (and a third time at the pause's probe)."""
    smtp = SMTPTransport("127.0.0.1", smtp_sink.port, timeout=0.5)
    try:
        smtp.send(lesson_to("first@example.org"))
        smtp_sink.handler.delay = 1.0  # the server has the message, its 250 comes too late
        with pytest.raises(RelayError, match="timed out"):
            smtp.send(lesson_to("second@example.org"))
        smtp_sink.handler.delay = 0
        smtp.send(lesson_to("third@example.org"))
        assert smtp_sink.handler.counts() == {
            "first@example.org": 1,
            "second@example.org": 1,
            "third@example.org": 1,
        }
    finally:
        smtp.close()


def test_login_with_the_url_credentials():
    sink = SMTPSink(credentials={"relay-user": "p@ss word"}).start()
    try:
        smtp = transport_from_url(f"smtp://relay-user:p%40ss%20word@127.0.0.1:{sink.port}")
        smtp.send(lesson_to("a@example.org"))
        smtp.close()
        assert sink.logins == ["relay-user"]
        assert sink.handler.recipients() == ["a@example.org"]
    finally:
        sink.stop()


def test_wrong_password_is_our_mistake_not_the_subscribers():
    sink = SMTPSink(credentials={"relay-user": "right"}).start()
    try:
        smtp = transport_from_url(f"smtp://relay-user:wrong@127.0.0.1:{sink.port}")
        # Transient, so the address is not suppressed; the message says where to look.
        with pytest.raises(TransientMailError, match="check the mail settings"):
            smtp.send(lesson_to("a@example.org"))
        smtp.close()
    finally:
        sink.stop()


def test_a_connection_whose_login_fails_is_closed_not_left_open():
    """A failed login (or STARTTLS) left its connection open at the relay for as long as the
    error was kept (a log record, a task's retry): a paused worker probing with a wrong
    password every relay_retry_seconds piled up connections the relay counts against us."""
    sink = SMTPSink(credentials={"relay-user": "right"}).start()
    smtp = transport_from_url(f"smtp://relay-user:wrong@127.0.0.1:{sink.port}")
    try:
        kept = []
        for _ in range(3):
            with pytest.raises(RelayError) as refused:
                smtp.send(lesson_to("a@example.org"))
            kept.append(refused.value)
        assert sink.handler.connections == 3
        wait_until(lambda: not sink.handler.live, 10, "the refused connections to close")
    finally:
        smtp.close()
        sink.stop()


@pytest.fixture(scope="module")
def loopback_certificate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-signed certificate for 127.0.0.1 (key and certificate in one PEM file)."""
    if shutil.which("openssl") is None:
        service_missing("openssl", "not on PATH")
    folder = tmp_path_factory.mktemp("tls")
    pem = folder / "loopback.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    pem.write_text((folder / "key.pem").read_text() + (folder / "cert.pem").read_text())
    return pem


def test_starttls_and_login_as_in_production(
    loopback_certificate: Path, monkeypatch: pytest.MonkeyPatch
):
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(loopback_certificate)
    # The client verifies the server's certificate as it would a real relay's: trust ours.
    monkeypatch.setenv("SSL_CERT_FILE", str(loopback_certificate))
    sink = SMTPSink(tls_context=server_tls, credentials={"relay-user": "secret"}).start()
    try:
        smtp = transport_from_url(f"smtp://relay-user:secret@127.0.0.1:{sink.port}?starttls=true")
        smtp.send(lesson_to("a@example.org", 1))
        smtp.send(lesson_to("b@example.org", 2))
        smtp.close()
        assert sink.logins == ["relay-user"]
        assert sink.handler.recipients() == ["a@example.org", "b@example.org"]
        assert sink.handler.connections == 1
    finally:
        sink.stop()


def test_starttls_refuses_a_server_with_an_untrusted_certificate(loopback_certificate: Path):
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(loopback_certificate)
    sink = SMTPSink(tls_context=server_tls, credentials={"relay-user": "secret"}).start()
    try:
        smtp = transport_from_url(f"smtp://relay-user:secret@127.0.0.1:{sink.port}?starttls=true")
        with pytest.raises(TransientMailError, match="CERTIFICATE_VERIFY_FAILED"):
            smtp.send(lesson_to("a@example.org"))
        assert sink.logins == []
        assert sink.handler.recipients() == []
    finally:
        sink.stop()


def test_a_send_does_not_open_a_new_connection_it_could_not_finish_inside_its_lease(
    smtp_sink: SMTPSink,
):
    smtp = SMTPTransport("127.0.0.1", smtp_sink.port, timeout=2)
    try:
        smtp.send(lesson_to("a@example.org"))
        smtp_sink.drop_connections()
        # The server hung up; a fresh connection may need 9 replies of up to 2 s each, and the
        # worker's lease ends in one second: another worker could take the delivery over.
        with pytest.raises(RelayError, match="too little for a new connection"):
            smtp.send(lesson_to("b@example.org"), deadline=time.monotonic() + 1)
        assert smtp_sink.handler.recipients() == ["a@example.org"]
        assert smtp_sink.handler.connections == 1
        # With the time a whole send needs, it reconnects and sends.
        smtp.send(lesson_to("b@example.org"), deadline=time.monotonic() + 60)
        assert smtp_sink.handler.recipients() == ["a@example.org", "b@example.org"]
    finally:
        smtp.close()


def test_threads_asking_for_the_transport_at_once_share_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first tasks of a thread-pool worker arrive together: each thread made its own
    transport, and all but the one kept leaked their connections."""
    from dripcourse import runtime as runtime_module
    from dripcourse.runtime import Runtime
    from tests.conftest import make_settings

    made: list[SMTPTransport] = []
    real = runtime_module.transport_from_url

    def slow_to_make(url: str, **options: object) -> SMTPTransport:
        time.sleep(0.2)  # widen the window between "is there one?" and "here it is"
        made.append(real(url, **options))  # type: ignore[arg-type]
        return made[-1]

    monkeypatch.setattr(runtime_module, "transport_from_url", slow_to_make)
    rt = Runtime(make_settings(tmp_path, mail_url="smtp://127.0.0.1:2525"))
    start = threading.Barrier(4)
    got: list[object] = []

    def ask() -> None:
        start.wait()
        got.append(rt.transport)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(made) == 1
    assert len(got) == 4 and all(each is made[0] for each in got)
