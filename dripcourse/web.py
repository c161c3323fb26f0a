"""The subscriber's side of the links in every lesson: reflect, journal, pause, unsubscribe.

A Flask application factory; the views are thin adapters over ``reflections`` and
``enrollment``. Each page is reached only through a signed per-purpose token in its URL, so
the token is the subscriber's only credential: no accounts, no cookies, nothing personal
stored in the browser.

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
import logging
import re
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any
from zoneinfo import ZoneInfo

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from itsdangerous import BadData, SignatureExpired, URLSafeTimedSerializer
from markupsafe import Markup
from sqlalchemy import inspect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException
from werkzeug.serving import WSGIRequestHandler

from dripcourse import enrollment as enrollments
from dripcourse import journal as journals
from dripcourse import lessons_sent, links, privacy, reflections, schedule
from dripcourse.clock import utcnow
from dripcourse.course import Course
from dripcourse.db import transaction
from dripcourse.errors import CourseError
from dripcourse.models import Enrollment, EnrollmentStatus
from dripcourse.privacy_notice import privacy_notice
from dripcourse.render import RenderedLesson
from dripcourse.runtime import Runtime
from dripcourse.settings import Settings, load_settings

log = logging.getLogger(__name__)

FORM_MAX_AGE_SECONDS = 24 * 3600
# The pause lengths offered, in days, with what the button says.
PAUSE_CHOICES = {"1": "1 day", "7": "1 week", "14": "2 weeks"}
MAX_TOKEN_CHARS = 512  # real tokens are about 50; anything far longer is not ours
ONE_CLICK = "One-Click"
FORM_MIMETYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
ERROR_TEXT = {
    400: "That request could not be understood.",
    403: "This form could not be checked, so nothing was changed. "
    "Open the link from your email again and retry.",
    404: "This link is not valid. Please use the link from your most recent lesson email; "
    "if it was cut short, copy the whole address.",
    405: "That is not something this page can do.",
    410: "The details behind this link have been deleted, so there is nothing here any more. "
    "No more lessons will be sent to this address.",
    413: "That was too long to accept, so nothing was saved.",
    500: "Something went wrong on our side. Please try again later.",
    503: "This page is being updated. Please try again in a few minutes.",
}

ERROR_TITLES = {410: "No longer available"}

_TOKEN_IN_PATH = re.compile(r"/([rjpul])/[^\s?/]+")

bp = Blueprint("dripcourse", __name__)


class WebApp(Flask):
    """Flask, but an unhandled exception is logged with its page's path less the link token.

    Flask's own ``log_exception`` writes ``Exception on /j/<the whole token> [GET]``: a working
    key to someone's journal in the error log.
    """

    def log_exception(
        self,
        exc_info: tuple[type, BaseException, TracebackType] | tuple[None, None, None],
    ) -> None:
        self.logger.error(
            "Exception on %s [%s]", redact(request.path), request.method, exc_info=exc_info
        )


def create_app(
    settings_or_runtime: Settings | Runtime | None = None,
    test_config: Mapping[str, Any] | None = None,
) -> Flask:
    """Build the web app; with no argument, settings come from the usual file and environment.

    For production: ``gunicorn 'dripcourse.web:create_app()'``.
    """
    if isinstance(settings_or_runtime, Runtime):
        rt = settings_or_runtime
    else:
        rt = Runtime(settings_or_runtime or load_settings())
    rt.links  # noqa: B018 - a missing or weak signing key stops us here, not at the first page
    app = WebApp(__name__)
    # Room for the longest allowed reflection even if every character is 4 UTF-8 bytes, each
    # percent-encoded (x3); a bigger post is refused before it is read into memory.
    limit = rt.settings.reflection_max_chars * 12 + 64 * 1024
    app.config.update(
        MAX_CONTENT_LENGTH=limit,
        MAX_FORM_MEMORY_SIZE=limit,
        CLOCK=utcnow,
        FORM_MAX_AGE_SECONDS=FORM_MAX_AGE_SECONDS,
    )
    if test_config:
        app.config.update(test_config)
    _check_reflections_key(rt)
    app.extensions["dripcourse"] = rt
    app.register_blueprint(bp)
    app.after_request(_security_headers)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(CourseError, _course_error)
    app.add_template_filter(_when, "when")
    app.add_template_filter(journals.long_date, "long_date")
    app.add_template_filter(journals.completion_sentence, "completion")
    app.add_template_filter(_day, "day")
    app.add_template_filter(_time, "time")
    return app


def _check_reflections_key(rt: Runtime) -> None:
    """A wrong or missing reflections key stops the app at start (WrongReflectionsKey), never
    shows a journal with nothing in it. A database not reachable or not set up yet is left
    for the pages to report."""
    try:
        with transaction(rt.sessions) as session:
            if inspect(session.connection()).has_table("reflections"):
                reflections.check_key(session, rt.reflection_cipher)
    except DBAPIError as exc:
        log.warning("reflections key not checked at start: database unavailable (%s)", exc)


def _rt() -> Runtime:
    return current_app.extensions["dripcourse"]


def _now() -> dt.datetime:
    clock: Callable[[], dt.datetime] = current_app.config["CLOCK"]
    return clock()


# -- tokens and forms --------------------------------------------------------------------


def _load(purpose: str, token: str, size: int) -> list[int]:
    """The ids in a link token made for ``purpose``; 404 for anything else.

    Remembers when the token was issued: links this page offers are dated the same (see
    ``_link``).
    """
    if len(token) > MAX_TOKEN_CHARS:
        abort(404)
    try:
        payload, g.link_issued_at = _rt().links.load_issued(purpose, token)
    except links.BadToken:
        abort(404)
    if len(payload) != size:
        abort(404)
    return payload


def _link(purpose: str, *ids: int) -> str:
    """A token for a link on this page, no stronger than the one that opened the page.

    It carries the opening token's issue time, so it expires when that one does: an old
    reflect link cannot be traded for a fresh journal link, nor back again, to outlive
    ``reflect_max_age_days``. Which pages link to which is the other half of the rule: pages
    opened by a link that never expires (pause, unsubscribe) offer no link to private writing.
    """
    return _rt().links.token(purpose, *ids, issued_at=g.link_issued_at)


def _enrollment(session: Session, enrollment_id: int) -> Enrollment:
    found = session.get(Enrollment, enrollment_id)
    if found is None:
        # The token's signature held, so we made it for an enrollment that existed: it was
        # deleted (the subscriber's "delete everything", or an operator's forget).
        abort(410)
    return found


def _course(enrollment: Enrollment) -> Course:
    return _rt().catalog.course(enrollment.cohort.course_slug)


def _form_serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(_rt().links.secret_key, salt="dripcourse.form")


def form_token(purpose: str, *ids: int) -> str:
    """The hidden field that shows a post came from the page we served for these ids."""
    return _form_serializer().dumps([purpose, *ids])


def _check_form(purpose: str, *ids: int) -> bool:
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


# -- reflect and journal -----------------------------------------------------------------


# HEAD is answered as GET without a body (Flask adds it to every GET route); any method not
# listed, OPTIONS included, gets 405.
ROUTE = {"provide_automatic_options": False}


@bp.route("/r/<token>", methods=["GET", "POST"], **ROUTE)
def reflect(token: str) -> Response | str | tuple[str, int]:
    """The day's question and a form to write (or rewrite) the reflection."""
    enrollment_id, day = _load(links.REFLECT, token, 2)
    # The whole post is read before a pooled connection is taken: a slow upload holds none.
    posted = request.form.get("reflection", "") if request.method == "POST" else ""
    with transaction(_rt().sessions) as session:
        enrollment = _enrollment(session, enrollment_id)
        # Only lessons already sent: a token for a future day shows nothing.
        if not 1 <= day <= enrollment.day:
            abort(404)
        course = _course(enrollment)
        # The words as this subscriber received them, else the course's as they are now.
        lesson = lessons_sent.sent_lesson(
            session, enrollment, day, rendered_or_none(course, day)
        ) or reflections.lesson_or_none(course, day)
        cipher = _rt().reflection_cipher
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
            "journal_token": _link(links.JOURNAL, enrollment_id),
            "lesson_token": _link(links.LESSON, enrollment_id, day),
            "form_token": form_token(links.REFLECT, enrollment_id, day),
            "max_chars": _rt().settings.reflection_max_chars,
            "zone": enrollment.subscriber.timezone,
        }
        if request.method in ("GET", "HEAD"):
            text = reflection.body if reflection else ""
            # Only with a reflection to show: ?saved=1 by itself is not a saved reflection.
            saved = "saved" in request.args and reflection is not None
            return render_template("reflect.html", **page, text=text, saved=saved)
        if not _check_form(links.REFLECT, enrollment_id, day):
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
                now=_now(),
            )
        except reflections.ReflectionRejected as exc:
            return render_template("reflect.html", **page, text=posted, error=str(exc)), 400
    return redirect(url_for(".reflect", token=token, saved=1), code=303)


@bp.get("/j/<token>", **ROUTE)
def journal(token: str) -> str:
    """Every past lesson with its question and what the subscriber wrote, newest first."""
    (enrollment_id,) = _load(links.JOURNAL, token, 1)
    with transaction(_rt().sessions) as session:
        enrollment, course, entries, done = _journal(session, enrollment_id)
        return render_template(
            "journal.html",
            course=course,
            entries=entries,
            reflect_tokens={e.day: _link(links.REFLECT, enrollment_id, e.day) for e in entries},
            lesson_tokens={e.day: _link(links.LESSON, enrollment_id, e.day) for e in entries},
            done=done,
            zone=enrollment.subscriber.timezone,
            token=token,
        )


def _journal(
    session: Session, enrollment_id: int
) -> tuple[Enrollment, Course, list[reflections.JournalEntry], journals.Completion | None]:
    enrollment = _enrollment(session, enrollment_id)
    course = _course(enrollment)
    entries = reflections.journal(session, enrollment, course, _rt().reflection_cipher)
    zone = schedule.zone(enrollment.subscriber.timezone)
    return enrollment, course, entries, journals.completion(enrollment, entries, zone)


DOWNLOADS = {
    "md": ("text/markdown; charset=utf-8", journals.as_markdown),
    "txt": ("text/plain; charset=utf-8", journals.as_text),
}


@bp.get("/j/<token>/journal.<kind>")
def download(token: str, kind: str) -> Response | str:
    """The journal to keep: a Markdown or text file, or a page made for printing."""
    (enrollment_id,) = _load(links.JOURNAL, token, 1)
    if kind not in (*DOWNLOADS, "html"):
        abort(404)
    with transaction(_rt().sessions) as session:
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
    enrollment_id, day = _load(links.LESSON, token, 2)
    with transaction(_rt().sessions) as session:
        enrollment = _enrollment(session, enrollment_id)
        course = _course(enrollment)
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
            reflect_token=_link(links.REFLECT, enrollment_id, day),
            journal_token=_link(links.JOURNAL, enrollment_id),
        )


def rendered_or_none(course: Course, day: int) -> RenderedLesson | None:
    """The course's lesson for ``day`` as it renders now, or None if it has no such day."""
    if not 1 <= day <= course.length:
        return None
    return _rt().catalog.renderer.lesson(course, day)


# -- deleting ------------------------------------------------------------------------------

DELETIONS = ("reflections", "everything")


@bp.route("/j/<token>/delete/<what>", methods=["GET", "POST"], **ROUTE)
def delete(token: str, what: str) -> str:
    """Delete my reflections, or everything about me: GET asks to confirm, POST deletes."""
    (enrollment_id,) = _load(links.JOURNAL, token, 1)
    if what not in DELETIONS:
        abort(404)
    purpose = f"delete-{what}"
    # An expired form token is refused like a forged one: deleting needs a fresh "yes".
    if request.method == "POST" and not _check_form(purpose, enrollment_id):
        abort(403)
    with transaction(_rt().sessions) as session:
        enrollment = _enrollment(session, enrollment_id)
        course = _course(enrollment)
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
        privacy.forget_subscriber(session, subscriber, _now())
    return render_template("deleted.html", course=None, what=what, token=token)


@bp.get("/privacy")
def privacy_page() -> str:
    """What is stored, who can read it, how long it is kept and how to delete it."""
    return render_template("privacy.html", course=None, sections=privacy_notice(_rt().settings))


# -- pause and unsubscribe ---------------------------------------------------------------


@bp.route("/p/<token>", methods=["GET", "POST"], **ROUTE)
def pause(token: str) -> Response | str:
    """Pause the course for a week, or resume early; a GET only shows where things stand."""
    (enrollment_id,) = _load(links.PAUSE, token, 1)
    # The whole post is read before a pooled connection is taken: a slow upload holds none.
    action = request.form.get("action") if request.method == "POST" else None
    days = request.form.get("days", "7") if request.method == "POST" else None
    with transaction(_rt().sessions) as session:
        enrollment = _enrollment(session, enrollment_id)
        course = _course(enrollment)
        if request.method == "POST":
            if action not in ("pause", "resume") or days not in PAUSE_CHOICES:
                abort(400)
            if not _check_form(links.PAUSE, enrollment_id):
                abort(403)  # only expired, but nothing typed is lost: reload and press again
            if action == "pause":
                length = dt.timedelta(days=int(days))
                enrollments.pause(session, enrollment, course, _now(), length)
            else:
                enrollments.resume(session, enrollment, course, _now())
        else:
            tz = schedule.zone(enrollment.subscriber.timezone)
            now = _now()
            paused = enrollment.paused_until is not None and enrollment.paused_until > now
            return render_template(
                "pause.html",
                course=course,
                enrollment=enrollment,
                active=enrollment.status == EnrollmentStatus.ACTIVE,
                paused=paused,
                paused_until=_local(enrollment.paused_until, tz),
                next_lesson=_local(enrollment.next_send_at, tz),
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
    (enrollment_id,) = _load(links.UNSUBSCRIBE, token, 1)
    if request.method == "POST" and not _is_one_click():
        _check_form(links.UNSUBSCRIBE, enrollment_id)  # an expired form token is fine here
    with transaction(_rt().sessions) as session:
        enrollment = _enrollment(session, enrollment_id)
        if request.method == "POST":
            enrollments.unsubscribe(session, enrollment, _now())
        return render_template(
            "unsubscribe.html",
            course=_course(enrollment),
            unsubscribed=enrollment.status == EnrollmentStatus.UNSUBSCRIBED,
            token=token,
            form_token=form_token(links.UNSUBSCRIBE, enrollment_id),
            pause_token=_link(links.PAUSE, enrollment_id),
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


# -- every response ----------------------------------------------------------------------


def _security_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    # The token is in the URL: never let it travel on in a Referer header.
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    if request.endpoint != "static":
        response.headers["Cache-Control"] = "no-store"
    return response


def _http_error(exc: HTTPException) -> tuple[str, int, dict[str, str]] | HTTPException:
    code = exc.code or 500
    if code < 400:
        return exc
    message = ERROR_TEXT.get(code, "Something went wrong.")
    title = ERROR_TITLES.get(code, exc.name)
    # Keep what the error says besides its page, such as a 405's Allow header.
    headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
    return render_template("message.html", title=title, message=message), code, headers


def _course_error(exc: CourseError) -> tuple[str, int]:
    log.error("course could not be loaded for a web page: %s", exc)
    return render_template(
        "message.html", title="Temporarily unavailable", message=ERROR_TEXT[503]
    ), 503


def _local(moment: dt.datetime | None, tz: ZoneInfo) -> dt.datetime | None:
    return None if moment is None else moment.astimezone(tz)


def _when(moment: dt.datetime, zone: str) -> str:
    """A moment in the subscriber's own zone, as a person says it:
    Wednesday 5 March 2025 at 17:45 (Asia/Kathmandu)."""
    return journals.local_time(moment, schedule.zone(zone))


def _day(moment: dt.datetime) -> str:
    """A local date as a person says it: Wednesday 5 March."""
    return f"{moment:%A} {moment.day} {moment:%B}"


def _time(moment: dt.datetime) -> str:
    return f"{moment:%H:%M}"


def redact(line: str) -> str:
    """A request line without the tokens in it: a log must never be a way into a journal."""
    return _TOKEN_IN_PATH.sub(r"/\1/<token>", line)


class RedactingRequestHandler(WSGIRequestHandler):
    """Werkzeug's request handler, logging each request without its link token."""

    def log(self, type: str, message: str, *args: Any) -> None:
        args = tuple(redact(a) if isinstance(a, str) else a for a in args)
        super().log(type, redact(message), *args)
