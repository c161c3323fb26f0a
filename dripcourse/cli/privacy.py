"""Operators' commands for a subscriber's data: forgetting a person on request."""

from __future__ import annotations

import click

from dripcourse import db, oplog
from dripcourse.cli.base import State, cli, pass_state
from dripcourse.clock import utcnow
from dripcourse.errors import InputError
from dripcourse.reader import privacy


@cli.command()
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask to confirm.")
@pass_state
def forget(state: State, email: str, yes: bool) -> None:
    """Delete everything about EMAIL, keeping only a do-not-mail entry for the address."""
    rt = state.runtime
    with db.transaction(rt.sessions) as session:
        subscriber = privacy.find_subscriber(session, email)
        address = subscriber.email
        if not yes:
            written = privacy.reflections_of(session, subscriber)
            try:
                agreed = click.confirm(
                    f"Delete everything about {address} ({len(subscriber.enrollments)} "
                    f"enrollment(s), {written} reflection(s))? Only a do-not-mail entry is kept"
                )
            except click.Abort:  # no answer came: no terminal (a script, cron), or Ctrl-D
                click.echo()  # end the question's line
                raise InputError(
                    f"forget asks before it deletes everything about {address}, and no answer "
                    "came (no terminal?): nothing was deleted; add --yes to forget without asking"
                ) from None
            if not agreed:
                raise click.Abort()
        forgotten = privacy.forget_subscriber(session, subscriber, utcnow())
    privacy.remove_outbox_files(rt.outbox, address)
    db.write_back_deletions(rt.engine)
    oplog.record(
        rt.settings.path(rt.settings.var_dir),
        f"forget: one subscriber ({forgotten.enrollments} enrollment(s), "
        f"{forgotten.reflections} reflection(s)); the address is kept only as a suppression",
        utcnow(),
    )
    click.echo(
        f"forgot {address}: {forgotten.enrollments} enrollment(s), "
        f"{forgotten.deliveries} delivery record(s), {forgotten.reflections} reflection(s) "
        "deleted; the address stays on the suppression list"
    )
