"""What a ``mail_url`` setting means: which transport, where, and how long one send may take.

Settings are checked when they are loaded, before anything connects, so the meaning of the URL
lives here, beside the other settings' rules; the sending package builds its transport from the
parsed value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from dripcourse.errors import ConfigError
from dripcourse.redact import redact_url


@dataclass(frozen=True)
class MailURL:
    """A parsed mail URL. ``scheme`` is smtp, smtps, file or console."""

    scheme: str
    host: str = ""
    port: int = 0
    starttls: bool = False
    username: str | None = None
    password: str | None = None
    folder: Path | None = None

    @property
    def implicit_tls(self) -> bool:
        return self.scheme == "smtps"

    @property
    def smtp(self) -> bool:
        return self.scheme in ("smtp", "smtps")


def parse_mail_url(url: str) -> MailURL:
    """The transport ``url`` names; ConfigError says what is wrong with it. Connects to nothing.

    smtp://user:pass@host:587?starttls=true   plain SMTP, optionally upgraded with STARTTLS
    smtps://user:pass@host:465                SMTP over TLS from the first byte
    file:///absolute/folder or file://relative/folder
    console://
    """
    parts = urlsplit(url)
    if parts.scheme == "file":
        path = unquote(parts.netloc + parts.path)
        if not path:
            raise ConfigError("setting mail_url: file:// needs a folder, e.g. file://var/outbox")
        return MailURL("file", folder=Path(path).expanduser())
    if parts.scheme == "console":
        return MailURL("console")
    if parts.scheme in ("smtp", "smtps"):
        if not parts.hostname:
            raise ConfigError(f"setting mail_url: no host in {parts.scheme}:// URL")
        options = {k: v[-1].lower() for k, v in parse_qs(parts.query).items()}
        unknown = set(options) - {"starttls"}
        if unknown:
            raise ConfigError(f"setting mail_url: unknown option(s) {', '.join(sorted(unknown))}")
        starttls = options.get("starttls", "false")
        if starttls not in ("1", "true", "yes", "0", "false", "no"):
            raise ConfigError(f"setting mail_url: starttls must be true or false, not {starttls!r}")
        try:
            port = parts.port
        except ValueError:
            # urlsplit says "out of range" for 99999, which is a number all the same.
            given = parts.netloc.rpartition(":")[2]
            what = "not a TCP port (1-65535)" if given.isdigit() else "not a number"
            raise ConfigError(f"setting mail_url: the port {given} is {what}") from None
        implicit = parts.scheme == "smtps"
        return MailURL(
            parts.scheme,
            host=parts.hostname,
            port=port or (465 if implicit else 25),
            starttls=starttls in ("1", "true", "yes"),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )
    raise ConfigError(
        f"setting mail_url: unsupported transport {redact_url(url)!r} "
        "(use smtp://, smtps://, file:// or console://)"
    )


def smtp_steps(*, tls: bool, login: bool) -> int:
    """How many replies a send on a fresh connection waits for, each up to the timeout.

    Connect and greeting, EHLO, MAIL, RCPT, DATA, the message and its reply; STARTTLS adds its
    command, the handshake and a second EHLO; a login adds up to two replies. One more covers
    a reused connection's MAIL that finds the server gone before the fresh one is opened.
    """
    return 8 + (3 if tls else 0) + (2 if login else 0) + 1


def worst_case_send_seconds(url: str, timeout: float) -> float:
    """The longest one send through ``url`` can take when every reply waits ``timeout``."""
    mail = parse_mail_url(url)
    if not mail.smtp:
        return 0.0
    return smtp_steps(tls=mail.implicit_tls or mail.starttls, login=bool(mail.username)) * timeout
