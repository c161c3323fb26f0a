"""A real SMTP server for tests (aiosmtpd), with failures that tests can switch on."""

from __future__ import annotations

import asyncio
import collections
import email
import email.policy
import ssl
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass
class Received:
    """One message the sink accepted, with when it arrived and over which connection.

    ``started`` and ``finished`` are ``time.monotonic()`` readings: the message was stored at
    ``started``; ``finished`` is when the sink answered 250, or when the client vanished while
    the sink was still holding its reply (``replied`` is then False).
    """

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    peer: object = None
    started: float = 0.0
    finished: float | None = None
    replied: bool = False

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)  # type: ignore[return-value]


@dataclass
class SinkHandler:
    """Stores what arrives. ``reject`` maps an address to a 5xx reply given at RCPT TO;
    ``busy_for`` answers the next N messages with ``busy_reply`` (421 unless changed) at DATA;
    ``busy`` answers all with it;
    ``delay`` holds each accepted message's 250 reply back that many seconds, so a client
    killed meanwhile leaves a message the server has accepted but the client never heard of."""

    received: list[Received] = field(default_factory=list)
    reject: dict[str, str] = field(default_factory=dict)
    busy_for: int = 0
    busy: bool = False
    busy_reply: str = "421 4.7.0 Try again later"
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    # How often each kind of refusal was given, and how many connections were opened.
    refused: collections.Counter[str] = field(default_factory=collections.Counter)
    connections: int = 0
    live: set[SMTP] = field(default_factory=set)

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address in self.reject:
            with self.lock:
                self.refused[address] += 1
            return self.reject[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.lock:
            if self.busy or self.busy_for > 0:
                if not self.busy:
                    self.busy_for -= 1
                self.refused[self.busy_reply[:3]] += 1
                return self.busy_reply
            got = Received(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                envelope.original_content or envelope.content,
                peer=session.peer,
                started=time.monotonic(),
            )
            self.received.append(got)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            got.replied = True
        finally:
            # Cancelled when the client's connection is lost during the delay.
            got.finished = time.monotonic()
        return "250 Message accepted"

    def recipients(self) -> list[str]:
        with self.lock:
            return [r for msg in self.received for r in msg.rcpt_tos]

    def counts(self) -> collections.Counter[str]:
        """How many copies each recipient received."""
        return collections.Counter(self.recipients())

    def messages(self) -> list[Received]:
        with self.lock:
            return list(self.received)


class _TrackingSMTP(SMTP):
    """aiosmtpd's server, telling the handler about each connection opened and closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        upgrade = self._original_transport is not None  # STARTTLS: same connection, now TLS
        super().connection_made(transport)
        handler: SinkHandler = self.event_handler
        with handler.lock:
            handler.connections += 0 if upgrade else 1
            handler.live.add(self)

    def _timeout_cb(self) -> None:
        # Say why before hanging up, as Postfix and Exim do; aiosmtpd alone just closes.
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"421 4.4.2 Error: timeout exceeded\r\n")
        super()._timeout_cb()

    def connection_lost(self, error: Exception | None) -> None:
        handler: SinkHandler = self.event_handler
        with handler.lock:
            handler.live.discard(self)
        super().connection_lost(error)


class _Controller(Controller):
    def factory(self) -> SMTP:
        return _TrackingSMTP(self.handler, **self.SMTP_kwargs)


class SMTPSink:
    """aiosmtpd on a free loopback port, in a thread.

    ``idle_timeout`` is how long the server keeps a silent connection open before it answers
    421 and hangs up, as real servers do. With ``tls_context`` it offers STARTTLS and requires
    it; with ``credentials`` ({user: password}) it requires AUTH LOGIN/PLAIN, as a relay does.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        idle_timeout: float = 300,
        tls_context: ssl.SSLContext | None = None,
        credentials: dict[str, str] | None = None,
    ) -> None:
        self.handler = SinkHandler()
        self.logins: list[str] = []
        options: dict[str, object] = {"timeout": idle_timeout}
        if tls_context is not None:
            options.update(tls_context=tls_context, require_starttls=True)
        if credentials is not None:
            options.update(
                authenticator=self._authenticator(credentials),
                auth_required=True,
                auth_require_tls=tls_context is not None,
            )
        self.controller = _Controller(
            self.handler, hostname="127.0.0.1", port=port or _free_port(), **options
        )

    def _authenticator(self, credentials: dict[str, str]):  # type: ignore[no-untyped-def]
        def check(
            server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: object
        ) -> AuthResult:
            if isinstance(data, LoginPassword):
                user, password = data.login.decode(), data.password.decode()
                if credentials.get(user) == password:
                    self.logins.append(user)
                    return AuthResult(success=True)
            return AuthResult(success=False, handled=False)

        return check

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.controller.port}"

    @property
    def port(self) -> int:
        return self.controller.port

    def start(self) -> SMTPSink:
        self.controller.start()
        # start() opens one connection of its own to see that the server is up.
        with self.handler.lock:
            self.handler.connections = 0
        return self

    def stop(self) -> None:
        self.controller.stop()

    def drop_connections(self, timeout: float = 5) -> None:
        """Hang up on every connected client at once, as a restarting server would."""
        with self.handler.lock:
            live = list(self.handler.live)
        for server in live:
            if server.transport is not None:
                self.controller.loop.call_soon_threadsafe(server.transport.close)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.handler.lock:
                if not self.handler.live:
                    return
            time.sleep(0.01)
        raise AssertionError(f"the sink did not hang up within {timeout}s")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
