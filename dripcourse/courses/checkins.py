"""A course's check-in questions: one or two, answered 1 to 5, in its first and last lesson.

Read from course.toml's ``[[checkin]]`` tables. A question is one short line in the words the
programme may use; ``low`` and ``high`` say what 1 and 5 mean. The answers are counted by the
report (start against end) and kept in each subscriber's journal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

MAX_QUESTIONS = 2
MAX_QUESTION_CHARS = 150
MAX_LABEL_CHARS = 40
SCALE = (1, 2, 3, 4, 5)
KEYS = {"question", "low", "high"}


@dataclass(frozen=True)
class Checkin:
    """One check-in question and what the ends of its scale mean."""

    number: int  # its place in course.toml, from 1
    question: str
    low: str = ""  # what 1 means; "" says nothing more than the number
    high: str = ""

    @property
    def scale(self) -> str:
        """What the ends mean, as a lesson says it: "1 = not at all, 5 = fully", or "1 to 5"."""
        if not (self.low or self.high):
            return "1 to 5"
        return f"1 = {self.low or 'lowest'}, 5 = {self.high or 'highest'}"

    def as_dict(self) -> dict[str, object]:
        """What a layout template sees of it (``checkins``)."""
        return {
            "number": self.number,
            "question": self.question,
            "low": self.low,
            "high": self.high,
            "scale": self.scale,
        }


def asked_on(day: int, length: int) -> bool:
    """Whether lesson ``day`` of a course of ``length`` lessons asks the check-in questions."""
    return day in (1, length)


def read_checkins(value: object, error: Callable[[str], None]) -> tuple[Checkin, ...]:
    """The questions of course.toml's ``checkin`` value; each problem goes to ``error``."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        error('checkin: write each question as a [[checkin]] table with question = "..."')
        return ()
    if len(value) > MAX_QUESTIONS:
        error(f"checkin: at most {MAX_QUESTIONS} questions (there are {len(value)})")
        return ()
    found = []
    for number, table in enumerate(value, start=1):
        for key in sorted(set(table) - KEYS):
            error(f"checkin {number}: unknown key {key!r} (known: {', '.join(sorted(KEYS))})")
        question = table.get("question")
        if not _line(question, MAX_QUESTION_CHARS):
            error(
                f"checkin {number}: question must be one line of at most "
                f"{MAX_QUESTION_CHARS} characters"
            )
            continue
        labels = {}
        for end in ("low", "high"):
            label = table.get(end, "")
            if label != "" and not _line(label, MAX_LABEL_CHARS):
                error(
                    f"checkin {number}: {end} must be one line of at most {MAX_LABEL_CHARS} chars"
                )
            labels[end] = str(label).strip()
        found.append(Checkin(number, str(question).strip(), labels["low"], labels["high"]))
    return tuple(found)


def _line(value: object, longest: int) -> bool:
    return (
        isinstance(value, str)
        and bool(value.strip())
        and len(value.strip()) <= longest
        and not any(c in value for c in "\r\n")
    )
