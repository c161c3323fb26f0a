"""The pages for stepping back: pause, unsubscribe (and undo it), delete my data, privacy.

Thin adapters over ``enrollment``, ``rejoining`` and ``privacy``. Pause and unsubscribe links
never expire (leaving must always work), so their pages show nothing private and offer no
link to it: their journal button emails a fresh link to the reader's own address instead
(``journal_link`` says why).
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from flask import Response, abort, redirect, render_template, request, url_for

from dripcourse import links, schedule
from dripcourse.db import transaction, write_back_deletions
from dripcourse.models import EnrollmentStatus
from dripcourse.people import enrollment as enrollments
from dripcourse.people import pausing, rejoining
from dripcourse.reader import circle, journal_link, privacy
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
RESUBSCRIBE = "resubscribe"  # the form token's purpose
ASK_JOURNAL = "journal-link"
# What a page may say after its journal button was pressed (its ?journal=...).
JOURNAL_ANSWERS = {a.value for a in journal_link.Asked} | {"expired"}

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
                pausing.pause(session, enrollment, course, now(), length)
            else:
                pausing.resume(session, enrollment, course, now())
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
                next_lesson=_local(pausing.next_lesson_at(session, enrollment), tz),
                next_day=enrollment.day + 1,
                more_lessons=enrollment.day < course.length,
                zone=tz.key,
                choices=PAUSE_CHOICES,
                token=token,
                form_token=form_token(links.PAUSE, enrollment_id),
                **_journal_offer(session, enrollment, ".pause_journal_link", token),
            )
    return redirect(url_for(".pause", token=token), code=303)


@bp.route("/u/<token>", methods=["GET", "POST"], **ROUTE)
def unsubscribe(token: str) -> str:
    """GET asks to confirm; POST unsubscribes (RFC 8058 one-click needs no form token).

    Once unsubscribed, the page offers to undo it for ``RESUBSCRIBE_DAYS`` (or says whom to
    ask) and to email a journal link; ``?back=1`` is where resubscribing lands.
    """
    (enrollment_id,) = load(links.UNSUBSCRIBE, token, 1)
    if request.method == "POST" and not _is_one_click():
        check_form(links.UNSUBSCRIBE, enrollment_id)  # an expired form token is fine here
    with transaction(runtime().sessions) as session:
        enrollment = enrollment_of(session, enrollment_id)
        course = course_of(enrollment)
        if request.method == "POST":
            enrollments.unsubscribe(session, enrollment, now())
        unsubscribed = enrollment.status == EnrollmentStatus.UNSUBSCRIBED
        tz = schedule.zone(enrollment.subscriber.timezone)
        standing = rejoining.standing(session, enrollment, now())
        back = request.args.get("back") == "1" and not unsubscribed
        settings = runtime().settings
        return render_template(
            "unsubscribe.html",
            course=course,
            unsubscribed=unsubscribed,
            back=back,
            active=enrollment.status == EnrollmentStatus.ACTIVE,
            standing=standing.answer.value,
            until=_local(standing.until, tz),
            days=rejoining.RESUBSCRIBE_DAYS,
            next_day=enrollment.day + 1,
            next_lesson=_local(pausing.next_lesson_at(session, enrollment), tz) if back else None,
            zone=tz.key,
            team_name=settings.team_name,
            team_contact=settings.team_contact,
            token=token,
            form_token=form_token(links.UNSUBSCRIBE, enrollment_id),
            resubscribe_token=form_token(RESUBSCRIBE, enrollment_id),
            pause_token=link(links.PAUSE, enrollment_id),
            **(
                _journal_offer(session, enrollment, ".unsubscribe_journal_link", token)
                if unsubscribed or back
                else {}
            ),
            shared=circle.shared_by(session, enrollment.subscriber_id),
        )


@bp.post("/u/<token>/resubscribe", **ROUTE)
def resubscribe(token: str) -> Response:
    """Undo the unsubscribe: the lessons carry on where they stopped (``rejoining``)."""
    (enrollment_id,) = load(links.UNSUBSCRIBE, token, 1)
    if not check_form(RESUBSCRIBE, enrollment_id):
        # Only expired: the page, shown again, has a fresh form; nothing was typed.
        return redirect(url_for(".unsubscribe", token=token), code=303)
    with transaction(runtime().sessions) as session:
        enrollment = enrollment_of(session, enrollment_id)
        rejoining.resubscribe(session, enrollment, runtime().catalog.course, now())
    return redirect(url_for(".unsubscribe", token=token, back=1), code=303)


@bp.post("/u/<token>/journal-link", **ROUTE)
def unsubscribe_journal_link(token: str) -> Response:
    """Email a fresh journal link to the reader's address (see ``journal_link``)."""
    (enrollment_id,) = load(links.UNSUBSCRIBE, token, 1)
    answer = _ask_journal_link(enrollment_id)
    back = {"back": 1} if request.args.get("back") == "1" else {}
    return redirect(url_for(".unsubscribe", token=token, journal=answer, **back), code=303)


@bp.post("/p/<token>/journal-link", **ROUTE)
def pause_journal_link(token: str) -> Response:
    """The same from the pause page."""
    (enrollment_id,) = load(links.PAUSE, token, 1)
    answer = _ask_journal_link(enrollment_id)
    return redirect(url_for(".pause", token=token, journal=answer), code=303)


def _ask_journal_link(enrollment_id: int) -> str:
    """Send the journal link for the page's enrollment; what the page should say."""
    if not check_form(ASK_JOURNAL, enrollment_id):
        return "expired"
    rt = runtime()
    try:
        with transaction(rt.sessions) as session:
            enrollment = enrollment_of(session, enrollment_id)
            return journal_link.send(
                session,
                enrollment,
                course_of(enrollment),
                rt.links,
                rt.transport.send,
                now(),
                message_id_domain=rt.settings.message_id_domain,
                team_name=rt.settings.team_name,
                max_age_days=rt.settings.reflect_max_age_days,
            ).value
    except journal_link.NotSent:
        return journal_link.Asked.FAILED.value


def _journal_offer(session, enrollment, endpoint: str, token: str) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """What a leaving page needs for its journal button, and the answer to the last press."""
    answer = request.args.get("journal", "")
    back = {"back": 1} if endpoint.startswith(".unsubscribe") and request.args.get("back") else {}
    return {
        "journal_offer": journal_link.may_mail(session, enrollment.subscriber.email),
        "journal_action": url_for(endpoint, token=token, **back),
        "journal_form_token": form_token(ASK_JOURNAL, enrollment.id),
        "journal_answer": answer if answer in JOURNAL_ANSWERS else "",
    }


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
