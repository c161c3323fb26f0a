"""Operators' commands for following a course: tick, status, exporting reflections."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import click

from dripcourse import db
from dripcourse.cli.base import Group, State, cli, pass_state
from dripcourse.clock import utcnow
from dripcourse.errors import DripcourseError
from dripcourse.people import enrollment, status
from dripcourse.runtime import Runtime
from dripcourse.sending import breaker, notices


@cli.command()
@click.option(
    "--inline", is_flag=True, help="Send due lessons in this process, not through the broker."
)
@pass_state
def tick(state: State, inline: bool) -> None:
    """Run one scheduler pass now."""
    from dripcourse.sending import claim as delivery

    rt = state.runtime
    if inline:
        result, outcomes = delivery.tick_inline(rt, utcnow)
        notices.queue_due(rt, utcnow(), lambda ids: notices.send_notices(rt, ids, utcnow()))
    else:
        # Before the broker, which makes a file of its own (dripcourse.tasks, when imported).
        db.check_schema(rt.engine)
        from dripcourse import tasks

        tasks.configure(rt.settings)
        result, outcomes = tasks.scheduler_pass(rt, utcnow()), Counter()
    if inline:
        line = f"{result.claimed} lessons claimed, {result.requeued} deliveries queued again"
    else:
        line = (
            f"queued {result.claimed + result.requeued} for the workers: "
            f"{result.claimed} lessons newly due, {result.requeued} retries or lost tasks"
        )
    if outcomes:
        line += "; " + ", ".join(f"{n} {k}" for k, n in sorted(outcomes.items()))
    click.echo(line)
    if result.paused is not None:
        # The pause as the pass found it; its probe may have ended it since.
        with db.transaction(rt.sessions) as session:
            still = breaker.current(session)
        click.echo(still.describe() if still else "sending resumed: the relay took the probe")
    if not inline and result.claimed + result.requeued:
        _warn_without_workers(rt)


def _warn_without_workers(rt: Runtime) -> None:
    """Say so when the queued lessons may sit there: no worker has taken a task lately."""
    from dripcourse.sending import liveness

    seen = liveness.last_worker_seen(rt)
    limit = dt.timedelta(seconds=rt.settings.worker_stale_seconds)
    if seen is None:
        why = "no worker has taken a task yet"
    elif utcnow() - seen > limit:
        why = f"no worker has taken a task since {seen:%Y-%m-%d %H:%M} UTC"
    else:
        return
    click.echo(
        f"warning: {why}; the lessons wait in the queue until one runs "
        "(celery -A dripcourse.tasks worker, or dripcourse run), or use tick --inline",
        err=True,
    )


COLUMNS = ("day", "at", "sent", "pending", "retrying", "failed", "suppressed", "reflected")


@cli.command("status")
@click.option("--cohort", "cohort_name", default=None)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per enrollment.")
@pass_state
def status_cmd(state: State, cohort_name: str | None, as_json: bool) -> None:
    """Show each cohort's progress by day, and failures and retries with their reasons."""
    rt = state.runtime
    with db.transaction(rt.sessions) as session:
        if cohort_name is not None:
            enrollment.get_cohort(session, cohort_name)
        if as_json:
            click.echo(json.dumps(status.enrollment_rows(session, cohort_name), indent=2))
            return
        summaries = status.cohort_summaries(session, cohort_name, utcnow(), _length(rt))
        paused = breaker.current(session)
        inbound = status.inbound_line(session, rt.settings, cohort_name)
        webhooks = status.webhook_line(session, rt.settings, cohort_name)
        deliverability = status.deliverability_line(
            status.deliverability_warnings(session, utcnow())
        )
    if paused is not None:
        click.echo(paused.describe())
    if deliverability is not None:
        click.echo(deliverability)
    if not summaries:
        click.echo("no cohorts yet")
    table = _rich_table if sys.stdout.isatty() else _plain_table
    for s in summaries:
        states = ", ".join(
            f"{n} {k}" + (f" ({s.paused} paused)" if k == "active" and s.paused else "")
            for k, n in sorted(s.by_status.items())
        )
        length = f"{s.course_length} lessons" if s.course_length else "course does not load"
        click.echo(
            f"cohort {s.name} ({s.course}): {s.enrolled} enrolled: {states or 'none'}; {length}"
        )
        rows = [[getattr(d, c) for c in COLUMNS] for d in s.days]
        table(rows)
        for error, count in s.retry_errors:
            click.echo(f"  retrying: {count} with last error: {error}")
        for address, day, reason in s.failures:
            click.echo(f"  failed: {address} day {day}: {reason}")
    if inbound:
        click.echo(inbound)
    if webhooks:
        click.echo(webhooks)
    click.echo(status.retention(state.runtime.settings))


def _length(rt: Runtime) -> Callable[[str], int | None]:
    def length(slug: str) -> int | None:
        try:
            return rt.catalog.course(slug).length
        except DripcourseError:
            return None

    return length


def _plain_table(rows: list[list[int]]) -> None:
    """Fixed-width columns, one line per day: easy to read and to parse in scripts."""
    click.echo("  " + " ".join(f"{c:>10}" if i else f"{c:>4}" for i, c in enumerate(COLUMNS)))
    for row in rows:
        click.echo("  " + " ".join(f"{v:>10}" if i else f"{v:>4}" for i, v in enumerate(row)))


def _rich_table(rows: list[list[int]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*COLUMNS, box=None, padding=(0, 1))
    for column in table.columns:
        column.justify = "right"
    for row in rows:
        table.add_row(*map(str, row))
    Console().print(table)


@cli.command()
@click.option(
    "--at",
    "at_text",
    default=None,
    metavar="DATETIME",
    help="ISO 8601; UTC if no offset (default: now).",
)
@click.option("--cohort", "cohort_name", default=None)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per enrollment.")
@pass_state
def due(state: State, at_text: str | None, cohort_name: str | None, as_json: bool) -> None:
    """Dry run: who would get which lesson at that instant, and why the others would not."""
    from dripcourse.sending import due as dry_run

    rt = state.runtime
    at = dry_run.parse_at(at_text, utcnow())
    with db.transaction(rt.sessions) as session:
        if cohort_name is not None:
            enrollment.get_cohort(session, cohort_name)
        verdicts = dry_run.due_at(session, at, rt.catalog.course, cohort_name)
    if as_json:
        click.echo(json.dumps([v.as_dict() for v in verdicts], indent=2))
        return
    sending = [v for v in verdicts if v.reason == "due"]
    click.echo(f"at {at:%Y-%m-%d %H:%M} UTC: {len(sending)} would get a lesson (nothing sent)")
    for v in sending:
        click.echo(f"  {v.email} ({v.cohort}): {v.detail}")
    reasons = Counter(v.reason for v in verdicts if v.reason != "due")
    for reason, count in sorted(reasons.items()):
        click.echo(f"{count} not now: {reason}")
        for v in verdicts:
            if v.reason == reason:
                click.echo(f"  {v.email} ({v.cohort}): {v.detail}")


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
    from dripcourse import oplog
    from dripcourse.reader import reflections as reflection_store

    rt = state.runtime
    with db.transaction(rt.sessions) as session:
        if cohort_name is not None:
            enrollment.get_cohort(session, cohort_name)
        rows = reflection_store.export_rows(session, rt.reflection_cipher, cohort_name)
    data = reflection_store.export_text(rows, fmt)
    where = "stdout" if out is None else str(out.resolve())
    oplog.record(
        rt.settings.path(rt.settings.var_dir),
        f"reflections export: {len(rows)} reflections"
        f"{f' of cohort {cohort_name!r}' if cohort_name else ''} to {where}",
        utcnow(),
    )
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
    from dripcourse.sending.recovery import retry_failed as put_back

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


@reflections.command("rekey")
@pass_state
def reflections_rekey(state: State) -> None:
    """Seal every reflection (and every reply from another address still held) again under
    the first key of reflections_key."""
    from dripcourse.reader import circle, held_replies
    from dripcourse.reader import reflections as reflection_store

    rt = state.runtime
    with db.transaction(rt.sessions) as session:
        count = reflection_store.rekey(session, rt.reflection_cipher)
        shared = circle.rekey(session, rt.reflection_cipher)
        held = held_replies.rekey(session, rt.reflection_cipher)
    click.echo(
        f"{count} reflections sealed again under the first key"
        + (f", and {held} held replies" if held else "")
    )
    if shared:
        click.echo(f"{shared} shared reflections and notes of the cohort circle too")


@reflections.command("new-key")
def reflections_new_key() -> None:
    """Print a new random key for the reflections_key setting."""
    from dripcourse.encryption import new_key

    click.echo(new_key())
