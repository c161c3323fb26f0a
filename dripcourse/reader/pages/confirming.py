"""The page behind the link in the message about a reply from another address: save or discard.

A thin adapter over ``held_replies``. The link is the reader's only credential, as on every
page (``access``), and it always expires (``links.MAX_AGE_DAYS``): an expired, used or deleted
one gets a page that says which, with 410, and shows nothing. It offers no link to the
journal or the reflection: those may live longer than its 7 days, and a page never hands out
a link stronger than the one that opened it. Like every page a reader writes on, it links
their places to turn, and shows them first when the reply just saved sounds like despair.
"""

from __future__ import annotations

from flask import abort, g, render_template, request

from dripcourse import links
from dripcourse.db import transaction
from dripcourse.reader import held_replies, reflections
from dripcourse.reader.pages import support
from dripcourse.reader.pages.access import (
    MAX_TOKEN_CHARS,
    ROUTE,
    bp,
    check_form,
    course_of,
    enrollment_of,
    form_token,
    now,
    runtime,
)

GONE = {
    held_replies.SAVED: "This reply is already saved to your journal.",
    held_replies.DISCARDED: "This reply was discarded, so there is nothing here any more.",
    None: "This reply is no longer kept: replies from another address are deleted after "
    f"{held_replies.HOLD_DAYS} days, and so is the link that shows them.",
}
ACTIONS = ("save", "discard")


@bp.route("/h/<token>", methods=["GET", "POST"], **ROUTE)
def confirm(token: str) -> str | tuple[str, int]:
    """A held reply with its sender, and two buttons: save it to the journal, or discard it."""
    loaded = _load(token)
    if loaded is None:
        return _gone(GONE[None])
    enrollment_id, held_id = loaded
    action = request.form.get("action") if request.method == "POST" else None
    if request.method == "POST" and action not in ACTIONS:
        abort(400)
    if action is not None and not check_form(links.CONFIRM, enrollment_id, held_id):
        abort(403)  # only expired: the reply is still held, reload and press again
    rt, moment = runtime(), now()
    cipher = rt.reflection_cipher
    with transaction(rt.sessions) as session:
        enrollment = enrollment_of(session, enrollment_id)
        course = course_of(enrollment)
        try:
            held = held_replies.waiting(session, enrollment_id, held_id, cipher, moment)
        except held_replies.NotWaiting as gone:
            return _gone(GONE[gone.resolution])
        page = {
            "course": course,
            "held": held,
            "zone": enrollment.subscriber.timezone,
            "token": token,
            "form_token": form_token(links.CONFIRM, enrollment_id, held_id),
        }
        if action is None:
            return render_template("confirm.html", **page)
        try:
            if action == "save":
                held_replies.save(
                    session,
                    enrollment,
                    held_id,
                    cipher=cipher,
                    max_chars=rt.settings.reflection_max_chars,
                    now=moment,
                )
            else:
                held_replies.discard(session, enrollment, held_id, cipher, moment)
        except held_replies.NotWaiting as gone:  # the other button, pressed a moment before
            return _gone(GONE[gone.resolution])
        except reflections.ReflectionRejected as exc:
            return render_template("confirm.html", **page, error=str(exc)), 400
        # Words of despair just saved show the reader's places to turn first; kept nowhere.
        care = support.after_writing(course, enrollment.subscriber, held.body)
        return render_template(
            "confirm.html", **page, done=action, care=care if action == "save" else None
        )


def _load(token: str) -> tuple[int, int] | None:
    """(enrollment, held reply) from the link; None when it expired (it was ours), the
    not-valid page (404) for anything else that is not ours."""
    if len(token) > MAX_TOKEN_CHARS:
        abort(404)
    try:
        g.link_token = runtime().links.load_token(links.CONFIRM, token)
    except links.ExpiredToken:
        return None
    except links.BadToken:
        abort(404)
    if len(g.link_token.ids) != 2:
        abort(404)
    enrollment_id, held_id = g.link_token.ids
    return enrollment_id, held_id


def _gone(message: str) -> tuple[str, int]:
    return render_template("message.html", title="No longer available", message=message), 410
