"""The cohort circle's pages: what the lesson page shows under the lesson, the share choice on
the reflect page, the notes in the journal, and the one form post that acts on the circle.

Thin adapters over ``reader.circle``. A lesson token reads the circle of its own cohort and
day only (``circle.can_read``); every post also needs the reader's own form token for that
lesson (purpose ``circle``, bound to their enrollment and the day), like the other forms.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Response, abort, redirect, request, url_for
from sqlalchemy.orm import Session

from dripcourse import links
from dripcourse.courses.course import Course
from dripcourse.db import transaction
from dripcourse.errors import NotFound
from dripcourse.models import Enrollment
from dripcourse.reader import circle, circle_notes
from dripcourse.reader.pages.access import (
    ROUTE,
    bp,
    check_form,
    course_of,
    enrollment_of,
    form_token,
    load,
    now,
    runtime,
)
from dripcourse.reader.reflections import WrittenReflection

FORM = "circle"
# The reflect form's fields about sharing: "circle" says the box was shown.
SHARE_FIELDS = ("circle", "share", "shown_as")
ACTIONS = ("note", "delete-note", "report", "withdraw")
# What the lesson page says after a post: fixed sentences, never anything typed, in the URL.
SAID = {
    "noted": "Your note is posted.",
    "note-deleted": "Your note is deleted.",
    "reported": "Thank you: the moderators will look at it.",
    "withdrawn": "Your reflection is withdrawn from the circle. It stays in your journal.",
    "gone": "That is no longer in the circle, so nothing was done.",
    "expired": "This page was open a long time, so nothing was posted. Please try again.",
    "empty": "Your note was empty, so nothing was posted.",
    "too-long": f"Notes are up to {circle_notes.NOTE_MAX_CHARS:,} characters; nothing was posted.",
    "too-many": "You have reached the most notes or reports we take in a day; nothing was "
    "posted. Please try again tomorrow.",
}


@dataclass(frozen=True)
class LessonCircle:
    """What the lesson page shows of the circle (``shown`` False: nothing at all)."""

    shown: bool
    shared: list[circle_notes.SharedReflection]
    token: str = ""
    form_token: str = ""
    said: str = ""
    reasons: dict[str, str] | None = None
    max_chars: int = circle_notes.NOTE_MAX_CHARS


def for_lesson(
    session: Session, course: Course, enrollment: Enrollment, day: int, token: str
) -> LessonCircle:
    """The circle under a lesson, for its reader (who holds the lesson's link)."""
    if not circle.can_read(course, enrollment, day):
        return LessonCircle(shown=False, shared=[])
    shared = circle_notes.shared_on(session, course, enrollment, day, runtime().reflection_cipher)
    return LessonCircle(
        shown=True,
        shared=shared,
        token=token,
        form_token=form_token(FORM, enrollment.id, day),
        said=SAID.get(request.args.get("said", ""), ""),
        reasons=circle_notes.REPORT_REASONS,
    )


def for_journal(
    session: Session, enrollment: Enrollment
) -> dict[int, circle_notes.SharedReflection]:
    """The author's shared reflections by day, with the notes under them, for the journal."""
    return circle_notes.notes_for_author(session, enrollment, runtime().reflection_cipher)


def share_box(
    session: Session,
    course: Course,
    enrollment: Enrollment,
    day: int,
    reflection: WrittenReflection | None,
) -> circle.ShareBox | None:
    """The reflect page's share choice; None when the circle is off for this cohort, or for
    someone who left it (unsubscribed) with nothing shared there: what they did share, they
    can still withdraw here."""
    if not circle.is_on(course, enrollment.cohort):
        return None
    if not circle.is_member(enrollment) and circle.post_of(session, enrollment.id, day) is None:
        return None
    return circle.share_box(
        session,
        enrollment,
        reflection,
        day,
        cipher=runtime().reflection_cipher,
        small_cohort=runtime().settings.circle_small_cohort,
    )


def after_save(
    session: Session,
    course: Course,
    enrollment: Enrollment,
    saved: WrittenReflection,
    form: dict[str, str],
) -> None:
    """Share, update or withdraw the reflection just saved, as the reflect form's box says.

    Only when the form showed the box (``circle`` in it): a form without it (the circle off)
    changes nothing shared.
    """
    box = share_box(session, course, enrollment, saved.day, saved)
    if "circle" not in form or box is None:
        return
    if form.get("share") == "yes":
        circle.share(
            session,
            enrollment,
            saved,
            anonymous=form.get("shown_as") != "name",
            cipher=runtime().reflection_cipher,
            now=now(),
        )
    else:
        circle.unshare(session, enrollment.id, saved.day)


@bp.post("/l/<token>/circle", **ROUTE)
def act(token: str) -> Response:
    """Leave or delete a note, report, or withdraw one's own shared reflection."""
    enrollment_id, day = load(links.LESSON, token, 2)
    form = {k: request.form.get(k, "") for k in ("action", "post", "note", "text", "reason")}
    if form["action"] not in ACTIONS:
        abort(400)
    fresh = check_form(FORM, enrollment_id, day)
    said = "expired"
    if fresh:
        with transaction(runtime().sessions) as session:
            enrollment = enrollment_of(session, enrollment_id)
            course = course_of(enrollment)
            if not circle.can_read(course, enrollment, day):
                abort(404)
            said = _act(session, course, enrollment, day, form)
    return redirect(url_for(".lesson", token=token, said=said, _anchor="circle"), code=303)


def _number(value: str) -> int | None:
    return int(value) if value.isdigit() and len(value) <= 9 else None


def _act(
    session: Session, course: Course, enrollment: Enrollment, day: int, form: dict[str, str]
) -> str:
    action, post_id, note_id = form["action"], _number(form["post"]), _number(form["note"])
    try:
        if action == "note" and post_id is not None:
            circle_notes.add_note(
                session,
                course,
                enrollment,
                day,
                post_id,
                form["text"],
                cipher=runtime().reflection_cipher,
                now=now(),
            )
            return "noted"
        if action == "delete-note" and note_id is not None:
            return (
                "note-deleted" if circle_notes.delete_note(session, enrollment, note_id) else "gone"
            )
        if action == "report" and (post_id is not None or note_id is not None):
            circle_notes.report(
                session,
                course,
                enrollment,
                day,
                reason=form["reason"],
                now=now(),
                post_id=None if note_id is not None else post_id,
                note_id=note_id,
            )
            return "reported"
        if action == "withdraw":
            return "withdrawn" if circle.unshare(session, enrollment.id, day) else "gone"
    except NotFound:
        return "gone"
    except circle.CircleRefused as exc:
        if exc.code in SAID:
            return exc.code
    abort(400)
