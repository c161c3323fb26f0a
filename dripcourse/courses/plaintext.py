"""A lesson's Markdown as the plain-text part of its email: no Markdown marks, lines re-flowed.

A reader whose mail program shows the text part (a watch, a screen reader set to text, a
strict hospital client) should read prose, not ``*really*``, ``![alt](url)`` or the source's
100-column line breaks. Emphasis loses its marks, a link shows its address after its text, an
image its description, a heading stands on its own line in capitals; every paragraph is then
re-flowed to ``WIDTH`` columns, as RFC 5322 recommends lines under 78 characters. An address
is never broken across lines, so a line holding a long one may be longer.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence

from markdown_it import MarkdownIt
from markdown_it.token import Token

WIDTH = 72
_LIST_MARK = re.compile(r"^(\s*)(?:[-*+>] |\d{1,3}[.)] )")
_MARKDOWN = MarkdownIt("commonmark", {"html": False, "typographer": False})


def markdown_to_text(source: str) -> str:
    """``source`` (Markdown) as plain text: blocks apart by a blank line, the items of a tight
    list on consecutive lines, each block one line until ``reflow``."""
    blocks: list[tuple[str, bool]] = []
    _blocks(_MARKDOWN.parse(source), blocks)
    text, was_tight = "", False
    for block, tight in blocks:
        if not block.strip():
            continue
        if text:
            text += "\n" if tight and was_tight else "\n\n"
        text, was_tight = text + block, tight
    return text


def _blocks(tokens: Sequence[Token], out: list[tuple[str, bool]]) -> None:
    prefixes: list[str] = []  # the marks in front of the next paragraph: list items, quotes
    numbers: list[int | None] = []  # per open list: the next number, None for bullets
    heading = False
    tight = False  # inside a tight list: its items go on consecutive lines
    for token in tokens:
        kind = token.type
        if kind == "paragraph_open":
            tight = token.hidden
        if kind == "bullet_list_open":
            numbers.append(None)
        elif kind == "ordered_list_open":
            numbers.append(int(token.attrGet("start") or 1))
        elif kind in ("bullet_list_close", "ordered_list_close"):
            numbers.pop()
        elif kind == "list_item_open":
            number = numbers[-1] if numbers else None
            if number is None:
                prefixes.append("- ")
            else:
                prefixes.append(f"{number}. ")
                numbers[-1] = number + 1
        elif kind == "blockquote_open":
            prefixes.append("> ")
        elif kind in ("list_item_close", "blockquote_close"):
            prefixes.pop()
        elif kind == "heading_open":
            heading = True
        elif kind == "heading_close":
            heading = False
        elif kind == "inline":
            text = _inline(token.children or [])
            if heading:
                text = text.upper()
            out.append((_prefixed(text, prefixes), tight))
        elif kind in ("fence", "code_block"):
            code = token.content.rstrip("\n").split("\n")
            out.append(("\n".join("    " + line for line in code), False))
        elif kind == "hr":
            out.append(("* * *", False))


def _prefixed(text: str, prefixes: list[str]) -> str:
    """A paragraph under its list marks and quote marks; a list item's second paragraph lines
    up under its first, without the mark again."""
    if not prefixes:
        return text
    lead = "".join(" " * len(p) if p[0] in "-0123456789" else p for p in prefixes[:-1])
    mark = prefixes[-1]
    prefixes[-1] = " " * len(mark) if mark[0] in "-0123456789" else mark
    return lead + mark + text


def _inline(children: Sequence[Token]) -> str:
    parts: list[str] = []
    hrefs: list[tuple[str, int]] = []  # each open link: its address and where its text began
    for child in children:
        kind = child.type
        if kind in ("text", "code_inline"):
            parts.append(child.content)
        elif kind == "softbreak":
            parts.append(" ")
        elif kind == "hardbreak":
            parts.append("\n")
        elif kind == "link_open":
            hrefs.append((str(child.attrGet("href") or ""), len(parts)))
        elif kind == "link_close" and hrefs:
            href, start = hrefs.pop()
            shown = "".join(parts[start:]).strip()
            if href and href not in (shown, f"mailto:{shown}"):
                parts.append(f" ({href})")
        elif kind == "image":
            alt = "".join(c.content for c in child.children or []) or child.content
            parts.append(f"[{alt.strip() or 'image'}]")
        # em, strong: their marks are left out, their text stays.
    return "".join(parts)


def reflow(text: str, width: int = WIDTH) -> str:
    """Re-flow every line longer than ``width`` into lines of at most ``width`` columns,
    keeping its indentation and list or quote mark (continuation lines hang under the text);
    shorter lines, blank lines and the line breaks between them are kept as they are."""
    lines: list[str] = []
    for line in text.split("\n"):
        if len(line) <= width:
            lines.append(line)
            continue
        mark = _LIST_MARK.match(line)
        if mark is None:
            first = rest = line[: len(line) - len(line.lstrip())]
        else:
            first = mark.group(0)
            quoted = first.strip() == ">"
            rest = mark.group(1) + "> " if quoted else " " * len(first)
        lines.extend(
            textwrap.wrap(
                line[len(first) :],
                width=width,
                initial_indent=first,
                subsequent_indent=rest,
                break_long_words=False,
                break_on_hyphens=False,
            )
            or [line]
        )
    return "\n".join(lines)
