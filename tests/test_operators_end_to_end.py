"""An operator's first weeks, end to end through the command line: a messy CSV (BOM, CRLF,
duplicates differing in case, `EST`, a missing zone, an extra column) is refused with every
problem named, fixed and imported; then people are paused, moved, re-zoned and taken out,
and the schedule is checked after each step.

The clock is frozen at the edges (the commands read it once); cohorts start Monday
2025-03-03 on the seven-day course, 07:00 local every day.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from freezegun import freeze_time

from dripcourse.cli import cli
from dripcourse.settings import Settings
from tests.workers import settings_env

MESSY = (
    "\ufeffemail,Name,TimeZone,role\r\n"
    "Amara@Example.org,Amara Okafor,America/New_York,resident\r\n"
    "amara@example.org,Amara O.,America/New_York,resident\r\n"
    "eli@example.org,Eli Stone,EST,attending\r\n"
    "noor@example.org,Noor Haddad,,fellow\r\n"
    "kai@example.org,Kai Mehta,Asia/Kolkata,\r\n"
)


@pytest.fixture
def run(settings: Settings):  # type: ignore[no-untyped-def]
    env = settings_env(settings)

    def invoke(at: str, *args: str) -> Result:
        with freeze_time(at):
            return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)

    return invoke


def schedule(run) -> dict[str, tuple[str, int, str | None, str]]:  # type: ignore[no-untyped-def]
    """email -> (cohort, day, next_send_at, status), as `status --json` reports it."""
    rows = json.loads(run("2025-03-01 00:00", "status", "--json").output)
    return {r["email"]: (r["cohort"], r["day"], r["next_send_at"], r["status"]) for r in rows}


def test_a_messy_csv_then_a_week_of_changes(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    saturday = "2025-03-01 12:00"
    assert run(saturday, "init").exit_code == 0
    for name, start in [("spring", "2025-03-03"), ("summer", "2025-03-10")]:
        created = run(
            saturday, "cohort", "create", name, "--course", "white-coat", "--start", start
        )
        assert created.exit_code == 0, created.output
    messy = tmp_path / "spring.csv"
    messy.write_bytes(MESSY.encode("utf-8"))

    refused = run(saturday, "import", str(messy), "--cohort", "spring")
    assert refused.exit_code == 1
    output = refused.output
    assert "spring.csv:1: ignored column(s) role" in output
    assert "spring.csv:3: email: amara@example.org is also on line 2" in output
    assert "spring.csv:4: timezone: 'EST' is an abbreviation, not a place " in output
    assert "(did you mean America/New_York?)" in output
    assert "spring.csv:5: timezone: missing" in output
    assert "3 bad row(s): nothing was imported" in output
    assert "Traceback" not in output
    assert schedule(run) == {}

    # The operator drops the duplicate and fixes EST; Noor's zone is still unknown.
    fixed = MESSY.replace("amara@example.org,Amara O.,America/New_York,resident\r\n", "")
    messy.write_bytes(fixed.replace(",EST,", ",America/New_York,").encode("utf-8"))
    still = run(saturday, "import", str(messy), "--cohort", "spring")
    assert "spring.csv:4: timezone: missing" in still.output and "1 bad row(s)" in still.output
    imported = run(
        saturday, "import", str(messy), "--cohort", "spring", "--timezone", "Europe/London"
    )
    assert imported.exit_code == 0, imported.output
    assert "enrolled 4 in cohort 'spring'" in imported.output
    assert "earliest 2025-03-03 01:30 UTC (Asia/Kolkata)" in imported.output
    assert "latest 2025-03-03 12:00 UTC (America/New_York)" in imported.output
    assert schedule(run) == {
        "amara@example.org": ("spring", 0, "2025-03-03T12:00:00Z", "active"),
        "eli@example.org": ("spring", 0, "2025-03-03T12:00:00Z", "active"),
        "kai@example.org": ("spring", 0, "2025-03-03T01:30:00Z", "active"),
        "noor@example.org": ("spring", 0, "2025-03-03T07:00:00Z", "active"),
    }
    again = run(saturday, "import", str(messy), "--cohort", "spring", "--skip-existing")
    assert "enrolled 0 in cohort 'spring'; 4 already there, left alone" in again.output

    # Monday noon UTC: everyone's 07:00 has come; each gets Day 1.
    assert "4 sent" in run("2025-03-03 12:00", "tick", "--inline").output

    # Amara asks for three days off; Kai was put in the wrong cohort; Noor moved to Chicago;
    # Eli leaves this cohort.
    paused = run("2025-03-03 13:00", "pause", "Amara@example.org", "--days", "3")
    assert "paused until 2025-03-06 00:00 America/New_York" in paused.output
    moved = run("2025-03-03 13:00", "move", "kai@example.org", "--to-cohort", "summer")
    assert "cohort: spring: active, Day 2 of 7 due" in moved.output
    assert "-> summer: active, Day 2 of 7 due" in moved.output
    rezoned = run("2025-03-03 13:00", "set-timezone", "noor@example.org", "America/Chicago")
    assert "timezone: Europe/London -> America/Chicago" in rezoned.output
    left = run("2025-03-03 13:00", "unenroll", "eli@example.org")
    assert "-> removed after Day 1 of 7" in left.output
    assert schedule(run) == {
        # Paused for three days: back on the Thursday morning, Day 2 at 07:00 EST.
        "amara@example.org": ("spring", 1, "2025-03-06T12:00:00Z", "active"),
        "eli@example.org": ("spring", 1, None, "removed"),
        # Mid-course, a move keeps her place: Tuesday 07:00 in Kolkata.
        "kai@example.org": ("summer", 1, "2025-03-04T01:30:00Z", "active"),
        # Day 1 came at 06:00 Monday in Chicago; Day 2 on Tuesday at 07:00 CST.
        "noor@example.org": ("spring", 1, "2025-03-04T13:00:00Z", "active"),
    }

    # Tuesday 13:00 UTC: Kai and Noor get Day 2; Amara is paused; Eli has left.
    assert "2 sent" in run("2025-03-04 13:00", "tick", "--inline").output
    after = schedule(run)
    assert after["kai@example.org"][1] == 2 and after["noor@example.org"][1] == 2
    assert after["amara@example.org"][1] == 1 and after["eli@example.org"][1] == 1
    # Amara comes back early: Day 2 on Wednesday at 07:00 in New York, not in the night.
    resumed = run("2025-03-05 09:00", "resume", "amara@example.org")
    assert "-> active, Day 2 of 7 due 2025-03-05 07:00 America/New_York" in resumed.output
    shown = run("2025-03-05 09:00", "show", "amara@example.org").output
    assert "cohort spring (white-coat): active, Day 2 of 7 due" in shown
    assert "  day   1  sent" in shown
    due = json.loads(run("2025-03-05 12:00", "due", "--at", "2025-03-05T12:00", "--json").output)
    reasons = {(v["email"], v["reason"]) for v in due}
    assert ("amara@example.org", "due") in reasons
    assert ("eli@example.org", "stopped") in reasons
