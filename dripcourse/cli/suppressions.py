"""Operators' commands for the suppression list: list, add, remove."""

from __future__ import annotations

import json
import sys

import click

from dripcourse import db
from dripcourse.cli.base import Group, State, cli, pass_state
from dripcourse.clock import utcnow
from dripcourse.people import suppressions


@cli.group("suppressions", cls=Group)
def suppressions_group() -> None:
    """Addresses that are never mailed: bounced, complained, unsubscribed, or added by hand."""


@suppressions_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON list of objects.")
@pass_state
def list_cmd(state: State, as_json: bool) -> None:
    """List every suppressed address with its reason and since when."""
    with db.transaction(state.runtime.sessions) as session:
        entries = suppressions.list_entries(session)
    if as_json:
        click.echo(json.dumps([e.as_dict() for e in entries], indent=2))
        return
    for e in entries:
        detail = f"  {e.detail}" if e.detail else ""
        click.echo(f"{e.email}\t{e.kind}\t{e.since:%Y-%m-%d %H:%M} UTC{detail}")
    if not entries:
        click.echo("no suppressed addresses")


@suppressions_group.command("add")
@click.argument("email")
@click.option("--reason", required=True, help="Why (shown in the list).")
@pass_state
def add_cmd(state: State, email: str, reason: str) -> None:
    """Never mail an address again; its active enrollments stop."""
    with db.transaction(state.runtime.sessions) as session:
        added = suppressions.add(session, email, reason, utcnow())
    click.echo(f"{added.email}: suppressed ({added.detail})")


@suppressions_group.command("remove")
@click.argument("email")
@click.option(
    "--yes",
    is_flag=True,
    help="Lift it even if the address bounced, complained or was forgotten at their request.",
)
@pass_state
def remove_cmd(state: State, email: str, yes: bool) -> None:
    """Lift a suppression so the address can be enrolled again."""
    with db.transaction(state.runtime.sessions) as session:
        try:
            lifted = suppressions.remove(session, email, confirmed=yes)
        except suppressions.NeedsConfirmation as exc:
            # Asked only at a terminal: a script gets the one-line error and must say --yes.
            if not sys.stdin.isatty() or not click.confirm(f"{exc}. Lift it now?", err=True):
                raise
            lifted = suppressions.remove(session, email, confirmed=True)
    click.echo(
        f"{lifted.email}: no longer suppressed (was {lifted.kind} since {lifted.since:%Y-%m-%d})"
    )
