"""Mail transports behind one small Protocol, chosen by URL: smtp://, smtps://, file://, console://.

SMTP is the one place the project talks to a mail server. Its errors are sorted into
RelayError (the fault is ours or the relay's, not the recipient's: login, TLS, a refused or
dropped connection, 421, our sender refused; sending pauses as a whole), TransientMailError
(this recipient or message, later: other 4xx replies) and PermanentMailError (5xx about this
recipient: it will never succeed for this address).
"""

from __future__ import annotations

import datetime as dt
import re
import smtplib
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from email.message import Message
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Protocol, TextIO

from dripcourse.courses.wire import WireMessage, as_wire
from dripcourse.files import private_dir, write_replacing
from dripcourse.mail_url import parse_mail_url, smtp_steps


class TransientMailError(Exception):
    """Sending failed in a way that may succeed later."""


class RelayError(TransientMailError):
    """The relay, or our set-up for it, failed: nothing here is about this recipient.

    Wrong credentials, a TLS failure, a refused or dropped connection, a 421 ("closing the
    channel"), our sender address refused, relaying denied. Retrying each delivery on its own
    would spend every subscriber's attempts on our mistake; the caller pauses sending instead.
    """


class PermanentMailError(Exception):
    """The server refused the message for good (a 5xx reply).

    ``suppress`` is true when the reply is about the mailbox (no such user, mailbox gone):
    mailing that address again is pointless. A policy refusal (enhanced code 5.7.x: relay
    denied, DMARC, spam) can be our own set-up's fault and does not condemn the address.
    """

    def __init__(self, detail: str, *, suppress: bool = True) -> None:
        super().__init__(detail)
        self.suppress = suppress


class Transport(Protocol):
    """Sends one message: a MIME object, or wire bytes with their envelope (render fast path).

    ``deadline`` (time.monotonic) is when the caller's lease ends.
    """

    def send(self, msg: Message | WireMessage, deadline: float | None = None) -> None: ...

    def close(self) -> None: ...


class FileTransport:
    """Writes each message as an .eml file (CRLF line ends, as on the wire) into a folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        if not folder.exists():
            private_dir(folder)

    def send(self, msg: Message | WireMessage, deadline: float | None = None) -> None:
        # 0600 and renamed last: the links in it work, and a reader never sees half a message.
        wire = as_wire(msg)
        write_replacing(self.folder / outbox_name(wire), wire.data)

    def close(self) -> None:
        pass


_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9@._+-]+")


def outbox_name(wire: WireMessage) -> str:
    """A file name that says what the message is: its date (from its Date header), what it is
    (course and day), and to whom, then a random part so that none is ever overwritten:
    ``20251124-070000-white-coat-day03-ana@example.org-1f2e3d4c.eml``."""
    head = wire.data.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace")
    found = re.search(r"^Date:[ \t]*(.+)$", head, re.MULTILINE | re.IGNORECASE)
    try:
        when = parsedate_to_datetime(found.group(1)).astimezone(dt.UTC) if found else None
    except (TypeError, ValueError):
        when = None
    parts = [
        f"{when:%Y%m%d-%H%M%S}" if when else "undated",
        wire.label or "message",
        wire.recipients[0] if wire.recipients else "nobody",
        uuid.uuid4().hex[:8],
    ]
    return _UNSAFE_IN_NAME.sub("_", "-".join(parts))[:200] + ".eml"


class ConsoleTransport:
    """Prints each message; for trying things out."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def send(self, msg: Message | WireMessage, deadline: float | None = None) -> None:
        text = as_wire(msg).data.decode("utf-8", "replace").replace("\r\n", "\n")
        self.stream.write(text + "\n" + "-" * 72 + "\n")
        self.stream.flush()

    def close(self) -> None:
        pass


# An address smtplib would send as it is, in angle brackets: its parse (email.utils.parseaddr,
# for each MAIL and RCPT) was a tenth of our CPU per message. Anything else goes through it.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


class _Connection(smtplib.SMTP):
    """smtplib's client, noting when a message's DATA began: a reply that times out after it
    may be one the server was slow to give for a message it has taken; and writing a plain
    address's MAIL and RCPT commands without parsing it."""

    data_sent = False

    def mail(self, sender: str, options: Sequence[str] = ()) -> tuple[int, bytes]:
        if not _PLAIN_ADDRESS.fullmatch(sender) or any(o.lower() == "smtputf8" for o in options):
            return super().mail(sender, options)
        extra = " " + " ".join(options) if options and self.does_esmtp else ""
        self.putcmd("mail", f"FROM:<{sender}>{extra}")
        return self.getreply()

    def rcpt(self, recip: str, options: Sequence[str] = ()) -> tuple[int, bytes]:
        if not _PLAIN_ADDRESS.fullmatch(recip):
            return super().rcpt(recip, options)
        extra = " " + " ".join(options) if options and self.does_esmtp else ""
        self.putcmd("rcpt", f"TO:<{recip}>{extra}")
        return self.getreply()

    def data(self, msg: bytes | str) -> tuple[int, bytes]:
        self.data_sent = True
        return super().data(msg)


class _TLSConnection(_Connection, smtplib.SMTP_SSL):
    pass


class SMTPTransport:
    """SMTP connections kept open and reused across messages, reopened when they drop.

    A send takes an idle connection, or opens one when every other is busy, and puts it back
    when done: a prefork pool process sends on one connection, a thread-pool worker on as
    many as it has threads sending at once (for a relay slow to answer, where waiting on its
    replies, not our CPU, is the limit).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        implicit_tls: bool = False,
        starttls: bool = False,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        local_hostname: str | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.implicit_tls, self.starttls = implicit_tls, starttls
        self.username, self.password = username, password
        self.timeout = timeout
        self.local_hostname = local_hostname
        # The longest a fresh connection and one message can take: every step waits at most
        # ``timeout``. A second try on a new connection starts only if this much time is left
        # before the caller's deadline, so a send never outlives the worker's lease.
        self.worst_case_seconds = (
            smtp_steps(tls=implicit_tls or starttls, login=bool(username)) * timeout
        )
        self._idle: list[_Connection] = []
        self._generation = 0  # close() moves it on: a connection busy meanwhile is not kept
        self._lock = threading.Lock()  # guards the two above, never held while talking

    def _connect(self) -> _Connection:
        context = ssl.create_default_context()
        conn: _Connection
        if self.implicit_tls:
            conn = _TLSConnection(
                self.host,
                self.port,
                timeout=self.timeout,
                local_hostname=self.local_hostname,
                context=context,
            )
        else:
            conn = _Connection(
                self.host, self.port, timeout=self.timeout, local_hostname=self.local_hostname
            )
        try:
            if self.starttls and not self.implicit_tls:
                conn.starttls(context=context)
            if self.username:
                conn.login(self.username, self.password or "")
        except BaseException:
            # Never handed out, so closed here (no QUIT: a failed handshake cannot carry one);
            # else it stays open at the relay for as long as anything keeps the error.
            conn.close()
            raise
        return conn

    def send(self, msg: Message | WireMessage, deadline: float | None = None) -> None:
        """Send one message; ``deadline`` (time.monotonic) is when the caller's lease ends."""
        wire = as_wire(msg)
        with self._lock:
            conn = self._idle.pop() if self._idle else None
            generation = self._generation
        try:
            for attempt in (1, 2):
                reused = conn is not None
                if attempt == 2 and deadline is not None:
                    left = deadline - time.monotonic()
                    if left < self.worst_case_seconds:
                        raise RelayError(
                            f"{self.host}:{self.port} hung up; {left:.0f}s left in this send's "
                            "lease is too little for a new connection"
                        )
                try:
                    if conn is None:
                        conn = self._connect()
                    conn.data_sent = False
                    # Our own CRLF bytes: send_message would mangle "From " lines in the text.
                    conn.sendmail(wire.sender, list(wire.recipients), wire.data)
                    return
                except smtplib.SMTPServerDisconnected as exc:
                    # smtplib reports a reply that never came as a disconnection. After DATA,
                    # that is a server slow to answer for a message it may well have taken:
                    # sending it again at once would only make a second copy.
                    slow = conn is not None and conn.data_sent and _timed_out(exc)
                    conn = _drop(conn)
                    # An idle connection the server closed meanwhile: reopen once and go on.
                    if reused and attempt == 1 and not slow:
                        continue
                    raise RelayError(f"{self.host}:{self.port} disconnected: {exc}") from exc
                except smtplib.SMTPException as exc:
                    if getattr(exc, "smtp_code", None) == 421:
                        conn = _drop(conn)  # 421: the server is closing the channel
                        # A server that timed out an idle connection answers our MAIL FROM with
                        # its parting "421 timeout". Nothing of the message went out: reopen once.
                        if isinstance(exc, smtplib.SMTPSenderRefused) and reused and attempt == 1:
                            continue
                    else:
                        conn = _reset(conn)
                    raise _classify(exc) from exc
                except OSError as exc:  # refused, reset, timed out, TLS failure
                    conn = _drop(conn)
                    # A reset on a reused connection is a hang-up we noticed late: reopen once.
                    if isinstance(exc, ConnectionResetError | BrokenPipeError) and (
                        reused and attempt == 1
                    ):
                        continue
                    raise RelayError(f"cannot reach {self.host}:{self.port}: {exc}") from exc
        finally:
            if conn is not None:
                with self._lock:
                    keep = generation == self._generation
                    if keep:
                        self._idle.append(conn)
                if not keep:
                    _drop(conn)

    def close(self) -> None:
        """Close the idle connections; one busy now is closed when its send ends."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._generation += 1
        for conn in idle:
            _drop(conn)


def _timed_out(exc: BaseException) -> bool:
    cause = exc.__cause__ or exc.__context__
    return isinstance(cause, TimeoutError)


def _reset(conn: _Connection | None) -> _Connection | None:
    """RSET after a refused message, so the connection can carry the next; None if it broke."""
    if conn is not None:
        try:
            conn.rset()
        except (smtplib.SMTPException, OSError):
            return _drop(conn)
    return conn


def _drop(conn: _Connection | None) -> None:
    if conn is not None:
        try:
            conn.quit()
        except (smtplib.SMTPException, OSError):
            conn.close()


def _classify(exc: smtplib.SMTPException) -> Exception:
    """Only a refusal of the recipient or of the message is about this address.

    A reply to AUTH, HELO or MAIL FROM, a 421, relaying denied, or a STARTTLS or AUTH the
    server does not offer is our own set-up (or the relay) at fault: sending pauses as a
    whole (RelayError); suppressing or failing the subscriber would be wrong.
    """
    code = getattr(exc, "smtp_code", None)
    if code == 421:
        return RelayError(f"421 {_text(getattr(exc, 'smtp_error', b''))} (the relay is closing)")
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, reply = next(iter(exc.recipients.values()))
        if code == 421 or _relay_denied(code, reply):
            return RelayError(f"{code} {_text(reply)} (check the mail settings)")
        return _by_code(code, reply)
    if isinstance(exc, smtplib.SMTPDataError):
        return _by_code(exc.smtp_code, exc.smtp_error)
    if isinstance(exc, smtplib.SMTPResponseException):
        return RelayError(f"{exc.smtp_code} {_text(exc.smtp_error)} (check the mail settings)")
    return RelayError(f"{exc} (check the mail settings)")


def _relay_denied(code: int, reply: bytes | str) -> bool:
    """'Relay access denied' and the like: the relay will not take mail from us for anyone."""
    text = _text(reply).lower()
    return 500 <= code < 600 and "5.7." in text and "relay" in text


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def _by_code(code: int, reply: bytes | str) -> Exception:
    text = _text(reply)
    detail = f"{code} {text}".strip()
    if 500 <= code < 600:
        enhanced = re.match(r"5\.(\d{1,3})\.\d{1,3}\b", text.strip())
        about_mailbox = enhanced.group(1) in ("1", "2") if enhanced else code in (550, 551, 553)
        return PermanentMailError(detail, suppress=about_mailbox)
    return TransientMailError(detail)


def transport_from_url(url: str, *, timeout: float = 30.0) -> Transport:
    """Build the transport a mail URL names (see ``dripcourse.mail_url``)."""
    mail = parse_mail_url(url)
    if mail.scheme == "file":
        assert mail.folder is not None
        return FileTransport(mail.folder)
    if mail.scheme == "console":
        return ConsoleTransport()
    return SMTPTransport(
        mail.host,
        mail.port,
        implicit_tls=mail.implicit_tls,
        starttls=mail.starttls,
        username=mail.username,
        password=mail.password,
        timeout=timeout,
    )
