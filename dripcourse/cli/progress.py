"""Operators' commands for following a course: tick, status, exporting reflections."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path

import click

from dripcourse import breaker, db, enrollment, status
from dripcourse.cli.base import Group, State, cli, pass_state
from dripcourse.clock import utcnow

ROW = "  {:>4} {:>7} {:>8} {:>7} {:>11} {:>10}"


@cli.command()
@click.option(
    "--inline", is_flag=True, help="Send due lessons in this process, not through the broker."
)
@pass_state
def tick(state: State, inline: bool) -> None:
    """Run one scheduler pass now."""
    from dripcourse import delivery

    rt = state.runtime
    if inline:
        result, outcomes = delivery.tick_inline(rt, utcnow)
    else:
        from dripcourse import tasks

        tasks.configure(rt.settings)
        result, outcomes = delivery.tick(rt, utcnow(), tasks.enqueue), Counter()
    line = f"{result.claimed} lessons claimed, {result.requeued} deliveries queued again"
    if outcomes:
        line += "; " + ", ".join(f"{n} {k}" for k, n in sorted(outcomes.items()))
    click.echo(line)
    if result.paused is not None:
        click.echo(result.paused.describe())


@cli.command("status")
@click.option("--cohort", "cohort_name", default=None)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per enrollment.")
@pass_state
def status_cmd(state: State, cohort_name: str | None, as_json: bool) -> None:
    """Show each cohort's progress by day, and failures with their reasons."""
    with db.transaction(state.runtime.sessions) as session:
        if cohort_name is not None:
            enrollment.get_cohort(session, cohort_name)
        if as_json:
            click.echo(json.dumps(status.enrollment_rows(session, cohort_name), indent=2))
            return
        summaries = status.cohort_summaries(session, cohort_name)
        paused = breaker.current(session)
    if paused is not None:
        click.echo(paused.describe())
    if not summaries:
        click.echo("no cohorts yet")
    for s in summaries:
        states = ", ".join(f"{n} {k}" for k, n in sorted(s.by_status.items()))
        click.echo(f"cohort {s.name} ({s.course}): {s.enrolled} enrolled: {states or 'none'}")
        click.echo(ROW.format("day", "sent", "pending", "failed", "suppressed", "reflected"))
        for d in s.days:
            click.echo(ROW.format(d.day, d.sent, d.pending, d.failed, d.suppressed, d.reflected))
        for address, day, reason in s.failures:
            click.echo(f"  failed: {address} day {day}: {reason}")


@cli.group(cls=Group)
def reflections() -> None:
    """Read what subscribers wrote back (private: handle exports with care)."""


@reflections.command("export")
@click.option("--cohort", "cohort_name", default=None, help="Only this cohort.")
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file.")
@pass_state
def reflections_export(state: State, cohort_name: str | None, fmt: str, out: Path | None) -> None:
    """Export every reflection: email, cohort, day, prompt, text, created and updated times."""
    from dripcourse import reflections as reflection_store

    with db.transaction(state.runtime.sessions) as session:
        if cohort_name is not None:
            enrollment.get_cohort(session, cohort_name)
        rows = reflection_store.export_rows(session, cohort_name)
    data = reflection_store.export_text(rows, fmt)
    if out is None:
        click.echo(data, nl=False)
    else:
        # Private writing: readable by the operator who made the file, nobody else.
        out.touch(mode=0o600, exist_ok=True)
        out.chmod(0o600)
        out.write_text(data, encoding="utf-8", newline="")
        click.echo(f"wrote {len(rows)} reflections to {out}", err=True)


@cli.command("retry-failed")
@click.option("--cohort", "cohort_name", default=None, help="Only this cohort.")
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"]),
    default=None,
    help="Only enrollments that failed at or after this UTC time.",
)
@pass_state
def retry_failed(state: State, cohort_name: str | None, since: dt.datetime | None) -> None:
    """Put failed enrollments back on schedule (not bounced or unsubscribed ones).

    Each gets the lesson that failed again at their next local send window, never at night.
    Fix what made them fail first (see `dripcourse status`).
    """
    from dripcourse.recovery import retry_failed as put_back

    rt = state.runtime
    with db.transaction(rt.sessions) as session:
        if cohort_name is not None:
            enrollment.get_cohort(session, cohort_name)
        retried = put_back(
            session,
            rt.catalog.course,
            utcnow(),
            cohort=cohort_name,
            since=since.replace(tzinfo=dt.UTC) if since else None,
        )
    for r in retried:
        click.echo(f"{r.email} ({r.cohort}): day {r.day} at {r.at:%Y-%m-%d %H:%M} UTC")
    click.echo(f"{len(retried)} failed enrollment(s) back on schedule")
