"""A real SMTP server for tests (aiosmtpd), with failures that tests can switch on."""

from __future__ import annotations

import email
import email.policy
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)  # type: ignore[return-value]


@dataclass
class SinkHandler:
    """Stores what arrives. ``reject`` maps an address to a 5xx reply given at RCPT TO;
    ``busy_for`` answers the next N messages with 421 at DATA; ``busy`` answers all with 421."""

    received: list[Received] = field(default_factory=list)
    reject: dict[str, str] = field(default_factory=dict)
    busy_for: int = 0
    busy: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address in self.reject:
            return self.reject[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.lock:
            if self.busy:
                return "421 4.7.0 Try again later"
            if self.busy_for > 0:
                self.busy_for -= 1
                return "421 4.7.0 Try again later"
            self.received.append(
                Received(
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    envelope.original_content or envelope.content,
                )
            )
        return "250 Message accepted"

    def recipients(self) -> list[str]:
        with self.lock:
            return [r for msg in self.received for r in msg.rcpt_tos]


class SMTPSink:
    """aiosmtpd on a free loopback port, in a thread."""

    def __init__(self, port: int = 0) -> None:
        self.handler = SinkHandler()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=port or _free_port())

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.controller.port}"

    def start(self) -> SMTPSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
