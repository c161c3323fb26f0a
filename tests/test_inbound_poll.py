"""`dripcourse inbound poll`: a hosted mailbox over IMAP, against a small IMAP server."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from dripcourse.cli import cli
from dripcourse.runtime import Runtime
from dripcourse.settings import Settings
from tests.conftest import make_settings
from tests.imap_server import IMAPServer
from tests.test_inbound import ANA, DOMAIN, REPLIES, fixture, saved
from tests.test_web_support import enroll, send_days
from tests.workers import settings_env


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


@pytest.fixture
def imap() -> Iterator[IMAPServer]:
    with IMAPServer() as server:
        yield server


def poll(settings: Settings, *args: str) -> Result:
    return CliRunner().invoke(cli, ["inbound", "poll", *args], env=settings_env(settings))


def test_poll_processes_unseen_messages_and_moves_them(
    settings: Settings, rt: Runtime, ana: int, imap: IMAPServer
) -> None:
    imap.store.deliver(fixture(rt, "gmail", ana))
    imap.store.deliver(fixture(rt, "out_of_office", ana))
    already_read = imap.store.deliver(b"Subject: read by a person\r\n\r\nleave me\r\n", seen=True)
    result = poll(settings, "--imap", imap.url(), "--move-to", "Done")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "inbound poll: 2 messages: 1 auto-reply, 1 reply"
    assert saved(rt, ana) == REPLIES["gmail"]
    assert [m.uid for m in imap.store.folders["INBOX"]] == [already_read]
    assert len(imap.store.folders["Done"]) == 2
    assert imap.store.commands.count("UID FETCH") == 2  # the read message is not fetched


def test_poll_without_a_folder_to_move_to_deletes_what_it_processed(
    settings: Settings, rt: Runtime, ana: int, imap: IMAPServer
) -> None:
    imap.store.deliver(fixture(rt, "phone", ana))
    assert poll(settings, "--imap", imap.url()).exit_code == 0
    assert imap.store.folders["INBOX"] == [] and imap.store.folders["Done"] == []
    assert saved(rt, ana) == REPLIES["phone"]


def test_poll_leaves_messages_unseen_when_the_database_is_out_of_reach(
    settings: Settings, rt: Runtime, ana: int, imap: IMAPServer, tmp_path: Path
) -> None:
    imap.store.deliver(fixture(rt, "gmail", ana))
    gone = dataclasses.replace(settings, database_url=f"sqlite:///{tmp_path}/no/such/dir.db")
    result = poll(gone, "--imap", imap.url(), "--move-to", "Done")
    assert result.exit_code == 75
    assert "left unseen" in result.output and "Traceback" not in result.output
    [kept] = imap.store.folders["INBOX"]
    assert kept.flags == set()
    # The next run, with the database back, saves it.
    assert poll(settings, "--imap", imap.url(), "--move-to", "Done").exit_code == 0
    assert saved(rt, ana) == REPLIES["gmail"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("imap://u:p@mail.example.org/INBOX", "use imaps:// (TLS) for mail.example.org"),
        ("https://mail.example.org", "expected imaps://"),
        ("imaps://mail.example.org/INBOX", "a user and a host"),
    ],
)
def test_a_wrong_imap_url_is_one_error_line_without_the_password(
    settings: Settings, url: str, message: str
) -> None:
    result = poll(settings, "--imap", url)
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert line.startswith("Error: --imap:") and message in line
    assert ":p@" not in line


def test_a_refused_login_is_one_error_line(settings: Settings, imap: IMAPServer) -> None:
    imap.store.password = "changed"
    result = poll(settings, "--imap", imap.url().replace("changed", "wrong"))
    assert result.exit_code == 75
    [line] = result.output.strip().splitlines()
    assert line.startswith("Error: IMAP 127.0.0.1:") or line.startswith("Error: IMAP 127.0.0.1")


def test_poll_moves_a_message_it_cannot_process_to_quarantine_and_goes_on(
    settings: Settings, rt: Runtime, ana: int, imap: IMAPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dripcourse.cli import inbound as inbound_cli

    real = inbound_cli.receive

    def receive(sessions, inbound, raw, **kw):  # type: ignore[no-untyped-def]
        if b"poison" in raw:
            raise RuntimeError("an error of ours on this one message")
        return real(sessions, inbound, raw, **kw)

    monkeypatch.setattr(inbound_cli, "receive", receive)
    poison = imap.store.deliver(b"Subject: poison\r\nMessage-ID: <>\r\n\r\npoison\r\n")
    imap.store.deliver(fixture(rt, "gmail", ana))
    result = poll(settings, "--imap", imap.url(), "--move-to", "Done")
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("inbound poll: 2 messages: 1 quarantined, 1 reply")
    assert [m.uid for m in imap.store.folders["dripcourse-quarantine"]] == [poison]
    assert imap.store.folders["INBOX"] == [] and len(imap.store.folders["Done"]) == 1
    assert saved(rt, ana) == REPLIES["gmail"]


def test_poll_sets_a_message_over_the_size_limit_aside_rather_than_deleting_it(
    settings: Settings, rt: Runtime, ana: int, imap: IMAPServer
) -> None:
    """A reply with a photo attached, past inbound_max_bytes: serve refuses it (552) and pipe
    exits 65, so the sender's server tells them; a mailbox has no one to tell, so it is
    kept for a person in the quarantine folder, never deleted unread."""
    small = dataclasses.replace(settings, inbound_max_bytes=5000)
    big = imap.store.deliver(fixture(rt, "phone", ana) + b"x" * 6000)
    imap.store.deliver(fixture(rt, "gmail", ana))
    result = poll(small, "--imap", imap.url())
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("inbound poll: 2 messages: 1 quarantined, 1 reply")
    assert [m.uid for m in imap.store.folders["dripcourse-quarantine"]] == [big]
    assert saved(rt, ana) == REPLIES["gmail"]


def test_a_message_the_server_will_not_hand_out_is_set_aside_and_the_run_goes_on(
    settings: Settings, rt: Runtime, ana: int, imap: IMAPServer
) -> None:
    """A provider answers NO to fetching a message it cannot read back; and when it will
    not copy it either, the message is marked seen and left in place, so that no later run
    stops at it again: one message never stops every later reply, bounce and complaint."""
    broken = imap.store.deliver(b"Subject: unreadable on the server\r\n\r\nx\r\n")
    imap.store.broken.add(broken)
    imap.store.deliver(fixture(rt, "gmail", ana))
    result = poll(settings, "--imap", imap.url())
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("inbound poll: 2 messages: 1 quarantined, 1 reply")
    assert saved(rt, ana) == REPLIES["gmail"]
    [left] = imap.store.folders["INBOX"]
    assert left.uid == broken and "\\Seen" in left.flags and "\\Deleted" not in left.flags
    imap.store.deliver(fixture(rt, "phone", ana))
    again = poll(settings, "--imap", imap.url())
    assert again.output.strip().endswith("inbound poll: 1 messages: 1 reply")


@pytest.mark.parametrize("message_id", [b"<>", b"<@>", b"<a@[b", b"<)x@y>"])
def test_poll_reads_past_a_message_id_the_parser_chokes_on(
    settings: Settings, rt: Runtime, ana: int, imap: IMAPServer, message_id: bytes
) -> None:
    imap.store.deliver(b"Subject: x\r\nMessage-ID: " + message_id + b"\r\n\r\nhello\r\n")
    imap.store.deliver(fixture(rt, "gmail", ana))
    result = poll(settings, "--imap", imap.url())
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "inbound poll: 2 messages: 1 junk, 1 reply"
    assert saved(rt, ana) == REPLIES["gmail"]
