"""Reflections: what subscribers write back about each day's question.

Plain functions over a session and a ``now``; the web views and the export command are thin
adapters around them. Reflections are private writing: they are read here only for their
author (through their own link) or for an operator's export. The text is sealed before it
reaches the database and opened only here, so every other module sees rows it cannot read.

It stays one module (about 430 lines) so that the sealed text is opened in one place only.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from dripcourse.courses.course import Course, Lesson
from dripcourse.encryption import ReflectionCipher
from dripcourse.errors import CourseError, InputError
from dripcourse.models import (
    Cohort,
    Delivery,
    DeliveryStatus,
    Enrollment,
    LessonVersion,
    Reflection,
    Subscriber,
)

# Control characters other than tab and newline have no place in prose, and PostgreSQL
# refuses NUL in text columns outright (a 500 we would otherwise serve).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# Format characters (zero-width space, joiners, byte-order mark), spaces, controls and line or
# paragraph separators: a text made only of these shows nothing, so it is empty.
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Zs", "Cc", "Zl", "Zp"})
EXPORT_FIELDS = (
    "email",
    "cohort",
    "day",
    "prompt",
    "text",
    "source",
    "created_at",
    "updated_at",
)


class ReflectionRejected(InputError):
    """A reflection that cannot be saved as written (empty, too long); the message says why."""


class EmptyReflection(ReflectionRejected):
    """A reflection with no visible character: nothing to save."""


def clean_text(text: str) -> str:
    """The text as it will be stored: one kind of line break, no control characters."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub("", text).strip()


_CONTROL_IN_A_PAGE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def as_typed(text: str) -> str:
    """A refused text as the form shows it again: as typed, line breaks and tabs included,
    without the control characters HTML may not hold."""
    return _CONTROL_IN_A_PAGE.sub("", text)


def check_text(text: str, max_chars: int) -> str:
    """The cleaned text, or ReflectionRejected with a message for the writer.

    A text with no visible character (only spaces, zero-width or other format characters) is
    empty.
    """
    cleaned = clean_text(text)
    if not any(_visible(c) for c in cleaned):
        raise EmptyReflection("Your reflection is empty. Write something, then save it.")
    if len(cleaned) > max_chars:
        raise ReflectionRejected(
            f"Your reflection is {len(cleaned):,} characters long; the limit is "
            f"{max_chars:,}. Please shorten it by {len(cleaned) - max_chars:,} characters "
            "and save again."
        )
    return cleaned


def _visible(char: str) -> bool:
    return not char.isspace() and unicodedata.category(char) not in _INVISIBLE_CATEGORIES


@dataclass(frozen=True)
class WrittenReflection:
    """A reflection as its writer sees it: the text opened."""

    id: int
    enrollment_id: int
    day: int
    prompt: str
    body: str
    created_at: dt.datetime
    updated_at: dt.datetime
    source: str = "web"  # where the latest text came from: "web" or "email"

    @classmethod
    def opened(cls, row: Reflection, cipher: ReflectionCipher) -> WrittenReflection:
        return cls(
            id=row.id,
            enrollment_id=row.enrollment_id,
            day=row.day,
            prompt=row.prompt,
            body=cipher.open(row.sealed_body),
            created_at=row.created_at,
            updated_at=row.updated_at,
            source=row.source or "web",
        )


def get_reflection(
    session: Session, enrollment_id: int, day: int, cipher: ReflectionCipher
) -> WrittenReflection | None:
    """The one reflection for this enrollment and day, if written."""
    row = session.scalar(
        select(Reflection).where(Reflection.enrollment_id == enrollment_id, Reflection.day == day)
    )
    return None if row is None else WrittenReflection.opened(row, cipher)


def save_reflection(
    session: Session,
    enrollment: Enrollment,
    day: int,
    prompt: str,
    text: str,
    *,
    cipher: ReflectionCipher,
    max_chars: int,
    now: dt.datetime,
    source: str = "web",
) -> WrittenReflection:
    """Write or rewrite the reflection for (enrollment, day); there is only ever one.

    ``prompt`` is the question as it was asked; a later edit keeps the one first answered.
    The text is sealed before it is sent to the database. Raises ReflectionRejected for empty
    or over-long text.
    """
    body = cipher.seal(check_text(text, max_chars))
    # One statement that inserts or edits, so two tabs saving a first reflection at once
    # both succeed (the later wins) instead of one meeting the unique constraint.
    dialect = session.get_bind().dialect.name
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    session.execute(
        insert(Reflection)
        .values(
            enrollment_id=enrollment.id,
            day=day,
            prompt=prompt,
            sealed_body=body,
            created_at=now,
            updated_at=now,
            source=source,
        )
        .on_conflict_do_update(
            index_elements=[Reflection.enrollment_id, Reflection.day],
            set_={"sealed_body": body, "updated_at": now, "source": source},
        )
    )
    saved = session.scalar(
        select(Reflection)
        .where(Reflection.enrollment_id == enrollment.id, Reflection.day == day)
        .execution_options(populate_existing=True)
    )
    assert saved is not None
    return WrittenReflection.opened(saved, cipher)


def email_separator(day: dt.date) -> str:
    """The line between what was already written and a reply added from email."""
    return f"--- Replied by email on {day:%d %B %Y} ---"


def append_from_email(
    session: Session,
    enrollment: Enrollment,
    day: int,
    prompt: str,
    text: str,
    *,
    cipher: ReflectionCipher,
    max_chars: int,
    now: dt.datetime,
    local_day: dt.date,
) -> WrittenReflection:
    """Save a reply as the day's reflection, after what is already written.

    A first reply is saved as it is; a later one (or a reply after writing on the page) goes
    below the earlier text with a dated separator, so nothing written is ever replaced by
    email. ReflectionRejected when the reply is empty or the whole would be too long.
    """
    new = check_text(text, max_chars)
    existing = get_reflection(session, enrollment.id, day, cipher)
    if existing is not None:
        new = f"{existing.body}\n\n{email_separator(local_day)}\n\n{new}"
        prompt = existing.prompt
    return save_reflection(
        session,
        enrollment,
        day,
        prompt,
        new,
        cipher=cipher,
        max_chars=max_chars,
        now=now,
        source="email",
    )


@dataclass(frozen=True)
class JournalEntry:
    """One past lesson's question, with what the subscriber wrote (None if nothing yet)."""

    day: int
    title: str
    prompt: str
    questions: tuple[str, ...]
    reflection: WrittenReflection | None
    sent_at: dt.datetime | None = None


def lesson_or_none(course: Course, day: int) -> Lesson | None:
    """The course's lesson for ``day``, or None if the course no longer has that day."""
    try:
        return course.lesson(day)
    except CourseError:
        return None


class _Asked(Protocol):
    prompt: str


def prompt_for(lesson: _Asked | None, reflection: WrittenReflection | None) -> str | None:
    """The question to show beside a day's reflection, in the journal and on its own page.

    Once written, the question as first answered (even if the lesson's wording changed since);
    otherwise the lesson's; None if the course lost that day and nothing was written for it.
    """
    if reflection is not None:
        return reflection.prompt
    return lesson.prompt if lesson is not None else None


def journal(
    session: Session, enrollment: Enrollment, course: Course, cipher: ReflectionCipher
) -> list[JournalEntry]:
    """Every lesson this enrollment has been sent, newest first, with its reflections."""
    written = {
        r.day: WrittenReflection.opened(r, cipher)
        for r in session.scalars(
            select(Reflection).where(Reflection.enrollment_id == enrollment.id)
        )
    }
    sent = {
        d.day: d
        for d in session.scalars(
            select(Delivery).where(
                Delivery.enrollment_id == enrollment.id, Delivery.status == DeliveryStatus.SENT
            )
        )
    }
    entries = []
    for day in range(max(enrollment.day, max(written, default=0)), 0, -1):
        # The words as this subscriber received them, when that version was kept.
        delivery = sent.get(day)
        version = delivery.lesson_version if delivery is not None else None
        lesson = lesson_or_none(course, day)
        reflection = written.get(day)
        prompt = prompt_for(version or lesson, reflection)
        if prompt is None:
            continue  # the course lost this day and nothing was written for it
        source = version or lesson
        entries.append(
            JournalEntry(
                day=day,
                title=source.title if source else f"Day {day}",
                prompt=prompt,
                questions=_questions(source),
                reflection=reflection,
                sent_at=delivery.sent_at if delivery is not None else None,
            )
        )
    return entries


def _questions(source: Lesson | LessonVersion | None) -> tuple[str, ...]:
    if source is None:
        return ()
    if isinstance(source, LessonVersion):
        return tuple(json.loads(source.questions))
    return source.questions


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def export_rows(
    session: Session, cipher: ReflectionCipher, cohort: str | None = None
) -> list[dict[str, object]]:
    """Every reflection as a flat row for an operator: email, cohort, day, prompt, text, times."""
    query = (
        select(Subscriber.email, Cohort.name, Reflection)
        .join(Enrollment, Reflection.enrollment_id == Enrollment.id)
        .join(Subscriber, Enrollment.subscriber_id == Subscriber.id)
        .join(Cohort, Enrollment.cohort_id == Cohort.id)
        .order_by(Cohort.name, Subscriber.email, Reflection.day)
    )
    if cohort is not None:
        query = query.where(Cohort.name == cohort)
    return [
        {
            "email": email,
            "cohort": cohort_name,
            "day": reflection.day,
            "prompt": reflection.prompt,
            "text": cipher.open(reflection.sealed_body),
            "source": reflection.source or "web",
            "created_at": _iso(reflection.created_at),
            "updated_at": _iso(reflection.updated_at),
        }
        for email, cohort_name, reflection in session.execute(query)
    ]


# A cell starting with one of these is a formula to a spreadsheet (tab and CR too, as some
# spreadsheets skip them before looking for one).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: object) -> object:
    """A text cell a spreadsheet will show as text: a formula-like one gets a leading ``'``."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def export_text(rows: list[dict[str, object]], fmt: str) -> str:
    """The export as CSV (with a header row) or JSON text.

    JSON holds every text exactly as written. CSV is opened in spreadsheets, and a reflection
    can arrive by email from anyone who has the reply address: a cell starting with ``=``,
    ``+``, ``-``, ``@``, a tab or a carriage return gets a leading ``'``, so it is shown, not
    run as a formula.
    """
    if fmt == "json":
        return json.dumps(rows, indent=2, ensure_ascii=False) + "\n"
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=EXPORT_FIELDS)
    writer.writeheader()
    writer.writerows({k: spreadsheet_safe(v) for k, v in row.items()} for row in rows)
    return buffer.getvalue()


def check_key(session: Session, cipher: ReflectionCipher) -> None:
    """Stop at start, not on a subscriber's page, if the keys cannot open what is stored.

    Opens the oldest and the newest reflection: a key that was dropped too soon (before a
    rekey) fails on the oldest, a wrong key on both. WrongReflectionsKey if either fails.
    """
    for order in (Reflection.updated_at.asc(), Reflection.updated_at.desc()):
        sealed = session.scalar(select(Reflection.sealed_body).order_by(order).limit(1))
        if sealed is None:
            return
        cipher.open(sealed)


def rekey(session: Session, cipher: ReflectionCipher, batch: int = 500) -> int:
    """Seal every reflection again under the first key; returns how many rows.

    The whole run is one transaction: a wrong key stops it before anything is written. Each
    row is written back only if it still holds what was read (a compare-and-set on the sealed
    value): a reflection edited meanwhile (on PostgreSQL other transactions commit while this
    one runs) is read again and resealed as edited, never overwritten with its old text.
    """
    total = 0
    last_id = 0
    while True:
        rows = session.execute(
            select(Reflection.id, Reflection.sealed_body)
            .where(Reflection.id > last_id)
            .order_by(Reflection.id)
            .limit(batch)
        ).all()
        if not rows:
            return total
        for row in rows:
            total += _reseal(session, cipher, row.id, row.sealed_body)
        last_id = rows[-1].id


def _reseal(session: Session, cipher: ReflectionCipher, reflection_id: int, sealed: str) -> int:
    """Reseal one reflection if it still holds ``sealed``, else as it is now; 0 if gone."""
    while True:
        written = session.execute(
            Reflection.__table__.update()
            .where(Reflection.id == reflection_id, Reflection.sealed_body == sealed)
            .values(sealed_body=cipher.reseal(sealed))
        ).rowcount
        if written:
            return 1
        now_sealed = session.scalar(
            select(Reflection.sealed_body).where(Reflection.id == reflection_id)
        )
        if now_sealed is None:
            return 0  # deleted meanwhile
        sealed = now_sealed


def count(session: Session) -> int:
    """How many reflections are stored (no text is read)."""
    return session.scalar(select(func.count()).select_from(Reflection)) or 0
