"""Operators' commands for cohorts and the people in them: create, enroll, import."""

from __future__ import annotations

from pathlib import Path

import click
from sqlalchemy import func, select

from dripcourse import db, enrollment
from dripcourse.cli.base import Group, State, cli, pass_state
from dripcourse.clock import utcnow
from dripcourse.errors import DripcourseError
from dripcourse.models import Cohort, Enrollment


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
