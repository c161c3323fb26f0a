"""`dripcourse check` finds every problem in one run, each at its line in the file."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from dripcourse.cli import cli
from dripcourse.courses.checks import check_all
from dripcourse.courses.course import Finding
from dripcourse.errors import CourseError
from dripcourse.runtime import Catalog
from tests.conftest import EMAILS, make_settings
from tests.workers import settings_env

LONG_TEXT = "The night shift ends and the work does not. " * 400  # about 3,600 words
SMALL_DATA_IMAGE = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
LARGE_DATA_IMAGE = "data:image/png;base64," + "QUJD" * 50_000  # 200 KB on one line


@pytest.fixture
def emails(tmp_path: Path) -> Path:
    target = tmp_path / "emails"
    shutil.copytree(EMAILS, target)
    return target


def lesson(emails: Path, day: int) -> Path:
    return emails / "white-coat" / f"day-{day:02d}.md"


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def add_to_body(path: Path, text: str) -> None:
    """Put ``text`` on lines 13 on (after the greeting on 11 and a blank line 12)."""
    edit(
        path,
        "{{ salutation }}, {{ greeting }}.\n\n",
        f"{{{{ salutation }}}}, {{{{ greeting }}}}.\n\n{text}\n\n",
    )


def findings(emails: Path) -> list[Finding]:
    layout, reports = check_all(emails)
    return layout + [f for r in reports for f in r.findings]


Breakage = Callable[[Path], None]

# One broken copy of the sample course per rule: (breakage, file, line, severity, words).
RULES: dict[str, tuple[Breakage, str, int, str, str]] = {
    "gap-in-days": (
        lambda e: lesson(e, 3).unlink(),
        "day-04.md",
        1,
        "error",
        "day 3 is missing",
    ),
    "missing-subject": (
        lambda e: edit(lesson(e, 2), "subject:", "subjekt:"),
        "day-02.md",
        1,
        "error",
        "subject is missing",
    ),
    "missing-prompt": (
        lambda e: edit(lesson(e, 4), "prompt: Who", "prompt: \nnote: Who"),
        "day-04.md",
        5,
        "error",
        "prompt is missing",
    ),
    "unknown-variable": (
        lambda e: add_to_body(lesson(e, 5), "Write to us at {{ email }}."),
        "day-05.md",
        13,
        "error",
        "unknown variable 'email'",
    ),
    "unknown-variable-in-subject": (
        lambda e: edit(lesson(e, 5), 'here"', 'here, {{ frist_name }}"'),
        "day-05.md",
        3,
        "error",
        "unknown variable 'frist_name'",
    ),
    "template-syntax": (
        lambda e: add_to_body(lesson(e, 6), "Hello {{ greeting }"),
        "day-06.md",
        13,
        "error",
        "template syntax error",
    ),
    "front-matter-colon": (
        lambda e: edit(lesson(e, 7), "preheader: A simple plan", "preheader: Note: a simple plan"),
        "day-07.md",
        4,
        "error",
        "put the whole value in double quotes",
    ),
    "front-matter-tab": (
        lambda e: edit(lesson(e, 7), "  - Which one", "\t- Which one"),
        "day-07.md",
        7,
        "error",
        "indent with spaces",
    ),
    "does-not-render": (
        lambda e: add_to_body(lesson(e, 1), "One {{ 1 // 0 }} thing."),
        "day-01.md",
        13,
        "error",
        "does not render: ZeroDivisionError",
    ),
    "relative-link": (
        lambda e: add_to_body(lesson(e, 1), "See [your journal](/journal) for more."),
        "day-01.md",
        13,
        "error",
        "link '/journal' is not an absolute http(s)://",
    ),
    "relative-image": (
        lambda e: add_to_body(lesson(e, 2), "Line one\nand ![a chart](chart.png) here."),
        "day-02.md",
        14,
        "error",
        "image 'chart.png' is not an absolute",
    ),
    "image-without-alt": (
        lambda e: add_to_body(lesson(e, 3), "![](https://cdn.example.org/a.png)"),
        "day-03.md",
        13,
        "warning",
        "has no alt text",
    ),
    "image-over-plain-http": (
        lambda e: add_to_body(lesson(e, 3), "![A quiet ward](http://cdn.example.org/a.png)"),
        "day-03.md",
        13,
        "warning",
        "is not https://",
    ),
    "image-written-into-the-lesson": (
        lambda e: add_to_body(lesson(e, 3), f"![A dot]({SMALL_DATA_IMAGE})"),
        "day-03.md",
        13,
        "warning",
        "Gmail does not show such images",
    ),
    "large-image-written-into-the-lesson": (
        lambda e: add_to_body(lesson(e, 5), f"![A chart]({LARGE_DATA_IMAGE})"),
        "day-05.md",
        13,
        "error",
        "KB in every message",
    ),
    "level-one-heading-in-a-lesson": (
        lambda e: add_to_body(lesson(e, 3), "# Part one\n\nText."),
        "day-03.md",
        13,
        "warning",
        "start the lesson's headings at ##",
    ),
    "subject-names-another-day": (
        lambda e: edit(lesson(e, 2), 'subject: "Day 2:', 'subject: "Day 3:'),
        "day-02.md",
        3,
        "warning",
        "the subject says Day 3 but this is Day 2",
    ),
    "a-day-added-after-the-last": (
        lambda e: shutil.copy(lesson(e, 7), e / "white-coat" / "day-08.md"),
        "day-07.md",
        13,
        "warning",
        "reads as the last lesson ('the final lesson') but Day 8 follows",
    ),
    "html-over-100kb": (
        lambda e: add_to_body(lesson(e, 4), "\n\n".join([LONG_TEXT] * 7)),
        "day-04.md",
        1,
        "warning",
        "Gmail clips",
    ),
    "reading-time": (
        lambda e: add_to_body(lesson(e, 6), LONG_TEXT[:6000]),
        "day-06.md",
        1,
        "warning",
        "more than twice the course median",
    ),
    "skipped-heading": (
        lambda e: add_to_body(lesson(e, 3), "## Part one\n\nText.\n\n#### Detail"),
        "day-03.md",
        17,
        "warning",
        "heading level 4 follows level 2",
    ),
    "long-subject": (
        lambda e: edit(
            lesson(e, 1), 'you carry"', 'you carry, and what you might finally set down"'
        ),
        "day-01.md",
        3,
        "warning",
        "the subject is 73 characters",
    ),
    "layout-without-lang": (
        lambda e: edit(e / "_layout" / "base.html", '<html lang="en">', "<html>"),
        "base.html",
        2,
        "warning",
        "no lang attribute",
    ),
    "layout-table-without-role": (
        lambda e: edit(
            e / "_layout" / "base.html", 'role="presentation" class="card"', 'class="card"'
        ),
        "base.html",
        16,
        "warning",
        'without role="presentation"',
    ),
    "layout-relative-link": (
        lambda e: edit(e / "_layout" / "base.html", 'href="{{ links.journal }}"', 'href="journal"'),
        "base.html",
        35,
        "error",
        "link 'journal' is not an absolute",
    ),
    "course-bad-send-time": (
        lambda e: edit(e / "white-coat" / "course.toml", '"07:00"', '"7am"'),
        "course.toml",
        4,
        "error",
        "send_time must be local",
    ),
    "course-unknown-key": (
        lambda e: edit(e / "white-coat" / "course.toml", "skip_weekends", "skip_weekend"),
        "course.toml",
        7,
        "error",
        "unknown key 'skip_weekend'",
    ),
    "course-window-closes-before-it-opens": (
        lambda e: edit(e / "white-coat" / "course.toml", '"21:00"', '"06:00"'),
        "course.toml",
        6,
        "error",
        "latest_send_time (06:00) must be later than send_time",
    ),
    "notes-file-ignored": (
        lambda e: (e / "white-coat" / "NOTES.md").write_text("# ideas\n- day 8?\n"),
        "NOTES.md",
        1,
        "ignored",
        "not a lesson",
    ),
    "misnamed-lesson": (
        lambda e: (e / "white-coat" / "day-8.md").write_text("---\ntitle: x\n---\nx"),
        "day-8.md",
        1,
        "error",
        "named day-01.md",
    ),
}


@pytest.mark.parametrize(("rule"), list(RULES))
def test_each_rule_finds_its_problem_at_the_line_in_the_file(emails: Path, rule: str) -> None:
    breakage, name, line, severity, words = RULES[rule]
    assert findings(emails) == [], "the sample course is clean to start with"
    breakage(emails)
    hits = [f for f in findings(emails) if f.path.name == name and words in f.message]
    assert [(f.line, f.severity) for f in hits] == [(line, severity)], findings(emails)


def test_every_problem_is_reported_in_one_run(emails: Path, tmp_path: Path) -> None:
    chosen = [
        "gap-in-days",
        "missing-subject",
        "unknown-variable",
        "front-matter-colon",
        "relative-link",
        "long-subject",
        "notes-file-ignored",
    ]
    for rule in chosen:
        RULES[rule][0](emails)
    settings = make_settings(tmp_path, emails_dir=str(emails))
    result = CliRunner().invoke(cli, ["check"], env=settings_env(settings))
    assert result.exit_code == 1
    lines = result.output.splitlines()
    for rule in chosen:
        _b, name, line, severity, words = RULES[rule]
        prefix = f"{lesson(emails, 1).parent / name}:{line}: "
        if severity != "error":
            prefix += f"{severity}: "
        assert any(x.startswith(prefix) and words in x for x in lines), (rule, result.output)
    assert "Traceback" not in result.output
    assert lines[-1].startswith("white-coat: ") and lines[-1].endswith(
        "6 errors, 1 warnings, 1 files ignored: FAILED"
    )


def run_check(emails: Path, tmp_path: Path, *args: str) -> Result:
    settings = make_settings(tmp_path, emails_dir=str(emails))
    return CliRunner().invoke(cli, ["check", *args], env=settings_env(settings))


def test_warnings_pass_unless_strict(emails: Path, tmp_path: Path) -> None:
    RULES["long-subject"][0](emails)
    relaxed = run_check(emails, tmp_path)
    assert relaxed.exit_code == 0, relaxed.output
    assert "day-01.md:3: warning: the subject is 73 characters" in relaxed.output
    strict = run_check(emails, tmp_path, "--strict")
    assert strict.exit_code == 1
    assert "day-01.md:3: the subject is 73 characters" in strict.output


def test_json_lists_findings_for_ci(emails: Path, tmp_path: Path) -> None:
    RULES["unknown-variable"][0](emails)
    RULES["notes-file-ignored"][0](emails)
    result = run_check(emails, tmp_path, "--json", "white-coat")
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert (data["ok"], data["errors"], data["warnings"]) == (False, 1, 0)
    assert data["courses"] == [{"slug": "white-coat", "lessons": 7}]
    by_severity = {f["severity"]: f for f in data["findings"]}
    assert by_severity["error"]["file"].endswith("day-05.md")
    assert (by_severity["error"]["line"], by_severity["error"]["day"]) == (13, 5)
    assert by_severity["ignored"]["file"].endswith("NOTES.md")


def test_a_notes_file_does_not_stop_the_course_from_loading(emails: Path) -> None:
    RULES["notes-file-ignored"][0](emails)
    (emails / "white-coat" / "drafts").mkdir()
    assert Catalog(emails).course("white-coat").length == 7


@pytest.mark.parametrize("rule", ["unknown-variable", "front-matter-colon", "template-syntax"])
def test_the_scheduler_refuses_the_course_naming_the_line(emails: Path, rule: str) -> None:
    breakage, name, line, _severity, words = RULES[rule]
    breakage(emails)
    with pytest.raises(CourseError) as caught:
        Catalog(emails).course("white-coat")
    assert f"{name}:{line}: " in str(caught.value)


def _body_link_and_variable(day: int) -> Breakage:
    return lambda e: add_to_body(lesson(e, day), "Write to {{ email }} or see [it](/journal).")


def _both(*breakages: Breakage) -> Breakage:
    def apply(e: Path) -> None:
        for breakage in breakages:
            breakage(e)

    return apply


LINK = "link '/journal' is not an absolute"
EMAIL = "unknown variable 'email'"

# Several problems in one file (or one that used to hide another's): each must be reported.
# (breakage, [(file, line, severity, words), ...])
TOGETHER: dict[str, tuple[Breakage, list[tuple[str, int, str, str]]]] = {
    "a variable and a link on one line": (
        _body_link_and_variable(1),
        [("day-01.md", 13, "error", EMAIL), ("day-01.md", 13, "error", LINK)],
    ),
    "a syntax error and a link below it": (
        lambda e: add_to_body(lesson(e, 6), "Hello {{ greeting }\n\nSee [it](/journal)."),
        [("day-06.md", 13, "error", "template syntax error"), ("day-06.md", 15, "error", LINK)],
    ),
    "text that does not render and a skipped heading": (
        lambda e: add_to_body(lesson(e, 1), "One {{ 1 // 0 }} thing.\n\n## A\n\n#### B"),
        [
            ("day-01.md", 13, "error", "does not render"),
            ("day-01.md", 17, "warning", "heading level 4 follows level 2"),
        ],
    ),
    "a huge repetition and a link on one line": (
        lambda e: add_to_body(lesson(e, 3), 'Long {{ "ab" * 100000000000 }} and [it](/journal).'),
        [("day-03.md", 13, "error", "not allowed in a template"), ("day-03.md", 13, "error", LINK)],
    ),
    "a missing subject and the lesson's text": (
        _both(RULES["missing-subject"][0], _body_link_and_variable(2)),
        [
            ("day-02.md", 1, "error", "subject is missing"),
            ("day-02.md", 3, "error", "unknown front matter key 'subjekt'"),
            ("day-02.md", 13, "error", EMAIL),
            ("day-02.md", 13, "error", LINK),
        ],
    ),
    "front matter that is not YAML and the lesson's text": (
        _both(RULES["front-matter-colon"][0], _body_link_and_variable(7)),
        [
            ("day-07.md", 4, "error", "put the whole value in double quotes"),
            ("day-07.md", 13, "error", EMAIL),
            ("day-07.md", 13, "error", LINK),
        ],
    ),
    "no front matter and the lesson's text": (
        lambda e: lesson(e, 3).write_text("Hello {{ email }}.\n\nSee [it](/journal).\n"),
        [
            ("day-03.md", 1, "error", "no front matter"),
            ("day-03.md", 1, "error", EMAIL),
            ("day-03.md", 3, "error", LINK),
        ],
    ),
    "a broken course.toml and the lessons": (
        _both(RULES["course-bad-send-time"][0], _body_link_and_variable(5)),
        [
            ("course.toml", 4, "error", "send_time must be local"),
            ("day-05.md", 13, "error", EMAIL),
            ("day-05.md", 13, "error", LINK),
        ],
    ),
    "a relative link in the layout and a lesson too big": (
        _both(RULES["layout-relative-link"][0], RULES["html-over-100kb"][0]),
        [
            ("base.html", 35, "error", "link 'journal' is not an absolute"),
            ("day-04.md", 1, "warning", "Gmail clips"),
        ],
    ),
    "a missing layout file and the rest of the layout": (
        _both(
            lambda e: (e / "_layout" / "style.css").unlink(),
            RULES["layout-without-lang"][0],
        ),
        [
            ("style.css", 1, "error", "layout file missing"),
            ("base.html", 2, "warning", "no lang attribute"),
        ],
    ),
}


@pytest.mark.parametrize("case", list(TOGETHER))
def test_every_problem_in_a_file_is_reported_not_only_the_first(emails: Path, case: str) -> None:
    breakage, expected = TOGETHER[case]
    breakage(emails)
    found = findings(emails)
    for name, line, severity, words in expected:
        hits = [f for f in found if f.path.name == name and words in f.message]
        assert [(f.line, f.severity) for f in hits] == [(line, severity)], (words, found)


def test_a_lesson_with_a_bad_link_is_still_rendered_and_measured(emails: Path) -> None:
    RULES["html-over-100kb"][0](emails)  # day 4
    edit(lesson(emails, 4), "{{ salutation }}", "See [it](/journal). {{ salutation }}")
    found = [f.message for f in findings(emails) if f.path.name == "day-04.md"]
    assert any(m.startswith("link '/journal'") for m in found), found
    assert any("Gmail clips" in m for m in found), found


def test_a_large_image_written_into_a_lesson_is_shown_short_and_not_read_as_words(
    emails: Path,
) -> None:
    add_to_body(lesson(emails, 5), f"![A chart]({LARGE_DATA_IMAGE})")
    found = findings(emails)
    assert found, "the data: image is refused"
    assert max(len(f.message) for f in found) < 300, "the 200 KB address is not printed whole"
    assert "(200,022 characters)" in " ".join(f.message for f in found)
    assert not [f for f in found if "reading time" in f.message], found


def test_run_refusing_a_broken_course_counts_the_errors_check_counts(
    emails: Path, tmp_path: Path
) -> None:
    for rule in ("missing-subject", "unknown-variable", "relative-link", "does-not-render"):
        RULES[rule][0](emails)
    settings = make_settings(tmp_path, emails_dir=str(emails))
    checked = CliRunner().invoke(cli, ["check"], env=settings_env(settings))
    count = re.search(r"(\d+) errors, \d+ warnings", checked.output).group(1)  # type: ignore[union-attr]
    assert int(count) >= 4, checked.output
    result = CliRunner().invoke(cli, ["run"], env=settings_env(settings))
    assert result.exit_code == 1
    assert f"course 'white-coat' cannot be sent: {count} error(s), the first: " in result.output
    assert "(dripcourse check white-coat lists them all)" in result.output
    assert "more:" not in result.output and "Traceback" not in result.output
