"""The newly written text of a reply: no quoted lesson, no reply header, no signature.

Three steps, each linear in the reply's length: the lesson the reply answers is removed
wherever it is quoted (lesson_quote.py: we know its words), then quoted history under a
header in any of 22 languages or an Outlook header block (quotes.py), then the signature
lines clients add. A generic trimmer was measured against this on public reply collections
(benchmarks/reply_parsers.py, benchmarks/RESULTS.md) and is not used: it was right less
often, cut bullet lists as signatures, and took quadratic time on hostile input (a 40 KB
reply of blank lines held a thread for minutes).

The text handed to these steps is bounded: a reply longer than ``MAX_TRIM_CHARS`` is
returned as it came (the caller's reflection length limit then refuses it), so no reply can
hold a listener thread or the poll loop.
"""

from __future__ import annotations

import re
from email.message import EmailMessage

import lxml.etree
import lxml.html

from dripcourse.inbound.lesson_quote import Lesson, remove_lesson
from dripcourse.inbound.quotes import (
    is_date_address_line,
    is_from_line,
    is_label_line,
    is_sent_from,
    is_separator,
    is_titled_separator,
    is_valediction,
    is_wrote_line,
    label_of,
    looks_like_header_start,
    quote_depth,
    split_inline_header,
)

# Beyond this many characters a reply is not trimmed at all. Well above the reflection
# limit (20,000 by default) so that a long reflection with the whole lesson quoted under
# it is still trimmed, and low enough that every step stays in milliseconds.
MAX_TRIM_CHARS = 100_000


def reply_text(msg: EmailMessage, *, lesson: str = "", max_chars: int = MAX_TRIM_CHARS) -> str:
    """The newly written text of a reply: the text part (or the HTML part when there is no
    text), without the quoted lesson, the reply header and the signature.

    ``lesson`` is the text of the lesson the reply answers, as it was sent (any text that
    holds its words will do); without it, quotes are found by their headers alone.
    """
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    assert isinstance(part, EmailMessage)
    try:
        content = part.get_content()
    except (LookupError, ValueError):  # an unknown charset or a broken encoding
        content = part.get_payload(decode=True).decode("utf-8", "replace")  # type: ignore[union-attr]
    if part.get_content_subtype() == "html":
        content = html_to_text(content[: max_chars * 4])
    return strip_reply(content, lesson=lesson, max_chars=max_chars)


def strip_reply(text: str, *, lesson: str = "", max_chars: int = MAX_TRIM_CHARS) -> str:
    """Remove the quoted lesson, quoted history and signatures from a reply's text (see
    docs/inbound.md). Text longer than ``max_chars`` comes back untrimmed."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if len(text) > max_chars:
        return text.strip()
    lines = [line.rstrip() for line in text.split("\n")]
    if lesson:
        lines = remove_lesson(lines, Lesson.of(lesson))
    lines = _cut_quotes(lines)
    lines = _cut_signature(lines)
    return _tidy(lines)


def _cut_quotes(lines: list[str]) -> list[str]:
    """Cut quoted history: under a header line, the quoted block it introduces (or all
    below it when what follows is not marked with ``>``); under a header block or a
    separator, everything; and a block of ``>`` lines that ends the reply."""
    kept: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():  # nothing starts on a blank line
            kept.append(line)
            i += 1
            continue
        if _starts_block(lines, i):
            break
        inline = split_inline_header(line) if not quote_depth(line) else None
        if inline is not None:
            kept.append(inline)
            break
        header = _header_lines(lines, i)
        if header:
            after = _next_text(lines, i + header)
            if after < len(lines) and quote_depth(lines[after]) > 0:
                end = _end_of_quote(lines, after)
                # Answers written between quoted parts keep the parts they answer; only
                # the header goes. Otherwise the header and its quote go.
                i = after if _interleaved(lines, end) else end
                continue
            break
        kept.append(line)
        i += 1
    return _drop_trailing_quote(kept)


def _starts_block(lines: list[str], i: int) -> bool:
    """An Outlook header block (two or more labels, one of them the sender) or a separator
    above a header."""
    line = lines[i]
    if is_separator(line):
        window = [x for x in lines[i + 1 : i + 5] if x.strip()]
        introduces = any(is_label_line(x) or is_wrote_line(x) for x in window)
        return is_titled_separator(line) or introduces
    if is_sent_from(line) and any(x.strip() for x in lines[i + 1 :]):
        return True  # what a client appends ends what the person wrote
    if not is_label_line(line):
        return False
    window = lines[i : i + 9]
    labels = {label_of(x) for x in window} - {""}
    adjacent = i + 1 < len(lines) and label_of(lines[i + 1]) not in ("", label_of(line))
    # Two different labels at least ("A: yes / A: no" answers are not a header block).
    return len(labels) >= 2 and (adjacent or any(is_from_line(x) for x in window))


def _header_lines(lines: list[str], i: int) -> int:
    """How many lines the one-line header starting at ``i`` takes (0: none); clients wrap
    a long one over two or three."""
    if not lines[i].strip() or quote_depth(lines[i]) or not looks_like_header_start(lines[i]):
        return 0
    joined = lines[i]
    for taken in range(1, 4):
        if taken > 1:
            if i + taken - 1 >= len(lines) or not lines[i + taken - 1].strip():
                return 0
            joined = f"{joined} {lines[i + taken - 1].strip()}"
        if is_wrote_line(joined):
            return taken
        if is_date_address_line(joined) and (
            joined.rstrip().endswith((":", "：")) or _quoted_next(lines, i + taken)
        ):
            return taken
    return 0


def _interleaved(lines: list[str], end: int) -> bool:
    """Text after the quote ending at ``end``, then more quoted lines after that text."""
    text = _next_text(lines, end)
    if text >= len(lines) or quote_depth(lines[text]):
        return False
    return any(quote_depth(line) for line in lines[text:])


def _quoted_next(lines: list[str], i: int) -> bool:
    after = _next_text(lines, i)
    return after < len(lines) and quote_depth(lines[after]) > 0


def _next_text(lines: list[str], i: int) -> int:
    while i < len(lines) and not lines[i].strip():
        i += 1
    return i


def _end_of_quote(lines: list[str], i: int) -> int:
    while i < len(lines) and (
        quote_depth(lines[i]) or not lines[i].strip() or _broken_quoted_line(lines, i)
    ):
        i += 1
    return i


def _broken_quoted_line(lines: list[str], i: int) -> bool:
    """A quoted line a client broke without repeating the ``>`` (a long link, a wrap)."""
    return (
        0 < i < len(lines) - 1
        and bool(quote_depth(lines[i - 1]))
        and bool(quote_depth(lines[i + 1]))
    )


def _drop_trailing_quote(lines: list[str]) -> list[str]:
    """A block of ``>`` lines that ends the reply is quoted history, whatever introduced it."""
    end = len(lines)
    while end and (quote_depth(lines[end - 1]) or not lines[end - 1].strip()):
        end -= 1
    if end == len(lines) or not end or not any(quote_depth(x) for x in lines[end:]):
        return lines
    if is_wrote_line(lines[end - 1]) or lines[end - 1].rstrip().endswith((":", "：")):
        end -= 1
    return lines[:end]


def _cut_signature(lines: list[str]) -> list[str]:
    """Cut at the signature delimiter ``-- `` and drop the "Sent from my ..." lines a
    client appends."""
    for i, line in enumerate(lines):
        if line.strip() in ("--", "-- ") and any(x.strip() for x in lines[:i]):
            lines = lines[:i]
            break
    end = len(lines)
    while end and (not lines[end - 1].strip() or is_sent_from(lines[end - 1])):
        end -= 1
    lines = lines[:end]
    # "Best regards," alone on its line with a name under it, ending the reply.
    for i in range(max(0, len(lines) - 4), len(lines)):
        if (
            is_valediction(lines[i])
            and any(x.strip() for x in lines[:i])
            and i + 1 < len(lines)
            and all(len(x.strip()) <= 40 for x in lines[i + 1 :])
        ):
            return lines[:i]
    return lines


def _tidy(lines: list[str]) -> str:
    text = "\n".join(lines).strip()
    return re.sub(r"\n{3,}", "\n\n", text)


_DROPPED_HTML = (
    "//blockquote | //*[contains(@class, 'gmail_quote')] | //*[@id='divRplyFwdMsg']"
    " | //*[@id='appendonsend']/following-sibling::* | //head | //style | //script"
)
_BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "hr"}


def html_to_text(html: str) -> str:
    """The visible text of an HTML reply, without the quote a client put below it."""
    try:
        root = lxml.html.document_fromstring(html)
    except (ValueError, lxml.etree.ParserError):
        return ""
    for node in root.xpath(_DROPPED_HTML):
        if node.getparent() is not None:
            node.drop_tree()
    for node in root.iter():
        if isinstance(node.tag, str) and node.tag in _BLOCKS:
            node.tail = "\n" + (node.tail or "")
            if node.tag in ("p", "div") or node.tag.startswith("h"):
                node.tail = "\n" + node.tail
    text = root.text_content()
    lines = [" ".join(line.split()) for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
