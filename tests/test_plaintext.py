"""The plain-text part: a lesson's Markdown as prose, re-flowed under 78 columns."""

from __future__ import annotations

import email
import email.policy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dripcourse.courses.plaintext import WIDTH, markdown_to_text, reflow
from dripcourse.courses.render import Renderer
from tests.conftest import EMAILS
from tests.test_render import ALL_LESSONS, reader, render


@pytest.mark.parametrize(
    ("markdown", "text"),
    [
        ("I *really* mean **it**.", "I really mean it."),
        ("See [the guide](https://x.org/g).", "See the guide (https://x.org/g)."),
        (
            "Mail <https://x.org/a> or [me@x.org](mailto:me@x.org).",
            "Mail https://x.org/a or me@x.org.",
        ),
        ("![A calm ward at night](https://x.org/w.png)", "[A calm ward at night]"),
        ("## What to keep", "WHAT TO KEEP"),
        ("- one\n- two\n\nAfter.", "- one\n- two\n\nAfter."),
        ("1. first\n2. second", "1. first\n2. second"),
        ("> Said once\n> on a ward.", "> Said once on a ward."),
        ("Use `code` as is.", "Use code as is."),
    ],
)
def test_markdown_becomes_prose_without_its_marks(markdown: str, text: str) -> None:
    assert markdown_to_text(markdown) == text


def test_a_long_list_item_hangs_under_its_text_and_a_quote_keeps_its_mark() -> None:
    item = "- " + "word " * 30
    assert reflow(item.strip()).splitlines()[1].startswith("  word")
    quote = "> " + "word " * 30
    assert all(line.startswith("> ") for line in reflow(quote.strip()).splitlines())


@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=600))
def test_reflow_keeps_every_word_in_order_and_breaks_only_at_spaces(text: str) -> None:
    flowed = reflow(text)
    assert flowed.split() == text.split()
    for line in flowed.split("\n"):
        assert len(line) <= WIDTH or " " not in line.strip() or line in text.split("\n")


@pytest.mark.parametrize(("slug", "day"), ALL_LESSONS)
def test_every_lesson_text_part_is_prose_under_78_columns(slug: str, day: int) -> None:
    wire = render(Renderer(EMAILS, reply_by_email=True), slug, day, reader(day=day))
    msg = email.message_from_bytes(wire, policy=email.policy.default)
    text = msg.get_body(("plain",)).get_content()
    lines = text.splitlines()
    # An address is never broken: a line that is one link may be longer (their tokens are).
    prose = [line for line in lines if not line.startswith(("https://", "http://"))]
    assert max(len(line) for line in prose) <= 78, max(prose, key=len)
    for mark in ("*", "![", "](", "__"):
        assert not [line for line in prose if mark in line], mark  # a link's token may hold "__"
    assert not [line for line in lines if line.startswith("#")]
