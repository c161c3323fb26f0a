"""The pages of a subscriber's own writing: reflect, the journal and its downloads, a lesson.

Thin adapters over ``reflections``, ``journal`` and ``lessons_sent``; what the link opens and
which links a page may offer are ``access``'s.
"""

from __future__ import annotations

from flask import Response, abort, redirect, render_template, request, url_for
from markupsafe import Markup
from sqlalchemy.orm import Session

from dripcourse import links, schedule
from dripcourse.courses import lessons_sent
from dripcourse.courses.course import Course
from dripcourse.courses.render import RenderedLesson
from dripcourse.db import transaction
from dripcourse.models import Enrollment, EnrollmentStatus
from dripcourse.reader import journal as journals
from dripcourse.reader import reflections
from dripcourse.reader.pages import support
from dripcourse.reader.pages.access import (
    ROUTE,
    bp,
    check_form,
    course_of,
    enrollment_of,
    form_token,
    link,
    load,
    now,
    runtime,
)


@bp.route("/r/<token>", methods=["GET", "POST"], **ROUTE)
def reflect(token: str) -> Response | str | tuple[str, int]:
    """The day's question and a form to write (or rewrite) the reflection."""
    enrollment_id, day = load(links.REFLECT, token, 2)
    # The whole post is read before a pooled connection is taken: a slow upload holds none.
    posted = request.form.get("reflection", "") if request.method == "POST" else ""
    with transaction(runtime().sessions) as session:
        enrollment = enrollment_of(session, enrollment_id)
        # Only lessons already sent: a token for a future day shows nothing.
        if not 1 <= day <= enrollment.day:
            abort(404)
        course = course_of(enrollment)
        # The words as this subscriber received them, else the course's as they are now.
        lesson = lessons_sent.sent_lesson(
            session, enrollment, day, rendered_or_none(course, day)
        ) or reflections.lesson_or_none(course, day)
        cipher = runtime().reflection_cipher
        reflection = reflections.get_reflection(session, enrollment_id, day, cipher)
        prompt = reflections.prompt_for(lesson, reflection)
        if prompt is None:
            abort(404)  # the course lost this day and nothing was written for it
        page = {
            "course": course,
            "day": day,
            "lesson": lesson,
            "prompt": prompt,
            "reflection": reflection,
            "token": token,
            "journal_token": link(links.JOURNAL, enrollment_id),
            "lesson_token": link(links.LESSON, enrollment_id, day),
            "form_token": form_token(links.REFLECT, enrollment_id, day),
            "max_chars": runtime().settings.reflection_max_chars,
            "zone": enrollment.subscriber.timezone,
        }
        if request.method in ("GET", "HEAD"):
            text = reflection.body if reflection else ""
            # Only with a reflection to show: ?saved=1 by itself is not a saved reflection.
            saved = "saved" in request.args and reflection is not None
            # Worked out from what was just saved, as the page is shown; kept nowhere.
            care = support.after_writing(course, enrollment.subscriber, text) if saved else None
            return render_template("reflect.html", **page, text=text, saved=saved, care=care)
        if not check_form(links.REFLECT, enrollment_id, day):
            error = (
                "This page was open a long time, so your reflection was not saved yet. "
                "It is below: press Save again."
            )
            return render_template("reflect.html", **page, text=posted, error=error), 400
        try:
            reflections.save_reflection(
                session,
                enrollment,
                day,
                prompt,
                posted,
                cipher=cipher,
                max_chars=page["max_chars"],
                now=now(),
            )
        except reflections.ReflectionRejected as exc:
            # Shown again as typed, less the control characters a page may not hold.
            again = reflections.as_typed(posted)
            error = str(exc)
            if reflection is not None and isinstance(exc, reflections.EmptyReflection):
                # Emptying the box is not deleting: say what was kept, and where deleting is.
                error = (
                    "The box was empty, so nothing was saved: your reflection for this day is "
                    "kept as it was (it is below). To delete reflections, use your journal."
                )
                again = reflection.body
            return render_template("reflect.html", **page, text=again, error=error), 400
    return redirect(url_for(".reflect", token=token, saved=1), code=303)


@bp.get("/j/<token>", **ROUTE)
def journal(token: str) -> str:
    """Every past lesson with its question and what the subscriber wrote, newest first."""
    (enrollment_id,) = load(links.JOURNAL, token, 1)
    with transaction(runtime().sessions) as session:
        enrollment, course, entries, done = _journal(session, enrollment_id)
        return render_template(
            "journal.html",
            course=course,
            entries=entries,
            reflect_tokens={e.day: link(links.REFLECT, enrollment_id, e.day) for e in entries},
            lesson_tokens={e.day: link(links.LESSON, enrollment_id, e.day) for e in entries},
            done=done,
            zone=enrollment.subscriber.timezone,
            token=token,
            care=support.on_the_journal(course, enrollment.subscriber, entries, now()),
        )


def _journal(
    session: Session, enrollment_id: int
) -> tuple[Enrollment, Course, list[reflections.JournalEntry], journals.Completion | None]:
    enrollment = enrollment_of(session, enrollment_id)
    course = course_of(enrollment)
    entries = reflections.journal(session, enrollment, course, runtime().reflection_cipher)
    zone = schedule.zone(enrollment.subscriber.timezone)
    return enrollment, course, entries, journals.completion(enrollment, entries, zone)


DOWNLOADS = {
    "md": ("text/markdown; charset=utf-8", journals.as_markdown),
    "txt": ("text/plain; charset=utf-8", journals.as_text),
}


@bp.get("/j/<token>/journal.<kind>")
def download(token: str, kind: str) -> Response | str:
    """The journal to keep: a Markdown or text file, or a page made for printing."""
    (enrollment_id,) = load(links.JOURNAL, token, 1)
    if kind not in (*DOWNLOADS, "html"):
        abort(404)
    with transaction(runtime().sessions) as session:
        enrollment, course, entries, done = _journal(session, enrollment_id)
        zone = schedule.zone(enrollment.subscriber.timezone)
        if kind == "html":
            return render_template(
                "print.html",
                course=course,
                entries=list(reversed(entries)),
                done=done,
                zone=zone.key,
                token=token,
            )
        mimetype, make = DOWNLOADS[kind]
        body = make(course.title, entries, zone, done)
    filename = f"{course.slug}-journal.{kind}"
    return Response(
        body,
        content_type=mimetype,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@bp.get("/l/<token>")
def lesson(token: str) -> str:
    """A lesson as this subscriber received it: "read in your browser"."""
    enrollment_id, day = load(links.LESSON, token, 2)
    with transaction(runtime().sessions) as session:
        enrollment = enrollment_of(session, enrollment_id)
        course = course_of(enrollment)
        current = rendered_or_none(course, day)
        sent = lessons_sent.sent_lesson(session, enrollment, day, current)
        if sent is None:
            abort(404)  # never sent to them (or the course lost it and no version was kept)
        done = None
        if enrollment.status == EnrollmentStatus.COMPLETED and day == enrollment.day:
            _, _, entries, done = _journal(session, enrollment_id)
        return render_template(
            "lesson.html",
            course=course,
            lesson=sent,
            body=Markup(sent.body_html),  # our own Markdown rendering of staff's lesson
            done=done,
            zone=enrollment.subscriber.timezone,
            reflect_token=link(links.REFLECT, enrollment_id, day),
            journal_token=link(links.JOURNAL, enrollment_id),
        )


def rendered_or_none(course: Course, day: int) -> RenderedLesson | None:
    """The course's lesson for ``day`` as it renders now, or None if it has no such day."""
    if not 1 <= day <= course.length:
        return None
    return runtime().catalog.renderer.lesson(course, day)
