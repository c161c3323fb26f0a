"""The check-in page: a one-click answer recorded and confirmed, changeable, with the journal.

A lesson's answer links are ``/c/<token>/<question>/<answer>``: the token (purpose
``checkin``, enrollment and day) says whose lesson it is; the two numbers are the choice, as
a form's fields would be. Following one records the answer (again: nothing changes) and shows
the page, where another choice is a button away. A HEAD request records nothing.
"""

from __future__ import annotations

from flask import Response, abort, redirect, render_template, request, url_for

from dripcourse import links
from dripcourse.courses.checkins import SCALE, Checkin
from dripcourse.db import transaction
from dripcourse.reader import checkins
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


@bp.route("/c/<token>", methods=["GET", "POST"], **ROUTE)
def checkin(token: str) -> Response | str:
    """The lesson's check-in questions with the answers given; a post changes one."""
    enrollment_id, day = load(links.CHECKIN, token, 2)
    question = request.form.get("question", "") if request.method == "POST" else ""
    answer = request.form.get("answer", "") if request.method == "POST" else ""
    with transaction(runtime().sessions) as session:
        enrollment = enrollment_of(session, enrollment_id)
        course = course_of(enrollment)
        asked = checkins.asked(course, enrollment, day)
        if not asked:
            abort(404)
        if request.method == "POST":
            if not check_form(links.CHECKIN, enrollment_id, day):
                abort(403)  # only expired: nothing typed is lost, reload and press again
            chosen = _choice(asked, question, answer)
            checkins.record(session, enrollment_id, day, chosen[0], chosen[1], now())
            return redirect(url_for(".checkin", token=token, saved=chosen[0].number), code=303)
        given = {
            a.question: a.answer for a in checkins.answers(session, enrollment_id) if a.day == day
        }
        return render_template(
            "checkin.html",
            course=course,
            day=day,
            asked=asked,
            given=given,
            scale=SCALE,
            saved=request.args.get("saved", ""),
            token=token,
            form_token=form_token(links.CHECKIN, enrollment_id, day),
            journal_token=link(links.JOURNAL, enrollment_id),
        )


@bp.get("/c/<token>/<question>/<answer>", **ROUTE)
def one_click(token: str, question: str, answer: str) -> Response:
    """Record the answer a lesson's link carries, then show the page saying so."""
    enrollment_id, day = load(links.CHECKIN, token, 2)
    with transaction(runtime().sessions) as session:
        enrollment = enrollment_of(session, enrollment_id)
        chosen = _choice(checkins.asked(course_of(enrollment), enrollment, day), question, answer)
        if request.method == "GET":
            checkins.record(session, enrollment_id, day, chosen[0], chosen[1], now())
    return redirect(url_for(".checkin", token=token, saved=chosen[0].number), code=303)


def _choice(asked: tuple[Checkin, ...], question: str, answer: str) -> tuple[Checkin, int]:
    """The question and answer a link or form names; 404 for anything not on offer."""
    found = [c for c in asked if str(c.number) == question]
    if not found or answer not in {str(n) for n in SCALE}:
        abort(404)
    return found[0], int(answer)
