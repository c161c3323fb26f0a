"""The operator's and staff's commands, as scripts call them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine

from dripcourse.cli import cli
from dripcourse.settings import Settings
from tests.conftest import EMAILS, ROOT
from tests.workers import settings_env, unreachable_database_env


@pytest.fixture
def run(settings: Settings):  # type: ignore[no-untyped-def]
    env = settings_env(settings)

    def invoke(*args: str, **extra_env: str) -> Result:
        return CliRunner().invoke(cli, list(args), env={**env, **extra_env}, catch_exceptions=False)

    return invoke


def write_csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cohort.csv"
    path.write_text(text)
    return path


def test_a_cohort_from_create_to_status(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert run("init").exit_code == 0
    created = run(
        "cohort", "create", "spring-27", "--course", "white-coat", "--start", "2027-03-10"
    )
    assert created.exit_code == 0, created.output
    assert "2027-03-10 at 07:00 local" in created.output
    enrolled = run(
        "enroll",
        "lee@example.org",
        "--cohort",
        "spring-27",
        "--name",
        "Lee Park",
        "--timezone",
        "America/Chicago",
    )
    assert enrolled.exit_code == 0, enrolled.output
    assert "2027-03-10 13:00 UTC" in enrolled.output  # 07:00 CDT
    csv = write_csv(
        tmp_path, "email,name,timezone\nmo@example.org,Mo Said,Africa/Cairo\nkai@example.org,Kai,\n"
    )
    imported = run("import", str(csv), "--cohort", "spring-27", "--timezone", "UTC")
    assert imported.exit_code == 0, imported.output
    assert "enrolled 2 in cohort 'spring-27'" in imported.output

    rows = json.loads(run("status", "--json").output)
    assert [r["email"] for r in rows] == ["kai@example.org", "lee@example.org", "mo@example.org"]
    for row in rows:
        assert {"email", "cohort", "course", "day", "status", "next_send_at"} <= set(row)
        assert row["cohort"] == "spring-27" and row["course"] == "white-coat"
        assert row["day"] == 0 and row["status"] == "active"
    assert rows[1]["next_send_at"] == "2027-03-10T13:00:00Z"
    assert rows[0]["next_send_at"] == "2027-03-10T07:00:00Z"  # no zone in the file: --timezone

    listing = run("cohort", "list")
    assert "spring-27\twhite-coat\tstart 2027-03-10\t3 enrolled" in listing.output
    table = run("status", "--cohort", "spring-27")
    assert "cohort spring-27 (white-coat): 3 enrolled: 3 active" in table.output


def test_tick_inline_sends_due_lessons_and_status_counts_them(run, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    run("init")
    run("cohort", "create", "now-cohort", "--course", "white-coat", "--start", "now")
    run("enroll", "a@example.org", "--cohort", "now-cohort", "--timezone", "Europe/Paris")
    ticked = run("tick", "--inline")
    assert ticked.exit_code == 0, ticked.output
    assert "1 lessons claimed" in ticked.output and "1 sent" in ticked.output
    assert "0 lessons claimed" in run("tick", "--inline").output
    rows = json.loads(run("status", "--json", "--cohort", "now-cohort").output)
    assert rows[0]["day"] == 1
    table = run("status").output
    assert table.splitlines()[2].split() == ["1", "1", "1", "0", "0", "0", "0", "0"]
    outbox = Path(settings.mail_url.removeprefix("file://"))
    assert len(list(outbox.glob("*.eml"))) == 1


@pytest.mark.parametrize(
    ("csv_text", "expected"),
    [
        (
            "email,name,timezone\nok@example.org,Ok,UTC\nnot-an-address,Bad,UTC\n",
            "cohort.csv:3: email: 'not-an-address' is not an email address",
        ),
        (
            "email,name,timezone\nok@example.org,Ok,Mars/Olympus\n",
            "cohort.csv:2: timezone: unknown time zone 'Mars/Olympus'",
        ),
        (
            "email,name,timezone\na@example.org,A,UTC\nA@example.org,B,UTC\n",
            "cohort.csv:3: email: a@example.org is also on line 2",
        ),
        ("who,name\nX,X\n", "cohort.csv:1: the header needs an email column"),
        (
            "email,name,timezone\na@example.org,A,UTC,extra\n",
            "cohort.csv:2: more fields than the header has columns",
        ),
    ],
    ids=["bad-address", "bad-zone", "duplicate", "bad-header", "extra-field"],
)
def test_bad_csv_names_line_and_field_and_imports_nothing(
    run, tmp_path: Path, csv_text: str, expected: str
) -> None:  # type: ignore[no-untyped-def]
    run("init")
    run("cohort", "create", "c", "--course", "white-coat", "--start", "today")
    result = run("import", str(write_csv(tmp_path, csv_text)), "--cohort", "c")
    assert result.exit_code == 1
    assert expected in result.output
    assert "Traceback" not in result.output
    assert json.loads(run("status", "--json").output) == []


def test_an_address_already_enrolled_aborts_the_whole_import(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run("init")
    run("cohort", "create", "c", "--course", "white-coat", "--start", "today")
    run("enroll", "b@example.org", "--cohort", "c", "--timezone", "UTC")
    csv = write_csv(tmp_path, "email,name,timezone\na@example.org,A,UTC\nb@example.org,,UTC\n")
    result = run("import", str(csv), "--cohort", "c")
    assert result.exit_code == 1
    assert "cohort.csv:3: email: b@example.org is already in cohort 'c'" in result.output
    assert [r["email"] for r in json.loads(run("status", "--json").output)] == ["b@example.org"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["enroll", "x@example.org", "--cohort", "missing"], "no cohort named 'missing'"),
        (
            ["enroll", "x@example.org", "--cohort", "c", "--timezone", "Moon/Base"],
            "unknown time zone",
        ),
        (
            ["cohort", "create", "e", "--course", "white-coat", "--start", "tomorrow"],
            "--start: expected",
        ),
        (["cohort", "create", "d", "--course", "nope", "--start", "now"], "no such course 'nope'"),
        (["preview", "white-coat", "9"], "has no day 9"),
        (["status", "--cohort", "missing"], "no cohort named 'missing'"),
    ],
)
def test_user_mistakes_are_one_clear_line(run, args: list[str], expected: str) -> None:  # type: ignore[no-untyped-def]
    run("init")
    run("cohort", "create", "c", "--course", "white-coat", "--start", "now")
    result = run(*args)
    assert result.exit_code == 1
    assert expected in result.output
    assert "Traceback" not in result.output


def test_a_wrong_setting_is_reported_at_start(run) -> None:  # type: ignore[no-untyped-def]
    result = run("status", DRIPCOURSE_MAIL_URL="carrier-pigeon://loft")
    assert result.exit_code == 1
    assert "setting mail_url: unsupported transport" in result.output
    result = run("status", DRIPCOURSE_TICK_SECONDS="soon")
    assert "setting tick_seconds: expected a number" in result.output


@pytest.mark.parametrize(
    ("flag", "marker"), [([], "<html"), (["--text"], "DAY 3:"), (["--eml"], "Subject: Day 3:")]
)
def test_preview_renders_a_lesson_for_a_sample_reader(
    run, tmp_path: Path, flag: list[str], marker: str
) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "preview.out"
    result = run("preview", "white-coat", "3", *flag, "--out", str(out))
    assert result.exit_code == 0, result.output
    body = out.read_text()
    assert marker in body
    assert "Dr." in body  # the sample reader's name
    assert run("preview", "white-coat", "3", "--text").output.startswith("DAY 3:")


def test_check_lists_every_course_as_ok(run) -> None:  # type: ignore[no-untyped-def]
    result = run("check")
    assert result.exit_code == 0
    assert (
        "white-coat: The White Coat Reset, 7 lessons, send 07:00 local: "
        "0 errors, 0 warnings, 0 files ignored: ok"
    ) in result.output


def test_demo_enrolls_the_sample_cohort_once(run) -> None:  # type: ignore[no-untyped-def]
    run("init")
    first = run("demo")
    assert "cohort 'sample': 6 subscribers enrolled" in first.output
    assert "enrolls nobody" in run("demo").output
    assert len(json.loads(run("status", "--json").output)) == 6


def test_an_unreachable_database_is_not_called_a_database_nobody_set_up(
    settings: Settings,
) -> None:
    result = CliRunner().invoke(cli, ["status"], env=unreachable_database_env(settings))
    assert result.exit_code == 1
    assert result.output.startswith(
        "Error: the database postgresql+psycopg://nobody@127.0.0.1:1/none is unavailable: "
    ), result.output
    assert "dripcourse init" not in result.output  # `init` would meet the same closed port
    assert result.output.count("\n") == 1


# Each command line, and the option or argument its error names.
OUT_OF_RANGE = {
    "run --concurrency 0": "--concurrency",
    "web --port 0": "--port",
    "web --port 70000": "--port",
    "preview --serve --port 99999": "--port",
    "preview white-coat 0": "[DAY]",
    "send-test white-coat 0 --to editor@example.org": "DAY",
    "pause a@example.org --days -5": "--days",
    "set-day a@example.org --day 0": "--day",
    "inbound serve --port -4": "--port",
    "inbound poll --imap imaps://u:p@imap.example.org/INBOX --every -1": "--every",
    "health --stale-after -5": "--stale-after",
}


@pytest.mark.parametrize("command", list(OUT_OF_RANGE))
def test_a_number_out_of_range_is_refused_as_a_usage_error_before_anything_runs(
    run, command: str
) -> None:  # type: ignore[no-untyped-def]
    result = run(*command.split())
    assert result.exit_code == 2, result.output  # click's usage error, whatever the command
    assert f"Invalid value for '{OUT_OF_RANGE[command]}'" in result.output
    assert "Traceback" not in result.output


# Commands that need the database, as someone would run them before `dripcourse init`.
def embedded_defaults_env() -> dict[str, str | None]:
    """The environment of a new user in a fresh folder: no DRIPCOURSE_ variable but the
    embedded defaults and the sample courses."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("DRIPCOURSE_")}
    env["DRIPCOURSE_CONFIG"] = str(ROOT / "config" / "default.toml")
    env["DRIPCOURSE_EMAILS_DIR"] = str(EMAILS)
    return env


NEEDS_THE_DATABASE = [
    "status",
    "cohort list",
    "cohort create c --course white-coat --start now",
    "enroll a@example.org --cohort c --timezone UTC",
    f"import {ROOT / 'config' / 'sample-cohort.csv'} --cohort c",
    "demo",
    "tick",
    "tick --inline",
    "due",
    "show a@example.org",
    "pause a@example.org --days 2",
    "retry-failed",
    "suppressions list",
    "reflections export",
    "report --json",
    "forget a@example.org --yes",
    "web",
    "health",
]


@pytest.mark.parametrize("command", NEEDS_THE_DATABASE)
def test_a_command_before_init_says_so_in_one_line_and_leaves_no_file_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """In a fresh folder with the embedded defaults, as `make run` would start from."""
    monkeypatch.chdir(tmp_path)
    env = embedded_defaults_env()

    result = CliRunner().invoke(cli, command.split(), env=env)

    assert result.exit_code == (2 if command == "health" else 1), result.output
    assert result.output == (
        "Error: the database sqlite:///var/dripcourse.sqlite3 is not set up: "
        "run `dripcourse init` first\n"
    )
    assert sorted(p.name for p in tmp_path.rglob("*")) == []  # no var/, no empty database


@pytest.mark.parametrize(
    "command",
    ["preview white-coat 1", "send-test white-coat 1 --to editor@example.org"],
)
def test_preview_and_send_test_before_init_make_no_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """They need no database, and made var/secret_key all the same (their links are a
    sample reader's, which lead nowhere)."""
    monkeypatch.chdir(tmp_path)
    env = embedded_defaults_env()
    env["DRIPCOURSE_STAFF_EMAILS"] = "editor@example.org"
    env["DRIPCOURSE_MAIL_URL"] = "console://"
    result = CliRunner().invoke(cli, command.split(), env=env)
    assert result.exit_code == 0, result.output
    assert "Day 1" in result.output
    assert sorted(p.name for p in tmp_path.rglob("*")) == []


def test_check_without_a_database_checks_the_courses_and_makes_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Staff checking lessons on a laptop need no database, and get none made for them."""
    monkeypatch.chdir(tmp_path)
    env = embedded_defaults_env()

    result = CliRunner().invoke(cli, ["check"], env=env)

    assert result.exit_code == 0, result.output
    assert "white-coat: The White Coat Reset, 7 lessons" in result.output
    assert not (tmp_path / "var" / "dripcourse.sqlite3").exists()


def test_inbound_pipe_before_init_asks_the_mail_server_to_try_again_and_makes_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = embedded_defaults_env()
    env["DRIPCOURSE_REPLY_DOMAIN"] = "reply.course.example.org"
    message = b"From: a@example.org\r\nTo: x@reply.course.example.org\r\nSubject: hi\r\n\r\nhi\r\n"

    result = CliRunner().invoke(cli, ["inbound", "pipe"], input=message, env=env)

    assert result.exit_code == 75, result.output  # EX_TEMPFAIL: the message stays queued
    assert result.output.endswith("is not set up: run `dripcourse init` first\n")
    assert result.output.count("\n") == 1
    assert not (tmp_path / "var" / "dripcourse.sqlite3").exists()


# A command line naming a course, with the course replaced by {}, and how click names it.
NAMES_A_COURSE = {
    "preview {} 1": "[SLUG]",
    "send-test {} 1 --to editor@example.org": "SLUG",
    "check white-coat {}": "[SLUGS]...",
    "cohort create c --course {} --start now": "--course",
    "demo --course {}": "--course",
}


@pytest.mark.parametrize("name", ["../../etc", "..", "/etc", "_layout"])
@pytest.mark.parametrize("command", list(NAMES_A_COURSE))
def test_a_course_argument_must_be_a_plain_slug(run, command: str, name: str) -> None:  # type: ignore[no-untyped-def]
    result = run(*[name if word == "{}" else word for word in command.split()])
    assert result.exit_code == 2, result.output  # the command line is wrong: nothing was read
    assert f"Invalid value for '{NAMES_A_COURSE[command]}': {name!r} is not a course name" in (
        result.output
    )
    assert "course.toml" not in result.output  # no path was made from it
    assert "Traceback" not in result.output


def test_init_on_a_database_a_newer_release_upgraded_says_so_and_changes_nothing(
    run, settings: Settings
) -> None:  # type: ignore[no-untyped-def]
    """It ended in alembic's traceback ("Can't locate revision")."""
    assert run("init").exit_code == 0
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'zz_from_the_future'")
    result = CliRunner().invoke(cli, ["init"], env=settings_env(settings))
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: the database "), result.output
    assert "newer version of dripcourse (revision zz_from_the_future)" in result.output
    assert result.output.count("\n") == 1
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar_one() == (
            "zz_from_the_future"
        )
    engine.dispose()


@pytest.mark.parametrize(
    "command",
    [
        "status",
        "cohort create later --course white-coat --start now",
        "enroll b@example.org --cohort now-cohort --timezone Europe/Paris",
        "tick --inline",
        "suppressions add c@example.org --reason asked",
        "show a@example.org",
        "report",
    ],
)
def test_every_command_on_a_database_a_newer_release_upgraded_refuses_in_one_line(
    run, settings: Settings, command: str
) -> None:  # type: ignore[no-untyped-def]
    """They ran and wrote (and tick --inline sent) on it."""
    assert run("init").exit_code == 0
    run("cohort", "create", "now-cohort", "--course", "white-coat", "--start", "now")
    run("enroll", "a@example.org", "--cohort", "now-cohort", "--timezone", "Europe/Paris")
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'zz_from_the_future'")
        before = [
            conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one()
            for table in ("cohorts", "enrollments", "deliveries", "suppressions", "subscribers")
        ]
    result = CliRunner().invoke(cli, command.split(), env=settings_env(settings))
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: the database "), result.output
    assert "newer version of dripcourse (revision zz_from_the_future)" in result.output
    assert result.output.count("\n") == 1
    with engine.connect() as conn:
        after = [
            conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one()
            for table in ("cohorts", "enrollments", "deliveries", "suppressions", "subscribers")
        ]
    engine.dispose()
    assert after == before


@pytest.mark.parametrize("days", ["0", "366", "3000000"])
def test_a_pause_length_out_of_range_prints_the_usage_and_exits_2(run, days: str) -> None:  # type: ignore[no-untyped-def]
    """366 exited 1 after opening the database; the README says out of range is usage, 2."""
    result = run("pause", "a@example.org", "--days", days)
    assert result.exit_code == 2, result.output
    assert "Usage: " in result.output
    assert f"Invalid value for '--days': {days} is not in the range 1<=x<=365" in result.output
