"""A journal worth keeping: each lesson as it was sent, the completion note, the downloads."""

from __future__ import annotations

import datetime as dt
import html
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from flask.testing import FlaskClient
from hypothesis import example, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from sqlalchemy import update

from dripcourse import links
from dripcourse.db import transaction
from dripcourse.models import Delivery
from dripcourse.reader import journal, reflections
from dripcourse.runtime import Runtime
from tests.conftest import EMAILS, make_settings, utc
from tests.test_web_support import Clock, enroll, load, make_app, path, post_form, send_days

KATHMANDU = "Asia/Kathmandu"
DAY_1 = utc(2025, 3, 3, 1, 15)  # Monday 07:00 in Kathmandu
AFTER_THE_COURSE = utc(2025, 3, 10, 12)
FIRST_LINE = "Good morning, Kiran."


@pytest.fixture
def emails(tmp_path: Path) -> Path:
    """A copy of the course content that the test may edit, as staff would."""
    copy = tmp_path / "emails"
    shutil.copytree(EMAILS, copy)
    return copy


@pytest.fixture
def rt(tmp_path: Path, database_url: str, emails: Path) -> Iterator[Runtime]:
    runtime = Runtime(make_settings(tmp_path, database_url=database_url, emails_dir=str(emails)))
    yield runtime
    runtime.close()


@pytest.fixture
def kiran(rt: Runtime) -> int:
    """In Kathmandu; has had Days 1-3 of seven."""
    enrollment_id = enroll(rt, "kiran@example.org", timezone=KATHMANDU)
    send_days(rt, 3, first=DAY_1)
    return enrollment_id


def client_for(rt: Runtime, now: dt.datetime = AFTER_THE_COURSE) -> FlaskClient:
    return make_app(rt, Clock(now)).test_client()


def page(client: FlaskClient, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, url
    return html.unescape(response.get_data(as_text=True))


def edit_day_1(emails: Path) -> None:
    lesson = emails / "white-coat" / "day-01.md"
    text = lesson.read_text(encoding="utf-8")
    text = text.replace("title: Noticing the Weight", "title: A Rewritten First Day")
    text = text.replace("Medicine trains us to notice", "Staff rewrote this: medicine teaches")
    lesson.write_text(text, encoding="utf-8")


def test_the_lesson_page_shows_the_version_sent_after_the_course_file_changes(
    rt: Runtime, kiran: int, emails: Path
) -> None:
    edit_day_1(emails)
    later = Runtime(rt.settings)  # a process started after the edit reads the new words
    assert later.catalog.course("white-coat").lesson(1).title == "A Rewritten First Day"
    client = client_for(later)
    lesson = page(client, path(later, links.LESSON, kiran, 1))
    assert "Day 1: Noticing the Weight" in lesson
    assert "Medicine trains us to notice" in lesson and "Staff rewrote this" not in lesson
    assert FIRST_LINE in lesson  # personalised on the page, as in the email
    assert "Sent to you Monday 3 March 2025 at 07:00 (Asia/Kathmandu)" in lesson
    journal = page(client, path(later, links.JOURNAL, kiran))
    assert "Day 1: Noticing the Weight" in journal and "A Rewritten First Day" not in journal
    # Someone who gets Day 1 after the edit reads the new version.
    newcomer = enroll(later, "nima@example.org", timezone=KATHMANDU, cohort="later")
    send_days(later, 1, first=DAY_1 + dt.timedelta(days=7))
    assert "Day 1: A Rewritten First Day" in page(client, path(later, links.LESSON, newcomer, 1))
    later.close()


def test_a_lesson_sent_before_versions_were_kept_shows_todays_words_and_says_so(
    rt: Runtime, kiran: int
) -> None:
    with transaction(rt.sessions) as session:
        session.execute(update(Delivery).values(lesson_version_id=None))
    lesson = page(client_for(rt), path(rt, links.LESSON, kiran, 2))
    assert "This is the lesson as it reads today" in lesson
    assert rt.catalog.course("white-coat").lesson(2).title in lesson


@pytest.mark.parametrize("day", [4, 0, 99])
def test_a_lesson_not_sent_to_them_is_not_shown(rt: Runtime, kiran: int, day: int) -> None:
    assert client_for(rt).get(path(rt, links.LESSON, kiran, day)).status_code == 404


def test_the_journal_lists_lessons_questions_reflections_and_local_times(
    rt: Runtime, kiran: int
) -> None:
    client = client_for(rt, utc(2025, 3, 5, 20))  # Thursday 01:45 in Kathmandu
    post_form(client, path(rt, links.REFLECT, kiran, 2), reflection="Night thoughts.")
    journal = page(client, path(rt, links.JOURNAL, kiran))
    lesson_2 = rt.catalog.course("white-coat").lesson(2)
    for text in (
        f"Day 2: {lesson_2.title}",
        lesson_2.prompt,
        *lesson_2.questions,
        "Night thoughts.",
        "Saved Thursday 6 March 2025 at 01:45 (Asia/Kathmandu)",
        "Sent Tuesday 4 March 2025 at 07:00 (Asia/Kathmandu)",
        "Read the lesson",
    ):
        assert text in journal, text
    assert journal.index("Day 3:") < journal.index("Day 2:") < journal.index("Day 1:")
    assert "Course completed" not in journal


@pytest.fixture
def finished(rt: Runtime, kiran: int) -> int:
    """Kiran has had all seven lessons and wrote about Days 1 and 7."""
    send_days(rt, 4, first=DAY_1 + dt.timedelta(days=3))
    client = client_for(rt, utc(2025, 3, 9, 15))
    post_form(client, path(rt, links.REFLECT, kiran, 1), reflection="# Not a heading\nLine two.")
    post_form(client, path(rt, links.REFLECT, kiran, 7), reflection="The last one.")
    assert load(rt, kiran).status == "completed"
    return kiran


COMPLETED = (
    "You completed all 7 days, from Monday 3 March 2025 to Sunday 9 March 2025, "
    "and wrote 2 reflections."
)


def test_when_the_course_is_completed_the_last_lesson_and_journal_say_so(
    rt: Runtime, finished: int
) -> None:
    client = client_for(rt)
    last = page(client, path(rt, links.LESSON, finished, 7))
    journal = page(client, path(rt, links.JOURNAL, finished))
    for shown in (last, journal):
        assert "Course completed." in shown and COMPLETED in shown
    assert "Download my journal" in journal
    assert COMPLETED not in page(client, path(rt, links.LESSON, finished, 6))


def test_the_journal_downloads_as_markdown_text_and_a_page_to_print(
    rt: Runtime, finished: int
) -> None:
    client = client_for(rt)
    base = path(rt, links.JOURNAL, finished)
    markdown = client.get(base + "/journal.md")
    assert markdown.headers["Content-Type"] == "text/markdown; charset=utf-8"
    assert markdown.headers["Content-Disposition"] == (
        'attachment; filename="white-coat-journal.md"'
    )
    md = markdown.get_data(as_text=True)
    course = rt.catalog.course("white-coat")
    assert md.startswith(f"# {course.title}: my journal\n\n{COMPLETED}\n")
    assert md.index("## Day 1:") < md.index("## Day 7:")  # oldest first, as a diary
    assert "> \\# Not a heading  \n> Line two." in md  # their words stay quoted, never markup
    assert "*Sent Monday 3 March 2025 at 07:00 (Asia/Kathmandu)*" in md
    assert "*Written Sunday 9 March 2025 at 20:45 (Asia/Kathmandu)*" in md
    assert f"**{course.lesson(4).prompt}**" in md and "*Nothing written for this day.*" in md
    text = client.get(base + "/journal.txt")
    assert text.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert "The last one.\n\nWritten Sunday 9 March 2025 at 20:45" in text.get_data(as_text=True)
    printable = page(client, base + "/journal.html")
    assert "@media print" in client.get("/static/web.css").get_data(as_text=True)
    assert printable.index("Day 1:") < printable.index("Day 7:")
    assert "The last one." in printable and COMPLETED in printable
    assert client.get(base + "/journal.exe").status_code == 404


def test_downloads_are_only_for_the_holder_of_the_journal_link(rt: Runtime, finished: int) -> None:
    client = client_for(rt)
    other = path(rt, links.PAUSE, finished).replace("/p/", "/j/")
    assert client.get(other + "/journal.md").status_code == 404


def test_the_reflect_page_asks_the_question_as_it_was_sent(
    rt: Runtime, kiran: int, emails: Path
) -> None:
    lesson = emails / "white-coat" / "day-01.md"
    old_prompt = rt.catalog.course("white-coat").lesson(1).prompt
    lesson.write_text(
        lesson.read_text(encoding="utf-8").replace(old_prompt, "A question asked later?"),
        encoding="utf-8",
    )
    later = Runtime(rt.settings)
    shown = page(client_for(later), path(later, links.REFLECT, kiran, 1))
    assert old_prompt in shown and "A question asked later?" not in shown
    assert "Day 1: Noticing the Weight" in shown and "Read the lesson again" in shown
    later.close()


# A Markdown viewer at its most eager: raw HTML on, GitHub's tables and strikethrough.
VIEWER = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
ATTACK = (
    '<script>alert("x")</script> <img src=x onerror=alert(1)>\n'
    "[my notes](https://evil.example) ![](https://evil.example/pixel.png) <https://evil.example>\n"
    "*so* tired, __really__, `code`, ~~struck~~, &amp; a | table\n"
    "# not a heading\n"
    "- not a list\n"
    "1. nor this\n"
    "    nor code\n"
    "---\n"
    "\n"
    "> not a quote\n"
    "C:\\Users\\me\\ <3, a < b"
)


def shown(markdown: str) -> str:
    """What a viewer shows of a quoted reflection: its text, line breaks and paragraphs; an
    assertion error if it made anything else of it (a link, HTML, emphasis, a heading)."""
    paragraphs: list[str] = []
    for token in VIEWER.parse(markdown):
        if token.type == "inline":
            parts = []
            for child in token.children or []:
                assert child.type in ("text", "softbreak", "hardbreak"), (child.type, markdown)
                parts.append({"softbreak": " ", "hardbreak": "\n"}.get(child.type, child.content))
            paragraphs.append("".join(parts))
        else:
            assert token.type.startswith(("blockquote_", "paragraph_")), (token.type, markdown)
    return "\n\n".join(paragraphs)


def as_written(text: str) -> str:
    """The text as one reads it: its lines and paragraphs, spaces within and around them aside."""
    lines = [" ".join(line.split()) for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


def quote_in(markdown: str) -> str:
    """The quoted lines of a journal download: what the subscriber wrote."""
    return "\n".join(line for line in markdown.split("\n") if line.startswith(">"))


def quoted(text: str) -> str:
    """The block quote the journal download makes of a reflection."""
    written = reflections.WrittenReflection(
        id=1,
        enrollment_id=1,
        day=1,
        prompt="Q?",
        body=text,
        created_at=AFTER_THE_COURSE,
        updated_at=AFTER_THE_COURSE,
    )
    entry = reflections.JournalEntry(1, "Title", "Q?", (), written)
    return quote_in(journal.as_markdown("Course", [entry], ZoneInfo("UTC"), None))


# Reflections heavy in what Markdown and HTML are made of, and any text at all.
MARKDOWNISH = st.text(alphabet=st.sampled_from(list("ab1 \t\n.)#>-+=*_`[]()!<>&;/\\~|:")))
REFLECTIONS = (MARKDOWNISH | st.text()).map(reflections.clean_text).filter(str.strip)


@settings(max_examples=300, deadline=None)
@given(text=REFLECTIONS)
@example(text=ATTACK)
def test_a_markdown_viewer_shows_any_reflection_as_written(text: str) -> None:
    assert as_written(shown(quoted(text))) == as_written(text)


def test_the_markdown_download_keeps_html_and_markdown_in_a_reflection_inert_and_readable(
    rt: Runtime, kiran: int
) -> None:
    client = client_for(rt)
    post_form(client, path(rt, links.REFLECT, kiran, 2), reflection=ATTACK)
    base = path(rt, links.JOURNAL, kiran)
    md = client.get(base + "/journal.md").get_data(as_text=True)
    quote = quote_in(md)
    rendered = VIEWER.render(quote)
    for markup in ("<script", "<img", "<a ", "<em>", "<strong>", "<code>", "<s>", "<h1>", "<li>"):
        assert markup not in rendered, markup
    assert as_written(shown(quote)) == as_written(ATTACK)
    # Readable still, in any text editor: the physician's own < and & are not turned into
    # entities (&lt;), only marked as text with a backslash.
    assert '\\<script>alert("x")\\</script>' in md and "\\&amp; a" in md
    assert "&lt;" not in md
    assert "\\[my notes\\](https://evil.example)" in md and "\\*so\\* tired" in md
    assert "> \\# not a heading  \n> \\- not a list  \n> 1\\. nor this  \n> nor code" in md
    assert ATTACK in client.get(base + "/journal.txt").get_data(as_text=True)  # the text as typed
