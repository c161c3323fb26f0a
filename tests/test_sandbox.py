"""Course content renders sandboxed, with only the documented variables."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from dripcourse.cli import cli
from dripcourse.courses.course_folder import load_course
from dripcourse.courses.render import LAYOUT_VARIABLES, LESSON_VARIABLES, Renderer
from dripcourse.errors import CourseError
from tests.conftest import EMAILS, ROOT, make_settings
from tests.workers import settings_env

COURSE = "white-coat"


def emails_with(tmp_path: Path, file: str, text: str) -> Path:
    """A copy of emails/ with ``text`` added to ``file`` (a lesson or a layout file)."""
    emails = tmp_path / "emails"
    shutil.copytree(EMAILS, emails)
    target = emails / file
    source = target.read_text(encoding="utf-8")
    if file.endswith(".html"):
        source = source.replace("</body>", f"{text}\n</body>")
    else:
        source += f"\n{text}\n"
    target.write_text(source, encoding="utf-8")
    return emails


def check(emails: Path) -> None:
    Renderer(emails).check(load_course(emails, COURSE))


ESCAPES = {
    "shell through lipsum": "{{ lipsum.__globals__['os'].popen('touch {marker}').read() }}",
    "shell through cycler": ("{{ cycler.__init__.__globals__.os.popen('touch {marker}').read() }}"),
    "environment through a string": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "secret through format": "{{ '{0.__class__.__init__.__globals__}'.format(day) }}",
    "key through the environment": "{{ cycler.__init__.__globals__.os.environ }}",
}


@pytest.mark.parametrize("file", [f"{COURSE}/day-02.md", "_layout/base.html", "_layout/base.txt"])
@pytest.mark.parametrize("template", ESCAPES.values(), ids=ESCAPES.keys())
def test_course_content_cannot_reach_the_process(tmp_path: Path, file: str, template: str) -> None:
    marker = tmp_path / "ran"
    emails = emails_with(tmp_path, file, template.replace("{marker}", str(marker)))
    with pytest.raises(CourseError) as raised:
        check(emails)
    assert str(raised.value).startswith(str(emails / file.split("/")[0]))
    assert not marker.exists()


UNDOCUMENTED = {
    "the sender in a lesson": (f"{COURSE}/day-02.md", "{{ course.sender }}"),
    "the lesson's file in a lesson": (f"{COURSE}/day-02.md", "{{ lesson.path }}"),
    "the address in a lesson": (f"{COURSE}/day-02.md", "{{ email }}"),
    "the sender in the layout": ("_layout/base.html", "{{ course.sender }}"),
    "the lesson's file in the layout": ("_layout/base.txt", "{{ lesson.path }}"),
    "the address in the layout": ("_layout/base.html", "{{ email }}"),
    "the address through subscriber": ("_layout/base.html", "{{ subscriber.email }}"),
    "the lesson body's source": ("_layout/base.txt", "{{ lesson.body }}"),
    "a Jinja global": (f"{COURSE}/day-02.md", "{{ range(3) }}"),
}


@pytest.mark.parametrize(("file", "template"), UNDOCUMENTED.values(), ids=UNDOCUMENTED.keys())
def test_an_undocumented_variable_is_an_error_naming_the_file(
    tmp_path: Path, file: str, template: str
) -> None:
    emails = emails_with(tmp_path, file, template)
    with pytest.raises(CourseError, match="unknown template variable|has no attribute"):
        check(emails)


def test_every_documented_variable_renders(tmp_path: Path) -> None:
    lesson_uses = " ".join("{{ " + name + " }}" for name in LESSON_VARIABLES)
    layout_uses = " ".join("{{ " + name + " }}" for name in LAYOUT_VARIABLES if name != "body")
    emails = emails_with(tmp_path, f"{COURSE}/day-02.md", lesson_uses)
    for layout in ("_layout/base.html", "_layout/base.txt"):
        path = emails / layout
        path.write_text(path.read_text().replace("{{ body }}", "{{ body }} " + layout_uses))
    check(emails)


def test_the_command_line_shows_a_sandbox_refusal_as_one_line(
    tmp_path: Path, sqlite_url: str
) -> None:
    emails = emails_with(tmp_path, f"{COURSE}/day-03.md", ESCAPES["key through the environment"])
    settings = make_settings(tmp_path, database_url=sqlite_url, emails_dir=str(emails))
    result = CliRunner().invoke(cli, ["check"], env=settings_env(settings))
    assert result.exit_code == 1
    # check's format: one finding per line as file:line: message, then the course's summary.
    finding, summary = result.output.strip().splitlines()
    assert finding.startswith(f"{emails / COURSE / 'day-03.md'}:")
    assert "not allowed in a template" in finding
    assert summary.endswith("1 errors, 0 warnings, 0 files ignored: FAILED")
    assert "test-secret-key" not in result.output


def test_the_docs_list_exactly_the_variables_templates_get() -> None:
    docs = (ROOT / "docs" / "courses.md").read_text(encoding="utf-8")
    section = docs.split("## Variables", 1)[1].split("\n## ", 1)[0]
    lesson = section.split("### In a lesson", 1)[1].split("### In the layout", 1)[0]
    layout = section.split("### In the layout", 1)[1]

    def listed(text: str) -> list[str]:
        return re.findall(r"^\| `\{\{ ([\w.]+) \}\}` \|", text, flags=re.MULTILINE)

    assert listed(lesson) == list(LESSON_VARIABLES)
    assert listed(layout) == list(LAYOUT_VARIABLES)


HUGE = {
    "a long text": '{{ "a" * 100000000 }}',
    "a long text the other way": '{{ 100000000 * "a" }}',
    "a long text from a long text": '{{ ("a" * 100000) * 1000 }}',
    "a long list": "{{ [1] * 100000000 }}",
    "a huge number": "{{ 9 ** 9999999 }}",
}


@pytest.mark.parametrize("template", HUGE.values(), ids=HUGE.keys())
def test_one_expression_cannot_take_the_machines_memory(tmp_path: Path, template: str) -> None:
    emails = emails_with(tmp_path, f"{COURSE}/day-02.md", template)
    with pytest.raises(CourseError, match="not allowed") as raised:
        check(emails)
    assert str(raised.value).startswith(str(emails / COURSE / "day-02.md"))


def test_ordinary_arithmetic_still_renders(tmp_path: Path) -> None:
    emails = emails_with(
        tmp_path, f"{COURSE}/day-02.md", '{{ "=" * 20 }} {{ day * 2 }} {{ 2 ** 8 }}'
    )
    check(emails)
