"""Operators' commands for the cohort circle: turn it on or off, list, hide and restore.

Listing shows what members wrote, so each run is written in the operator log, as exports are.
"""

from __future__ import annotations

import click

from dripcourse import db, oplog
from dripcourse.cli.base import Group, State, cli, pass_state
from dripcourse.clock import utcnow
from dripcourse.courses.course import Course
from dripcourse.errors import InputError
from dripcourse.people import enrollment
from dripcourse.reader import circle_moderation


def check_circle_choice(course: Course, choice: str | None) -> None:
    """Refuse turning the circle on for a course whose course.toml does not allow it."""
    if choice == "on" and not course.circle:
        raise InputError(
            f"--circle on: the course {course.slug!r} has no circle (course.toml: circle = "
            "false or missing); set circle = true there first"
        )


@cli.group(cls=Group)
def circle() -> None:
    """The cohort circle: reflections members chose to share, and their notes."""


def _switch(state: State, cohort_name: str, on: bool) -> None:
    rt = state.runtime
    with db.transaction(rt.sessions) as session:
        cohort = enrollment.get_cohort(session, cohort_name)
        course = rt.catalog.course(cohort.course_slug)
        check_circle_choice(course, "on" if on else "off")
        cohort.circle = on
    if on:
        click.echo(f"circle on for {cohort_name!r}: members see what others chose to share")
    else:
        click.echo(
            f"circle off for {cohort_name!r}: nothing shared is shown, nothing is deleted; "
            "`dripcourse circle on` shows it again"
        )


@circle.command("on")
@click.option("--cohort", "cohort_name", required=True)
@pass_state
def circle_on(state: State, cohort_name: str) -> None:
    """Show the circle to a cohort (the course must allow it)."""
    _switch(state, cohort_name, True)


@circle.command("off")
@click.option("--cohort", "cohort_name", required=True)
@pass_state
def circle_off(state: State, cohort_name: str) -> None:
    """Hide a cohort's whole circle, deleting nothing."""
    _switch(state, cohort_name, False)


@circle.command("list")
@click.option("--cohort", "cohort_name", required=True)
@click.option("--reported", is_flag=True, help="Only what members reported.")
@pass_state
def circle_list(state: State, cohort_name: str, reported: bool) -> None:
    """Show what a cohort shared, with reports (written in the operator log)."""
    rt = state.runtime
    with db.transaction(rt.sessions) as session:
        found = circle_moderation.items(
            session, cohort_name, rt.reflection_cipher, reported=reported
        )
    oplog.record(
        rt.settings.path(rt.settings.var_dir),
        f"circle list: cohort {cohort_name!r}, {len(found)} item(s)"
        + (" (reported only)" if reported else ""),
        utcnow(),
    )
    for item in found:
        where = f"day {item.day}" + (f", note under {item.under}" if item.under else "")
        state_said = f" HIDDEN ({item.hidden_reason})" if item.hidden_reason else ""
        reports = ", ".join(f"{n} {reason}" for reason, n in sorted(item.reports.items()))
        click.echo(
            f"{item.ref}\t{where}\t{item.author_email} (shown as {item.shown_as})\t"
            f"{item.created_at.isoformat(timespec='minutes')}{state_said}"
            + (f"\treported: {reports}" if reports else "")
        )
        for line in item.text.splitlines() or [""]:
            click.echo(f"    {line}")
    if not found:
        click.echo("nothing reported" if reported else "nothing shared in this cohort")


@circle.command("hide")
@click.argument("item")
@click.option("--reason", required=True, help="Why; its author sees it.")
@pass_state
def circle_hide(state: State, item: str, reason: str) -> None:
    """Hide a shared reflection (r12) or a note (n7) from the cohort."""
    rt = state.runtime
    with db.transaction(rt.sessions) as session:
        cohort_name = circle_moderation.hide(session, item, reason)
    oplog.record(
        rt.settings.path(rt.settings.var_dir),
        f"circle hide: {item} in cohort {cohort_name!r}",
        utcnow(),
    )
    click.echo(f"{item} hidden from {cohort_name!r}; its author sees it as hidden, with the reason")


@circle.command("restore")
@click.argument("item")
@pass_state
def circle_restore(state: State, item: str) -> None:
    """Show a hidden item to its cohort again."""
    rt = state.runtime
    with db.transaction(rt.sessions) as session:
        cohort_name = circle_moderation.restore(session, item)
    oplog.record(
        rt.settings.path(rt.settings.var_dir),
        f"circle restore: {item} in cohort {cohort_name!r}",
        utcnow(),
    )
    click.echo(f"{item} shown to {cohort_name!r} again")
