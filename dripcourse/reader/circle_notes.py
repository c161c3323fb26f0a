"""Reading the cohort circle, and the notes and reports members leave in it.

What a member sees under a lesson (``shared_on``), what an author sees in their journal
(``notes_for_author``), and the two things a reader can do there: leave a note of support
(up to ``NOTE_MAX_CHARS``, deletable by its author) and report something to the moderators.
Both are rate-limited per member. Who may read is ``circle.can_read``'s to say.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from dripcourse.courses.course import Course
from dripcourse.encryption import ReflectionCipher
from dripcourse.errors import NotFound
from dripcourse.models import CircleNote, CirclePost, CircleReport, Enrollment, Subscriber
from dripcourse.reader.circle import (
    ANONYMOUS,
    CircleRefused,
    can_read,
    is_anonymous,
    run,
    shown_name,
)
from dripcourse.reader.reflections import EmptyReflection, ReflectionRejected, check_text

NOTE_MAX_CHARS = 1000
# Rate limits per member, over the last 24 hours.
NOTES_PER_DAY = 20
REPORTS_PER_DAY = 10
DAY = dt.timedelta(days=1)
REPORT_REASONS = {
    "hurtful": "Unkind or hurtful",
    "identifying": "Names or identifies a patient or a colleague",
    "spam": "Advertising or off-topic",
    "other": "Something else a moderator should look at",
}


@dataclass(frozen=True)
class SharedNote:
    id: int
    author: str
    body: str
    created_at: dt.datetime
    own: bool
    hidden_reason: str | None


@dataclass(frozen=True)
class SharedReflection:
    id: int
    author: str
    body: str
    created_at: dt.datetime
    updated_at: dt.datetime
    own: bool
    hidden_reason: str | None  # shown to its author only: the cohort never sees a hidden one
    notes: list[SharedNote] = field(default_factory=list)


def _author(anonymous: bool, name: str, own: bool) -> str:
    if own:
        return "You" + (
            f" (shown as {ANONYMOUS})" if anonymous else f" (shown as {shown_name(name)})"
        )
    return ANONYMOUS if anonymous else shown_name(name)


def shared_on(
    session: Session, course: Course, viewer: Enrollment, day: int, cipher: ReflectionCipher
) -> list[SharedReflection]:
    """The reflections shared in the viewer's cohort on ``day``, oldest first, with their
    notes; empty when the viewer may not read them (``can_read``). Hidden ones only to their
    own author."""
    if not can_read(course, viewer, day):
        return []
    rows = session.execute(
        select(CirclePost, Subscriber.name)
        .join(Enrollment, CirclePost.enrollment_id == Enrollment.id)
        .join(Subscriber, Enrollment.subscriber_id == Subscriber.id)
        .where(CirclePost.cohort_id == viewer.cohort_id, CirclePost.day == day)
        .order_by(CirclePost.created_at, CirclePost.id)
    ).all()
    visible = [
        (post, name)
        for post, name in rows
        if post.hidden_reason is None or post.enrollment_id == viewer.id
    ]
    notes = _notes(session, [post.id for post, _ in visible], viewer.id, cipher)
    return [
        SharedReflection(
            id=post.id,
            author=_author(post.anonymous, name, post.enrollment_id == viewer.id),
            body=cipher.open(post.sealed_body),
            created_at=post.created_at,
            updated_at=post.updated_at,
            own=post.enrollment_id == viewer.id,
            hidden_reason=post.hidden_reason,
            notes=notes.get(post.id, []),
        )
        for post, name in visible
    ]


def _notes(
    session: Session, post_ids: list[int], viewer_id: int, cipher: ReflectionCipher
) -> dict[int, list[SharedNote]]:
    if not post_ids:
        return {}
    found: dict[int, list[SharedNote]] = {}
    rows = session.execute(
        select(CircleNote, Subscriber.name)
        .join(Enrollment, CircleNote.enrollment_id == Enrollment.id)
        .join(Subscriber, Enrollment.subscriber_id == Subscriber.id)
        .where(CircleNote.post_id.in_(post_ids))
        .order_by(CircleNote.created_at, CircleNote.id)
    )
    for note, name in rows:
        own = note.enrollment_id == viewer_id
        if note.hidden_reason is not None and not own:
            continue
        found.setdefault(note.post_id, []).append(
            SharedNote(
                id=note.id,
                author=_author(note.anonymous, name, own),
                body=cipher.open(note.sealed_body),
                created_at=note.created_at,
                own=own,
                hidden_reason=note.hidden_reason,
            )
        )
    return found


def notes_for_author(
    session: Session, enrollment: Enrollment, cipher: ReflectionCipher
) -> dict[int, SharedReflection]:
    """The author's shared reflections by day, with the notes left under them (journal)."""
    posts = session.scalars(select(CirclePost).where(CirclePost.enrollment_id == enrollment.id))
    by_id = {post.id: post for post in posts}
    notes = _notes(session, list(by_id), enrollment.id, cipher)
    return {
        post.day: SharedReflection(
            id=post.id,
            author=_author(post.anonymous, enrollment.subscriber.name, True),
            body="",  # the journal shows the reflection itself
            created_at=post.created_at,
            updated_at=post.updated_at,
            own=True,
            hidden_reason=post.hidden_reason,
            notes=notes.get(post.id, []),
        )
        for post in by_id.values()
    }


def _visible_post(
    session: Session, course: Course, viewer: Enrollment, day: int, post_id: int
) -> CirclePost:
    post = session.get(CirclePost, post_id)
    if (
        post is None
        or not can_read(course, viewer, day)
        or post.cohort_id != viewer.cohort_id
        or post.day != day
        or (post.hidden_reason is not None and post.enrollment_id != viewer.id)
    ):
        raise NotFound("that shared reflection is no longer there")
    return post


def _recent(
    session: Session, model: type[CircleNote] | type[CircleReport], who: int, now: dt.datetime
) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(model)
            .where(model.enrollment_id == who, model.created_at > now - DAY)
        )
        or 0
    )


def add_note(
    session: Session,
    course: Course,
    viewer: Enrollment,
    day: int,
    post_id: int,
    text: str,
    *,
    cipher: ReflectionCipher,
    now: dt.datetime,
) -> CircleNote:
    """Leave a note of support under a shared reflection; CircleRefused says why not."""
    post = _visible_post(session, course, viewer, day, post_id)
    if post.hidden_reason is not None:
        raise NotFound("that shared reflection is hidden")
    try:
        body = check_text(text, NOTE_MAX_CHARS)
    except EmptyReflection:
        raise CircleRefused("Your note is empty. Write something, then send it.", "empty") from None
    except ReflectionRejected:
        raise CircleRefused(
            f"Your note is longer than the limit of {NOTE_MAX_CHARS:,} characters.", "too-long"
        ) from None
    if _recent(session, CircleNote, viewer.id, now) >= NOTES_PER_DAY:
        raise CircleRefused(
            f"You have left {NOTES_PER_DAY} notes in the last day, the most we take; "
            "please write again tomorrow.",
            "too-many",
        )
    note = CircleNote(
        post_id=post.id,
        enrollment_id=viewer.id,
        sealed_body=cipher.seal(body),
        anonymous=is_anonymous(session, viewer.id),
        created_at=now,
    )
    session.add(note)
    session.flush()
    return note


def delete_note(session: Session, viewer: Enrollment, note_id: int) -> bool:
    """Delete a note its author wrote; False when it is not theirs (or gone)."""
    note = session.get(CircleNote, note_id)
    if note is None or note.enrollment_id != viewer.id:
        return False
    run(session, delete(CircleReport).where(CircleReport.note_id == note_id))
    run(session, delete(CircleNote).where(CircleNote.id == note_id))
    return True


def report(
    session: Session,
    course: Course,
    viewer: Enrollment,
    day: int,
    *,
    reason: str,
    now: dt.datetime,
    post_id: int | None = None,
    note_id: int | None = None,
) -> bool:
    """Report a shared reflection or a note to the moderators; False if already reported."""
    if reason not in REPORT_REASONS:
        raise CircleRefused("Choose one of the reasons given.", "reason")
    if note_id is not None:
        note = session.get(CircleNote, note_id)
        if note is None:
            raise NotFound("that note is no longer there")
        _visible_post(session, course, viewer, day, note.post_id)
        same = CircleReport.note_id == note_id
    elif post_id is not None:
        _visible_post(session, course, viewer, day, post_id)
        same = CircleReport.post_id == post_id
    else:
        raise NotFound("nothing to report")
    if session.scalar(select(CircleReport.id).where(same, CircleReport.enrollment_id == viewer.id)):
        return False
    if _recent(session, CircleReport, viewer.id, now) >= REPORTS_PER_DAY:
        raise CircleRefused(
            f"You have sent {REPORTS_PER_DAY} reports in the last day, the most we take; "
            "the moderators will read them.",
            "too-many",
        )
    session.add(
        CircleReport(
            enrollment_id=viewer.id, post_id=post_id, note_id=note_id, reason=reason, created_at=now
        )
    )
    return True
