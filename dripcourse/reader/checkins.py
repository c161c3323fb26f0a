"""A subscriber's check-in answers: recorded by one click, changed at will, theirs to keep.

An answer is a number 1 to 5 for one question of one lesson (the first or the last); the same
click twice records it once, another click changes it. The question's words are kept with it,
so the journal shows what was asked even after the course file changes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dripcourse.courses.checkins import SCALE, Checkin, asked_on
from dripcourse.courses.course import Course
from dripcourse.db import savepoint
from dripcourse.models import CheckinAnswer, Enrollment


@dataclass(frozen=True)
class Answer:
    """One answer as the journal shows it."""

    day: int
    question: int
    wording: str
    answer: int
    updated_at: dt.datetime


def asked(course: Course, enrollment: Enrollment, day: int) -> tuple[Checkin, ...]:
    """The questions lesson ``day`` asked this reader: none for a lesson not sent to them yet
    or one that asks none."""
    if not 1 <= day <= enrollment.day or not asked_on(day, course.length):
        return ()
    return course.checkins


def record(
    session: Session, enrollment_id: int, day: int, checkin: Checkin, answer: int, now: dt.datetime
) -> bool:
    """Record (or change) an answer; returns whether anything changed. ValueError off the scale.

    Two clicks at once (a double click, two tabs) may both find no answer yet: the second
    insert meets the unique constraint inside a savepoint, and changes the first's row instead.
    """
    if answer not in SCALE:
        raise ValueError(f"an answer is 1 to 5, not {answer}")
    row = _answer_row(session, enrollment_id, day, checkin.number)
    if row is None:
        try:
            with savepoint(session):
                session.add(
                    CheckinAnswer(
                        enrollment_id=enrollment_id,
                        day=day,
                        question=checkin.number,
                        wording=checkin.question,
                        answer=answer,
                        created_at=now,
                        updated_at=now,
                    )
                )
                session.flush()
            return True
        except IntegrityError:
            row = _answer_row(session, enrollment_id, day, checkin.number)
            if row is None:
                raise
    if row.answer == answer:
        return False
    row.answer, row.updated_at = answer, now
    return True


def _answer_row(
    session: Session, enrollment_id: int, day: int, question: int
) -> CheckinAnswer | None:
    return session.scalar(
        select(CheckinAnswer).where(
            CheckinAnswer.enrollment_id == enrollment_id,
            CheckinAnswer.day == day,
            CheckinAnswer.question == question,
        )
    )


def answers(session: Session, enrollment_id: int) -> list[Answer]:
    """Every answer of one enrollment, by lesson and question."""
    rows = session.scalars(
        select(CheckinAnswer)
        .where(CheckinAnswer.enrollment_id == enrollment_id)
        .order_by(CheckinAnswer.day, CheckinAnswer.question)
    )
    return [Answer(r.day, r.question, r.wording, r.answer, r.updated_at) for r in rows]


def by_day(found: list[Answer]) -> dict[int, list[Answer]]:
    """The answers grouped by the lesson that asked them, for the journal's entries."""
    out: dict[int, list[Answer]] = {}
    for a in found:
        out.setdefault(a.day, []).append(a)
    return out
