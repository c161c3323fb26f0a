"""`dripcourse inbound`: replies, bounces and complaints coming back by email (docs/inbound.md)."""

from __future__ import annotations

import imaplib
import signal
import sys
import threading
import time
from collections import Counter

import click
from aiosmtpd.controller import Controller
from sqlalchemy.exc import DBAPIError

from dripcourse.cli.base import PORT, State, cli, first_line, pass_state
from dripcourse.clock import utcnow
from dripcourse.errors import ConfigError, NotSetUp
from dripcourse.inbound.imap import connect, parse_imap_url, poll_once
from dripcourse.inbound.listener import InboundHandler, is_our_address, listener, receive
from dripcourse.runtime import Runtime

# sysexits.h, which MTAs read: 75 asks them to try again later, the others bounce.
EX_DATAERR = 65
EX_NOUSER = 67
EX_TEMPFAIL = 75


@cli.group()
def inbound() -> None:
    """Receive replies, bounces and complaints sent to the reply domain."""


def start_listener(rt: Runtime, host: str | None = None, port: int | None = None) -> Controller:
    """Start the SMTP listener in a thread of its own; one line says where it listens."""
    host = host or rt.settings.inbound_host
    port = port or rt.settings.inbound_port
    handler = InboundHandler(rt.sessions, rt.inbound, utcnow)
    controller = listener(handler, host, port, max_bytes=rt.settings.inbound_max_bytes)
    try:
        controller.start()
    except (OSError, RuntimeError) as exc:
        raise click.ClickException(
            f"inbound: cannot listen on {host}:{port}: {exc} (settings inbound_host, inbound_port)"
        ) from None
    click.echo(f"inbound: listening on {host}:{port} for *@{rt.settings.reply_domain}")
    return controller


def _ready(state: State) -> None:
    if not state.runtime.settings.reply_domain:
        raise ConfigError(
            "setting reply_domain: not set, so lessons carry no reply address and there is "
            "nothing to receive (see docs/inbound.md)"
        )


@inbound.command()
@click.option(
    "--recipient",
    "recipients",
    multiple=True,
    help="The envelope recipient, as the MTA gives it (Postfix: ${original_recipient}).",
)
@pass_state
def pipe(state: State, recipients: tuple[str, ...]) -> None:
    """Process one message read from standard input (Postfix pipe, procmail, .forward).

    Exit status 0 when it was processed (whatever it was), 75 when the database cannot be
    reached (the MTA tries again), 65 for a message over inbound_max_bytes and 67 for a
    recipient that is not ours (the MTA bounces both).
    """
    _ready(state)
    rt = state.runtime
    limit = rt.settings.inbound_max_bytes
    raw = sys.stdin.buffer.read(limit + 1)
    if len(raw) > limit:
        click.echo(f"Error: message larger than inbound_max_bytes ({limit})", err=True)
        sys.exit(EX_DATAERR)
    try:
        with rt.sessions() as session:
            ours = all(is_our_address(rt.inbound, address, session) for address in recipients)
        if not ours:
            click.echo("Error: --recipient is not one of our reply or bounce addresses", err=True)
            sys.exit(EX_NOUSER)
        decision = receive(rt.sessions, rt.inbound, raw, now=utcnow(), recipients=recipients)
    except (DBAPIError, NotSetUp) as exc:
        # Not set up yet is a wait too: the mail server keeps the message until `init` runs.
        click.echo(
            f"Error: cannot record the message now, try again later: {first_line(exc)}", err=True
        )
        sys.exit(EX_TEMPFAIL)
    click.echo(decision.kind)


@inbound.command()
@click.option("--host", default=None, help="Interface (default: setting inbound_host, 127.0.0.1).")
@click.option("--port", default=None, type=PORT, help="Port (default: setting inbound_port, 2525).")
@pass_state
def serve(state: State, host: str | None, port: int | None) -> None:
    """Listen for SMTP on HOST:PORT, taking mail for the reply domain only; Ctrl-C stops."""
    _ready(state)
    controller = start_listener(state.runtime, host, port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


@inbound.command()
@click.option(
    "--imap",
    "url",
    required=True,
    envvar="DRIPCOURSE_INBOUND_IMAP_URL",
    help="imaps://user:password@host/FOLDER (or $DRIPCOURSE_INBOUND_IMAP_URL).",
)
@click.option("--move-to", default=None, help="Folder for processed messages (default: delete).")
@click.option(
    "--every", default=0, type=click.IntRange(min=0), help="Poll again every N seconds (0: once)."
)
@pass_state
def poll(state: State, url: str, move_to: str | None, every: int) -> None:
    """Process the unseen messages of a hosted mailbox over IMAP, then move or delete them."""
    _ready(state)
    rt = state.runtime
    box = parse_imap_url(url)

    def handle(raw: bytes):  # type: ignore[no-untyped-def]
        if len(raw) > rt.settings.inbound_max_bytes:
            raw = b""  # dropped as junk: never read a message past the limit
        return receive(rt.sessions, rt.inbound, raw, now=utcnow())

    while True:
        try:
            client = connect(box)
            try:
                done = poll_once(client, box.folder, handle, move_to=move_to)
            finally:
                client.logout()
        except (imaplib.IMAP4.error, OSError) as exc:
            click.echo(f"Error: IMAP {box.host}: {exc}", err=True)
            if not every:
                sys.exit(EX_TEMPFAIL)
        except (DBAPIError, NotSetUp) as exc:
            click.echo(
                f"Error: cannot record messages now, left unseen: {first_line(exc)}", err=True
            )
            if not every:
                sys.exit(EX_TEMPFAIL)
        else:
            kinds = Counter(str(d.kind) for d in done)
            click.echo(
                f"inbound poll: {len(done)} messages"
                + (": " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) if kinds else "")
            )
        if not every:
            return
        time.sleep(every)
