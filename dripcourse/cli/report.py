"""The programme's report for operators: charts and tables per cohort, in aggregates only."""

from __future__ import annotations

import json
from pathlib import Path

import click

from dripcourse import db, oplog
from dripcourse.cli.base import State, cli, pass_state
from dripcourse.clock import utcnow
from dripcourse.courses.course import Course
from dripcourse.errors import DripcourseError
from dripcourse.people import enrollment
from dripcourse.people import report as numbers
from dripcourse.runtime import Runtime


@cli.command("report")
@click.option(
    "--cohort", "cohort_names", multiple=True, metavar="NAME", help="Only these (repeat it)."
)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Write an HTML page here."
)
@click.option("--json", "as_json", is_flag=True, help="The numbers as JSON (docs/operators.md).")
@pass_state
def report_cmd(
    state: State, cohort_names: tuple[str, ...], out: Path | None, as_json: bool
) -> None:
    """How each cohort is doing, at a glance: counts of people only, small ones hidden.

    Without --out or --json, a short summary per cohort. Every run is written to the
    operator log.
    """
    rt = state.runtime
    data = build(rt, cohort_names)
    oplog.record(rt.settings.path(rt.settings.var_dir), describe(data, out, as_json), utcnow())
    if as_json:
        text = json.dumps(data, indent=2) + "\n"
        if out is None:
            click.echo(text, nl=False)
            return
        out.write_text(text, encoding="utf-8")
        click.echo(f"wrote the report's numbers to {out}", err=True)
        return
    if out is not None:
        from dripcourse.people import report_html

        out.write_text(report_html.page(data), encoding="utf-8")
        click.echo(f"wrote the report to {out}", err=True)
        return
    for cohort in data["cohorts"]:  # type: ignore[attr-defined]
        click.echo(_summary(cohort))
    if not data["cohorts"]:
        click.echo("no cohorts yet")
    click.echo(
        f"(figures from fewer than {data['threshold']} people show as {data['hidden_as']!r})"
    )


def build(rt: Runtime, cohort_names: tuple[str, ...] = ()) -> dict[str, object]:
    """The report's numbers at this moment, for the cohorts named (all when none)."""
    with db.transaction(rt.sessions) as session:
        for name in cohort_names:
            enrollment.get_cohort(session, name)  # an unknown name is an Error: line
        return numbers.build(
            session,
            utcnow(),
            course_or_none(rt),
            cohorts=cohort_names,
            threshold=rt.settings.report_min_people,
        )


def course_or_none(rt: Runtime):  # type: ignore[no-untyped-def]
    def find(slug: str) -> Course | None:
        try:
            return rt.catalog.course(slug)
        except DripcourseError:
            return None

    return find


def describe(data: dict[str, object], out: Path | None, as_json: bool) -> str:
    """The operator log's line for one run: which cohorts, in what form, to where."""
    names = ", ".join(c["name"] for c in data["cohorts"]) or "none"  # type: ignore[attr-defined]
    form = "json" if as_json else ("html" if out is not None else "summary")
    where = "stdout" if out is None else str(out.resolve())
    return f"report ({form}) of cohorts {names} to {where}"


def describe_studio(data: dict[str, object]) -> str:
    """The operator log's line for one visit to the studio's Report page."""
    names = ", ".join(c["name"] for c in data["cohorts"]) or "none"  # type: ignore[attr-defined]
    return f"report (studio page) of cohorts {names}"


def _summary(cohort: dict) -> str:  # type: ignore[type-arg]
    funnel = cohort["funnel"]
    received = ", ".join(str(r["people"]) for r in funnel["received"])
    ended = ", ".join(f"{funnel[s]} {s}" for s in numbers.STATUSES)
    return (
        f"cohort {cohort['name']} ({cohort['course']}): {funnel['enrolled']} enrolled: {ended}; "
        f"received lessons 1-{cohort['lessons']}: {received}"
    )
