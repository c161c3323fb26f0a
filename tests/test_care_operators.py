"""Where to turn, for the people who run a course: `check`'s warnings on the list, the
country an operator sets (import column, enroll --country, set-country), and `show`."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from dripcourse.cli import cli
from dripcourse.courses.checks import check_all
from dripcourse.courses.course import Finding
from dripcourse.models import Subscriber
from dripcourse.runtime import Runtime
from dripcourse.settings import Settings
from tests.conftest import EMAILS, make_settings
from tests.workers import settings_env

IN_A_MONTH = (dt.date.today() + dt.timedelta(days=30)).isoformat()


@pytest.fixture
def emails(tmp_path: Path) -> Path:
    target = tmp_path / "emails"
    shutil.copytree(EMAILS, target)
    return target


def support_file(emails: Path) -> Path:
    return emails / "white-coat" / "support.toml"


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def line_of(path: Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def findings(emails: Path) -> list[Finding]:
    _layout, reports = check_all(emails)
    return [f for r in reports for f in r.findings if f.path.name == "support.toml"]


def check(tmp_path: Path, emails: Path) -> Result:
    settings = make_settings(tmp_path, emails_dir=str(emails))
    return CliRunner().invoke(cli, ["check"], env=settings_env(settings))


# -- check ----------------------------------------------------------------------------------


def test_the_sample_list_checks_clean(emails: Path) -> None:
    assert findings(emails) == []


def test_check_warns_when_the_list_is_missing(tmp_path: Path, emails: Path) -> None:
    support_file(emails).unlink()
    result = check(tmp_path, emails)
    assert result.exit_code == 0, result.output  # a warning: the lessons still go out
    assert f"{support_file(emails)}:1: warning: no list of places to turn" in result.output


def test_check_warns_about_an_entry_without_a_source_at_its_line(
    tmp_path: Path, emails: Path
) -> None:
    path = support_file(emails)
    edit(path, 'source = { name = "Samaritans", url = "https://www.samaritans.org" }\n', "")
    result = check(tmp_path, emails)
    assert result.exit_code == 0, result.output
    line = line_of(path, 'name = "Samaritans"') - 1  # its [[country.GB]] line
    assert f"{path}:{line}: warning: [[country.GB]] 'Samaritans': has no source" in result.output


def test_a_source_that_is_not_a_web_address_counts_as_none(emails: Path) -> None:
    path = support_file(emails)
    edit(path, 'url = "https://www.samaritans.org" }', 'url = "samaritans" }')
    assert [f.message for f in findings(emails) if f.severity == "warning"] == [
        "[[country.GB]] 'Samaritans': has no source "
        '(source = { name = "the organisation", url = "https://its page" }); '
        "the reviewer checks it against it"
    ]


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('phone = "116 123"', 'phone = "call 116 123"', "phone 'call 116 123': digits"),
        (
            'web = "https://www.samaritans.org"',
            'web = "javascript:alert(1)"',
            "web 'javascript:alert(1)' is not an https:// or http:// address",
        ),
        ("[[country.GB]]", "[[country.UK]]", "[[country.UK]]: unknown country 'UK'"),
        ("[[country.GB]]", "[[country.gb]]", "[[country.gb]]: write it GB"),
        (
            'about = "Free to call, to talk about whatever is getting to you."',
            "colour = 1",
            "unknown key 'colour'",
        ),
    ],
)
def test_a_broken_entry_is_an_error_naming_its_line(
    emails: Path, old: str, new: str, message: str
) -> None:
    path = support_file(emails)
    at = line_of(path, 'name = "Samaritans"') - 1
    edit(path, old, new)
    errors = [f for f in findings(emails) if f.severity == "error"]
    assert [(f.line, message in f.message) for f in errors] == [(at, True)], errors


def test_a_support_file_that_is_not_toml_is_an_error_at_its_line(emails: Path) -> None:
    path = support_file(emails)
    edit(path, 'name = "Samaritans"', 'name = "Samaritans')
    (found,) = findings(emails)
    assert (found.severity, found.line) == ("error", line_of(path, 'name = "Samaritans'))


def test_the_course_wording_is_checked(tmp_path: Path, emails: Path) -> None:
    course = emails / "white-coat" / "course.toml"
    edit(course, "support_in_footer = true", 'support_in_footer = "yes"')
    result = check(tmp_path, emails)
    at = line_of(course, "support_in_footer =")
    assert f"{course}:{at}: support_in_footer must be true or false" in result.output


# -- the country an operator sets -----------------------------------------------------------


@pytest.fixture
def run(settings: Settings):  # type: ignore[no-untyped-def]
    env = settings_env(settings)

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)

    created = invoke("cohort", "create", "c", "--course", "white-coat", "--start", IN_A_MONTH)
    assert created.exit_code == 0, created.output
    return invoke


def countries(rt: Runtime) -> dict[str, str]:
    with rt.sessions() as session:
        return dict(session.execute(select(Subscriber.email, Subscriber.country)).all())


def test_an_import_may_give_each_person_a_country(run, rt: Runtime, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    csv = tmp_path / "people.csv"
    csv.write_text(
        "email,name,timezone,country\n"
        "a@example.org,A,Asia/Tokyo,gb\n"
        "b@example.org,B,Europe/London,\n",
        encoding="utf-8",
    )
    result = run("import", str(csv), "--cohort", "c")
    assert result.exit_code == 0, result.output
    assert countries(rt) == {"a@example.org": "GB", "b@example.org": ""}


def test_an_unknown_country_in_an_import_names_its_line(run, rt: Runtime, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    csv = tmp_path / "people.csv"
    csv.write_text("email,timezone,country\na@example.org,UTC,England\n", encoding="utf-8")
    result = CliRunner().invoke(
        cli, ["import", str(csv), "--cohort", "c"], env=settings_env(rt.settings)
    )
    assert result.exit_code != 0
    assert f"{csv}:2: country: unknown country 'England'" in result.output
    assert "Traceback" not in result.output
    assert countries(rt) == {}


def test_set_country_changes_the_list_and_show_says_where_it_comes_from(run, rt: Runtime) -> None:  # type: ignore[no-untyped-def]
    enrolled = run("enroll", "a@example.org", "--cohort", "c", "--timezone", "Europe/London")
    assert enrolled.exit_code == 0, enrolled.output
    assert "places to turn: GB (from Europe/London)" in run("show", "a@example.org").output
    changed = run("set-country", "a@example.org", "nz")
    assert changed.output == "a@example.org: country: (from the zone) -> NZ\n"
    assert "places to turn: NZ (set by hand" in run("show", "a@example.org").output
    back = run("set-country", "a@example.org", "")
    assert back.output == "a@example.org: country: NZ -> (from the zone)\n"
    assert countries(rt) == {"a@example.org": ""}


def test_enroll_takes_a_country_and_refuses_an_unknown_one(run, rt: Runtime) -> None:  # type: ignore[no-untyped-def]
    ok = run("enroll", "a@example.org", "--cohort", "c", "--timezone", "UTC", "--country", "AU")
    assert ok.exit_code == 0, ok.output
    bad = CliRunner().invoke(
        cli,
        ["enroll", "b@example.org", "--cohort", "c", "--timezone", "UTC", "--country", "XX"],
        env=settings_env(rt.settings),
    )
    assert bad.exit_code != 0 and "country: unknown country 'XX'" in bad.output
    assert countries(rt) == {"a@example.org": "AU"}


def test_set_country_refuses_an_unknown_code(run, rt: Runtime) -> None:  # type: ignore[no-untyped-def]
    run("enroll", "a@example.org", "--cohort", "c", "--timezone", "UTC")
    result = CliRunner().invoke(
        cli, ["set-country", "a@example.org", "Narnia"], env=settings_env(rt.settings)
    )
    assert result.exit_code != 0
    assert "Error: country: unknown country 'Narnia'" in result.output
    assert countries(rt) == {"a@example.org": ""}
