"""The moderators' side of the cohort circle: list what a cohort shared, hide and restore.

Items are named by kind and id: ``r12`` a shared reflection, ``n7`` a note. A hidden item
disappears for the cohort at once and shows to its author as hidden, with the reason; nothing
is deleted (restoring brings it back). Reading the text is an operator's read of subscribers'
writing: the command writes each one in the operator log.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dripcourse.encryption import ReflectionCipher
from dripcourse.errors import InputError, NotFound
from dripcourse.models import (
    CircleNote,
    CirclePost,
    CircleReport,
    Cohort,
    Enrollment,
    Subscriber,
)
from dripcourse.people.enrollment import get_cohort
from dripcourse.reader.circle import ANONYMOUS, shown_name
from dripcourse.reader.reflections import clean_text

_ITEM = re.compile(r"^([rn])(\d{1,9})$")
MAX_REASON_CHARS = 300


@dataclass(frozen=True)
class Item:
    """One shared reflection or note as a moderator sees it."""

    ref: str  # r12, n7
    day: int
    author_email: str
    shown_as: str
    text: str
    created_at: dt.datetime
    reports: dict[str, int]  # reason -> how many members reported it
    hidden_reason: str | None
    under: str = ""  # a note: the shared reflection it is under


def items(
    session: Session, cohort_name: str, cipher: ReflectionCipher, *, reported: bool = False
) -> list[Item]:
    """Everything shared in a cohort's circle, by day and age; only reported ones if asked."""
    cohort = get_cohort(session, cohort_name)
    found: list[Item] = []
    posts = session.execute(
        select(CirclePost, Subscriber.email, Subscriber.name)
        .join(Enrollment, CirclePost.enrollment_id == Enrollment.id)
        .join(Subscriber, Enrollment.subscriber_id == Subscriber.id)
        .where(CirclePost.cohort_id == cohort.id)
        .order_by(CirclePost.day, CirclePost.created_at, CirclePost.id)
    ).all()
    post_reports = _reports(session, CircleReport.post_id)
    note_reports = _reports(session, CircleReport.note_id)
    for post, email, name in posts:
        found.append(
            Item(
                ref=f"r{post.id}",
                day=post.day,
                author_email=email,
                shown_as=ANONYMOUS if post.anonymous else shown_name(name),
                text=cipher.open(post.sealed_body),
                created_at=post.created_at,
                reports=post_reports.get(post.id, {}),
                hidden_reason=post.hidden_reason,
            )
        )
        notes = session.execute(
            select(CircleNote, Subscriber.email, Subscriber.name)
            .join(Enrollment, CircleNote.enrollment_id == Enrollment.id)
            .join(Subscriber, Enrollment.subscriber_id == Subscriber.id)
            .where(CircleNote.post_id == post.id)
            .order_by(CircleNote.created_at, CircleNote.id)
        ).all()
        for note, note_email, note_name in notes:
            found.append(
                Item(
                    ref=f"n{note.id}",
                    day=post.day,
                    author_email=note_email,
                    shown_as=ANONYMOUS if note.anonymous else shown_name(note_name),
                    text=cipher.open(note.sealed_body),
                    created_at=note.created_at,
                    reports=note_reports.get(note.id, {}),
                    hidden_reason=note.hidden_reason,
                    under=f"r{post.id}",
                )
            )
    if reported:
        found = [item for item in found if item.reports]
    return found


def _reports(session: Session, column) -> dict[int, dict[str, int]]:  # type: ignore[no-untyped-def]
    counts: dict[int, dict[str, int]] = {}
    rows = session.execute(
        select(column, CircleReport.reason, func.count())
        .where(column.is_not(None))
        .group_by(column, CircleReport.reason)
    )
    for item_id, reason, count in rows:
        counts.setdefault(item_id, {})[reason] = count
    return counts


def _find(session: Session, ref: str) -> CirclePost | CircleNote:
    match = _ITEM.match(ref.strip().lower())
    if match is None:
        raise InputError(
            f"{ref!r} is not a circle item: r<number> for a shared reflection, n<number> for a "
            "note (as `dripcourse circle list` shows them)"
        )
    model = CirclePost if match.group(1) == "r" else CircleNote
    found = session.get(model, int(match.group(2)))
    if found is None:
        raise NotFound(f"no circle item {ref} (it may have been withdrawn or deleted)")
    return found


def hide(session: Session, ref: str, reason: str) -> str:
    """Hide an item from the cohort with a reason its author will see; the item's cohort name."""
    text = " ".join(clean_text(reason).split())
    if not text:
        raise InputError("--reason: say why, in a few words; its author will read it")
    if len(text) > MAX_REASON_CHARS:
        raise InputError(f"--reason: {len(text)} characters; at most {MAX_REASON_CHARS}")
    item = _find(session, ref)
    item.hidden_reason = text
    return _cohort_name(session, item)


def restore(session: Session, ref: str) -> str:
    """Show a hidden item to the cohort again; the item's cohort name."""
    item = _find(session, ref)
    if item.hidden_reason is None:
        raise InputError(f"{ref} is not hidden")
    item.hidden_reason = None
    return _cohort_name(session, item)


def _cohort_name(session: Session, item: CirclePost | CircleNote) -> str:
    post = item if isinstance(item, CirclePost) else session.get(CirclePost, item.post_id)
    assert post is not None
    cohort = session.get(Cohort, post.cohort_id)
    assert cohort is not None
    return cohort.name
