"""Inbound mail from a hosted mailbox over IMAP: fetch what is unseen, process, move or delete.

For a reply domain whose mail lands in a mailbox at a provider (Google Workspace, Microsoft
365) rather than on a machine we run. Only a handful of IMAP commands are used (LOGIN,
SELECT, UID SEARCH, UID FETCH with BODY.PEEK, UID COPY, UID STORE, EXPUNGE), so any server
will do. A message is fetched without marking it seen, and moved or deleted only after it was
processed: when the database is out of reach it stays unseen for the next run.
"""

from __future__ import annotations

import imaplib
import logging
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from dripcourse.errors import ConfigError, NotSetUp
from dripcourse.inbound.route import TEMPORARY, Decision
from dripcourse.redact import redact_url

log = logging.getLogger(__name__)

# Where `inbound poll` puts a message it could not process, for a person to look at.
QUARANTINE = "dripcourse-quarantine"

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class Mailbox:
    host: str
    port: int
    tls: bool
    username: str
    password: str
    folder: str


def parse_imap_url(url: str) -> Mailbox:
    """``imaps://user:password@host[:993]/FOLDER`` (folder INBOX when left out).

    ``imap://`` (no TLS) is accepted only for this machine: a password must never cross a
    network in clear.
    """
    parts = urlsplit(url)
    where = redact_url(url)
    if parts.scheme not in ("imaps", "imap"):
        raise ConfigError(f"--imap: expected imaps://user:password@host/FOLDER, got {where!r}")
    if not parts.hostname or parts.username is None:
        raise ConfigError(f"--imap: a user and a host are needed in {where!r}")
    if parts.scheme == "imap" and parts.hostname not in _LOCAL_HOSTS:
        raise ConfigError(
            f"--imap: use imaps:// (TLS) for {parts.hostname}; imap:// is for localhost"
        )
    try:
        port = parts.port or (993 if parts.scheme == "imaps" else 143)
    except ValueError:
        raise ConfigError(f"--imap: the port is not a number in {where!r}") from None
    return Mailbox(
        host=parts.hostname,
        port=port,
        tls=parts.scheme == "imaps",
        username=unquote(parts.username),
        password=unquote(parts.password or ""),
        folder=unquote(parts.path.lstrip("/")) or "INBOX",
    )


def connect(box: Mailbox, timeout: float = 30.0) -> imaplib.IMAP4:
    if box.tls:
        client: imaplib.IMAP4 = imaplib.IMAP4_SSL(
            box.host, box.port, ssl_context=ssl.create_default_context(), timeout=timeout
        )
    else:
        client = imaplib.IMAP4(box.host, box.port, timeout=timeout)
    client.login(box.username, box.password)
    return client


def poll_once(
    client: imaplib.IMAP4,
    folder: str,
    handle: Callable[[bytes], Decision],
    *,
    move_to: str | None = None,
    quarantine: str = QUARANTINE,
    max_bytes: int | None = None,
) -> list[Decision | None]:
    """Process every unseen message in ``folder``; then move each to ``move_to`` or delete it.

    ``handle`` raising what is not the message's fault (``TEMPORARY``: the database out of
    reach, a wrong reflections key; or the database not set up) stops the run with that
    message and the rest left unseen and in place. Anything else it raises (an error of ours
    on that one message), or a message the server will not hand out, moves the message to
    ``quarantine`` (None in the result; marked seen and left in place when the server will
    not copy it either) and the run goes on: one message must never stop every later
    reply, bounce and complaint. A message over ``max_bytes`` goes there too, unread: a
    mailbox has no sender to refuse it to (as ``serve`` does), and deleting it would lose a
    reply with a photo unseen.
    """
    _ok(client.select(_quote(folder)), f"select {folder}")
    typ, data = client.uid("SEARCH", "UNSEEN")
    _ok((typ, data), "search")
    uids = data[0].split() if data and data[0] else []
    done: list[Decision | None] = []
    for uid in uids:
        typ, fetched = client.uid("FETCH", uid, "(BODY.PEEK[])")
        # A NO for this one message (a provider that cannot read it back) sets it aside
        # below, as a message without a body: it must not stop every later one.
        raw = next((item[1] for item in fetched or () if isinstance(item, tuple)), None)
        raw = raw if typ == "OK" else None
        decision: Decision | None = None
        try:
            if not isinstance(raw, bytes):
                raise ValueError("the server sent no message body")
            if max_bytes is not None and len(raw) > max_bytes:
                log.warning(
                    "inbound poll: a message of %d bytes, over inbound_max_bytes (%d); moved to %s",
                    len(raw),
                    max_bytes,
                    quarantine,
                )
            else:
                decision = handle(raw)
        except (*TEMPORARY, NotSetUp):
            raise
        except Exception:  # noqa: BLE001 - set aside for a person, and on to the next
            log.exception("inbound poll: a message could not be processed; moved to %s", quarantine)
        done.append(decision)
        if decision is None and not _set_aside(client, uid, quarantine):
            continue  # left in place, marked seen
        if decision is not None and move_to:
            _copy(client, uid, move_to)
        _ok(client.uid("STORE", uid, "+FLAGS", "(\\Deleted)"), "delete")
    if uids:
        client.expunge()
    return done


def _set_aside(client: imaplib.IMAP4, uid: bytes, quarantine: str) -> bool:
    """Copy a message that could not be processed to ``quarantine``; True when copied.

    When the server will not copy it either, it is marked seen and left where it is (False):
    unseen messages are what each run fetches, so no later run stops at it again.
    """
    try:
        _copy(client, uid, quarantine)
    except imaplib.IMAP4.abort:
        raise  # the connection is gone: the next run starts again
    except imaplib.IMAP4.error:
        log.warning(
            "inbound poll: the server would not copy it to %s either; marked seen", quarantine
        )
        _ok(client.uid("STORE", uid, "+FLAGS", "(\\Seen)"), "mark seen")
        return False
    return True


def _copy(client: imaplib.IMAP4, uid: bytes, folder: str) -> None:
    """Copy a message to ``folder``, creating the folder the first time."""
    if client.uid("COPY", uid, _quote(folder))[0] != "OK":
        client.create(_quote(folder))  # answers NO when it exists: the copy says what is wrong
        _ok(client.uid("COPY", uid, _quote(folder)), f"copy to {folder}")


def _quote(folder: str) -> str:
    return (
        folder
        if re.fullmatch(r"[A-Za-z0-9._/-]+", folder)
        else '"' + folder.replace('"', r"\"") + '"'
    )


def _ok(reply: tuple[str, object], what: str) -> None:
    typ, data = reply
    if typ != "OK":
        raise imaplib.IMAP4.error(f"IMAP {what}: {typ} {data!r}")
