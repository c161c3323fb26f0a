"""The ways inbound mail arrives, each handing raw bytes to ``inbound.process``.

``receive`` wraps the core in its own transaction; the SMTP listener (aiosmtpd) refuses any
recipient that is not one of our reply or bounce addresses at RCPT time, so it can never
relay, and refuses messages over ``inbound_max_bytes``. The stdin pipe is in cli/inbound.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Iterable

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as DBSession
from sqlalchemy.orm import sessionmaker

from dripcourse.db import retry_outages, transaction
from dripcourse.inbound.route import TEMPORARY, Decision, Inbound, process
from dripcourse.links import ADDRESS_PREFIX, BadToken, enrollment_of
from dripcourse.models import InboundKind

log = logging.getLogger(__name__)

# How long a message waits for a database that is briefly away before the answer is 451.
OUTAGE_PATIENCE_SECONDS = 10.0


def receive(
    sessions: sessionmaker[DBSession],
    inbound: Inbound,
    raw: bytes,
    *,
    now: dt.datetime,
    recipients: Iterable[str] = (),
) -> Decision:
    """Process one message in a transaction of its own.

    Two copies of one message processed at once (an MTA retrying while the first is still
    running) meet the unique Message-ID: the loser is a duplicate, not an error. A database
    that cannot be reached raises DBAPIError: the caller asks the sender to try later.
    """
    try:
        with transaction(sessions) as session:
            return process(session, raw, inbound, now=now, recipients=recipients)
    except IntegrityError:
        return Decision(InboundKind.DUPLICATE)


def is_our_address(inbound: Inbound, address: str, session: DBSession) -> bool:
    """Whether ``address`` is a reply or bounce address we made for an enrollment that is
    still there (checked at RCPT time): an old one of a forgotten person is nobody's."""
    local, _, domain = address.strip().strip("<>").rpartition("@")
    if not inbound.reply_domain or domain.lower() != inbound.reply_domain.lower():
        return False
    for purpose in ADDRESS_PREFIX:
        try:
            token = inbound.links.load_address_token(purpose, local)
        except BadToken:
            continue
        return enrollment_of(session, token) is not None
    return False


class InboundHandler:
    """aiosmtpd handler: our addresses only, then ``receive`` for each message."""

    def __init__(
        self,
        sessions: sessionmaker[DBSession],
        inbound: Inbound,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.sessions, self.inbound, self.clock = sessions, inbound, clock

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        try:
            ours = await asyncio.to_thread(self._is_ours, address)
        except Exception:  # noqa: BLE001 - never a 500: the sender keeps the message
            log.exception("inbound: cannot check a recipient now, the sender will retry")
            return TRY_LATER
        if not ours:
            return "550 5.1.1 No such recipient here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    def _is_ours(self, address: str) -> bool:
        with self.sessions() as session:
            return is_our_address(self.inbound, address, session)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """250 once processed (whatever the message was), 451 for anything that is not the
        message's fault (the database away, a wrong reflections key, an error of ours): the
        sending server keeps it and tries again. Never a 500, which would bounce a reply."""
        now, recipients = self.clock(), list(envelope.rcpt_tos)
        try:
            raw = with_return_path(envelope.original_content or envelope.content, envelope)
            # A database that blinks (SQLite busy with the worker's write in `dripcourse run`,
            # a PostgreSQL restart) is waited out for a few seconds before the sender is asked
            # to try again later.
            # The patience bounds the answer, not only the waits between tries: one try can
            # itself wait (SQLite's lock, a connection being opened) long past it. A try that
            # still commits after the 451 is harmless: the sender's retry carries the same
            # Message-ID, which is processed once.
            await asyncio.wait_for(
                asyncio.to_thread(
                    retry_outages,
                    lambda: receive(
                        self.sessions, self.inbound, raw, now=now, recipients=recipients
                    ),
                    what="inbound message",
                    patience=OUTAGE_PATIENCE_SECONDS,
                ),
                timeout=OUTAGE_PATIENCE_SECONDS,
            )
        except TimeoutError:
            log.error("inbound: the database did not answer in time, the sender will retry")
            return TRY_LATER
        except TEMPORARY as exc:
            log.error("inbound: cannot record a message now, the sender will retry: %s", exc)
            return TRY_LATER
        except Exception:  # noqa: BLE001 - a bug of ours is no reason to bounce a reply
            log.exception("inbound: unexpected error, the sender will retry")
            return TRY_LATER
        return "250 OK"


TRY_LATER = "451 4.3.0 Temporary failure, please try again later"


def with_return_path(raw: object, envelope: Envelope) -> bytes:
    """The message with its envelope sender on top as ``Return-Path``, as the MTA that
    delivers to a mailbox (or Postfix's pipe with ``flags=R``) writes it: a null sender says
    a program sent it (``route.is_auto_reply``)."""
    assert isinstance(raw, bytes)
    if envelope.mail_from is None:
        return raw  # no MAIL command seen: nothing to record
    sender = envelope.mail_from.strip().strip("<>")
    if any(char in sender for char in "\r\n<>"):
        sender = "invalid"
    return f"Return-Path: <{sender}>\r\n".encode("utf-8", "surrogateescape") + raw


class _LongLines(SMTP):
    """aiosmtpd's SMTP, taking a line longer than RFC 5321's 1,000 characters: some clients
    send a paragraph as one line, and the 500 it answers by default would bounce a reply
    to the person who wrote it. The message size limit still bounds what is read."""

    line_length_limit = 1_000_000


class _Controller(Controller):
    def factory(self) -> SMTP:
        return _LongLines(self.handler, **self.SMTP_kwargs)


def listener(handler: InboundHandler, host: str, port: int, *, max_bytes: int) -> Controller:
    """An SMTP listener (not started) taking messages up to ``max_bytes``."""
    return _Controller(
        handler,
        hostname=host,
        port=port,
        data_size_limit=max_bytes,
        server_hostname="dripcourse-inbound",
        ident="dripcourse inbound",
    )
