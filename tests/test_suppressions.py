"""The suppression list from the command line: list with the real reason, add, lift."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from click.testing import CliRunner, Result

from dripcourse.cli import cli
from dripcourse.db import transaction
from dripcourse.people import enrollment
from dripcourse.reader import privacy
from dripcourse.runtime import Runtime
from dripcourse.settings import Settings
from tests.workers import settings_env

WHEN = dt.datetime(2026, 2, 3, 4, 5, tzinfo=dt.UTC)


@pytest.fixture
def run(settings: Settings):  # type: ignore[no-untyped-def]
    env = settings_env(settings)

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)

    return invoke


@pytest.fixture
def listed(rt: Runtime, run) -> None:  # type: ignore[no-untyped-def]
    """One address of each kind the system writes: bounced, complained, unsubscribed."""
    with transaction(rt.sessions) as session:
        enrollment.suppress(session, "gone@example.org", "bounced: 550 5.1.1 User unknown", WHEN)
        enrollment.suppress(session, "angry@example.org", "complained", WHEN)
        enrollment.suppress(session, "left@example.org", "unsubscribed", WHEN)


def test_an_empty_list_says_so(run) -> None:  # type: ignore[no-untyped-def]
    assert run("suppressions", "list").output == "no suppressed addresses\n"


def test_the_list_gives_each_address_its_reason_and_since_when(run, listed) -> None:  # type: ignore[no-untyped-def]
    lines = run("suppressions", "list").output.splitlines()
    assert lines == [
        "angry@example.org\tcomplained\t2026-02-03 04:05 UTC",
        "gone@example.org\tbounced\t2026-02-03 04:05 UTC  550 5.1.1 User unknown",
        "left@example.org\tunsubscribed\t2026-02-03 04:05 UTC",
    ]
    rows = json.loads(run("suppressions", "list", "--json").output)
    assert rows[1] == {
        "email": "gone@example.org",
        "reason": "bounced",
        "detail": "550 5.1.1 User unknown",
        "since": "2026-02-03T04:05:00Z",
    }


def test_adding_an_address_stops_its_lessons_and_refuses_enrolling_it(run) -> None:  # type: ignore[no-untyped-def]
    run("cohort", "create", "c", "--course", "white-coat", "--start", "now")
    run("enroll", "Ann@Example.org", "--cohort", "c", "--timezone", "UTC")
    added = run("suppressions", "add", "ANN@example.org", "--reason", "asked  by phone")
    assert added.output == "ann@example.org: suppressed (asked by phone)\n"
    assert "0 lessons claimed" in run("tick", "--inline").output
    assert json.loads(run("status", "--json").output)[0]["status"] == "removed"
    run("cohort", "create", "d", "--course", "white-coat", "--start", "now")
    refused = run("enroll", "ann@example.org", "--cohort", "d")
    assert "is suppressed: suppressed by an operator on" in refused.output
    assert "asked by phone" in refused.output
    again = run("suppressions", "add", "ann@example.org", "--reason", "x")
    assert "ann@example.org is suppressed already (operator)" in again.output


@pytest.mark.parametrize("address", ["gone@example.org", "angry@example.org"])
def test_lifting_a_bounce_or_complaint_needs_yes(run, listed, address: str) -> None:  # type: ignore[no-untyped-def]
    refused = run("suppressions", "remove", address)
    assert refused.exit_code == 1
    assert "on 2026-02-03" in refused.output and "add --yes to lift it" in refused.output
    lifted = run("suppressions", "remove", address, "--yes")
    assert lifted.exit_code == 0 and "no longer suppressed" in lifted.output
    assert address not in run("suppressions", "list").output


def test_lifting_an_unsubscribe_needs_no_confirmation_and_unknown_addresses_are_named(
    run, listed
) -> None:  # type: ignore[no-untyped-def]
    lifted = run("suppressions", "remove", "left@example.org")
    assert lifted.output == (
        "left@example.org: no longer suppressed (was unsubscribed since 2026-02-03)\n"
    )
    missing = run("suppressions", "remove", "left@example.org")
    assert missing.exit_code == 1
    assert "left@example.org is not on the suppression list" in missing.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["suppressions", "add", "not-an-address", "--reason", "x"], "is not an email address"),
        (["suppressions", "add", "a@example.org", "--reason", "  "], "--reason: say why"),
    ],
)
def test_bad_input_to_the_list_is_one_line(run, args: list[str], expected: str) -> None:  # type: ignore[no-untyped-def]
    result = run(*args)
    assert result.exit_code == 1 and result.output.startswith("Error: ")
    assert expected in result.output


def forgotten(rt: Runtime, run) -> None:  # type: ignore[no-untyped-def]
    run("cohort", "create", "c", "--course", "white-coat", "--start", "now")
    run("enroll", "ann@example.org", "--cohort", "c", "--timezone", "UTC")
    assert run("forget", "ann@example.org", "--yes").exit_code == 0


def test_lifting_a_forgotten_persons_entry_needs_yes_and_says_what_it_means(
    rt: Runtime, run
) -> None:  # type: ignore[no-untyped-def]
    """It was lifted without a question, leaving no trace that the person asked to be erased."""
    forgotten(rt, run)
    today = dt.datetime.now(dt.UTC).date()
    assert f"ann@example.org\tforgotten\t{today:%Y-%m-%d}" in run("suppressions", "list").output
    refused = run("suppressions", "remove", "ann@example.org")
    assert refused.exit_code == 1
    assert refused.output == (
        f"Error: ann@example.org was forgotten on {today:%Y-%m-%d} at their request: this "
        "entry is all that is left of them and what keeps them from being mailed again; "
        "lifting it leaves no trace that they asked to be erased: add --yes to lift it\n"
    )
    assert "ann@example.org" in run("suppressions", "list").output
    lifted = run("suppressions", "remove", "ann@example.org", "--yes")
    assert lifted.exit_code == 0 and "was forgotten since" in lifted.output


def test_show_on_a_forgotten_address_says_when_they_were_forgotten(rt: Runtime, run) -> None:  # type: ignore[no-untyped-def]
    forgotten(rt, run)
    today = dt.datetime.now(dt.UTC).date()
    shown = run("show", "Ann@example.org")
    assert shown.exit_code == 1
    assert shown.output == (
        f"Error: ann@example.org: forgotten on {today:%Y-%m-%d} at their request "
        "(only a do-not-mail entry is kept)\n"
    )
    assert "no subscriber" in run("show", "nobody@example.org").output


def test_outside_text_reaches_the_terminal_without_control_characters(rt: Runtime, run) -> None:  # type: ignore[no-untyped-def]
    """An OSC sequence in a fake bounce's Diagnostic-Code reached the operator's terminal."""
    with transaction(rt.sessions) as session:
        enrollment.suppress(
            session, "gone@example.org", "bounced: 550 \x1b]0;pwned\x07 gone\x9b2J", WHEN
        )
    for args in (["suppressions", "list"], ["suppressions", "list", "--json"]):
        output = run(*args).output
        assert "550 ]0;pwned gone2J" in output
        assert not any(ord(c) < 0x20 and c not in "\t\n" or 0x7F <= ord(c) <= 0x9F for c in output)


def test_a_forgotten_persons_entry_is_listed_as_forgotten(rt: Runtime, run) -> None:  # type: ignore[no-untyped-def]
    """It was listed with reason `operator`; the docs say `forgotten`."""
    with transaction(rt.sessions) as session:
        enrollment.suppress(session, "asked@example.org", privacy.FORGOTTEN, WHEN)
    (row,) = json.loads(run("suppressions", "list", "--json").output)
    assert (row["reason"], row["detail"]) == (
        "forgotten",
        "everything else about this person was deleted at their request",
    )
    assert "forgotten" in run("suppressions", "list").output
