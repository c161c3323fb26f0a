"""Worker heartbeats and `dripcourse health`: quiet when workers take tasks or nothing waits."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from click.testing import CliRunner

from dripcourse.cli import cli
from dripcourse.runtime import Runtime
from dripcourse.sending import claim as delivery
from dripcourse.sending import liveness
from dripcourse.settings import Settings
from tests.conftest import utc
from tests.test_delivery import PEOPLE, start_cohort
from tests.workers import settings_env, unreachable_database_env

NOW = utc(2026, 11, 30, 7)
LIMIT = dt.timedelta(minutes=5)


def minutes(n: float) -> dt.timedelta:
    return dt.timedelta(minutes=n)


def test_no_worker_has_been_seen_until_one_takes_a_task(rt: Runtime) -> None:
    assert liveness.last_worker_seen(rt) is None
    liveness.record_worker_seen(rt, "w1@host-a", NOW - minutes(3))
    liveness.record_worker_seen(rt, "w2@host-b", NOW - minutes(1))
    liveness.record_worker_seen(rt, "w1@host-a", NOW - minutes(2))
    assert liveness.last_worker_seen(rt) == NOW - minutes(1)


def test_a_heartbeat_is_written_at_most_once_per_interval(rt: Runtime) -> None:
    heartbeat = liveness.Heartbeat(every=30)
    times = [NOW + dt.timedelta(seconds=s) for s in (0, 10, 29, 30, 31, 75)]
    assert [heartbeat.beat(rt, "w1@host", t) for t in times] == [
        True, False, False, True, False, True,
    ]  # fmt: skip
    assert liveness.last_worker_seen(rt) == times[-1]


@pytest.mark.parametrize(
    ("work", "seen_ago", "healthy"),
    [
        ("nothing", None, True),  # nothing waits: no alarm, whatever the workers do
        ("nothing", 600, True),
        ("due", None, False),  # lessons due and no worker ever took a task
        ("due", 1, True),
        ("due", 5, True),
        ("due", 5.1, False),
        ("open", 2, True),  # claimed and queued, a worker took a tick 2 minutes ago
        ("open", 30, False),
    ],
)
def test_health_fails_only_when_lessons_wait_and_no_worker_took_a_task_lately(
    rt: Runtime, work: str, seen_ago: float | None, healthy: bool
) -> None:
    if work != "nothing":
        start_cohort(rt, NOW - minutes(60))
    if work == "open":
        delivery.tick(rt, NOW - minutes(60), list)
    if seen_ago is not None:
        liveness.record_worker_seen(rt, "w1@host", NOW - minutes(seen_ago))

    verdict = liveness.check_health(rt, NOW, LIMIT)

    assert verdict.healthy is healthy
    assert (verdict.due, verdict.open) == {
        "nothing": (0, 0),
        "due": (len(PEOPLE), 0),
        "open": (0, len(PEOPLE)),
    }[work]
    assert verdict.describe().startswith("ok: " if healthy else "unhealthy: ")


def test_the_health_line_says_what_waits_and_how_long_workers_were_silent(rt: Runtime) -> None:
    start_cohort(rt, NOW - minutes(60))
    liveness.record_worker_seen(rt, "w1@host", NOW - minutes(7) - dt.timedelta(seconds=3))
    assert liveness.check_health(rt, NOW, LIMIT).describe() == (
        "unhealthy: 2 lessons due, 0 deliveries open, "
        "and a worker last took a task 7m 03s ago (limit 5m 00s)"
    )


def test_the_health_command_exits_non_zero_for_a_probe(rt: Runtime, settings: Settings) -> None:
    env = settings_env(settings)
    runner = CliRunner()
    assert runner.invoke(cli, ["health"], env=env).exit_code == 0  # nothing waits yet
    start_cohort(rt, utc(2026, 1, 1))  # Day 1 long due, no worker has ever taken a task

    stalled = runner.invoke(cli, ["health"], env=env)
    assert stalled.exit_code == 1
    assert stalled.output == (
        "unhealthy: 2 lessons due, 0 deliveries open, and no worker has taken a task yet "
        "(limit 5m 00s)\n"
    )
    liveness.record_worker_seen(rt, "w1@host", dt.datetime.now(dt.UTC) - minutes(2))
    assert runner.invoke(cli, ["health"], env=env).exit_code == 0
    assert runner.invoke(cli, ["health", "--stale-after", "60"], env=env).exit_code == 1


def test_health_says_so_in_one_line_when_the_database_is_unreachable(
    settings: Settings,
) -> None:
    result = CliRunner().invoke(cli, ["health"], env=unreachable_database_env(settings))
    assert result.exit_code == 3
    assert result.output.startswith("unknown: database unavailable: ")
    assert result.output.count("\n") == 1


@pytest.mark.parametrize("value", ["-5", "0", "soon"])
def test_a_mistaken_option_never_exits_with_the_status_of_an_unreachable_database(
    settings: Settings, value: str
) -> None:
    unreachable = unreachable_database_env(settings)
    runner = CliRunner()
    mistaken = runner.invoke(cli, ["health", "--stale-after", value], env=settings_env(settings))
    assert mistaken.exit_code == 2, mistaken.output  # click's usage error: nothing was checked
    assert "Invalid value for '--stale-after'" in mistaken.output
    assert runner.invoke(cli, ["health"], env=unreachable).exit_code not in (1, 2)


@pytest.mark.parametrize("mistake", ["bad-setting", "no-database-file", "empty-database-file"])
def test_a_mistake_in_the_set_up_is_never_reported_as_stalled_workers(
    settings: Settings, tmp_path: Path, mistake: str
) -> None:
    env = settings_env(settings)
    if mistake == "bad-setting":
        env["DRIPCOURSE_TICK_SECONDS"] = "soon"
        words = "setting tick_seconds"
    else:
        path = tmp_path / "fresh.sqlite3"
        if mistake == "empty-database-file":
            path.touch()
        env["DRIPCOURSE_DATABASE_URL"] = f"sqlite:///{path}"
        words = "is not set up: run `dripcourse init` first"

    result = CliRunner().invoke(cli, ["health"], env=env)

    assert result.exit_code == 2, result.output  # 1 would make a probe restart the worker
    assert result.output.startswith("Error: ") and words in result.output
    assert result.output.count("\n") == 1
