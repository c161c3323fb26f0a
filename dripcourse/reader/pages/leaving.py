"""The pages for stepping back: pause, unsubscribe, delete my data, and the privacy notice.

Thin adapters over ``enrollment`` and ``privacy``. Pause and unsubscribe links never expire
(leaving must always work), so their pages show nothing private and offer no link to it.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from flask import Response, abort, redirect, render_template, request, url_for

from dripcourse import links, schedule
from dripcourse.db import transaction, write_back_deletions
from dripcourse.models import EnrollmentStatus
from dripcourse.people import enrollment as enrollments
from dripcourse.reader import circle, privacy
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
from dripcourse.reader.privacy_notice import privacy_notice

# The pause lengths offered, in days, with what the button says.
PAUSE_CHOICES = {"1": "1 day", "7": "1 week", "14": "2 weeks"}
ONE_CLICK = "One-Click"
FORM_MIMETYPES = ("application/x-www-form-urlencoded", "multipart/form-data")

# -- pause and unsubscribe ---------------------------------------------------------------


@bp.route("/p/<token>", methods=["GET", "POST"], **ROUTE)
def pause(token: str) -> Response | str:
    """Pause the course for a week, or resume early; a GET only shows where things stand."""
    (enrollment_id,) = load(links.PAUSE, token, 1)
    # The whole post is read before a pooled connection is taken: a slow upload holds none.
    action = request.form.get("action") if request.method == "POST" else None
    days = request.form.get("days", "7") if request.method == "POST" else None
    with transaction(runtime().sessions) as session:
        enrollment = enrollment_of(session, enrollment_id)
        course = course_of(enrollment)
        if request.method == "POST":
            if action not in ("pause", "resume") or days not in PAUSE_CHOICES:
                abort(400)
            if not check_form(links.PAUSE, enrollment_id):
                abort(403)  # only expired, but nothing typed is lost: reload and press again
            if action == "pause":
                length = dt.timedelta(days=int(days))
                enrollments.pause(session, enrollment, course, now(), length)
            else:
                enrollments.resume(session, enrollment, course, now())
        else:
            tz = schedule.zone(enrollment.subscriber.timezone)
            moment = now()
            paused = enrollment.paused_until is not None and enrollment.paused_until > moment
            return render_template(
                "pause.html",
                course=course,
                enrollment=enrollment,
                active=enrollment.status == EnrollmentStatus.ACTIVE,
                paused=paused,
                paused_until=_local(enrollment.paused_until, tz),
                next_lesson=_local(enrollments.next_lesson_at(session, enrollment), tz),
                next_day=enrollment.day + 1,
                more_lessons=enrollment.day < course.length,
                zone=tz.key,
                choices=PAUSE_CHOICES,
                token=token,
                form_token=form_token(links.PAUSE, enrollment_id),
            )
    return redirect(url_for(".pause", token=token), code=303)


@bp.route("/u/<token>", methods=["GET", "POST"], **ROUTE)
def unsubscribe(token: str) -> str:
    """GET asks to confirm; POST unsubscribes (RFC 8058 one-click needs no form token)."""
    (enrollment_id,) = load(links.UNSUBSCRIBE, token, 1)
    if request.method == "POST" and not _is_one_click():
        check_form(links.UNSUBSCRIBE, enrollment_id)  # an expired form token is fine here
    with transaction(runtime().sessions) as session:
        enrollment = enrollment_of(session, enrollment_id)
        if request.method == "POST":
            enrollments.unsubscribe(session, enrollment, now())
        return render_template(
            "unsubscribe.html",
            course=course_of(enrollment),
            unsubscribed=enrollment.status == EnrollmentStatus.UNSUBSCRIBED,
            token=token,
            form_token=form_token(links.UNSUBSCRIBE, enrollment_id),
            pause_token=link(links.PAUSE, enrollment_id),
            shared=circle.shared_by(session, enrollment.subscriber_id),
        )


def _is_one_click() -> bool:
    """A mail provider's RFC 8058 post: ``List-Unsubscribe=One-Click``, however it is sent.

    A form body (url-encoded or multipart) is read as a form, ignoring whitespace around the
    value (some providers end the body with CRLF). Anything else (text/plain, or no content
    type) is not parsed as a form, so the raw body is compared instead.
    """
    if request.mimetype in FORM_MIMETYPES:
        return request.form.get("List-Unsubscribe", "").strip() == ONE_CLICK
    return request.get_data(cache=True, as_text=True).strip() == f"List-Unsubscribe={ONE_CLICK}"


def _local(moment: dt.datetime | None, tz: ZoneInfo) -> dt.datetime | None:
    return None if moment is None else moment.astimezone(tz)


# -- deleting ------------------------------------------------------------------------------

DELETIONS = ("reflections", "everything")


@bp.route("/j/<token>/delete/<what>", methods=["GET", "POST"], **ROUTE)
def delete(token: str, what: str) -> str:
    """Delete my reflections, or everything about me: GET asks to confirm, POST deletes."""
    (enrollment_id,) = load(links.JOURNAL, token, 1)
    if what not in DELETIONS:
        abort(404)
    purpose = f"delete-{what}"
    # An expired form token is refused like a forged one: deleting needs a fresh "yes".
    if request.method == "POST" and not check_form(purpose, enrollment_id):
        abort(403)
    with transaction(runtime().sessions) as session:
        enrollment = enrollment_of(session, enrollment_id)
        course = course_of(enrollment)
        subscriber = enrollment.subscriber
        if request.method != "POST":  # GET, and HEAD (a GET without its body): only ask
            return render_template(
                "delete.html",
                course=course,
                what=what,
                reflections=privacy.reflections_of(session, subscriber),
                courses=len(subscriber.enrollments),
                token=token,
                form_token=form_token(purpose, enrollment_id),
            )
        if what == "reflections":
            deleted = privacy.delete_reflections(session, subscriber)
            return render_template(
                "deleted.html", course=course, what=what, deleted=deleted, token=token
            )
        address = subscriber.email
        privacy.forget_subscriber(session, subscriber, now())
    privacy.remove_outbox_files(runtime().outbox, address)
    write_back_deletions(runtime().engine)
    return render_template("deleted.html", course=None, what=what, token=token)


@bp.get("/privacy", **ROUTE)
def privacy_page() -> str:
    """What is stored, who can read it, how long it is kept and how to delete it."""
    return render_template("privacy.html", course=None, sections=privacy_notice(runtime().settings))


@bp.get("/j/<token>/privacy", **ROUTE)
def journal_privacy_page(token: str) -> str:
    """The privacy page as the journal opens it: the course's header and a way back."""
    (enrollment_id,) = load(links.JOURNAL, token, 1)
    with transaction(runtime().sessions) as session:
        course = course_of(enrollment_of(session, enrollment_id))
    return render_template(
        "privacy.html", course=course, sections=privacy_notice(runtime().settings), token=token
    )
