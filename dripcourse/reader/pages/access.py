"""What a page's link opens: the ids in its token, the links it may offer, and its forms' tokens.

Each page is reached only through a signed per-purpose token in its URL, so the token is the
subscriber's only credential: no accounts, no cookies, nothing personal stored in the browser.

Form posts are protected against cross-site requests without a session cookie (which the
RFC 8058 one-click unsubscribe must work without anyway):

- every form carries a signed form token (its own salt, bound to the page's purpose and ids,
  valid for ``FORM_MAX_AGE_SECONDS``), so a post must come from a page we served;
- a browser that says the post is cross-site or same-site (``Sec-Fetch-Site``) is refused;
- the Content-Security-Policy allows forms to post only to us (``form-action 'self'``).

The Origin header cannot serve: under ``Referrer-Policy: no-referrer`` (needed because the
token is in the URL) browsers send ``Origin: null`` for our own forms too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING

from flask import Blueprint, abort, current_app, g, request
from itsdangerous import BadData, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy.orm import Session

from dripcourse import links
from dripcourse.courses.course import Course
from dripcourse.models import Enrollment

if TYPE_CHECKING:
    from dripcourse.runtime import Runtime  # passed in; the adapters build it


FORM_MAX_AGE_SECONDS = 24 * 3600
MAX_TOKEN_CHARS = 512  # real tokens are about 50; anything far longer is not ours

# Every page behind a link; the modules of pages add their views to it.
bp = Blueprint("dripcourse", __name__)

# HEAD is answered as GET without a body (Flask adds it to every GET route); any method not
# listed, OPTIONS included, gets 405.
ROUTE = {"provide_automatic_options": False}


def runtime() -> Runtime:
    return current_app.extensions["dripcourse"]


def now() -> dt.datetime:
    clock: Callable[[], dt.datetime] = current_app.config["CLOCK"]
    return clock()


def load(purpose: str, token: str, size: int) -> list[int]:
    """The ids in a link token made for ``purpose``; 404 for anything else.

    Remembers the token: ``enrollment_of`` checks it was made for the row it finds, and links
    this page offers are dated the same (see ``link``).
    """
    if len(token) > MAX_TOKEN_CHARS:
        abort(404)
    try:
        g.link_token = runtime().links.load_token(purpose, token)
    except links.BadToken:
        abort(404)
    if len(g.link_token.ids) != size:
        abort(404)
    return list(g.link_token.ids)


def link(purpose: str, *ids: int) -> str:
    """A token for a link on this page, no stronger than the one that opened the page.

    It carries the opening token's issue time, so it expires when that one does: an old
    reflect link cannot be traded for a fresh journal link, nor back again, to outlive
    ``reflect_max_age_days``. Which pages link to which is the other half of the rule: pages
    opened by a link that never expires (pause, unsubscribe) offer no link to private writing.
    """
    token: links.Token = g.link_token
    return runtime().links.token(purpose, *ids, key=g.link_key, issued_at=token.issued_at)


def enrollment_of(session: Session, enrollment_id: int) -> Enrollment:
    """The enrollment the page's link was made for; 410 when it is gone.

    The token's signature held, so we made it for an enrollment that existed. No row with its
    id means it was deleted (the subscriber's "delete everything", an operator's forget); a row
    with another key is a later one that came to have the same id (reused, restored, imported):
    that row is someone else's, and the link is as gone as its own row.
    """
    found = session.get(Enrollment, enrollment_id)
    if found is None or not g.link_token.opens(found):
        abort(410)
    g.link_key = found.link_key
    return found


def course_of(enrollment: Enrollment) -> Course:
    return runtime().catalog.course(enrollment.cohort.course_slug)


def _form_serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(runtime().links.secret_key, salt="dripcourse.form")


def form_token(purpose: str, *ids: int) -> str:
    """The hidden field that shows a post came from the page we served for these ids."""
    return _form_serializer().dumps([purpose, *ids])


def check_form(purpose: str, *ids: int) -> bool:
    """True if the post is from our page; False if its form token expired; 403 otherwise."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        abort(403)
    serializer = _form_serializer()
    try:
        payload = serializer.loads(
            request.form.get("form_token", ""), max_age=current_app.config["FORM_MAX_AGE_SECONDS"]
        )
    except SignatureExpired as exc:
        # Genuinely ours (the signature held) and for this very form, only old.
        if serializer.load_payload(exc.payload) == [purpose, *ids]:
            return False
        abort(403)
    except BadData:
        abort(403)
    if payload != [purpose, *ids]:
        abort(403)
    return True
