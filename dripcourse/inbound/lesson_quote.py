"""Remove the lesson a reply quotes: we know its words, so we know what was quoted.

A generic trimmer guesses where quoted history starts from the header a client writes; when
the header is in a language or a shape it does not know, the whole lesson is saved as the
reflection. Here the exact lesson the reply answers is known (the version sent), so any run
of lines whose words are the lesson's, quoted with ``>`` or not, wrapped anew by the client
or not, is the lesson, and the header line or block just above it goes with it. A person's
answers written between quoted questions stay, with the questions they answer.

Lines are compared by their words (lower case, links and addresses left out) through the
lesson's word triples, so a line matches wherever the client broke the lesson's lines, and
the cost is linear in the reply's length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dripcourse.courses.render import Template
from dripcourse.inbound.quotes import (
    is_date_address_line,
    is_label_line,
    is_separator,
    is_wrote_line,
    quote_depth,
)

_LINK = re.compile(r"(https?://|mailto:|www\.)\S{0,2000}|\S{1,200}@\S{1,200}", re.IGNORECASE)
_WORD = re.compile(r"\w+")
MAX_WORDS = 200  # words of one line compared; a longer line is judged by its start
MAX_GAP = 2  # lines that match nothing, inside a run of the lesson (a greeting with a name)


def words(line: str) -> list[str]:
    """The words of a line as compared: no quote marks, no links, lower case."""
    return _WORD.findall(_LINK.sub(" ", line[:4000]).lower())[:MAX_WORDS]


@dataclass(frozen=True)
class Lesson:
    """The words of what was sent, ready to recognise in a reply."""

    triples: frozenset[tuple[str, str, str]]
    vocabulary: frozenset[str]

    @classmethod
    def of(cls, text: str) -> Lesson:
        stream = _all_words(text)
        return cls(frozenset(zip(stream, stream[1:], stream[2:], strict=False)), frozenset(stream))

    def kind(self, line: str) -> str:
        """ "lesson", "maybe" (too short to tell, but every word is the lesson's), "blank",
        or "other"."""
        found = words(line)
        if not found:
            return "blank"
        if len(found) < 3:
            return "maybe" if all(w in self.vocabulary for w in found) else "other"
        triples = list(zip(found, found[1:], found[2:], strict=False))
        hits = sum(t in self.triples for t in triples)
        if hits >= max(1, 0.8 * len(triples)):
            return "lesson"
        return "maybe" if hits >= 0.5 * len(triples) else "other"


def _all_words(text: str) -> list[str]:
    found: list[str] = []
    for line in text.split("\n"):
        found += _WORD.findall(_LINK.sub(" ", line).lower())
    return found


def template_text(text: Template) -> str:
    """A rendered lesson's text part with each reader's own fields (name, links) left blank:
    what to pass as the lesson a reply answers when only the lesson, not the reader's copy,
    is at hand."""
    return "".join(part if isinstance(part, str) else " " for part in text.parts)


def remove_lesson(lines: list[str], lesson: Lesson) -> list[str]:
    """``lines`` without the runs that quote the lesson and the header above each.

    When the person answered between quoted parts (a run of the lesson, their words, another
    run), the runs they answered stay as the questions of their answers; only the header and
    the runs nobody answered go.
    """
    kinds = [lesson.kind(line) for line in lines]
    runs = _runs(lines, kinds)
    if not runs:
        return lines
    answered = [
        _has_text(kinds, end, runs[i + 1][0] if i + 1 < len(runs) else len(lines))
        for i, (_start, end) in enumerate(runs)
    ]
    interleaved = any(answered[:-1]) and len(runs) > 1
    drop = [False] * len(lines)
    for index, (start, end) in enumerate(runs):
        if interleaved and answered[index]:
            continue
        for i in range(start, end):
            drop[i] = True
    first = runs[0][0]
    for i in range(_header_start(lines, first), first):
        drop[i] = True
    return [line for line, gone in zip(lines, drop, strict=True) if not gone]


def _runs(lines: list[str], kinds: list[str]) -> list[tuple[int, int]]:
    """[start, end) of each run of the lesson: lesson lines with the short, blank or
    unmatched lines (at most ``MAX_GAP`` in a row) between them, at one quote depth."""
    runs: list[tuple[int, int]] = []
    i = 0
    while i < len(lines):
        if kinds[i] != "lesson":
            i += 1
            continue
        depth = quote_depth(lines[i])
        start = end = i
        # A line too short to tell just above (the lesson's title line) belongs to it.
        while (
            start > (runs[-1][1] if runs else 0)
            and kinds[start - 1] == "maybe"
            and quote_depth(lines[start - 1]) == depth
        ):
            start -= 1
        j = i + 1
        gap = 0
        while j < len(lines):
            kind = kinds[j]
            same = quote_depth(lines[j]) == depth or kind == "blank"
            if kind == "lesson" and same:
                end, gap = j, 0
            elif kind in ("blank", "maybe") and same:
                pass
            elif kind == "other" and same and gap < MAX_GAP and len(words(lines[j])) <= 8:
                gap += 1
            else:
                break
            j += 1
        # Links and bare ``>`` lines under the last lesson line are the lesson's too.
        while (
            end + 1 < len(lines)
            and kinds[end + 1] == "blank"
            and lines[end + 1].strip()
            and quote_depth(lines[end + 1]) == depth
        ):
            end += 1
        runs.append((start, end + 1))
        i = end + 1
    return [run for run in runs if _is_quote(lines, kinds, *run)]


def _is_quote(lines: list[str], kinds: list[str], start: int, end: int) -> bool:
    """Not a single unmarked line of a few words: a person may use the lesson's words."""
    if end - start > 1 or sum(kind == "lesson" for kind in kinds[start:end]) > 1:
        return True
    return bool(quote_depth(lines[start])) or len(words(lines[start])) >= 8


def _has_text(kinds: list[str], start: int, end: int) -> bool:
    return any(kind in ("other", "maybe") for kind in kinds[start:end])


def _header_start(lines: list[str], first: int) -> int:
    """Where the header introducing the quote at ``first`` starts (``first`` if none):
    the blank lines above it, a one-line header, or a header block with its separator."""
    i = first
    while i > 0 and not lines[i - 1].strip(" \t>"):
        i -= 1
    if i > 0 and (is_wrote_line(lines[i - 1]) or is_date_address_line(lines[i - 1])):
        i -= 1
        # A header a client wrapped over two lines ("On ..., Ana <" / "ana@x> wrote:").
        if i > 0 and lines[i - 1].strip() and not is_wrote_line(lines[i - 1]):
            joined = f"{lines[i - 1].rstrip()} {lines[i].strip()}"
            if is_wrote_line(joined) and len(words(lines[i - 1])) < 20:
                i -= 1
        return i
    if i > 0 and _introduces_quote(lines, i - 1):
        return i - 1
    block = i
    while block > 0 and (is_label_line(lines[block - 1]) or _continues_label(lines, block - 1)):
        block -= 1
    if block < i:
        i = block
        while i > 0 and (is_separator(lines[i - 1]) or not lines[i - 1].strip()):
            i -= 1
        return i
    return first


def _introduces_quote(lines: list[str], index: int) -> bool:
    """A quote header in a language no rule here knows ("Þann 5.3.2025 skrifaði X:", "X
    đã viết:"): a paragraph of one short line ending in a colon, naming someone (a capital
    after its first word), a date or an address, right above the quoted lesson."""
    line = lines[index].strip(" \t>")
    if not line.endswith((":", "：")) or (index > 0 and lines[index - 1].strip(" \t>")):
        return False
    found = line.split()
    if not 2 <= len(found) <= 30:
        return False
    return any(c.isdigit() or c == "@" for c in line) or any(w[:1].isupper() for w in found[1:])


def _continues_label(lines: list[str], index: int) -> bool:
    """A wrapped label line's second half ("bob@example.com]" under "*From:* ... [mailto:")."""
    line = lines[index].strip()
    return bool(line) and index > 0 and is_label_line(lines[index - 1]) and len(line) < 80
