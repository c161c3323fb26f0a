"""Operators' commands for cohorts and the people in them: create, enroll, import."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from sqlalchemy import func, select

from dripcourse import db, zones
from dripcourse.cli.base import COURSE, Group, State, cli, pass_state
from dripcourse.clock import utcnow
from dripcourse.errors import DripcourseError
from dripcourse.models import Cohort, Enrollment, Subscriber
from dripcourse.people import changes as people
from dripcourse.people import csv_file, enrollment, importing
from dripcourse.people.signup import check_signup


@cli.group(cls=Group)
def cohort() -> None:
    """Create and list cohorts."""


@cohort.command("create")
@click.argument("name")
@click.option(
    "--course", "course_slug", type=COURSE, required=True, help="Course folder name under emails/."
)
@click.option(
    "--start",
    required=True,
    metavar="DATE|today|now",
    help="Local date of Day 1 (YYYY-MM-DD), today, or now (Day 1 at once).",
)
@click.option(
    "--timezone", default=None, help="IANA zone for people enrolled without one, e.g. Europe/Oslo."
)
@click.option("--yes", is_flag=True, help="Accept a start in the past or over a year ahead.")
@click.option(
    "--circle",
    type=click.Choice(["on", "off"]),
    default=None,
    help="The cohort circle (default: on when the course allows it).",
)
@pass_state
def cohort_create(
    state: State,
    name: str,
    course_slug: str,
    start: str,
    timezone: str | None,
    yes: bool,
    circle: str | None,
) -> None:
    """Create a cohort taking one course from a start date."""
    from dripcourse.cli.circle import check_circle_choice

    rt = state.runtime
    course = rt.catalog.course(course_slug)
    check_circle_choice(course, circle)
    with db.transaction(rt.sessions) as session:
        created = enrollment.create_cohort(
            session, name, course, start, utcnow(), timezone=timezone, confirmed=yes
        )
        created.circle = circle != "off"
        if created.started_at:
            when = "now"
        elif created.start_today:
            when = (
                f"today at {course.cadence.send_time:%H:%M} in each subscriber's own zone "
                f"(at once if that has passed and it is before "
                f"{course.cadence.latest_send_time:%H:%M} there, else the next morning)"
            )
        else:
            when = f"{created.start_date} at {course.cadence.send_time:%H:%M} local"
    default = f"; default zone {created.timezone}" if created.timezone else ""
    circle_said = "; circle on" if course.circle and created.circle else ""
    click.echo(
        f"cohort {name!r} created: {course.title}, {course.length} lessons, Day 1 {when}"
        f"{default}{circle_said}"
    )


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
            if c.started_at:
                start = c.started_at.isoformat(timespec="minutes")
            elif c.start_today:
                start = f"today (local) from {c.created_at.isoformat(timespec='minutes')}"
            else:
                start = str(c.start_date)
            click.echo(f"{c.name}\t{c.course_slug}\tstart {start}\t{size} enrolled")
    if not rows:
        click.echo("no cohorts yet: dripcourse cohort create NAME --course SLUG --start DATE")


@cli.command()
@click.argument("email")
@click.option("--cohort", "cohort_name", required=True)
@click.option("--name", default="", help="Name used in the greeting.")
@click.option(
    "--timezone",
    default=None,
    help="IANA zone, e.g. America/Chicago (default: the cohort's, if it has one).",
)
@click.option(
    "--country",
    default="",
    help="Whose places to turn to show them (GB, US, ...; default: their zone's country).",
)
@click.option("--update", is_flag=True, help="Change the details of someone already on record.")
@pass_state
def enroll(
    state: State,
    email: str,
    cohort_name: str,
    name: str,
    timezone: str | None,
    country: str,
    update: bool,
) -> None:
    """Enroll one subscriber in a cohort."""
    rt = state.runtime
    now = utcnow()
    with db.transaction(rt.sessions) as session:
        the_cohort = enrollment.get_cohort(session, cohort_name)
        # Someone on record keeps their zone; the cohort's is for people without one.
        known = session.scalar(
            select(Subscriber.timezone).where(Subscriber.email == email.strip().lower())
        )
        zone = timezone or known or the_cohort.timezone
        signup = check_signup(email, name, zone, country=country)
        enrolled, changes = people.enroll_person(
            session, the_cohort, signup, rt.catalog.course, now, update=update
        )
        due = people.when(enrolled.next_send_at, signup.timezone)
    for change in changes:
        click.echo(f"{signup.email}: {change}")
    click.echo(f"enrolled {signup.email} in {cohort_name!r}; Day 1 due {due}")


@cli.command("import")
@click.argument("csv_path", metavar="FILE.csv", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--cohort", "cohort_name", required=True)
@click.option("--timezone", default=None, help="IANA zone for rows without one.")
@click.option("--dry-run", is_flag=True, help="Check and report only; enroll nobody.")
@click.option("--skip-existing", is_flag=True, help="Leave people already in the cohort alone.")
@click.option(
    "--delimiter",
    type=click.Choice(["comma", "semicolon", "tab"]),
    default=None,
    help="What separates the fields (default: found from the header line).",
)
@pass_state
def import_csv(
    state: State,
    csv_path: Path,
    cohort_name: str,
    timezone: str | None,
    dry_run: bool,
    skip_existing: bool,
    delimiter: str | None,
) -> None:
    """Enroll everyone in a CSV (header: email,name,timezone[,greeting][,country]), all or
    nothing.

    Commas, semicolons or tabs; UTF-8 (or a spreadsheet's UTF-16 "Unicode text").
    """
    rt = state.runtime
    now = utcnow()
    if timezone is not None:
        try:
            timezone = zones.check_zone(timezone)
        except DripcourseError as exc:
            raise DripcourseError(f"--timezone: {exc}") from None
    with db.transaction(rt.sessions) as session:
        the_cohort = enrollment.get_cohort(session, cohort_name)
        course = rt.catalog.course(the_cohort.course_slug)
        with _progress("checking", _lines(csv_path)) as advance:
            parsed = csv_file.read_csv(
                csv_path,
                timezone or the_cohort.timezone,
                advance,
                delimiter={"comma": ",", "semicolon": ";", "tab": "\t"}.get(delimiter or ""),
            )
        for line, first in parsed.repeated:
            click.echo(
                f"{csv_path}:{line}: warning: repeats line {first} exactly; imported once",
                err=True,
            )
        if parsed.ignored_columns:
            click.echo(
                f"{csv_path}:1: ignored column(s) {', '.join(parsed.ignored_columns)} "
                f"(only {', '.join(csv_file.CSV_COLUMNS)} are read)",
                err=True,
            )
        # Two passes: the subscribers, then their enrollments.
        with _progress("importing", 2 * len(parsed.rows)) as advance:
            report = importing.import_rows(
                session,
                the_cohort,
                course,
                parsed,
                now,
                skip_existing=skip_existing,
                dry_run=dry_run,
                progress=advance,
            )
    for line in importing.summary(report, course):
        click.echo(line)


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except OSError:
        return 0  # read_csv says what is wrong with the file


@contextmanager
def _progress(label: str, length: int) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on a terminal, for a big file; nothing when piped or for a few rows."""
    if length < 2 * csv_file.CHUNK or not sys.stderr.isatty():
        yield None
        return
    with click.progressbar(length=length, label=label, file=sys.stderr) as bar:
        yield bar.update


@cli.command("set-greeting")
@click.argument("email")
@click.argument("text")
@pass_state
def set_greeting(state: State, email: str, text: str) -> None:
    """Set how lessons address a subscriber ("Dr. Okafor"); "" derives it from their name."""
    from dripcourse.courses.greeting import greeting_for
    from dripcourse.courses.greeting import set_greeting as set_it

    with db.transaction(state.runtime.sessions) as session:
        subscriber = set_it(session, email, text)
        shown = greeting_for(subscriber.name, subscriber.greeting, "(the course's fallback)")
        how = "set" if subscriber.greeting else "derived from the name"
        click.echo(f"{subscriber.email}: lessons now say {shown!r} ({how})")
