"""What an operator sees in `dripcourse status` after a send with failures."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from dripcourse.cli import cli
from dripcourse.settings import Settings
from tests.conftest import make_settings
from tests.smtp_sink import SMTPSink
from tests.workers import settings_env

GONE = "gone@example.org"
REPLY = f"550 5.1.1 <{GONE}>: Recipient address rejected: User unknown"


class Operator:
    def __init__(self, settings: Settings) -> None:
        self.env = settings_env(settings)

    def __call__(self, *args: str) -> Result:
        result = CliRunner().invoke(cli, list(args), env=self.env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result

    def cohort(self, name: str, *addresses: str) -> None:
        self("cohort", "create", name, "--course", "white-coat", "--start", "now")
        for address in addresses:
            self("enroll", address, "--cohort", name, "--timezone", "Europe/Paris")


def day_row(output: str, cohort: str, day: int) -> dict[str, int]:
    """The counts on one day's line of one cohort's table."""
    block = output.split(f"cohort {cohort} ")[1].split("\ncohort ")[0]
    header, *rows = [line.split() for line in block.splitlines()[1:] if line.strip()]
    for row in rows:
        if row[0] == str(day):
            return dict(zip(header, map(int, row), strict=True))
    raise AssertionError(f"no day {day} for cohort {cohort} in:\n{output}")


@pytest.fixture
def operator(tmp_path: Path, database_url: str, smtp_sink: SMTPSink) -> Operator:
    settings = make_settings(tmp_path, database_url=database_url, mail_url=smtp_sink.url)
    return Operator(settings)


def test_status_after_a_hard_bounce(operator: Operator, smtp_sink: SMTPSink):
    smtp_sink.handler.reject[GONE] = REPLY
    # The bounced address is in two cohorts; both lessons are claimed in the same tick.
    operator.cohort("spring", "ana@example.org", "bo@example.org", GONE)
    operator.cohort("autumn", "cy@example.org", GONE)

    operator("tick", "--inline")
    shown = operator("status").output

    assert re.search(r"cohort spring \(white-coat\): 3 enrolled: 2 active, 1 bounced", shown)
    assert re.search(r"cohort autumn \(white-coat\): 2 enrolled: 1 active, 1 bounced", shown)
    days = [day_row(shown, "spring", 1), day_row(shown, "autumn", 1)]
    assert [d["sent"] for d in days] == [2, 1]
    assert all(d["pending"] == 0 for d in days)
    # The server refused it once, in whichever cohort went first; the other lesson was
    # stopped before it was sent, because the address is suppressed by then.
    assert sorted((d["failed"], d["suppressed"]) for d in days) == [(0, 1), (1, 0)]
    assert f"failed: {GONE} day 1: {REPLY}" in shown
    assert smtp_sink.handler.refused[GONE] == 1
    assert sorted(smtp_sink.handler.recipients()) == [
        "ana@example.org",
        "bo@example.org",
        "cy@example.org",
    ]


def test_status_json_names_the_bounced_enrollment(operator: Operator, smtp_sink: SMTPSink):
    smtp_sink.handler.reject[GONE] = REPLY
    operator.cohort("spring", "ana@example.org", GONE)
    operator("tick", "--inline")

    rows = json.loads(operator("status", "--json").output)

    assert {r["email"]: (r["status"], r["day"]) for r in rows} == {
        "ana@example.org": ("active", 1),
        GONE: ("bounced", 0),
    }


def test_a_bounced_address_cannot_be_enrolled_again(operator: Operator, smtp_sink: SMTPSink):
    smtp_sink.handler.reject[GONE] = REPLY
    operator.cohort("spring", GONE)
    operator("tick", "--inline")
    operator("cohort", "create", "autumn", "--course", "white-coat", "--start", "now")

    refused = CliRunner().invoke(
        cli, ["enroll", GONE, "--cohort", "autumn"], env=operator.env, catch_exceptions=False
    )

    assert refused.exit_code == 1
    assert "suppressed" in refused.output


def test_status_lists_a_delivery_that_ran_out_of_attempts_without_suppressing_it(
    tmp_path: Path, database_url: str, smtp_sink: SMTPSink
):
    operator = Operator(
        make_settings(tmp_path, database_url=database_url, mail_url=smtp_sink.url, max_attempts=1)
    )
    smtp_sink.handler.busy = True
    smtp_sink.handler.busy_reply = "452 4.2.2 Mailbox full"
    operator.cohort("spring", "ana@example.org")

    operator("tick", "--inline")
    shown = operator("status").output

    assert day_row(shown, "spring", 1) == {
        "day": 1,
        "sent": 0,
        "pending": 0,
        "failed": 1,
        "suppressed": 0,
        "reflected": 0,
    }
    assert "failed: ana@example.org day 1: 452 4.2.2 Mailbox full" in shown
    assert "1 failed" in shown  # the enrollment stopped, not bounced: the address is fine
