"""The programme's report: exact numbers from a known cohort, small counts hidden."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete

from dripcourse.db import transaction
from dripcourse.errors import DripcourseError
from dripcourse.models import CirclePost
from dripcourse.people import report
from dripcourse.runtime import Runtime
from tests import report_scenario as scenario
from tests.conftest import make_settings

F = "fewer than 5"


def course_of(rt: Runtime):  # type: ignore[no-untyped-def]
    def find(slug: str):  # type: ignore[no-untyped-def]
        try:
            return rt.catalog.course(slug)
        except DripcourseError:
            return None

    return find


def build(rt: Runtime, **kwargs: object) -> dict[str, object]:
    with transaction(rt.sessions) as session:
        return report.build(session, scenario.NOW, course_of(rt), **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def made(tmp_path: Path, database_url: str) -> Iterator[dict[str, object]]:
    """The scenario's report, on SQLite and on PostgreSQL."""
    runtime = Runtime(make_settings(tmp_path, database_url=database_url))
    try:
        scenario.build(runtime)
        yield build(runtime)
    finally:
        runtime.close()


def spring(made: dict[str, object]) -> dict[str, object]:
    (found,) = [c for c in made["cohorts"] if c["name"] == "spring"]  # type: ignore[attr-defined]
    return found


def test_the_funnel_counts_who_received_each_lesson_and_who_left_after_which(
    made: dict[str, object],
) -> None:
    funnel = spring(made)["funnel"]
    assert {k: v for k, v in funnel.items() if k not in ("received", "left_after")} == {
        "enrolled": 20,
        "active": F,  # 4
        "completed": 12,
        "unsubscribed": F,  # 3
        "bounced": F,  # 1
        "failed": 0,
        "removed": 0,
        "paused_now": F,  # 2
    }
    assert [r["people"] for r in funnel["received"]] == [20, 19, 17, 13, 13, 12, 12]
    left = {r["day"]: (r["unsubscribed"], r["bounced"]) for r in funnel["left_after"]}
    assert left == {
        0: (0, 0),
        1: (0, F),
        2: (F, 0),
        3: (0, 0),
        4: (0, 0),
        5: (F, 0),
        6: (0, 0),
        7: (0, 0),
    }


def test_reflections_per_day_by_web_and_email_hide_a_half_that_would_give_the_other_away(
    made: dict[str, object],
) -> None:
    rows = spring(made)["reflections"]
    assert [{k: v for k, v in r.items() if k != "shared"} for r in rows[:4]] == [
        # Three by email would be hidden; the web's seven would give them away (10 - 7).
        {"day": 1, "wrote": 10, "web": F, "email": F},
        {"day": 2, "wrote": 6, "web": 6, "email": 0},
        {"day": 3, "wrote": F, "web": F, "email": 0},
        {"day": 4, "wrote": 0, "web": 0, "email": 0},
    ]
    assert len(rows) == 7


def test_shared_to_the_circle_per_day_leaves_out_what_a_moderator_hid(
    made: dict[str, object],
) -> None:
    # Lesson 1: six shared, p06's hidden by a moderator; lesson 2: three, hidden as small.
    assert [r["shared"] for r in spring(made)["reflections"]] == [5, F, 0, 0, 0, 0, 0]
    (pilot,) = [c for c in made["cohorts"] if c["name"] == "pilot"]  # type: ignore[attr-defined]
    assert {r["shared"] for r in pilot["reflections"]} == {0}


def test_a_course_without_a_circle_has_no_shared_figure(rt: Runtime) -> None:
    import dataclasses

    scenario.build(rt)
    with transaction(rt.sessions) as session:
        session.execute(delete(CirclePost))
    course = dataclasses.replace(rt.catalog.course("white-coat"), circle=False)
    with transaction(rt.sessions) as session:
        found = report.build(session, scenario.NOW, lambda slug: course, cohorts=["spring"])
    assert {r["shared"] for r in found["cohorts"][0]["reflections"]} == {None}  # type: ignore[index]


def _counted(section: dict[str, object], by: str) -> dict[str, object]:
    return {r[by[3:]]: r["reports"] for r in section[by]}  # type: ignore[index,attr-defined]


def test_bounces_and_complaints_per_cohort_by_reason_effect_and_source(
    made: dict[str, object],
) -> None:
    bounces = spring(made)["deliverability"]["bounces"]
    # 13 reports from 11 people: seven content blocks (p01-p06, p01 twice) by mail, six full
    # mailboxes (p07-p11, p07 twice) from the provider's webhook. The delay is apart.
    assert bounces["total"] == 13
    assert _counted(bounces, "by_reason") == {"content or policy block": 7, "mailbox full": 6}
    assert _counted(bounces, "by_effect") == {"suppress": 0, "soft": 6, "warn": 7, "note": 0}
    assert _counted(bounces, "by_source") == {"mail": 7, "ses": 6}
    assert spring(made)["deliverability"]["delays"] == F
    # Three complaints from three people: each figure hidden, the total too.
    complaints = spring(made)["deliverability"]["complaints"]
    assert complaints["total"] == F
    assert _counted(complaints, "by_reason") == {"abuse": F, "auth-failure": F, "opt-out": F}
    assert _counted(complaints, "by_effect") == {"complained": F, "unsubscribe": F, "warn": F}
    assert _counted(complaints, "by_source") == {"mail": F, "ses": F}
    (pilot,) = [c for c in made["cohorts"] if c["name"] == "pilot"]  # type: ignore[attr-defined]
    assert pilot["deliverability"]["bounces"]["total"] == 0
    assert pilot["deliverability"]["warnings"] == []
    assert spring(made)["deliverability"]["warnings"] == WARNINGS
    assert made["deliverability"]["warnings"] == WARNINGS  # type: ignore[index]


def test_overall_a_hidden_reason_hides_every_breakdown_that_could_give_it_away(
    made: dict[str, object],
) -> None:
    bounces = made["deliverability"]["bounces"]  # type: ignore[index]
    # The forgotten person's user unknown (one) is hidden; alone, the smallest other reason
    # would go too, but the effects and sources read across could still give it away (the
    # suppressions less nothing): so every non-zero breakdown is hidden, the total stays.
    assert bounces["total"] == 14
    assert _counted(bounces, "by_reason") == {
        "content or policy block": F,
        "mailbox full": F,
        "user unknown": F,
    }
    assert _counted(bounces, "by_effect") == {"suppress": F, "soft": F, "warn": F, "note": 0}
    assert _counted(bounces, "by_source") == {"mail": F, "ses": F}


WARNINGS = [
    # Six in the last seven days (p01's older one is not in force); when shown, the last.
    {
        "kind": "bounce",
        "reason": "content or policy block",
        "statuses": ["5.7.1"],
        "reports": 6,
        "last": "2025-03-18T12:00:00Z",
    },
    # One auth-failure complaint: hidden, and so is when it came.
    {"kind": "complaint", "reason": "auth-failure", "statuses": [], "reports": F, "last": None},
]


def test_the_deliverability_warnings_in_force_are_statuss_with_small_counts_hidden(
    rt: Runtime,
) -> None:
    from dripcourse.people import status

    scenario.build(rt)
    found = build(rt)
    expected = WARNINGS
    assert found["deliverability"]["warnings"] == expected  # type: ignore[index]
    assert spring(found)["deliverability"]["warnings"] == expected
    (pilot,) = [c for c in found["cohorts"] if c["name"] == "pilot"]  # type: ignore[attr-defined]
    assert pilot["deliverability"]["warnings"] == []
    with transaction(rt.sessions) as session:
        warned = status.deliverability_warnings(session, scenario.NOW)
    assert [(w.kind, w.reason, w.count) for w in warned] == [
        ("bounce", "content or policy block", 6),
        ("complaint", "auth-failure", 1),
    ]


def test_delivery_counts_local_arrival_hours_holds_retries_and_relay_pauses(
    made: dict[str, object],
) -> None:
    delivery = spring(made)["delivery"]
    hours = {r["hour"]: r["lessons"] for r in delivery["arrival_hours"] if r["lessons"] != 0}
    # Tokyo's 07:00 is 22:00 UTC: counted at 7, in the reader's own morning. Two lessons at
    # 08:00 are hidden, and so are the five at 09:00 that would give them away (106 - 99 - 5).
    assert hours == {7: 99, 8: F, 9: F}
    assert delivery["window"] == {"from": "07:00", "until": "21:00"}
    assert (delivery["sent"], delivery["outside_window"]) == (106, 0)
    assert (delivery["held_by_window"], delivery["retried"]) == (5, 5)
    assert delivery["held_by_relay_pause"] == F  # one lesson


def test_where_a_cohort_in_progress_stands_today(made: dict[str, object]) -> None:
    today = spring(made)["today"]
    assert [r["people"] for r in today] == [0, 0, 0, F, 0, 0, 0, 0]  # 4 after lesson 3
    assert spring(made)["in_progress"] is True


def test_a_cohort_of_three_shows_no_figure_at_all(made: dict[str, object]) -> None:
    (pilot,) = [c for c in made["cohorts"] if c["name"] == "pilot"]  # type: ignore[attr-defined]
    assert pilot["funnel"]["enrolled"] == F and pilot["funnel"]["completed"] == F
    assert {r["people"] for r in pilot["funnel"]["received"]} == {F}
    assert pilot["delivery"]["sent"] == F
    assert {r["lessons"] for r in pilot["delivery"]["arrival_hours"]} == {0, F}
    assert pilot["today"] is None and pilot["in_progress"] is False


def test_the_report_names_no_one_and_quotes_nothing_written(made: dict[str, object]) -> None:
    text = repr(made)
    for secret in ("p01", "P01", "@example.org", "not read by the report", "a question", "patient"):
        assert secret not in text


def test_only_the_cohorts_asked_for_and_a_higher_threshold(rt: Runtime) -> None:
    scenario.build(rt)
    found = build(rt, cohorts=["spring"], threshold=13)
    assert [c["name"] for c in found["cohorts"]] == ["spring"]
    assert found["hidden_as"] == "fewer than 13" and found["threshold"] == 13
    received = [r["people"] for r in found["cohorts"][0]["funnel"]["received"]]
    assert received == [20, 19, 17, 13, 13, "fewer than 13", "fewer than 13"]


@pytest.mark.parametrize(
    ("people", "shown"),
    [
        ([10, 3, 0], [F, F, 0]),  # 3 hidden: 10 would give it away (13 - 10), so it goes too
        ([10, 3, 6], [10, F, F]),  # the smallest other one goes: 6
        ([10, 3, 2], [10, F, F]),  # two hidden already
        ([10, 0, 0], [10, 0, 0]),  # none is no one: shown
        ([12, 5, 7], [12, 5, 7]),
    ],
)
def test_parts_hide_small_counts_and_what_would_reveal_them(
    people: list[int], shown: list[object]
) -> None:
    figures = report.Figures(5)
    assert figures.parts([report.Cell(n, n) for n in people]) == shown


def test_the_threshold_setting_cannot_go_below_five(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from dripcourse.errors import ConfigError
    from dripcourse.settings import load_settings

    path = tmp_path / "settings.toml"
    path.write_text("[report]\nreport_min_people = 3\n")
    with pytest.raises(ConfigError, match="setting report_min_people: must be 5 or more"):
        load_settings(path, environ={})
    path.write_text("[report]\nreport_min_people = 10\n")
    assert load_settings(path, environ={}).report_min_people == 10


# -- the command -----------------------------------------------------------------------------


def run(rt: Runtime, *args: str):  # type: ignore[no-untyped-def]
    from click.testing import CliRunner
    from freezegun import freeze_time

    from dripcourse.cli import cli
    from tests.workers import settings_env

    with freeze_time(scenario.NOW):
        return CliRunner().invoke(cli, ["report", *args], env=settings_env(rt.settings))


def test_report_json_is_the_same_numbers_and_each_run_is_in_the_operator_log(
    rt: Runtime, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    import json
    from pathlib import Path

    scenario.build(rt)
    result = run(rt, "--json", "--cohort", "spring")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == build(rt, cohorts=["spring"])
    page = tmp_path / "report.html"
    assert run(rt, "--out", str(page)).exit_code == 0
    log = (Path(rt.settings.var_dir) / "operator.log").read_text(encoding="utf-8").splitlines()
    assert log[0].endswith("report (json) of cohorts spring to stdout")
    assert log[1].endswith(f"report (html) of cohorts pilot, spring to {page.resolve()}")
    assert log[0].startswith("2025-03-20T12:00:00Z ")


def test_report_page_has_a_chart_and_its_table_and_no_script(rt: Runtime, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import re

    scenario.build(rt)
    page = tmp_path / "report.html"
    assert run(rt, "--out", str(page)).exit_code == 0
    html = page.read_text(encoding="utf-8")
    assert "<script" not in html.lower() and "http://" not in html.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    ).replace('xmlns:xlink="http://www.w3.org/1999/xlink"', "")
    charts = re.findall(r'<svg [^>]*role="img" aria-label="([^"]+)"', html)
    assert "spring: who received each lesson" in charts
    assert "spring: when lessons arrived, local time" in charts
    assert "Cohorts side by side: share who received each lesson" in charts
    assert len(re.findall(r"<desc id=", html)) == len(charts) == html.count("<figure>")
    assert html.count("<table>") >= len(charts)
    # The table under the funnel: lesson 7 reached 12 people; the hidden figures say so.
    assert re.search(r'<th scope="row">7</th><td>12</td>', html)
    assert '<td class="hidden-figure">fewer than 5</td>' in html
    # Reflections per lesson, shared to the circle: 5 on lesson 1, hidden on lesson 2.
    assert re.search(r'<th scope="row">1</th><td>10</td>(<td[^>]*>[^<]*</td>){2}<td>5</td>', html)
    # Bounces and complaints, with the warnings in force, for the programme and each cohort.
    assert '<th scope="row">Came by the ses webhook</th><td>6</td>' in html
    assert '<th scope="row">Reason: content or policy block</th><td>7</td>' in html
    assert html.count("Deliverability warning") == 2  # the programme's and spring's
    assert "No deliverability warning for this cohort" in html  # pilot has none
    assert "6 bounces (content or policy block 5.7.1), the last 2025-03-18T12:00:00Z" in html
    for secret in ("p01", "@example.org", "not read by the report"):
        assert secret not in html


def test_report_summary_and_an_unknown_cohort(rt: Runtime) -> None:
    scenario.build(rt)
    shown = run(rt, "--cohort", "spring").output
    assert shown.splitlines()[0] == (
        "cohort spring (white-coat): 20 enrolled: fewer than 5 active, 12 completed, "
        "fewer than 5 unsubscribed, fewer than 5 bounced, 0 failed, 0 removed; "
        "received lessons 1-7: 20, 19, 17, 13, 13, 12, 12"
    )
    result = run(rt, "--cohort", "winter")
    assert result.exit_code == 1 and result.output.startswith("Error: ")
    assert "Traceback" not in result.output


# -- the studio's page -----------------------------------------------------------------------


def test_the_studio_shows_the_report_and_logs_each_visit(rt: Runtime) -> None:
    from pathlib import Path

    from freezegun import freeze_time

    from dripcourse.cli import staff
    from dripcourse.cli.base import State
    from dripcourse.courses.studio import create_studio

    scenario.build(rt)
    state = State(None)
    state._runtime = rt  # the command line's state, with the test's runtime
    client = create_studio(rt, report=staff._report(state)).test_client()
    assert 'href="/report"' in client.get("/").get_data(as_text=True)
    with freeze_time(scenario.NOW):
        page = client.get("/report")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert 'aria-label="spring: who received each lesson"' in html
    assert '<th scope="row">7</th><td>12</td>' in html
    log = (Path(rt.settings.var_dir) / "operator.log").read_text(encoding="utf-8")
    assert log.endswith("report (studio page) of cohorts pilot, spring\n")
    # Without a report to show (an app made without the command line's adapter): says so.
    bare = create_studio(rt).test_client().get("/report").get_data(as_text=True)
    assert "the report is not available here" in bare


def test_a_relay_pause_in_force_is_named_with_when_it_began(rt: Runtime) -> None:
    from dripcourse.people import report_html
    from dripcourse.sending import breaker

    scenario.build(rt)
    assert build(rt)["sending_paused_since"] is None
    with transaction(rt.sessions) as session:
        breaker.trip(session, scenario.NOW - dt.timedelta(minutes=5), "535 authentication failed")
    found = build(rt)
    assert found["sending_paused_since"] == "2025-03-20T11:55:00Z"
    assert "Sending is paused since 2025-03-20T11:55:00Z" in report_html.page(found)
