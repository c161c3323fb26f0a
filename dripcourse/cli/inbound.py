"""`dripcourse inbound`: replies, bounces and complaints coming back by email (docs/inbound.md)."""

from __future__ import annotations

import imaplib
import logging
import signal
import sys
import threading
import time
from collections import Counter

import click
from aiosmtpd.controller import Controller
from sqlalchemy import inspect
from sqlalchemy.exc import DBAPIError

from dripcourse import db
from dripcourse.cli.base import PORT, State, cli, first_line, pass_state
from dripcourse.clock import utcnow
from dripcourse.encryption import KEY_FILE
from dripcourse.errors import ConfigError, DripcourseError, NotSetUp
from dripcourse.inbound.imap import QUARANTINE, connect, parse_imap_url, poll_once
from dripcourse.inbound.listener import InboundHandler, is_our_address, listener, receive
from dripcourse.inbound.route import TEMPORARY
from dripcourse.reader import reflections
from dripcourse.runtime import Runtime
from dripcourse.settings import kept_secret_key

log = logging.getLogger(__name__)

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


def _ready(state: State) -> Runtime:
    """The runtime, once the settings allow receiving and the reflections key opens what is
    stored (as `run` and the web app check it): a wrong key found only at the first reply
    would turn every reply away. A database out of reach or not set up yet is left for the
    first message to meet, as the web app leaves it for the first page."""
    rt = state.runtime
    if not rt.settings.reply_domain:
        raise ConfigError(
            "setting reply_domain: not set, so lessons carry no reply address and there is "
            "nothing to receive (see docs/inbound.md)"
        )
    var = rt.settings.path(rt.settings.var_dir)
    # As with the signing key: a reflections key made here would seal replies with a key the
    # web app does not have (`init` keeps one in var/, so the right var/ always holds it).
    reflections_key_kept = bool(rt.settings.reflections_key) or (var / KEY_FILE).is_file()
    not_set_up: NotSetUp | None = None
    try:
        with db.transaction(rt.sessions) as session:
            connection = session.connection()
            if reflections_key_kept and inspect(connection).has_table("reflections"):
                reflections.check_key(session, rt.reflection_cipher)
    except (DBAPIError, NotSetUp) as exc:
        log.warning("inbound: reflections key not checked at start: %s", first_line(exc))
        not_set_up = exc if isinstance(exc, NotSetUp) else None
    if not rt.settings.inbound_secret and kept_secret_key(rt.settings) is None:
        # A key made here would be one no lesson was signed with: every reply dropped as
        # junk. Before `init`, that is what to say (the mail server keeps the message).
        if not_set_up is not None:
            raise not_set_up
        raise ConfigError(
            f"setting secret_key: not set, and no key is kept in {var}/secret_key: run this "
            "with the settings the lessons are sent with"
        )
    if not reflections_key_kept:
        if not_set_up is not None:
            raise not_set_up
        raise ConfigError(
            f"setting reflections_key: not set, and no key is kept in {var}/{KEY_FILE}: run "
            "this with the settings the lessons are sent with"
        )
    _log_each_message()
    return rt


def _log_each_message() -> None:
    """The core's one INFO line per message (kind, enrollment, day) to standard error, unless
    logging was set up already (by `run`'s worker, or a test)."""
    if logging.getLogger().handlers:
        return
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    logging.getLogger("dripcourse.inbound").setLevel(logging.INFO)


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

    Exit status 0 when it was processed (whatever it was), 65 for a message over
    inbound_max_bytes and 67 for a recipient that is not ours (the MTA bounces both), and 75
    for anything that is not the message's fault: the database out of reach or not set up, a
    mistake in the settings, a wrong reflections key, an error of ours (the MTA keeps the
    message and tries again).
    """
    try:
        rt = _ready(state)
        limit = rt.settings.inbound_max_bytes
        raw = sys.stdin.buffer.read(limit + 1)
        if len(raw) > limit:
            click.echo(f"Error: message larger than inbound_max_bytes ({limit})", err=True)
            sys.exit(EX_DATAERR)
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
    except DripcourseError as exc:
        click.echo(f"Error: {first_line(exc)} (the mail server keeps the message)", err=True)
        sys.exit(EX_TEMPFAIL)
    except Exception:  # noqa: BLE001 - an error of ours must not bounce a subscriber's reply
        log.exception("inbound pipe: unexpected error, the mail server keeps the message")
        click.echo("Error: unexpected error, try again later (see the log above)", err=True)
        sys.exit(EX_TEMPFAIL)
    click.echo(decision.kind)


@inbound.command()
@click.option("--host", default=None, help="Interface (default: setting inbound_host, 127.0.0.1).")
@click.option("--port", default=None, type=PORT, help="Port (default: setting inbound_port, 2525).")
@pass_state
def serve(state: State, host: str | None, port: int | None) -> None:
    """Listen for SMTP on HOST:PORT, taking mail for the reply domain only; Ctrl-C stops."""
    controller = start_listener(_ready(state), host, port)
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
    "--quarantine",
    default=QUARANTINE,
    show_default=True,
    help="Folder for messages that could not be processed (made when missing).",
)
@click.option(
    "--every", default=0, type=click.IntRange(min=0), help="Poll again every N seconds (0: once)."
)
@pass_state
def poll(state: State, url: str, move_to: str | None, quarantine: str, every: int) -> None:
    """Process the unseen messages of a hosted mailbox over IMAP, then move or delete them.

    A message that cannot be processed (an error of ours), or is larger than
    inbound_max_bytes, is moved to --quarantine and the run goes on.
    """
    rt = _ready(state)
    box = parse_imap_url(url)

    def handle(raw: bytes):  # type: ignore[no-untyped-def]
        return receive(rt.sessions, rt.inbound, raw, now=utcnow())

    while True:
        try:
            client = connect(box)
            try:
                done = poll_once(
                    client,
                    box.folder,
                    handle,
                    move_to=move_to,
                    quarantine=quarantine,
                    max_bytes=rt.settings.inbound_max_bytes,
                )
            finally:
                client.logout()
        except (imaplib.IMAP4.error, OSError) as exc:
            click.echo(f"Error: IMAP {box.host}: {exc}", err=True)
            if not every:
                sys.exit(EX_TEMPFAIL)
        except (*TEMPORARY, NotSetUp) as exc:
            click.echo(
                f"Error: cannot record messages now, left unseen: {first_line(exc)}", err=True
            )
            if not every:
                sys.exit(EX_TEMPFAIL)
        else:
            kinds = Counter("quarantined" if d is None else str(d.kind) for d in done)
            click.echo(
                f"inbound poll: {len(done)} messages"
                + (": " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) if kinds else "")
            )
        if not every:
            return
        time.sleep(every)
