"""The cohort circle: reflections their authors chose to share with their cohort, and notes.

Plain functions over a session and a ``now``; the pages (``pages/circle.py``) and the
moderators' commands (``cli/circle.py``) are thin adapters. Nothing is shared unless its
author ticks the box for that very reflection on the reflect page, and everything shared can
be taken back: unsharing, deleting reflections and forgetting a person delete it here.

A shared reflection is a sealed copy of the text as last saved on the reflect page (under the
reflections key, like the reflection): a reply by email changes the private reflection only,
never what the cohort reads. Who sees it: the members of the same cohort (their enrollment
active or completed) who have received that day's lesson, while the course and the cohort have
the circle on. How its author appears is their choice, "Ana R." or "A colleague": anonymous
posts carry nothing that links them to each other.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from nameparser import HumanName
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from dripcourse.courses.course import Course
from dripcourse.courses.greeting import given_name
from dripcourse.encryption import ReflectionCipher
from dripcourse.errors import InputError
from dripcourse.models import (
    CircleMember,
    CircleNote,
    CirclePost,
    CircleReport,
    Cohort,
    Enrollment,
    EnrollmentStatus,
)
from dripcourse.reader.reflections import WrittenReflection

ANONYMOUS = "A colleague"
# Who is a member of the circle: people still taking the course, or who finished it.
MEMBERS = (EnrollmentStatus.ACTIVE, EnrollmentStatus.COMPLETED)


class CircleRefused(InputError):
    """Something a member asked of the circle that cannot be done; the message says why, and
    ``code`` names the case for the page (empty, too-long, too-many, reason)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def is_on(course: Course, cohort: Cohort) -> bool:
    """Whether the circle is shown for this cohort: the course allows it and the cohort too."""
    return course.circle and cohort.circle


def is_member(enrollment: Enrollment) -> bool:
    return enrollment.status in MEMBERS


def shown_name(name: str) -> str:
    """How a named author appears: first name and the family name's initial ("Ana R."); "A
    colleague" when the name gives none (or looks like an address: none is ever shown)."""
    if "@" in name:
        return ANONYMOUS
    first = given_name(name)
    if not first:
        return ANONYMOUS
    last = HumanName(" ".join(name.split())).last.strip()
    initial = next((c.upper() for c in last if c.isalpha()), "")
    return f"{first} {initial}." if initial and last != first else first


def members(session: Session, cohort_id: int) -> int:
    """How many members the cohort's circle has (see MEMBERS)."""
    return (
        session.scalar(
            select(func.count())
            .select_from(Enrollment)
            .where(Enrollment.cohort_id == cohort_id, Enrollment.status.in_(MEMBERS))
        )
        or 0
    )


def is_anonymous(session: Session, enrollment_id: int) -> bool:
    """The author's choice of how to appear; anonymous until they choose otherwise."""
    found = session.get(CircleMember, enrollment_id)
    return True if found is None else found.anonymous


def set_anonymous(session: Session, enrollment_id: int, anonymous: bool, now: dt.datetime) -> None:
    """Record how this member appears from now on.

    Becoming anonymous also makes everything they shared and wrote before anonymous; becoming
    named applies only to what they share from then on, so an earlier anonymous post is never
    given a name after the fact.
    """
    found = session.get(CircleMember, enrollment_id)
    if found is None:
        session.add(CircleMember(enrollment_id=enrollment_id, anonymous=anonymous, updated_at=now))
    elif found.anonymous != anonymous:
        found.anonymous, found.updated_at = anonymous, now
    if anonymous:
        for model in (CirclePost, CircleNote):
            session.execute(
                update(model)
                .where(model.enrollment_id == enrollment_id)
                .values(anonymous=True)
                .execution_options(synchronize_session=False)
            )


# -- the author's side: sharing and withdrawing -------------------------------------------


def post_of(session: Session, enrollment_id: int, day: int) -> CirclePost | None:
    return session.scalar(
        select(CirclePost).where(CirclePost.enrollment_id == enrollment_id, CirclePost.day == day)
    )


def share(
    session: Session,
    enrollment: Enrollment,
    reflection: WrittenReflection,
    *,
    anonymous: bool,
    cipher: ReflectionCipher,
    now: dt.datetime,
) -> CirclePost:
    """Share this reflection's text with the cohort, or show them its new text if shared."""
    set_anonymous(session, enrollment.id, anonymous, now)
    sealed = cipher.seal(reflection.body)
    post = post_of(session, enrollment.id, reflection.day)
    if post is None:
        post = CirclePost(
            reflection_id=reflection.id,
            enrollment_id=enrollment.id,
            cohort_id=enrollment.cohort_id,
            day=reflection.day,
            sealed_body=sealed,
            anonymous=anonymous,
            created_at=now,
            updated_at=now,
        )
        session.add(post)
    else:
        post.anonymous = anonymous
        if cipher.open(post.sealed_body) != reflection.body:  # saved again unchanged: not edited
            post.sealed_body, post.updated_at = sealed, now
    session.flush()
    return post


def unshare(session: Session, enrollment_id: int, day: int) -> bool:
    """Take a shared reflection back at once, with the notes under it; False if not shared."""
    post = post_of(session, enrollment_id, day)
    if post is None:
        return False
    _delete_posts(session, [post.id])
    return True


def _delete_posts(session: Session, post_ids: list[int]) -> int:
    if not post_ids:
        return 0
    notes = select(CircleNote.id).where(CircleNote.post_id.in_(post_ids))
    run(session, delete(CircleReport).where(CircleReport.note_id.in_(notes)))
    run(session, delete(CircleReport).where(CircleReport.post_id.in_(post_ids)))
    run(session, delete(CircleNote).where(CircleNote.post_id.in_(post_ids)))
    return run(session, delete(CirclePost).where(CirclePost.id.in_(post_ids)))


def run(session: Session, statement) -> int:  # type: ignore[no-untyped-def]
    return session.execute(statement.execution_options(synchronize_session=False)).rowcount


@dataclass(frozen=True)
class Erased:
    posts: int
    notes: int


def erase(session: Session, enrollment_ids: list[int]) -> Erased:
    """Delete everything these enrollments shared and wrote in the circle: their shared
    reflections (with the notes under them), their notes, their reports and their choice."""
    if not enrollment_ids:
        return Erased(0, 0)
    posts = list(
        session.scalars(select(CirclePost.id).where(CirclePost.enrollment_id.in_(enrollment_ids)))
    )
    shared = _delete_posts(session, posts)
    own_notes = select(CircleNote.id).where(CircleNote.enrollment_id.in_(enrollment_ids))
    run(session, delete(CircleReport).where(CircleReport.note_id.in_(own_notes)))
    notes = run(session, delete(CircleNote).where(CircleNote.enrollment_id.in_(enrollment_ids)))
    run(session, delete(CircleReport).where(CircleReport.enrollment_id.in_(enrollment_ids)))
    run(session, delete(CircleMember).where(CircleMember.enrollment_id.in_(enrollment_ids)))
    return Erased(shared, notes)


def shared_by(session: Session, subscriber_id: int) -> int:
    """How many reflections this person has shared (none is read)."""
    return (
        session.scalar(
            select(func.count())
            .select_from(CirclePost)
            .join(Enrollment, CirclePost.enrollment_id == Enrollment.id)
            .where(Enrollment.subscriber_id == subscriber_id)
        )
        or 0
    )


@dataclass(frozen=True)
class ShareBox:
    """What the reflect page's share choice says: who will see it, and under which name."""

    shared: bool
    anonymous: bool
    name: str  # how they appear when named
    others: int  # the other members of the cohort
    small: bool  # fewer members than the threshold: anonymity is weak
    behind: bool  # shared, but the reflection changed since (a reply by email)
    hidden_reason: str | None


def share_box(
    session: Session,
    enrollment: Enrollment,
    reflection: WrittenReflection | None,
    day: int,
    *,
    cipher: ReflectionCipher,
    small_cohort: int,
) -> ShareBox:
    post = post_of(session, enrollment.id, day)
    everyone = members(session, enrollment.cohort_id)
    others = everyone - (1 if is_member(enrollment) else 0)
    behind = (
        post is not None
        and reflection is not None
        and cipher.open(post.sealed_body) != reflection.body
    )
    return ShareBox(
        shared=post is not None,
        anonymous=is_anonymous(session, enrollment.id),
        name=shown_name(enrollment.subscriber.name),
        others=others,
        small=everyone < small_cohort,
        behind=behind,
        hidden_reason=post.hidden_reason if post is not None else None,
    )


def can_read(course: Course, viewer: Enrollment, day: int) -> bool:
    """Whether this member may read the circle of ``day``: the circle is on, they are a
    member of the cohort, and they have received that lesson."""
    return is_on(course, viewer.cohort) and is_member(viewer) and 1 <= day <= viewer.day


def shared_count(session: Session, enrollment: Enrollment, course: Course, day: int) -> int:
    """How many others in this member's cohort shared their reflection on ``day`` (visible
    ones only); 0 when the member may not read that day's circle. No text is read."""
    if not can_read(course, enrollment, day):
        return 0
    return (
        session.scalar(
            select(func.count())
            .select_from(CirclePost)
            .where(
                CirclePost.cohort_id == enrollment.cohort_id,
                CirclePost.day == day,
                CirclePost.hidden_reason.is_(None),
                CirclePost.enrollment_id != enrollment.id,
            )
        )
        or 0
    )


def rekey(session: Session, cipher: ReflectionCipher) -> int:
    """Seal every shared text and note again under the first key; how many."""
    total = 0
    for model in (CirclePost, CircleNote):
        for row in session.scalars(select(model)):
            row.sealed_body = cipher.reseal(row.sealed_body)
            total += 1
    return total
