"""What operators see: `status` says why a lesson is retrying, `due` says who would get what."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from dripcourse.cli import cli
from dripcourse.db import transaction
from dripcourse.errors import InputError
from dripcourse.models import Delivery, DeliveryStatus
from dripcourse.people import changes as people
from dripcourse.runtime import Runtime
from dripcourse.sending import due
from tests.conftest import EMAILS, make_settings, utc
from tests.smtp_sink import SMTPSink
from tests.test_web_support import enroll, tick
from tests.workers import settings_env


def test_a_retrying_delivery_shows_its_reason_in_status_and_json(
    tmp_path: Path, sqlite_url: str, smtp_sink: SMTPSink
) -> None:
    settings = make_settings(tmp_path, database_url=sqlite_url, mail_url=smtp_sink.url)
    env = settings_env(settings)

    def run(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)

    run("cohort", "create", "c", "--course", "white-coat", "--start", "now")
    run("enroll", "ana@example.org", "--cohort", "c", "--timezone", "Europe/Paris", "--name", "Ana")
    smtp_sink.handler.busy = True
    smtp_sink.handler.busy_reply = "451 4.3.0 Try again later"  # this message, not the relay
    assert "1 retry" in run("tick", "--inline").output

    shown = run("status").output
    assert "cohort c (white-coat): 1 enrolled: 1 active; 7 lessons" in shown
    header, *rows = [line.split() for line in shown.splitlines()[1:4]]
    counts = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
    assert counts["0"]["at"] == "1"  # nobody has had a lesson yet
    assert counts["1"]["pending"] == "1" and counts["1"]["retrying"] == "1"
    assert "  retrying: 1 with last error: 451 4.3.0 Try again later" in shown

    (row,) = json.loads(run("status", "--json").output)
    assert row["name"] == "Ana"
    assert row["last_error"].startswith("451 4.3.0 Try again later")
    assert row["next_send_at_local"] is None  # the lesson is claimed: in flight


def test_status_counts_who_is_at_each_day_and_who_is_paused(rt: Runtime) -> None:
    from dripcourse.people import status

    first = enroll(rt, "a@example.org", timezone="UTC")
    enroll(rt, "b@example.org", timezone="UTC")
    tick(rt, utc(2025, 3, 3, 7))
    with transaction(rt.sessions) as session:
        found = people.find_person(session, "a@example.org").enrollments[0]
        assert found.id == first
        people.pause(session, found, rt.catalog.course("white-coat"), utc(2025, 3, 3, 8), days=2)
    with transaction(rt.sessions) as session:
        (summary,) = status.cohort_summaries(session, "spring", utc(2025, 3, 3, 9), lambda slug: 7)
    assert summary.paused == 1 and summary.course_length == 7
    assert [(d.day, d.at, d.sent) for d in summary.days] == [(1, 2, 2)]


# -- due ------------------------------------------------------------------------------------


@pytest.fixture
def weekdays_rt(tmp_path: Path, sqlite_url: str) -> Iterator[Runtime]:
    """The sample course sent on weekdays only (a copy, so the real one is untouched)."""
    emails = tmp_path / "emails"
    shutil.copytree(EMAILS, emails)
    toml = emails / "white-coat" / "course.toml"
    toml.write_text(toml.read_text().replace("skip_weekends = false", "skip_weekends = true"))
    runtime = Runtime(make_settings(tmp_path, database_url=sqlite_url, emails_dir=str(emails)))
    yield runtime
    runtime.close()


def verdicts(rt: Runtime, at: dt.datetime) -> dict[str, tuple[str, str]]:
    with transaction(rt.sessions) as session:
        found = due.due_at(session, at, rt.catalog.course)
    return {v.email: (v.reason, v.detail) for v in found}


def test_due_says_who_would_get_which_lesson_and_why_the_others_would_not(
    weekdays_rt: Runtime,
) -> None:
    rt = weekdays_rt
    for name, zone in [("ny", "America/New_York"), ("ldn", "Europe/London"), ("p", "UTC")]:
        enroll(rt, f"{name}@example.org", timezone=zone)
    with transaction(rt.sessions) as session:
        paused = people.find_person(session, "p@example.org").enrollments[0]
        people.pause(session, paused, rt.catalog.course("white-coat"), utc(2025, 3, 1), days=5)
    # Monday 2025-03-03 at 08:00 UTC: 07:00 has passed in London, not yet in New York.
    assert verdicts(rt, utc(2025, 3, 3, 8)) == {
        "ldn@example.org": ("due", "Day 1"),
        "ny@example.org": ("before send time", "Day 1 at 2025-03-03 07:00 America/New_York"),
        "p@example.org": ("paused", "until 2025-03-06 00:00 UTC"),
    }
    # Saturday: nobody is due on a weekday-only course.
    saturday = verdicts(rt, utc(2025, 3, 1, 12))
    assert saturday["ldn@example.org"] == ("weekend", "Day 1 at 2025-03-03 07:00 Europe/London")
    assert tick(rt, utc(2025, 3, 3, 8))  # nothing was sent by the dry run: the tick claims it
    assert verdicts(rt, utc(2025, 3, 3, 9))["ldn@example.org"][0] == "not yet"


def test_due_on_the_command_line_lists_and_explains(weekdays_rt: Runtime) -> None:
    enroll(weekdays_rt, "ldn@example.org", timezone="Europe/London")
    env = settings_env(weekdays_rt.settings)
    result = CliRunner().invoke(cli, ["due", "--at", "2025-03-03T08:00"], env=env)
    assert result.output.splitlines() == [
        "at 2025-03-03 08:00 UTC: 1 would get a lesson (nothing sent)",
        "  ldn@example.org (spring): Day 1",
    ]
    early = CliRunner().invoke(cli, ["due", "--at", "2025-03-03T06:00Z", "--json"], env=env)
    (row,) = json.loads(early.output)
    assert row["reason"] == "before send time" and row["lesson"] is None
    assert row["next_send_at_local"] == "2025-03-03T07:00:00+00:00"
    bad = CliRunner().invoke(cli, ["due", "--at", "monday"], env=env)
    assert bad.exit_code == 1 and "--at: expected a date and time" in bad.output


def test_an_at_without_offset_is_utc_and_one_with_an_offset_is_converted() -> None:
    now = utc(2025, 1, 1)
    assert due.parse_at("2025-03-03T08:00", now) == utc(2025, 3, 3, 8)
    assert due.parse_at("2025-03-03T08:00-05:00", now) == utc(2025, 3, 3, 13)
    assert due.parse_at(None, now) == now
    with pytest.raises(InputError):
        due.parse_at("soon", now)


def test_tick_says_how_many_it_queued_for_the_workers(rt: Runtime) -> None:
    now = dt.datetime.now(dt.UTC)
    enroll(rt, "ana@example.org", timezone="UTC", start="now", now=now)  # type: ignore[arg-type]
    env = settings_env(rt.settings)
    result = CliRunner().invoke(cli, ["tick"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "queued 1 for the workers: 1 lessons newly due, 0 retries or lost tasks\n"
    )
    # No worker has ever taken a task: the lesson would sit in the queue, and tick says so.
    assert result.stderr.startswith("warning: no worker has taken a task yet;")


def test_tick_warns_of_a_worker_last_seen_long_ago_and_not_of_a_recent_one(rt: Runtime) -> None:
    from dripcourse.sending import liveness

    now = dt.datetime.now(dt.UTC)
    env = settings_env(rt.settings)
    liveness.record_worker_seen(rt, "w1@host", now - dt.timedelta(hours=2))
    enroll(rt, "ana@example.org", timezone="UTC", start="now", now=now)  # type: ignore[arg-type]
    stale = CliRunner().invoke(cli, ["tick"], env=env, catch_exceptions=False)
    assert "warning: no worker has taken a task since" in stale.stderr
    liveness.record_worker_seen(rt, "w1@host", dt.datetime.now(dt.UTC))
    enroll(rt, "bo@example.org", timezone="UTC", start="now", now=now)  # type: ignore[arg-type]
    fresh = CliRunner().invoke(cli, ["tick"], env=env, catch_exceptions=False)
    assert fresh.stdout.startswith("queued 1 for the workers")
    assert fresh.stderr == ""


def test_status_of_one_cohort_counts_only_that_cohorts_reflections(rt: Runtime) -> None:
    from tests.test_privacy import write

    mine = enroll(rt, "a@example.org", timezone="UTC")
    other = enroll(rt, "b@example.org", timezone="UTC", cohort="autumn")
    tick(rt, utc(2025, 3, 3, 7))
    write(rt, mine, 1, "Mine.")
    write(rt, other, 1, "Theirs.")
    write(rt, other, 2, "Theirs again.")
    env = settings_env(rt.settings)
    spring = CliRunner().invoke(cli, ["status", "--cohort", "spring"], env=env)
    assert spring.exit_code == 0, spring.output
    assert "reflections (cohort spring): 1 from the web, 0 from email" in spring.output
    everyone = CliRunner().invoke(cli, ["status"], env=env).output
    assert "reflections: 3 from the web, 0 from email" in everyone


def _documented_due_reasons() -> set[str]:
    text = (EMAILS.parent / "docs" / "operators.md").read_text()
    start = text.index("`dripcourse due --at")
    paragraph = " ".join(text[start : text.index("\n\n", start)].split())
    return set(re.findall(r"`([a-z][a-z ]+)`", paragraph)) - {"dripcourse due --at"}


def test_every_reason_due_gives_is_in_its_documented_list(rt: Runtime, tmp_path: Path) -> None:
    """It said "outside the sending window" and "due", which the list lacked, and showed a
    retry as "on its way"."""
    documented = _documented_due_reasons()
    enroll(rt, "late@example.org", timezone="Asia/Tokyo")  # 21:30 there at 12:30 UTC
    enroll(rt, "retry@example.org", timezone="Europe/Paris")
    morning = utc(2025, 3, 3, 12, 30)
    reasons = {v[0] for v in verdicts(rt, morning).values()}
    with transaction(rt.sessions) as session:
        found = people.find_person(session, "retry@example.org").enrollments[0]
        found.next_send_at = None  # claimed; its delivery waits for a retry
        found.deliveries.append(
            Delivery(
                day=1,
                status=DeliveryStatus.WAITING,
                attempts=1,
                next_attempt_at=morning + dt.timedelta(minutes=5),
                last_error="451 4.3.0 Try again later",
                created_at=morning,
                updated_at=morning,
            )
        )
    seen = verdicts(rt, morning)
    assert seen["retry@example.org"] == (
        "waiting",
        "Day 1 at 2025-03-03 13:35 Europe/Paris (last error: 451 4.3.0 Try again later)",
    )
    reasons |= {v[0] for v in seen.values()}
    assert seen["late@example.org"][0] == "outside the sending window"
    assert "due" in {v[0] for v in verdicts(rt, utc(2025, 3, 3, 6, 30)).values()}  # 07:30 Paris
    reasons.add("due")
    assert reasons <= documented, reasons - documented
