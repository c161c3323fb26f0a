"""Commands that set up and serve: init, the demo cohort, the scheduler and the web pages."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import celery.signals
import click
from sqlalchemy import func, select

from dripcourse import db
from dripcourse.cli.base import COURSE, PORT, State, cli, first_line, pass_state
from dripcourse.clock import utcnow
from dripcourse.errors import CourseError, DripcourseError
from dripcourse.models import Cohort
from dripcourse.people import csv_file, enrollment, importing, status
from dripcourse.reader import reflections
from dripcourse.redact import redact_url
from dripcourse.runtime import Runtime
from dripcourse.sending import liveness

SAMPLE_COHORT = "sample"
SAMPLE_CSV = Path("config/sample-cohort.csv")


@cli.command()
@pass_state
def init(state: State) -> None:
    """Create or upgrade the database."""
    state.creates_database = True
    rt = state.runtime
    db.upgrade(rt.engine, rt.reflection_cipher)
    with db.transaction(rt.sessions) as session:
        reflections.check_key(session, rt.reflection_cipher)
    click.echo(f"database ready: {redact_url(rt.settings.database_url)}")


@cli.command()
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=SAMPLE_CSV,
    show_default=True,
)
@click.option("--course", type=COURSE, default="white-coat", show_default=True)
@pass_state
def demo(state: State, csv_path: Path, course: str) -> None:
    """Enroll the sample cohort (Day 1 at once), unless the database has a cohort already."""
    rt = state.runtime
    with db.transaction(rt.sessions) as session:
        if session.scalar(select(func.count()).select_from(Cohort)):
            click.echo("a cohort exists already; the demo enrolls nobody")
            return
        now = utcnow()
        parsed = csv_file.read_csv(csv_path)
        the_course = rt.catalog.course(course)
        cohort = enrollment.create_cohort(session, SAMPLE_COHORT, the_course, "now", now)
        report = importing.import_rows(session, cohort, the_course, parsed, now)
    click.echo(f"cohort {SAMPLE_COHORT!r}: {report.enrolled} subscribers enrolled, Day 1 due now")


@cli.command()
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Worker threads.",
)
@click.option("--loglevel", default="INFO", show_default=True)
@pass_state
def run(state: State, concurrency: int, loglevel: str) -> None:
    """Run the scheduler (a Celery worker with embedded beat) and the web pages; Ctrl-C stops."""
    from dripcourse import tasks

    state.creates_database = True
    rt = state.runtime
    db.upgrade(rt.engine, rt.reflection_cipher)
    with db.transaction(rt.sessions) as session:
        reflections.check_key(session, rt.reflection_cipher)
    for slug in rt.catalog.slugs():
        _course_or_stop(rt, slug)  # a broken lesson stops us here, not at 07:00
    app = tasks.configure(rt.settings)
    click.echo(
        f"dripcourse: database {redact_url(rt.settings.database_url)}, "
        f"broker {redact_url(rt.settings.broker_url)}, mail {redact_url(rt.settings.mail_url)}"
    )
    _serve_web_in_background(rt)
    if rt.settings.reply_domain:
        # Replies, bounces and complaints on the same machine (see docs/inbound.md).
        from dripcourse.cli.inbound import start_listener

        start_listener(Runtime(rt.settings))
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
    click.echo(
        f"dripcourse: web pages at http://{host}:{port}/ "
        f"(links use {redact_url(rt.settings.base_url)})"
    )


@cli.command()
@click.option("--host", default=None, help="Interface to listen on (default: setting web_host).")
@click.option("--port", type=PORT, default=None, help="Port (default: setting web_port).")
@pass_state
def web(state: State, host: str | None, port: int | None) -> None:
    """Serve the reflection, journal, pause and unsubscribe pages for development."""
    from dripcourse.web import RedactingRequestHandler, create_app

    rt = state.runtime
    db.check_schema(rt.engine)  # at start, not as an error page on every request
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


# `health`'s exit statuses, for a probe to act on. Only STALLED asks for a worker restart.
# A mistake in how it was run (an option, as click says with its own status 2; a setting; a
# database nobody set up) exits MISTAKE, so no mistake can pass for a real condition.
HEALTHY, STALLED, MISTAKE, UNREACHABLE = 0, 1, 2, 3


class ProbeMistake(click.ClickException):
    """A mistake in running the probe: one `Error:` line and MISTAKE, never STALLED (1)."""

    exit_code = MISTAKE


@cli.command()
@click.option(
    "--stale-after",
    type=click.IntRange(min=1),
    default=None,
    metavar="SECONDS",
    help="How long workers may take no task while lessons wait (default: worker_stale_seconds).",
)
@pass_state
def health(state: State, stale_after: int | None) -> None:
    """Exit 1 when lessons wait and no worker has taken a task lately: a liveness probe.

    One line of output (and a second when bounces or complaints of the last days were
    about our sending: the deliverability warning), and an exit status a probe can act on:

    \b
      0  healthy: workers are taking tasks, or nothing waits
      1  stalled: lessons wait and no worker took a task lately; restart the worker
      2  a mistake in running the check (an option, a setting, a database not set up);
         nothing was checked, and restarting the worker would not mend it
      3  the database cannot be reached; restarting the worker would not mend it
    """
    try:
        rt = state.runtime
        limit = dt.timedelta(seconds=stale_after or rt.settings.worker_stale_seconds)
        # Asked first: a missing table is an outage to the driver (SQLite) but a mistake here.
        problem = db.schema_problem(rt.engine)
        if problem is None:
            now = utcnow()
            verdict = liveness.check_health(rt, now, limit)
            with db.transaction(rt.sessions) as session:
                warning = status.deliverability_line(status.deliverability_warnings(session, now))
    except DripcourseError as exc:
        problem = str(exc)
    except Exception as exc:
        if not db.is_outage(exc):
            raise
        click.echo(f"unknown: database unavailable: {first_line(exc)}")
        sys.exit(UNREACHABLE)
    if problem is not None:
        raise ProbeMistake(problem)
    click.echo(verdict.describe())
    if warning is not None:
        # About our sending, not the workers: restarting them would not mend it, so the
        # exit status stays the liveness verdict's.
        click.echo(warning)
    if not verdict.healthy:
        sys.exit(STALLED)


def _course_or_stop(rt: Runtime, slug: str) -> None:
    """Load a course, or stop with its first problem and the number `check` counts."""
    from dripcourse.courses.checks import check_all, counts

    try:
        rt.catalog.course(slug)
    except CourseError as exc:
        layout, reports = check_all(rt.catalog.emails_dir, [slug])
        errors = counts(layout + [f for r in reports for f in r.findings])[0] or 1
        raise CourseError(
            f"course {slug!r} cannot be sent: {errors} error(s), the first: "
            f"{str(exc).replace(f' (dripcourse check {slug} lists every problem)', '')} "
            f"(dripcourse check {slug} lists them all)"
        ) from None
