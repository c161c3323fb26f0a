"""Names and addresses are checked on the way in: one line naming the place, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from dripcourse.cli import cli
from dripcourse.errors import InputError
from dripcourse.people.signup import check_signup
from dripcourse.settings import Settings
from tests.conftest import EMAILS
from tests.workers import settings_env

BAD_NAMES = {
    "form feed": ("Ana\x0cPerez", "U+000C, a control character, at character 4"),
    "vertical tab and a Bcc header": ("Ana\x0bBcc: all@example.org", "U+000B"),
    "NUL": ("Ana\x00", "U+0000"),
    "line feed": ("Ana\nSubject: hi", "U+000A"),
    "tab": ("Ana\tPerez", "U+0009"),
    "right-to-left override": ("Ana\u202eZepeP", "U+202E (RIGHT-TO-LEFT OVERRIDE), a format"),
    "zero-width space": ("A\u200bna", "U+200B (ZERO WIDTH SPACE)"),
    "line separator": ("Ana\u2028Perez", "U+2028 (LINE SEPARATOR), a line separator"),
    "next line (C1)": ("Ana\x85Perez", "U+0085"),
}
BAD_ADDRESSES = {
    "nothing before the @": "@example.org",
    "dot after the @": "a@.example.org",
    "two dots": "a@example..org",
    "trailing dot": "a@example.org.",
    "no @": "not-an-address",
    "a NUL": "a\x00b@example.org",
    "two addresses": "a@example.org, b@example.org",
    "a display name": "Ana <a@example.org>",
    "non-ASCII mailbox": "ánA@example.org",
}


@pytest.fixture
def run(settings: Settings):  # type: ignore[no-untyped-def]
    env = settings_env(settings)

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args), env=env)

    invoke("init")
    invoke("cohort", "create", "c", "--course", "white-coat", "--start", "today")
    return invoke


def one_finding(result: Result) -> str:
    """check's output for one problem: the finding, then the course's summary line."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    finding, summary = result.output.strip().splitlines()
    assert summary.endswith("1 errors, 0 warnings, 0 files ignored: FAILED"), summary
    return finding


def one_line_error(result: Result) -> str:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("Error: ")
    return result.output


def enrolled(run) -> list[str]:  # type: ignore[no-untyped-def]
    return [row["email"] for row in json.loads(run("status", "--json").output)]


@pytest.mark.parametrize(("name", "expected"), BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_a_name_with_a_control_or_format_character_is_refused_naming_line_and_field(
    run, tmp_path: Path, name: str, expected: str
) -> None:  # type: ignore[no-untyped-def]
    csv = tmp_path / "cohort.csv"
    csv.write_text(
        f'email,name,timezone\nok@example.org,Ok,UTC\nana@example.org,"{name}",UTC\n',
        encoding="utf-8",
        errors="surrogatepass",
    )
    output = one_line_error(run("import", str(csv), "--cohort", "c"))
    # The row starts on line 3, also when a quoted line break carries it on to line 4.
    assert f"cohort.csv:3: name: {expected}" in output
    assert enrolled(run) == []
    output = one_line_error(run("enroll", "ana@example.org", "--cohort", "c", "--name", name))
    assert f"Error: name: {expected}" in output
    assert enrolled(run) == []


@pytest.mark.parametrize("address", BAD_ADDRESSES.values(), ids=BAD_ADDRESSES.keys())
def test_a_malformed_address_is_one_line_naming_line_and_field(
    run, tmp_path: Path, address: str
) -> None:  # type: ignore[no-untyped-def]
    csv = tmp_path / "cohort.csv"
    csv.write_text(f'email,name,timezone\nok@example.org,Ok,UTC\n"{address}",Ana,UTC\n')
    output = one_line_error(run("import", str(csv), "--cohort", "c"))
    assert "cohort.csv:3: email: " in output and "is not an email address" in output
    output = one_line_error(run("enroll", address, "--cohort", "c"))
    assert "Error: email: " in output and "is not an email address" in output
    assert enrolled(run) == []


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("  Ana.Perez@Example.ORG ", "ana.perez@example.org"),
        ("ana+course@example.org", "ana+course@example.org"),
        ("ana@bücher.example", "ana@xn--bcher-kva.example"),
    ],
)
def test_an_address_is_stored_in_one_spelling(typed: str, stored: str) -> None:
    assert check_signup(typed, "Ana", "UTC").email == stored


@pytest.mark.parametrize(
    "name", ["Ana Pérez", "Dr. Zoë O'Neil-Smith", "李小龍", "Ana\u00a0Perez", "أحمد", ""]
)
def test_ordinary_names_in_any_script_are_kept_as_written(name: str) -> None:
    assert check_signup("ana@example.org", f" {name} ", "UTC").name == name


def test_a_name_with_a_lone_surrogate_from_the_command_line_is_refused() -> None:
    with pytest.raises(InputError, match="name: U\\+DC80, a surrogate, at character 4"):
        check_signup("ana@example.org", "Ana\udc80", "UTC")


def test_a_name_over_100_characters_is_refused() -> None:
    with pytest.raises(InputError, match="name: 101 characters; at most 100"):
        check_signup("ana@example.org", "x" * 101, "UTC")


def test_a_course_toml_that_is_not_utf8_is_one_line_in_check(
    tmp_path: Path, settings: Settings
) -> None:
    import shutil

    emails = tmp_path / "emails"
    shutil.copytree(EMAILS, emails)
    toml = emails / "white-coat" / "course.toml"
    toml.write_bytes(toml.read_bytes().replace(b"Reset", b"R\xe9set"))
    env = {**settings_env(settings), "DRIPCOURSE_EMAILS_DIR": str(emails)}
    output = one_finding(CliRunner().invoke(cli, ["check"], env=env))
    assert output.startswith(f"{toml}:1: not UTF-8 text")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"Day 2:\\fa lesson"', "subject: U+000C, a control character"),
        ('"Day 2: \\u202eevil"', "subject: U+202E (RIGHT-TO-LEFT OVERRIDE)"),
        ("Day 2:\fa", "front matter: unacceptable character U+000C"),
    ],
    ids=["escaped form feed", "escaped bidi override", "raw form feed"],
)
def test_a_lesson_subject_with_a_control_character_is_one_line_in_check(
    tmp_path: Path, settings: Settings, value: str, expected: str
) -> None:
    import re
    import shutil

    emails = tmp_path / "emails"
    shutil.copytree(EMAILS, emails)
    lesson = emails / "white-coat" / "day-02.md"
    text = re.sub(r"^subject: .*$", lambda _: f"subject: {value}", lesson.read_text(), flags=re.M)
    lesson.write_text(text)
    env = {**settings_env(settings), "DRIPCOURSE_EMAILS_DIR": str(emails)}
    finding = one_finding(CliRunner().invoke(cli, ["check"], env=env))
    assert finding.startswith(f"{lesson}:")
    assert expected in finding


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "Ana\tPerez\u200b",
            "name: U+0009, a control character, at character 4, and "
            "U+200B (ZERO WIDTH SPACE), a format character, at character 10; remove them",
        ),
        (
            "<Ana>\x0c" + "x" * 100,
            "name: U+000C, a control character, at character 6; remove it; "
            "106 characters; at most 100; "
            "'<' at character 1, and '>' at character 5; names may not hold <, > or \"",
        ),
    ],
    ids=["two invisible characters", "one of each problem"],
)
def test_every_problem_in_a_name_is_named_at_once(name: str, expected: str) -> None:
    with pytest.raises(InputError) as caught:
        check_signup("ana@example.org", name, "UTC")
    assert str(caught.value) == expected


def test_many_bad_characters_are_counted_not_listed_without_end() -> None:
    with pytest.raises(InputError) as caught:
        check_signup("ana@example.org", "A" + "\x00" * 40, "UTC")
    assert str(caught.value) == (
        "name: U+0000, a control character, at character 2, U+0000, a control character, at "
        "character 3, U+0000, a control character, at character 4, and 37 more; remove them"
    )


def test_a_subject_with_two_bad_characters_names_both_in_check(
    tmp_path: Path, settings: Settings
) -> None:
    import shutil

    emails = tmp_path / "emails"
    shutil.copytree(EMAILS, emails)
    lesson = emails / "white-coat" / "day-02.md"
    text = lesson.read_text()
    lesson.write_text(text.replace('subject: "Day 2:', 'subject: "Day\\f2:\\u202e', 1))
    env = {**settings_env(settings), "DRIPCOURSE_EMAILS_DIR": str(emails)}
    finding = one_finding(CliRunner().invoke(cli, ["check"], env=env))
    assert "U+000C, a control character, at character 4, and U+202E" in finding, finding
