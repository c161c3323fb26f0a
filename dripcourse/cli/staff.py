"""Program staff's commands: check courses and preview lessons before anyone gets them."""

from __future__ import annotations

import email
import email.policy
import sys
from pathlib import Path

import click

from dripcourse.cli.base import State, cli, pass_state
from dripcourse.clock import utcnow
from dripcourse.course import Course
from dripcourse.errors import CourseError
from dripcourse.mail import wire_bytes


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
        _check_against_people_in_it(state, course)
        click.echo(
            f"{slug}: {course.title}, {course.length} lessons, "
            f"send {course.cadence.send_time:%H:%M} local"
            f"{', weekdays only' if course.cadence.skip_weekends else ''}: ok"
        )


def _check_against_people_in_it(state: State, course: Course) -> None:
    """Refuse changes that would break the course for people taking it (when there is a
    database to ask; staff previewing on a laptop may have none)."""
    from dripcourse import course_changes, db

    if db.schema_problem(state.runtime.engine) is not None:
        return
    with db.transaction(state.runtime.sessions) as session:
        found = course_changes.problems(session, course)
    if found:
        raise CourseError("\n".join(found))
