"""Program staff's commands: check courses, preview lessons, send a test to themselves."""

from __future__ import annotations

import contextlib
import dataclasses
import email
import email.policy
import json
import sys
from pathlib import Path

import click

from dripcourse.cli.base import COURSE, DAY_NUMBER, PORT, State, cli, pass_state
from dripcourse.clock import utcnow
from dripcourse.courses.course import Course, Finding
from dripcourse.courses.wire import wire_bytes

STUDIO_PORT = 8001


@cli.command()
@click.argument("slug", type=COURSE, required=False)
@click.argument("day", type=DAY_NUMBER, required=False)
@click.option("--text", is_flag=True, help="The plain-text part instead of the HTML.")
@click.option("--eml", is_flag=True, help="The whole message as it would be sent.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file.")
@click.option("--name", default="Dr. Sample Reader", show_default=True)
@click.option("--serve", is_flag=True, help="Open the preview studio: every lesson, live.")
@click.option("--port", type=PORT, default=STUDIO_PORT, show_default=True, help="Studio port.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Studio interface.")
@click.option(
    "--allow-remote", is_flag=True, help="Let the studio listen on an interface other hosts reach."
)
@pass_state
def preview(
    state: State,
    slug: str | None,
    day: int | None,
    text: bool,
    eml: bool,
    out: Path | None,
    name: str,
    serve: bool,
    port: int,
    host: str,
    allow_remote: bool,
) -> None:
    """Render one lesson for a sample subscriber, or (--serve) open the preview studio."""
    if serve:
        from dripcourse.courses.studio import check_host, create_studio

        check_host(host, allow_remote)
        click.echo(f"preview studio: http://{host}:{port}/ (Ctrl-C stops it)")
        create_studio(state.runtime, allow_remote=allow_remote, report=_report(state)).run(
            host=host, port=port, debug=False, use_reloader=False
        )
        return
    if slug is None or day is None:
        raise click.UsageError("give SLUG and DAY, or --serve for the studio")
    from dripcourse.courses.preview import lesson_message, sample_reader

    rt = state.runtime
    course = rt.catalog.course(slug)
    msg = lesson_message(
        rt.catalog.renderer, course, day, rt.sample_links, sample_reader(name), now=utcnow()
    )
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


def _report(state: State):  # type: ignore[no-untyped-def]
    """The studio's Report page: the report of every cohort, each visit in the operator log."""

    def make() -> str:
        from dripcourse import oplog
        from dripcourse.cli import report
        from dripcourse.people import report_html

        rt = state.runtime
        data = report.build(rt)
        oplog.record(rt.settings.path(rt.settings.var_dir), report.describe_studio(data), utcnow())
        return report_html.fragment(data)

    return make


@cli.command("send-test")
@click.argument("slug", type=COURSE)
@click.argument("day", type=DAY_NUMBER)
@click.option("--to", "to", required=True, help="A staff address (setting staff_emails).")
@click.option("--as", "as_email", default=None, help="Address a real subscriber's way.")
@pass_state
def send_test(state: State, slug: str, day: int, to: str, as_email: str | None) -> None:
    """Send one lesson to a staff address, "[TEST]" in the subject; no enrollment changes."""
    from dripcourse.courses.preview import send_test as send

    msg = send(state.runtime, slug, day, to, as_email, now=utcnow())
    click.echo(f"sent {slug} day {day} to {msg['To']}: {msg['Subject']}")


@cli.command()
@click.argument("slugs", type=COURSE, nargs=-1)
@click.option("--strict", is_flag=True, help="Count warnings as errors.")
@click.option("--json", "as_json", is_flag=True, help="Every finding as JSON, for CI.")
@pass_state
def check(state: State, slugs: tuple[str, ...], strict: bool, as_json: bool) -> None:
    """Check courses (default: all) and list every problem as file:line: message.

    Exits with status 1 when there is an error (or, with --strict, a warning).
    """
    from dripcourse.courses.checks import check_all, counts

    settings = state.runtime.settings
    layout, reports = check_all(settings.path(settings.emails_dir), list(slugs) or None)
    for report in reports:
        if report.course is not None:
            report.findings.extend(_against_people_in_it(state, report.course))
    per_course = [(r, [_shown(f, strict) for f in r.findings]) for r in reports]
    findings = [_shown(f, strict) for f in layout] + [f for _r, fs in per_course for f in fs]
    errors, warnings = counts(findings)
    if as_json:
        summary = {
            "ok": errors == 0,
            "errors": errors,
            "warnings": warnings,
            "courses": [
                {"slug": r.slug, "lessons": r.course.length if r.course else 0} for r in reports
            ],
            "findings": [f.as_dict() for f in findings],
        }
        click.echo(json.dumps(summary, indent=2))
    else:
        for finding in findings:
            click.echo(str(finding))
        for report, mine in per_course:
            e, w = counts(mine)
            ignored = sum(f.severity == "ignored" for f in mine)
            click.echo(
                f"{_about(report.slug, report.course)}: {e} errors, {w} warnings, "
                f"{ignored} files ignored: {'ok' if e == 0 else 'FAILED'}"
            )
    if errors:
        click.get_current_context().exit(1)


def _about(slug: str, course: Course | None) -> str:
    if course is None:
        return slug
    weekdays = ", weekdays only" if course.cadence.skip_weekends else ""
    return (
        f"{slug}: {course.title}, {course.length} lessons, "
        f"send {course.cadence.send_time:%H:%M} local{weekdays}"
    )


def _shown(finding: Finding, strict: bool) -> Finding:
    """The finding with its path relative to here, and warnings as errors under --strict."""
    path = finding.path
    with contextlib.suppress(ValueError):  # outside here: keep it absolute
        path = path.resolve().relative_to(Path.cwd())
    severity = "error" if strict and finding.severity == "warning" else finding.severity
    return dataclasses.replace(finding, path=path, severity=severity)


def _against_people_in_it(state: State, course: Course) -> list[Finding]:
    """Changes that would break the course for people taking it, as errors (when there is a
    database to ask; staff previewing on a laptop may have none, or none in reach)."""
    from sqlalchemy.exc import DBAPIError

    from dripcourse import db
    from dripcourse.courses import changes as course_changes
    from dripcourse.errors import NotSetUp

    try:
        if db.schema_problem(state.runtime.engine) is not None:
            return []
    except (NotSetUp, DBAPIError):
        return []
    with db.transaction(state.runtime.sessions) as session:
        found = course_changes.problems(session, course)
    prefix = f"{course.path}: "
    return [
        Finding(course.path / "course.toml", 1, "error", text.removeprefix(prefix))
        for text in found
    ]
