"""Seen in a real browser: every sample lesson, and the studio index, fit a phone and a desktop."""

from __future__ import annotations

import base64
import re
import shutil
import struct
import zlib
from pathlib import Path

import pytest

from dripcourse.courses.course_folder import load_course
from dripcourse.courses.preview import lesson_message, sample_reader
from dripcourse.courses.render import Renderer
from dripcourse.courses.studio import create_studio
from dripcourse.links import Links
from dripcourse.runtime import Runtime
from tests import browser
from tests.conftest import EMAILS, service_missing, utc

WIDTHS = (375, 600)
BUTTON = "a.button"  # "Write your reflection"
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def chromium() -> None:
    if not browser.available():
        service_missing("Chromium", f"{browser.CHROMIUM} is not installed")


def lesson_pages() -> list[browser.Page]:
    course = load_course(EMAILS, "white-coat")
    renderer = Renderer(EMAILS)
    links = Links(secret_key="k", base_url="https://course.example.org")
    pages = []
    for lesson in course.lessons:
        msg = lesson_message(
            renderer, course, lesson.day, links, sample_reader(), now=utc(2026, 11, 25, 7)
        )
        (html_part,) = [p for p in msg.walk() if p.get_content_type() == "text/html"]
        body = html_part.get_payload(decode=True).decode("utf-8")  # type: ignore[union-attr]
        pages.append(browser.Page(f"day {lesson.day}", body, BUTTON))
    return pages


def test_every_sample_lesson_fits_without_scrolling_sideways(tmp_path: Path) -> None:
    measured = browser.measure(lesson_pages(), WIDTHS, tmp_path)
    assert len(measured) == 7 * len(WIDTHS)
    wide = [(m.name, m.width, m.scroll_width) for m in measured if m.scrolls_sideways]
    assert wide == []
    hidden = [(m.name, m.width, m.button) for m in measured if not m.button_visible]
    assert hidden == []


def png(path: Path, width: int, height: int) -> Path:
    """A plain grey PNG of ``width`` x ``height`` pixels, made without an imaging library."""
    row = b"\x00" + b"\x99\x99\x99" * width
    raw = zlib.compress(row * height)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")
    )
    return path


def test_a_lesson_image_3000_pixels_wide_fits_the_column(tmp_path: Path) -> None:
    emails = tmp_path / "emails"
    shutil.copytree(EMAILS, emails)
    # Written into the lesson, so the page needs no server (markdown-it refuses file: links).
    data = base64.b64encode(png(tmp_path / "ward.png", 3000, 40).read_bytes()).decode("ascii")
    picture = f"data:image/png;base64,{data}"
    day = emails / "white-coat" / "day-02.md"
    day.write_text(
        day.read_text(encoding="utf-8").replace(
            "{{ salutation }}, {{ greeting }}.\n",
            f"{{{{ salutation }}}}, {{{{ greeting }}}}.\n\n![A quiet ward at night]({picture})\n",
        ),
        encoding="utf-8",
    )
    course = load_course(emails, "white-coat")
    links = Links(secret_key="k", base_url="https://course.example.org")
    msg = lesson_message(
        Renderer(emails), course, 2, links, sample_reader(), now=utc(2026, 11, 25, 7)
    )
    (part,) = [p for p in msg.walk() if p.get_content_type() == "text/html"]
    body = part.get_payload(decode=True).decode("utf-8")  # type: ignore[union-attr]
    # Outlook on Windows ignores max-width: the width attribute holds it to the column there.
    (img,) = re.findall(r"<img [^>]+>", body)
    assert 'width="536"' in img and "max-width:100%" in img
    measured = browser.measure([browser.Page("image", body, BUTTON)], WIDTHS, tmp_path)
    assert [(m.width, m.scrolls_sideways, m.button_visible) for m in measured] == [
        (375, False, True),
        (600, False, True),
    ]


def test_the_studio_index_fits_a_phone_and_a_desktop(rt: Runtime, tmp_path: Path) -> None:
    index = create_studio(rt).test_client().get("/").get_data(as_text=True)
    measured = browser.measure([browser.Page("studio index", index)], WIDTHS, tmp_path)
    assert [(m.width, m.scrolls_sideways) for m in measured] == [(375, False), (600, False)]


@pytest.mark.parametrize(
    ("page", "width", "scrolls", "button_visible"),
    [
        ('<div style="width:480px">wide</div><a class="button">Go</a>', 375, True, True),
        (
            '<div style="overflow:hidden"><a class="button" style="display:inline-block;'
            'margin-left:650px">Go</a></div>',
            600,
            False,
            False,
        ),
        ('<a class="button" style="display:none">Go</a>', 600, False, False),
    ],
    ids=["wider-than-the-phone", "button-past-the-edge", "button-hidden"],
)
def test_the_measurements_catch_a_page_that_does_not_fit(
    tmp_path: Path, page: str, width: int, scrolls: bool, button_visible: bool
) -> None:
    """The test above could pass by measuring nothing; these pages must fail it."""
    html = f'<!DOCTYPE html><html><body style="margin:0">{page}</body></html>'
    (measured,) = browser.measure([browser.Page("bad", html, BUTTON)], (width,), tmp_path)
    assert (measured.scrolls_sideways, measured.button_visible) == (scrolls, button_visible)
