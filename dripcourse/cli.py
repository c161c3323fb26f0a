"""The dripcourse command: operators enroll and watch cohorts, staff preview lessons."""

from __future__ import annotations

import email
import email.policy
import json
import os
import sys
from collections import Counter
from pathlib import Path

import celery.signals
import click
from sqlalchemy import func, select

from dripcourse import db, enrollment, status
from dripcourse.clock import utcnow
from dripcourse.errors import DripcourseError
from dripcourse.mail import wire_bytes
from dripcourse.models import Cohort, Enrollment
from dripcourse.runtime import Runtime
from dripcourse.settings import CONFIG_ENV, load_settings

SAMPLE_COHORT = "sample"
SAMPLE_CSV = Path("config/sample-cohort.csv")
ROW = "  {:>4} {:>7} {:>8} {:>7} {:>11} {:>10}"


class Group(click.Group):
    """Shows a user's mistake as one line and exit status 1, never a traceback."""

    def invoke(self, ctx: click.Context):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except DripcourseError as exc:
            raise click.ClickException(str(exc)) from None


class State:
    """Built on first use so --help works even with broken settings."""

    def __init__(self, config: str | None) -> None:
        self.config = config
        if config is not None:
            # dripcourse.tasks reads its settings when imported; make it read the same file.
            os.environ[CONFIG_ENV] = config
        self._runtime: Runtime | None = None

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            self._runtime = Runtime(load_settings(self.config))
        return self._runtime


pass_state = click.make_pass_decorator(State)


@click.group(cls=Group)
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    envvar="DRIPCOURSE_CONFIG",
    help="TOML settings file (default: config/default.toml when present).",
)
@click.version_option(package_name="dripcourse")
@click.pass_context
def cli(ctx: click.Context, config: str | None) -> None:
    """Send a course one lesson a day at each subscriber's local morning."""
    ctx.obj = State(config)
    ctx.call_on_close(lambda: ctx.obj._runtime and ctx.obj._runtime.close())


@cli.command()
@pass_state
def init(state: State) -> None:
    """Create or upgrade the database."""
    db.upgrade(state.runtime.engine)
    click.echo(f"database ready: {state.runtime.engine.url.render_as_string(hide_password=True)}")


@cli.command()
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=SAMPLE_CSV,
    show_default=True,
)
@click.option("--course", default="white-coat", show_default=True)
@pass_state
def demo(state: State, csv_path: Path, course: str) -> None:
    """Enroll the sample cohort (Day 1 at once), unless the database has a cohort already."""
    rt = state.runtime
    with db.transaction(rt.sessions) as session:
        if session.scalar(select(func.count()).select_from(Cohort)):
            click.echo("a cohort exists already; the demo enrolls nobody")
            return
        now = utcnow()
        signups = enrollment.read_csv(csv_path)
        the_course = rt.catalog.course(course)
        cohort = enrollment.create_cohort(session, SAMPLE_COHORT, the_course, "now", now)
        enrollment.enroll_all(session, cohort, the_course, signups, now)
    click.echo(f"cohort {SAMPLE_COHORT!r}: {len(signups)} subscribers enrolled, Day 1 due now")


@cli.group(cls=Group)
def cohort() -> None:
    """Create and list cohorts."""


@cohort.command("create")
@click.argument("name")
@click.option("--course", "course_slug", required=True, help="Course folder name under emails/.")
@click.option(
    "--start",
    required=True,
    metavar="DATE|today|now",
    help="Local date of Day 1 (YYYY-MM-DD), today, or now (Day 1 at once).",
)
@pass_state
def cohort_create(state: State, name: str, course_slug: str, start: str) -> None:
    """Create a cohort taking one course from a start date."""
    rt = state.runtime
    course = rt.catalog.course(course_slug)
    with db.transaction(rt.sessions) as session:
        created = enrollment.create_cohort(session, name, course, start, utcnow())
        when = (
            "now"
            if created.started_at
            else f"{created.start_date} at {course.cadence.send_time:%H:%M} local"
        )
    click.echo(f"cohort {name!r} created: {course.title}, {course.length} lessons, Day 1 {when}")


@cohort.command("list")
@pass_state
def cohort_list(state: State) -> None:
    """List cohorts with their course, start and size."""
    with db.transaction(state.runtime.sessions) as session:
        rows = session.execute(
            select(Cohort, func.count(Enrollment.id))
            .outerjoin(Enrollment, Enrollment.cohort_id == Cohort.id)
            .group_by(Cohort.id)
            .order_by(Cohort.name)
        ).all()
        for c, size in rows:
            start = (
                c.started_at.isoformat(timespec="minutes") if c.started_at else str(c.start_date)
            )
            click.echo(f"{c.name}\t{c.course_slug}\tstart {start}\t{size} enrolled")
    if not rows:
        click.echo("no cohorts yet: dripcourse cohort create NAME --course SLUG --start DATE")


@cli.command()
@click.argument("email")
@click.option("--cohort", "cohort_name", required=True)
@click.option("--name", default="", help="Name used in the greeting.")
@click.option(
    "--timezone", default="UTC", show_default=True, help="IANA zone, e.g. America/Chicago."
)
@pass_state
def enroll(state: State, email: str, cohort_name: str, name: str, timezone: str) -> None:
    """Enroll one subscriber in a cohort."""
    rt = state.runtime
    signup = enrollment.check_signup(email, name, timezone)
    with db.transaction(rt.sessions) as session:
        the_cohort = enrollment.get_cohort(session, cohort_name)
        course = rt.catalog.course(the_cohort.course_slug)
        enrolled = enrollment.enroll(session, the_cohort, course, signup, utcnow())
        due = enrolled.next_send_at
    click.echo(f"enrolled {signup.email} in {cohort_name!r}; Day 1 due {due:%Y-%m-%d %H:%M} UTC")


@cli.command("import")
@click.argument("csv_path", metavar="FILE.csv", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--cohort", "cohort_name", required=True)
@pass_state
def import_csv(state: State, csv_path: Path, cohort_name: str) -> None:
    """Enroll everyone in a CSV (header: email,name,timezone), all or nothing."""
    rt = state.runtime
    signups = enrollment.read_csv(csv_path)
    now = utcnow()
    with db.transaction(rt.sessions) as session:
        the_cohort = enrollment.get_cohort(session, cohort_name)
        course = rt.catalog.course(the_cohort.course_slug)
        try:
            enrollment.enroll_all(session, the_cohort, course, signups, now)
        except DripcourseError as exc:
            raise DripcourseError(f"{csv_path}: {exc}; nothing was imported") from None
    click.echo(f"imported {len(signups)} subscribers into {cohort_name!r}")


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


@cli.command()
@click.argument("slug")
@click.argument("day", type=int)
@click.option("--text", is_flag=True, help="The plain-text part instead of the HTML.")
@click.option("--eml", is_flag=True, help="The whole message as it would be sent.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file.")
@click.option("--name", default="Dr. Sample Reader", show_default=True)
@pass_state
def preview(
    state: State, slug: str, day: int, text: bool, eml: bool, out: Path | None, name: str
) -> None:
    """Render one lesson for a sample subscriber, to check it before anyone receives it."""
    from dripcourse.delivery import preview_message

    msg = preview_message(state.runtime, slug, day, name=name, now=utcnow())
    if eml:
        data = wire_bytes(msg)
    else:
        parsed = email.message_from_bytes(wire_bytes(msg), policy=email.policy.default)
        part = parsed.get_body(("plain",) if text else ("html",))
        assert part is not None
        data = part.get_content().encode("utf-8")
    if out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        out.write_bytes(data)
        click.echo(f"wrote {out}", err=True)


@cli.command()
@click.argument("slugs", nargs=-1)
@pass_state
def check(state: State, slugs: tuple[str, ...]) -> None:
    """Check that every lesson of the given courses (default: all) loads and renders."""
    catalog = state.runtime.catalog
    for slug in slugs or catalog.slugs():
        course = catalog.course(slug)
        click.echo(
            f"{slug}: {course.title}, {course.length} lessons, "
            f"send {course.cadence.send_time:%H:%M} local"
            f"{', weekdays only' if course.cadence.skip_weekends else ''}: ok"
        )


@cli.command()
@click.option("--concurrency", default=4, show_default=True, help="Worker threads.")
@click.option("--loglevel", default="INFO", show_default=True)
@pass_state
def run(state: State, concurrency: int, loglevel: str) -> None:
    """Run the scheduler (a Celery worker with embedded beat) and the web pages; Ctrl-C stops."""
    from dripcourse import tasks

    rt = state.runtime
    db.upgrade(rt.engine)
    for slug in rt.catalog.slugs():
        rt.catalog.course(slug)  # a broken lesson stops us here, not at 07:00
    app = tasks.configure(rt.settings)
    click.echo(
        f"dripcourse: database {rt.engine.url.render_as_string(hide_password=True)}, "
        f"broker {rt.settings.broker_url}, mail {rt.settings.mail_url}"
    )
    _serve_web_in_background(rt)
    # Beat's first tick comes one interval after it starts; tick once when the worker is up so
    # lessons already due go out at once.
    celery.signals.worker_ready.connect(lambda **_: tasks.tick.apply_async(), weak=False)
    app.worker_main(
        [
            "worker",
            "--beat",
            "--pool",
            "threads",
            "--concurrency",
            str(concurrency),
            "--loglevel",
            loglevel,
        ]
    )


def _serve_web_in_background(rt: Runtime) -> None:
    """Serve the subscribers' pages from a daemon thread, so they stop with the worker."""
    import threading

    from werkzeug.serving import make_server

    from dripcourse.web import RedactingRequestHandler, create_app

    host, port = rt.settings.web_host, rt.settings.web_port
    app = create_app(Runtime(rt.settings))
    try:
        server = make_server(
            host, port, app, threaded=True, request_handler=RedactingRequestHandler
        )
    except OSError as exc:
        raise click.ClickException(
            f"web pages: cannot listen on {host}:{port}: {exc.strerror} "
            "(settings web_host, web_port)"
        ) from None
    threading.Thread(target=server.serve_forever, name="dripcourse-web", daemon=True).start()
    click.echo(f"dripcourse: web pages at http://{host}:{port}/ (links use {rt.settings.base_url})")


@cli.command()
@click.option("--host", default=None, help="Interface to listen on (default: setting web_host).")
@click.option("--port", type=int, default=None, help="Port (default: setting web_port).")
@pass_state
def web(state: State, host: str | None, port: int | None) -> None:
    """Serve the reflection, journal, pause and unsubscribe pages for development."""
    from dripcourse.web import RedactingRequestHandler, create_app

    rt = state.runtime
    host = host or rt.settings.web_host
    port = port or rt.settings.web_port
    click.echo(f"dripcourse web: http://{host}:{port}/ (for production use gunicorn)")
    create_app(rt).run(
        host=host,
        port=port,
        debug=False,
        use_reloader=False,
        request_handler=RedactingRequestHandler,
    )


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


def main() -> None:
    cli(prog_name="dripcourse")
