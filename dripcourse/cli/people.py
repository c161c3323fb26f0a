"""Operators' commands for one person: show, pause, resume, unenroll, move, set-day,
set-timezone, set-country. Each prints what changed, before -> after."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click
from sqlalchemy.orm import Session

from dripcourse import db, zones
from dripcourse.cli.base import DAY_NUMBER, State, cli, pass_state
from dripcourse.clock import utcnow
from dripcourse.courses.course import Course
from dripcourse.courses.greeting import greeting_for, unusual
from dripcourse.errors import NotFound
from dripcourse.models import Enrollment, Subscriber
from dripcourse.people import changes as people
from dripcourse.people import enrollment, suppressions
from dripcourse.validate import without_controls

cohort_option = click.option(
    "--cohort", "cohort_name", default=None, help="Which cohort (when they are in several)."
)


@contextmanager
def _person(state: State, email: str) -> Iterator[tuple[Session, Subscriber, dt.datetime]]:
    with db.transaction(state.runtime.sessions) as session:
        yield session, people.find_person(session, email), utcnow()


def _one(
    state: State,
    email: str,
    cohort_name: str | None,
    change: Callable[[Session, Enrollment, Course, dt.datetime], people.Change],
) -> None:
    """Apply ``change`` to the person's enrollment and print it."""
    with _person(state, email) as (session, person, now):
        chosen = people.pick_enrollment(person, cohort_name)
        course = state.runtime.catalog.course(chosen.cohort.course_slug)
        done = f"{person.email} ({chosen.cohort.name}): {change(session, chosen, course, now)}"
    click.echo(done)


@cli.command()
@click.argument("email")
@pass_state
def show(state: State, email: str) -> None:
    """Show a person: each enrollment, its next lesson, every delivery and its last error."""
    try:
        with _person(state, email) as (session, person, now):
            view = people.describe(session, person, state.runtime.catalog.course, now)
            person_greeting = person.greeting or ""
            person_country = person.country
    except NotFound:
        with state.runtime.sessions() as session:
            when = suppressions.forgotten_on(session, email)
        if when is None:
            raise
        raise NotFound(
            f"{email.strip().lower()}: forgotten on {when:%Y-%m-%d} at their request "
            "(only a do-not-mail entry is kept)"
        ) from None
    click.echo(f"{view.email}  {view.name or '(no name)'}  {view.timezone}")
    click.echo(f"  on record since {view.since:%Y-%m-%d %H:%M} UTC")
    click.echo(f"  greeted as: {_greeting_line(state, person_greeting, view)}")
    click.echo(f"  places to turn: {_country_line(person_country, view.timezone)}")
    if view.suppressed:
        click.echo(f"  suppressed: {without_controls(view.suppressed)}")
    for each in view.enrollments:
        click.echo(f"cohort {each.cohort} ({each.course}): {each.state}")
        click.echo(f"  reflections written: {each.reflections}")
        for d in each.deliveries:
            at = f"{d.at:%Y-%m-%d %H:%M} UTC" if d.at else "-"
            line = f"  day {d.day:>3}  {d.status:<9}  {at}  attempts {d.attempts}"
            if d.last_error:
                line += f"  last error: {without_controls(d.last_error)}"
            click.echo(line)
    if not view.enrollments:
        click.echo("  in no cohort")


@cli.command()
@click.argument("email")
@cohort_option
@click.option(
    "--days",
    type=click.IntRange(1, people.LONGEST_PAUSE.days),
    default=None,
    help=f"Pause for N days from now (at most {people.LONGEST_PAUSE.days}).",
)
@click.option(
    "--until",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Pause until this local date (lessons come back that morning).",
)
@pass_state
def pause(
    state: State, email: str, cohort_name: str | None, days: int | None, until: dt.datetime | None
) -> None:
    """Hold a person's lessons for a while; the next lesson stays the next."""
    day = until.date() if until else None
    _one(
        state,
        email,
        cohort_name,
        lambda s, e, c, now: people.pause(s, e, c, now, days=days, until=day),
    )


@cli.command()
@click.argument("email")
@cohort_option
@pass_state
def resume(state: State, email: str, cohort_name: str | None) -> None:
    """End a pause early."""
    _one(state, email, cohort_name, people.resume)


@cli.command()
@click.argument("email")
@cohort_option
@pass_state
def unenroll(state: State, email: str, cohort_name: str | None) -> None:
    """Take a person out of a cohort (their address stays usable for other cohorts)."""
    _one(state, email, cohort_name, people.unenroll)


@cli.command()
@click.argument("email")
@cohort_option
@click.option("--to-cohort", "target", required=True, help="The cohort to move them to.")
@pass_state
def move(state: State, email: str, cohort_name: str | None, target: str) -> None:
    """Move a person to another cohort."""
    courses = state.runtime.catalog.course
    _one(
        state,
        email,
        cohort_name,
        lambda s, e, c, now: people.move(s, e, enrollment.get_cohort(s, target), courses, now),
    )


@cli.command("set-day")
@click.argument("email")
@cohort_option
@click.option("--day", type=DAY_NUMBER, required=True, help="The next lesson they should get.")
@pass_state
def set_day(state: State, email: str, cohort_name: str | None, day: int) -> None:
    """Make Day N the next lesson a person gets (to correct a mistake)."""
    _one(state, email, cohort_name, lambda s, e, c, now: people.set_day(s, e, c, day, now))


@cli.command("set-timezone")
@click.argument("email")
@click.argument("zone")
@pass_state
def set_timezone(state: State, email: str, zone: str) -> None:
    """Change a person's time zone; their next lesson moves to the new local morning."""
    with _person(state, email) as (session, person, now):
        changes = people.set_timezone(session, person, zone, state.runtime.catalog.course, now)
    for change in changes:
        click.echo(f"{person.email}: {change}")


@cli.command("set-country")
@click.argument("email")
@click.argument("code")
@pass_state
def set_country(state: State, email: str, code: str) -> None:
    """Show a person the places to turn of this country (GB, US, ...); '' uses their zone's."""
    with _person(state, email) as (_session, person, _now):
        change = people.set_country(person, code)
    click.echo(f"{person.email}: {change}")


def _country_line(country: str, zone: str) -> str:
    """Whose list of places to turn the person is shown, and where that comes from."""
    if country:
        return f"{country} (set by hand; set-country EMAIL '' uses the time zone's)"
    found = zones.country_of(zone)
    return f"{found} (from {zone})" if found else f"the default list ({zone} is in no country)"


def _greeting_line(state: State, set_by_hand: str, view: people.PersonView) -> str:
    """How lessons greet the person, where that comes from, and why to look at it if odd."""
    if set_by_hand:
        return f"{set_by_hand!r} (set by hand; set-greeting EMAIL '' derives it from the name)"
    slug = view.enrollments[0].course if view.enrollments else None
    fallback = state.runtime.catalog.course(slug).greeting_fallback if slug else "there"
    greeting = greeting_for(view.name, "", fallback)
    why = unusual(view.name, greeting, fallback)
    line = f"{greeting!r} (from the name"
    return line + (f"; look at it: {why})" if why else ")")
