"""The ways inbound mail arrives: `inbound pipe` (sysexits) and `inbound serve` (real SMTP)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email
import email.policy
import json
import os
import signal
import smtplib
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.smtp import Envelope
from click.testing import CliRunner

from dripcourse import db, encryption, links
from dripcourse.cli import cli
from dripcourse.cli import inbound as inbound_cli
from dripcourse.db import make_engine, transaction
from dripcourse.inbound import listener as inbound_listener
from dripcourse.inbound.listener import InboundHandler
from dripcourse.links import REPLY
from dripcourse.people.status import inbound_counts as counts
from dripcourse.runtime import Runtime
from dripcourse.settings import Settings
from tests.conftest import make_settings
from tests.smtp_sink import SMTPSink, _free_port
from tests.test_inbound import ANA, DOMAIN, REPLIES, fixture, saved
from tests.test_web_support import (
    DAY_1_UTC,
    Clock,
    address,
    enroll,
    make_app,
    path,
    run_cli,
    send_days,
)
from tests.workers import settings_env

DRIPCOURSE = str(Path(sys.executable).parent / "dripcourse")


@pytest.fixture
def settings(tmp_path: Path, sqlite_url: str) -> Settings:
    return make_settings(tmp_path, database_url=sqlite_url, reply_domain=DOMAIN)


@pytest.fixture
def rt(settings: Settings) -> Iterator[Runtime]:
    runtime = Runtime(settings)
    yield runtime
    runtime.close()


@pytest.fixture
def ana(rt: Runtime) -> int:
    enrollment_id = enroll(rt, ANA)
    send_days(rt, 3)
    return enrollment_id


def pipe(settings: Settings, raw: bytes, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(
        cli, ["inbound", "pipe", *args], input=raw, env=settings_env(settings)
    )


def test_pipe_saves_a_reply_and_exits_0(settings: Settings, rt: Runtime, ana: int) -> None:
    result = pipe(settings, fixture(rt, "gmail", ana))
    assert (result.exit_code, result.output.strip()) == (0, "reply")
    assert saved(rt, ana) == REPLIES["gmail"]


def test_pipe_exits_0_for_what_it_drops_so_the_mta_never_answers_it(
    settings: Settings, rt: Runtime, ana: int
) -> None:
    result = pipe(settings, fixture(rt, "out_of_office", ana))
    assert (result.exit_code, result.output.strip()) == (0, "auto-reply")


def test_pipe_exits_75_when_the_database_is_out_of_reach_so_the_mta_retries(
    settings: Settings, rt: Runtime, ana: int, tmp_path: Path
) -> None:
    gone = dataclasses.replace(settings, database_url=f"sqlite:///{tmp_path}/no/such/dir.db")
    result = pipe(gone, fixture(rt, "gmail", ana))
    assert result.exit_code == 75
    assert "try again later" in result.output and "Traceback" not in result.output
    assert saved(rt, ana) is None


def test_pipe_exits_65_for_a_message_over_the_size_limit(
    settings: Settings, rt: Runtime, ana: int
) -> None:
    small = dataclasses.replace(settings, inbound_max_bytes=100)
    result = pipe(small, fixture(rt, "gmail", ana))
    assert result.exit_code == 65 and "inbound_max_bytes" in result.output
    assert saved(rt, ana) is None


def test_pipe_exits_67_for_a_recipient_that_is_not_ours(
    settings: Settings, rt: Runtime, ana: int
) -> None:
    result = pipe(settings, fixture(rt, "gmail", ana), "--recipient", f"reflect+x@{DOMAIN}")
    assert result.exit_code == 67
    assert saved(rt, ana) is None


def test_inbound_without_reply_domain_is_one_error_line(tmp_path: Path, sqlite_url: str) -> None:
    settings = make_settings(tmp_path, database_url=sqlite_url)
    result = run_cli(settings, "inbound", "serve")
    assert result.exit_code == 1
    assert result.output.strip().startswith("Error: setting reply_domain: not set")


def test_pipe_exits_75_for_a_mistake_in_the_settings_so_the_mta_keeps_the_mail(
    tmp_path: Path, sqlite_url: str
) -> None:
    result = pipe(make_settings(tmp_path, database_url=sqlite_url), b"Subject: x\r\n\r\n")
    assert result.exit_code == 75
    [line] = result.output.strip().splitlines()
    assert line.startswith("Error: setting reply_domain: not set")
    assert line.endswith("(the mail server keeps the message)")


def test_pipe_exits_75_for_an_unreadable_settings_file(settings: Settings, tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("this is = = not toml\n")
    env = {**settings_env(settings), "DRIPCOURSE_CONFIG": str(broken)}
    result = CliRunner().invoke(cli, ["inbound", "pipe"], input=b"Subject: x\r\n\r\n", env=env)
    assert result.exit_code == 75, result.output
    assert "Traceback" not in result.output


def test_pipe_exits_75_for_an_unexpected_error_of_ours(
    settings: Settings, rt: Runtime, ana: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kw: object) -> None:
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(inbound_cli, "receive", broken)
    result = pipe(settings, fixture(rt, "gmail", ana))
    assert result.exit_code == 75
    assert result.output.strip().splitlines()[-1].startswith("Error: unexpected error")


def _wrong_key(settings: Settings, rt: Runtime, ana: int) -> Settings:
    """``settings`` with a reflections key that does not open the reflection now stored."""
    assert pipe(settings, fixture(rt, "phone", ana)).output.strip() == "reply"
    return dataclasses.replace(settings, reflections_key=encryption.new_key())


def test_pipe_with_a_wrong_reflections_key_exits_75_and_the_reply_is_not_lost(
    settings: Settings, rt: Runtime, ana: int
) -> None:
    wrong = _wrong_key(settings, rt, ana)
    result = pipe(wrong, fixture(rt, "gmail", ana))
    assert result.exit_code == 75
    assert "setting reflections_key" in result.output
    # The MTA tries again once the key is put right: the reply is saved, not a duplicate.
    assert pipe(settings, fixture(rt, "gmail", ana)).output.strip() == "reply"


@pytest.mark.parametrize("command", [["serve"], ["poll", "--imap", "imap://u:p@127.0.0.1:1/"]])
def test_serve_and_poll_refuse_to_start_with_a_wrong_reflections_key(
    settings: Settings, rt: Runtime, ana: int, command: list[str]
) -> None:
    result = run_cli(_wrong_key(settings, rt, ana), "inbound", *command)
    assert result.exit_code == 1
    assert result.output.strip().startswith("Error: setting reflections_key")


def test_pipe_without_the_signing_key_exits_75_and_makes_none(
    settings: Settings, rt: Runtime, ana: int, tmp_path: Path
) -> None:
    """An MTA's pipe run without the key the lessons were signed with (secret_key set only
    in the worker's environment, var/ elsewhere) must not make a key of its own: every reply
    would then be dropped as junk, recorded, and lost for good."""
    keyless = dataclasses.replace(settings, secret_key="", var_dir=str(tmp_path / "other-var"))
    result = pipe(keyless, fixture(rt, "gmail", ana))
    assert result.exit_code == 75, result.output
    assert "setting secret_key" in result.output
    assert not (tmp_path / "other-var" / "secret_key").exists()
    assert run_cli(keyless, "inbound", "serve").exit_code == 1
    # The MTA tries again once the settings are put right: the reply is saved.
    assert pipe(settings, fixture(rt, "gmail", ana)).output.strip() == "reply"


def test_pipe_without_the_reflections_key_exits_75_and_makes_none(
    settings: Settings, rt: Runtime, ana: int, tmp_path: Path
) -> None:
    """The same for the reflections key: a key made in another var/ would seal the reply
    with a key the web app and the journal do not have."""
    keyless = dataclasses.replace(settings, reflections_key="", var_dir=str(tmp_path / "other-var"))
    result = pipe(keyless, fixture(rt, "gmail", ana))
    assert result.exit_code == 75, result.output
    assert "setting reflections_key" in result.output
    assert not (tmp_path / "other-var" / "reflections_key").exists()
    assert run_cli(keyless, "inbound", "serve").exit_code == 1
    assert pipe(settings, fixture(rt, "gmail", ana)).output.strip() == "reply"


@pytest.mark.parametrize("message_id", [b"<>", b"<@>", b"<a@[b", b"<)x@y>"])
def test_pipe_saves_a_reply_with_a_message_id_the_parser_chokes_on(
    settings: Settings, rt: Runtime, ana: int, message_id: bytes
) -> None:
    raw = fixture(rt, "gmail", ana).replace(b"<CAF3xq1gmail01@mail.gmail.com>", message_id)
    result = pipe(settings, raw)
    assert (result.exit_code, result.output.strip()) == (0, "reply")


@contextlib.contextmanager
def inbound_serve(settings: Settings, log: Path) -> Iterator[int]:
    """`dripcourse inbound serve` as its own process, once it listens; yields its port."""
    port = _free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [DRIPCOURSE, "inbound", "serve", "--port", str(port)],
            env=settings_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(log.read_text())
                time.sleep(0.1)  # the process starting, not the clock
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def serving(settings: Settings, tmp_path: Path) -> Iterator[int]:
    with inbound_serve(settings, tmp_path / "serve.log") as port:
        yield port


def test_a_lesson_sent_over_smtp_is_answered_through_inbound_serve_and_shows_in_the_journal(
    tmp_path: Path, sqlite_url: str, serving: int, smtp_sink: SMTPSink
) -> None:
    settings = make_settings(
        tmp_path, database_url=sqlite_url, reply_domain=DOMAIN, mail_url=smtp_sink.url
    )
    rt = Runtime(settings)
    try:
        ana = enroll(rt, ANA)
        send_days(rt, 1)
        [lesson] = smtp_sink.handler.messages()
        assert lesson.mail_from.startswith("bounce+") and lesson.mail_from.endswith(DOMAIN)
        reply_to = lesson.message["Reply-To"]
        reply = EmailMessage()
        reply["From"] = f"Ana <{ANA}>"
        reply["To"] = reply_to
        reply["Subject"] = "Re: " + lesson.message["Subject"]
        reply["Message-ID"] = "<e2e-reply@example.org>"
        reply.set_content(
            "Ten quiet minutes before the ward round.\n\n"
            f"On Mon, 3 Mar 2025, The White Coat Reset wrote:\n> {lesson.message['Subject']}\n"
        )
        with smtplib.SMTP("127.0.0.1", serving, timeout=10) as smtp:
            refused = smtp.sendmail(ANA, [str(reply_to)], reply.as_bytes())
        assert refused == {}
        assert saved(rt, ana, day=1) == "Ten quiet minutes before the ward round."
        page = make_app(rt, Clock(DAY_1_UTC)).test_client().get(path(rt, links.JOURNAL, ana))
        assert "Ten quiet minutes before the ward round." in page.get_data(as_text=True)
    finally:
        rt.close()


@pytest.mark.parametrize(
    "recipient", ["someone@example.org", f"reflect+forged-1-aaaa@{DOMAIN}", f"postmaster@{DOMAIN}"]
)
def test_serve_refuses_other_recipients_at_rcpt_and_relays_nothing(
    serving: int, recipient: str
) -> None:
    with smtplib.SMTP("127.0.0.1", serving, timeout=10) as smtp:
        smtp.ehlo()
        smtp.mail("someone@example.org")
        code, _ = smtp.rcpt(recipient)
    assert code == 550


def test_serve_refuses_a_message_over_the_size_limit(
    tmp_path: Path, settings: Settings, rt: Runtime, ana: int
) -> None:
    small = dataclasses.replace(settings, inbound_max_bytes=2000)
    with inbound_serve(small, tmp_path / "serve.log") as port:
        big = fixture(rt, "gmail", ana) + b"x" * 5000
        with (
            smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp,
            pytest.raises(smtplib.SMTPException) as refused,
        ):
            smtp.sendmail(ANA, [address(rt, REPLY, ana, 3, DOMAIN)], big)
        assert "552" in str(refused.value) or "too" in str(refused.value).lower()
        assert saved(rt, ana) is None
        with transaction(rt.sessions) as session:
            assert counts(session) == {}


def test_status_counts_what_came_back_and_reflections_by_source_and_export_marks_them(
    settings: Settings, rt: Runtime, ana: int
) -> None:
    pipe(settings, fixture(rt, "gmail", ana))
    pipe(settings, fixture(rt, "phone", ana, sender="other@example.org"))
    pipe(settings, fixture(rt, "out_of_office", ana))
    pipe(settings, fixture(rt, "bounce_soft", ana))
    out = run_cli(settings, "status").output
    assert (
        "inbound: 1 replies saved, 1 held (from another address), 0 over the limits, "
        "1 auto-replies, 0 bounces, 1 delays, 0 complaints, 0 dropped; "
        "reflections: 0 from the web, 1 from email"
    ) in out
    exported = json.loads(run_cli(settings, "reflections", "export", "--format", "json").output)
    assert [(row["day"], row["source"]) for row in exported] == [(3, "email")]


def test_status_says_nothing_of_inbound_when_it_is_off(tmp_path: Path, sqlite_url: str) -> None:
    out = run_cli(make_settings(tmp_path, database_url=sqlite_url), "status").output
    assert "inbound:" not in out


@pytest.mark.slow
def test_dripcourse_run_on_one_machine_listens_for_replies_too(
    tmp_path: Path, sqlite_url: str
) -> None:
    from tests.test_embedded_worker import eml_count, enroll_sample
    from tests.workers import wait_until

    embedded = make_settings(
        tmp_path,
        web_port=_free_port(),
        inbound_port=_free_port(),
        reply_domain=DOMAIN,
        database_url=sqlite_url,
        tick_seconds=1,
        broker_url=f"sqla+sqlite:///{tmp_path / 'broker.sqlite3'}",
    )
    enroll_sample(embedded)
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [DRIPCOURSE, "run", "--concurrency", "2"],
            cwd=tmp_path,
            env=settings_env(embedded),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    rt = Runtime(embedded)
    try:
        text = lambda: log.read_text(errors="replace")  # noqa: E731
        wait_until(lambda: eml_count(embedded) >= 1, 60, "a lesson in the outbox", text)
        outbox = Path(embedded.mail_url.removeprefix("file://"))
        lesson = email.message_from_bytes(
            next(outbox.glob("*.eml")).read_bytes(), policy=email.policy.default
        )
        reader = lesson["To"].addresses[0].addr_spec
        reply = EmailMessage()
        reply["From"], reply["To"] = reader, lesson["Reply-To"]
        reply["Subject"], reply["Message-ID"] = "Re: day 1", "<run-reply@example.org>"
        reply.set_content("Written on one machine.")
        wait_until(
            lambda: f"listening on 127.0.0.1:{embedded.inbound_port}" in text(),
            30,
            "the inbound listener",
            text,
        )
        with smtplib.SMTP("127.0.0.1", embedded.inbound_port, timeout=10) as smtp:
            smtp.send_message(reply, from_addr=reader, to_addrs=[str(lesson["Reply-To"])])
        enrollment_id, day = rt.links.load_address(
            REPLY, lesson["Reply-To"].addresses[0].addr_spec.partition("@")[0]
        )
        assert saved(rt, enrollment_id, day) == "Written on one machine."
    finally:
        rt.close()
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(60) == 0, log.read_text(errors="replace")


def _lock_the_database(settings: Settings, rt: Runtime) -> sqlite3.Connection:
    """Another writer holds the SQLite file (as the worker does in `dripcourse run`), and our
    statements wait for its lock only 0.2 s before they fail; the caller rolls it back."""
    rt.__dict__["engine"] = make_engine(settings.database_url, lock_timeout=0.2)
    rt.__dict__.pop("sessions", None)  # made again, on that engine
    holder = sqlite3.connect(
        settings.database_url.removeprefix("sqlite:///"),
        isolation_level=None,
        check_same_thread=False,
    )
    holder.execute("BEGIN IMMEDIATE")
    return holder


def test_serve_answers_451_never_500_for_an_error_of_ours_or_a_wrong_key(
    settings: Settings, rt: Runtime, ana: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    to = address(rt, REPLY, ana, 3, DOMAIN)
    handler = InboundHandler(rt.sessions, rt.inbound, lambda: DAY_1_UTC)
    assert _deliver(handler, fixture(rt, "phone", ana), to) == "250 OK"
    wrong = dataclasses.replace(
        rt.inbound, cipher=encryption.ReflectionCipher([encryption.new_key()])
    )
    keyless = InboundHandler(rt.sessions, wrong, lambda: DAY_1_UTC)
    assert _deliver(keyless, fixture(rt, "gmail", ana), to).startswith("451 ")

    def broken(*args: object, **kw: object) -> None:
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(inbound_listener, "receive", broken)
    assert _deliver(handler, fixture(rt, "gmail", ana), to).startswith("451 ")
    monkeypatch.setattr(inbound_listener, "is_our_address", broken)
    assert asyncio.run(
        handler.handle_RCPT(None, None, Envelope(), to, [])  # type: ignore[arg-type]
    ).startswith("451 ")
    assert saved(rt, ana) == REPLIES["phone"]  # the gmail reply waits for its next try


def test_serve_logs_one_line_per_message_naming_no_token_or_address(
    settings: Settings, rt: Runtime, ana: int, tmp_path: Path
) -> None:
    to = address(rt, REPLY, ana, 3, DOMAIN)
    log = tmp_path / "serve.log"
    with inbound_serve(settings, log) as port, smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.sendmail(ANA, [to], fixture(rt, "gmail", ana))
        smtp.sendmail(ANA, [to], fixture(rt, "out_of_office", ana))
    lines = [line for line in log.read_text().splitlines() if "inbound: " in line]
    assert [line.split("inbound: ", 1)[1] for line in lines[1:]] == [
        f"reply (enrollment {ana}, day 3)",
        "auto-reply",
    ]
    assert "+" not in "".join(lines[1:]) and "@" not in "".join(lines[1:])


def _deliver(handler: InboundHandler, raw: bytes, to: str) -> str:
    envelope = Envelope()
    envelope.content = envelope.original_content = raw
    envelope.rcpt_tos = [to]
    return asyncio.run(handler.handle_DATA(None, None, envelope))  # type: ignore[arg-type]


def test_serve_waits_out_a_database_locked_for_a_moment_instead_of_answering_451(
    settings: Settings, rt: Runtime, ana: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In `dripcourse run` the worker writes to the same SQLite file: a reply arriving while
    # it holds the lock must not be turned away for that.
    holder = _lock_the_database(settings, rt)
    waits: list[float] = []

    def wait(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:
            holder.execute("ROLLBACK")  # the worker's write commits

    monkeypatch.setattr(db, "_pause", wait)
    handler = InboundHandler(rt.sessions, rt.inbound, lambda: DAY_1_UTC)
    to = address(rt, REPLY, ana, 3, DOMAIN)
    try:
        assert _deliver(handler, fixture(rt, "gmail", ana), to) == "250 OK"
    finally:
        holder.close()
    assert len(waits) == 2
    assert saved(rt, ana) == REPLIES["gmail"]


@pytest.mark.timeout(20)
def test_serve_answers_451_within_its_patience_not_after_the_next_wait(
    settings: Settings, rt: Runtime, ana: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The patience was checked only after each try, and the wait before the next one grows
    (0.5, 1, 2, 4, 8 s): with ten seconds, the last try began near 15 s and the answer came
    after about 17 s of a database away, not within the ten seconds the docs promise."""
    holder = _lock_the_database(settings, rt)
    monkeypatch.setattr(inbound_listener, "OUTAGE_PATIENCE_SECONDS", 1.0)
    handler = InboundHandler(rt.sessions, rt.inbound, lambda: DAY_1_UTC)
    to = address(rt, REPLY, ana, 3, DOMAIN)
    envelope = Envelope()
    envelope.content = envelope.original_content = fixture(rt, "gmail", ana)
    envelope.rcpt_tos = [to]

    async def answer() -> tuple[str, float]:
        # Timed inside the server's loop: the sender has its answer when this returns.
        started = time.monotonic()
        reply = await handler.handle_DATA(None, None, envelope)  # type: ignore[arg-type]
        return reply, time.monotonic() - started

    try:
        reply, took = asyncio.run(answer())
        assert reply.startswith("451 ") and took < 1.6, (reply, took)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    # The sender tries again later and the message is recorded once.
    assert _deliver(handler, fixture(rt, "gmail", ana), to) == "250 OK"
    assert saved(rt, ana) == REPLIES["gmail"]


def test_serve_answers_451_when_the_database_stays_away(
    settings: Settings, rt: Runtime, ana: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder = _lock_the_database(settings, rt)
    monkeypatch.setattr(inbound_listener, "OUTAGE_PATIENCE_SECONDS", 0.5)
    handler = InboundHandler(rt.sessions, rt.inbound, lambda: DAY_1_UTC)
    to = address(rt, REPLY, ana, 3, DOMAIN)
    try:
        assert _deliver(handler, fixture(rt, "gmail", ana), to).startswith("451 ")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert saved(rt, ana) is None


def test_serve_reads_a_null_envelope_sender_as_a_program_not_a_person(
    rt: Runtime, ana: int
) -> None:
    """A message sent with ``MAIL FROM:<>`` (an out-of-office notice, a challenge from a
    spam filter) is an auto-reply, whatever its headers claim: the listener records the
    envelope sender as ``Return-Path`` as a delivering MTA would."""
    handler = InboundHandler(rt.sessions, rt.inbound, lambda: DAY_1_UTC)
    port = _free_port()
    controller = inbound_listener.listener(handler, "127.0.0.1", port, max_bytes=100_000)
    controller.start()
    try:
        to = address(rt, REPLY, ana, 3, DOMAIN)
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            smtp.sendmail("", [to], fixture(rt, "phone", ana, sender="filter@hospital.example"))
            smtp.sendmail(ANA, [to], fixture(rt, "gmail", ana))
    finally:
        controller.stop()
    with transaction(rt.sessions) as session:
        assert counts(session) == {"auto-reply": 1, "reply": 1}
    assert saved(rt, ana) == REPLIES["gmail"]


def test_serve_takes_a_reply_with_a_line_longer_than_smtp_allows(rt: Runtime, ana: int) -> None:
    """A client that writes a paragraph as one line of 3,000 characters breaks RFC 5321's
    limit; a 500 would bounce the reply to its writer, so the line is taken as it came."""
    handler = InboundHandler(rt.sessions, rt.inbound, lambda: DAY_1_UTC)
    port = _free_port()
    controller = inbound_listener.listener(handler, "127.0.0.1", port, max_bytes=100_000)
    controller.start()
    paragraph = " ".join(["On call again, and the rota swap fell through."] * 60)
    raw = (
        f"From: {ANA}\r\nSubject: Re: Day 3\r\nMessage-ID: <long-line@example.org>\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n{paragraph}\r\n"
    ).encode()
    try:
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            smtp.sendmail(ANA, [address(rt, REPLY, ana, 3, DOMAIN)], raw)
    finally:
        controller.stop()
    assert saved(rt, ana) == paragraph
