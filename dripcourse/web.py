"""The subscriber's side of the links in every lesson: reflect, journal, pause, unsubscribe.

A Flask application factory and what every response shares: its headers, its error pages,
its log lines without the link token. The pages are in ``reflecting`` (reflect, journal,
downloads, a lesson), ``leaving`` (pause, unsubscribe, deleting, the privacy notice) and
``confirming`` (a reply from another address, saved or discarded); what a link opens and how
forms are checked is ``access``. The email providers' webhooks (``/webhooks/<provider>``) are
``inbound.providers.endpoints``.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from flask import Flask, Response, render_template, request
from sqlalchemy import inspect
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException
from werkzeug.serving import WSGIRequestHandler

from dripcourse import db, schedule
from dripcourse.clock import utcnow
from dripcourse.db import transaction
from dripcourse.errors import CourseError, NotSetUp
from dripcourse.inbound.providers.endpoints import bp as webhooks
from dripcourse.reader import journal as journals
from dripcourse.reader import reflections
from dripcourse.reader.pages import (  # noqa: F401 - their pages join access.bp
    checking_in,
    circle,
    confirming,
    leaving,
    reflecting,
    support,
)
from dripcourse.reader.pages.access import FORM_MAX_AGE_SECONDS, bp
from dripcourse.runtime import Runtime
from dripcourse.settings import Settings, check_existing_secret_key, load_settings

log = logging.getLogger(__name__)

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

_TOKEN_IN_PATH = re.compile(r"/([rjpulsch])/[^\s?/]+")


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
        # Never makes the database: `dripcourse init` does (pages say "try again" until then).
        rt = Runtime(settings_or_runtime or load_settings(), create_database=False)
    if _set_up(rt):
        rt.links  # noqa: B018 - a missing or weak signing key stops us here, not at the first page
    else:
        # Before `dripcourse init` nothing is made, the embedded key file neither (the first
        # page after init makes it); a weak key already there is refused all the same.
        check_existing_secret_key(rt.settings)
    # The templates and static files are dripcourse's, beside this module.
    app = WebApp(__name__, root_path=str(Path(__file__).resolve().parent))
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
    app.register_blueprint(webhooks)
    app.before_request(_schema_ready(rt))
    app.after_request(_security_headers)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(CourseError, _course_error)
    app.register_error_handler(NotSetUp, _not_set_up)
    app.add_template_filter(_when, "when")
    app.add_template_filter(journals.long_date, "long_date")
    app.add_template_filter(journals.completion_sentence, "completion")
    app.add_template_filter(_day, "day")
    app.add_template_filter(_time, "time")
    return app


def _set_up(rt: Runtime) -> bool:
    """Whether `dripcourse init` has made this database (one out of reach counts as made)."""
    try:
        return db.schema_problem(rt.engine) is None
    except NotSetUp:
        return False
    except DBAPIError:
        return True


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
    except NotSetUp as exc:
        log.warning("reflections key not checked at start: %s", exc)


def _schema_ready(rt: Runtime) -> Callable[[], None]:
    """Before a page, until the database has once been found at this version's schema: a
    database `dripcourse init` has not set up or upgraded yet (on PostgreSQL, the one an
    administrator made) raises NotSetUp, a 503, not a 500 on a missing table or column. A
    database out of reach is left for the page to meet, as at any other time."""
    ready = False

    def check() -> None:
        nonlocal ready
        if ready or request.endpoint == "static":
            return
        try:
            db.check_schema(rt.engine)
        except DBAPIError:
            return
        ready = True

    return check


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
    return _unavailable()


def _not_set_up(exc: NotSetUp) -> tuple[str, int]:
    log.error("a page was asked for before the database was set up: %s", exc)
    return _unavailable()


def _unavailable() -> tuple[str, int]:
    return render_template(
        "message.html", title="Temporarily unavailable", message=ERROR_TEXT[503]
    ), 503


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
