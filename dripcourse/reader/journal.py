"""A journal worth keeping: the completion note and the journal as a file to download.

The entries come from ``reflections.journal``; this module only shapes them for the end of a
course and for taking away (Markdown, plain text), with every time in the subscriber's zone.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from dripcourse.models import Enrollment, EnrollmentStatus
from dripcourse.reader.checkins import Answer
from dripcourse.reader.reflections import JournalEntry


@dataclass(frozen=True)
class Completion:
    """What a finished course amounted to, for the note on the last lesson and the journal."""

    days: int
    reflections: int
    first_day: dt.date | None
    last_day: dt.date | None


def completion(
    enrollment: Enrollment, entries: list[JournalEntry], zone: ZoneInfo
) -> Completion | None:
    """The completion note's facts once the course is completed; None before."""
    if enrollment.status != EnrollmentStatus.COMPLETED:
        return None
    sent = sorted(e.sent_at for e in entries if e.sent_at is not None)
    return Completion(
        days=enrollment.day,
        reflections=sum(1 for e in entries if e.reflection is not None),
        first_day=sent[0].astimezone(zone).date() if sent else None,
        last_day=sent[-1].astimezone(zone).date() if sent else None,
    )


def long_date(day: dt.date) -> str:
    """Monday 3 March 2025."""
    return f"{day:%A} {day.day} {day:%B} {day.year}"


def local_time(moment: dt.datetime, zone: ZoneInfo) -> str:
    """Thursday 6 March 2025 at 01:45 (Asia/Kathmandu)."""
    local = moment.astimezone(zone)
    return f"{long_date(local.date())} at {local:%H:%M} ({zone.key})"


def completion_sentence(done: Completion) -> str:
    """One sentence saying what was completed, for pages and downloads alike."""
    span = ""
    if done.first_day and done.last_day:
        span = f", from {long_date(done.first_day)} to {long_date(done.last_day)}"
    wrote = "one reflection" if done.reflections == 1 else f"{done.reflections} reflections"
    return f"You completed all {done.days} days{span}, and wrote {wrote}."


def as_markdown(
    course_title: str,
    entries: list[JournalEntry],
    zone: ZoneInfo,
    done: Completion | None,
    answers: dict[int, list[Answer]] | None = None,
) -> str:
    """The journal as a Markdown file, oldest day first, as one reads a diary."""
    lines = [f"# {course_title}: my journal", ""]
    if done is not None:
        lines += [completion_sentence(done), ""]
    for entry in reversed(entries):
        lines += [f"## Day {entry.day}: {entry.title}", ""]
        if entry.sent_at is not None:
            lines += [f"*Sent {local_time(entry.sent_at, zone)}*", ""]
        lines += [f"**{entry.prompt}**", ""]
        lines += [f"- {q}" for q in entry.questions]
        if entry.questions:
            lines.append("")
        if entry.reflection is None:
            lines += ["*Nothing written for this day.*", ""]
        else:
            lines += [_quote(entry.reflection.body), ""]
            lines += [f"*Written {local_time(entry.reflection.updated_at, zone)}*", ""]
        for a in (answers or {}).get(entry.day, []):
            lines += [f"Check-in: {_inert(a.wording)} My answer: **{a.answer} of 5**", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


# What a Markdown viewer would make something of, escaped so that it shows the character: a
# backslash before punctuation (or at a line's end: a line break), emphasis, code, links and
# images, strikethrough and table cells anywhere; the < of an HTML tag, comment or <autolink>
# and the & of a character reference (&amp;) with a backslash too, so the file still reads as
# typed in a text editor (an entity would show "&lt;" there); and at a line's start,
# headings, quotes, lists, rules and setext underlines.
_BACKSLASH = re.compile(r"\\(?=[!-/:-@\[-`{-~]|$)")
_PUNCTUATION = re.compile(r"([*_`\[\]~|])")
_REFERENCE = re.compile(r"&(?=#[0-9]+;|#[xX][0-9a-fA-F]+;|[A-Za-z][A-Za-z0-9]*;)")
_TAG = re.compile(r"<(?=[A-Za-z/!?])")  # "<3" and "a < b" are no tag: they stay as typed
_MARKER = re.compile(r"^(?=[#>+=-])")
_NUMBERED = re.compile(r"^([0-9]+)(?=[.)])")


def _quote(text: str) -> str:
    """The reflection as a block quote that a Markdown viewer shows as it was typed.

    Nothing the subscriber wrote becomes markup: a line starting with # stays their words, not
    a heading; <script> or [a link](elsewhere) shows as those characters. Each line break is
    kept (two spaces before it), and each line is trimmed, since indenting it would make code.
    """
    lines = [_inert(line.strip()) for line in text.split("\n")]
    quoted = []
    for line, after in zip(lines, [*lines[1:], ""], strict=True):
        if line and after:
            line += "  "
        quoted.append(f"> {line}" if line else ">")
    return "\n".join(quoted)


def _inert(line: str) -> str:
    """One line with every character that could start Markdown or HTML escaped."""
    line = _BACKSLASH.sub(r"\\\\", line)
    line = _PUNCTUATION.sub(r"\\\1", line)
    line = _REFERENCE.sub(r"\\&", line)
    line = _TAG.sub(r"\\<", line)
    line = _MARKER.sub(r"\\", line)
    return _NUMBERED.sub(r"\1\\", line)


def as_text(
    course_title: str,
    entries: list[JournalEntry],
    zone: ZoneInfo,
    done: Completion | None,
    answers: dict[int, list[Answer]] | None = None,
) -> str:
    """The journal as plain text, oldest day first."""
    heading = f"{course_title}: my journal"
    lines = [heading, "=" * len(heading), ""]
    if done is not None:
        lines += [completion_sentence(done), ""]
    for entry in reversed(entries):
        title = f"Day {entry.day}: {entry.title}"
        lines += [title, "-" * len(title)]
        if entry.sent_at is not None:
            lines.append(f"Sent {local_time(entry.sent_at, zone)}")
        lines += ["", entry.prompt]
        lines += [f"  - {q}" for q in entry.questions]
        lines.append("")
        if entry.reflection is None:
            lines += ["(Nothing written for this day.)", ""]
        else:
            lines += [entry.reflection.body, ""]
            lines += [f"Written {local_time(entry.reflection.updated_at, zone)}", ""]
        for a in (answers or {}).get(entry.day, []):
            lines += [f"Check-in: {a.wording} My answer: {a.answer} of 5", ""]
    return "\n".join(lines).rstrip("\n") + "\n"
