"""`dripcourse inbound`: replies, bounces and complaints coming back by email (docs/inbound.md)."""

from __future__ import annotations

import signal
import sys
import threading

import click
from sqlalchemy.exc import DBAPIError

from dripcourse.cli.base import State, cli, pass_state
from dripcourse.clock import utcnow
from dripcourse.errors import ConfigError
from dripcourse.inbound_listener import InboundHandler, is_our_address, listener, receive

# sysexits.h, which MTAs read: 75 asks them to try again later, the others bounce.
EX_DATAERR = 65
EX_NOUSER = 67
EX_TEMPFAIL = 75


@cli.group()
def inbound() -> None:
    """Receive replies, bounces and complaints sent to the reply domain."""


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
    for address in recipients:
        if not is_our_address(rt.inbound, address):
            click.echo("Error: --recipient is not one of our reply or bounce addresses", err=True)
            sys.exit(EX_NOUSER)
    try:
        decision = receive(rt.sessions, rt.inbound, raw, now=utcnow(), recipients=recipients)
    except DBAPIError as exc:
        click.echo(f"Error: cannot record the message now, try again later: {exc}", err=True)
        sys.exit(EX_TEMPFAIL)
    click.echo(decision.kind)


@inbound.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=2525, show_default=True, type=int)
@pass_state
def serve(state: State, host: str, port: int) -> None:
    """Listen for SMTP on HOST:PORT, taking mail for the reply domain only; Ctrl-C stops."""
    _ready(state)
    rt = state.runtime
    handler = InboundHandler(rt.sessions, rt.inbound, utcnow)
    controller = listener(handler, host, port, max_bytes=rt.settings.inbound_max_bytes)
    controller.start()
    click.echo(f"inbound: listening on {host}:{port} for *@{rt.settings.reply_domain}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()
