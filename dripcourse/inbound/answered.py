"""What a reply answers: the question as it was asked, and the words of the lesson it quotes.

The question is the one stored with the version of the lesson that was sent, else the
course's current one. The lesson's words are what the trimmer recognises wherever a mail
client quoted them (``lesson_quote``), whatever language its quote header is in: the
version sent (title, prompt, questions and body) and the lesson as the course renders it
now, with the layout's greeting and footer (each reader's own fields left blank).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from dripcourse.courses.course import Course
from dripcourse.inbound.reply_text import html_to_text
from dripcourse.models import Cohort, Delivery, Enrollment
from dripcourse.reader.reflections import lesson_or_none

# The rendered text of a course's lesson by (course slug, day); "" when it cannot be had.
LessonText = Callable[[str, int], str]


@dataclass(frozen=True)
class Answered:
    prompt: str | None  # None: the course no longer has that day
    lesson: str  # the lesson's words as far as they are known; "" when none are


def answered(
    session: Session,
    enrollment: Enrollment,
    day: int,
    course: Callable[[str], Course | None],
    lesson_text: LessonText,
) -> Answered:
    """The question and the lesson of ``enrollment``'s ``day``."""
    delivery = session.scalar(
        select(Delivery).where(Delivery.enrollment_id == enrollment.id, Delivery.day == day)
    )
    version = delivery.lesson_version if delivery is not None else None
    slug = session.scalar(select(Cohort.course_slug).where(Cohort.id == enrollment.cohort_id))
    words: list[str] = []
    if version is not None:
        words += [version.title, version.prompt, *_questions(version.questions)]
        words.append(html_to_text(version.body_html))
    if slug:
        words.append(lesson_text(slug, day))
    text = "\n".join(w for w in words if w)
    if version is not None:
        return Answered(version.prompt, text)
    found = course(slug) if slug else None
    lesson = lesson_or_none(found, day) if found else None
    return Answered(lesson.prompt if lesson else None, text)


def _questions(value: str) -> list[str]:
    try:
        questions = json.loads(value)
    except ValueError:
        return []
    return [str(q) for q in questions] if isinstance(questions, list) else []
