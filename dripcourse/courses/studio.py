"""The preview studio: a local site where staff see every lesson as a subscriber will, live.

A Flask app of its own, apart from the subscribers' pages: it shows names and addresses, so it
listens on 127.0.0.1 unless told otherwise, and answers only to local host names. The course
files are read again whenever any of them changes (a fingerprint of their sizes and
modification times), so a saved edit shows on the next request; the open page polls the
fingerprint and reloads itself. A lesson with an error shows the error, file and line, in
place of the lesson. An address with no lesson behind it (a day or course there are no files
for) is a 404 page saying which courses and days there are.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import TYPE_CHECKING

from flask import Flask, Response, abort, render_template, request
from markupsafe import Markup
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import NotFound

from dripcourse.clock import utcnow
from dripcourse.courses.checks import CourseReport, check_course, counts, layout_and_renderer
from dripcourse.courses.course import Finding, course_slugs
from dripcourse.courses.preview import Reader, find_reader, lesson_message, sample_reader
from dripcourse.courses.render import Renderer
from dripcourse.errors import ConfigError, CourseError, DripcourseError

if TYPE_CHECKING:
    from dripcourse.runtime import Runtime  # passed in; the adapters build it


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
POLL_MILLISECONDS = 1000
_DAY = re.compile(r"[0-9]{1,9}")  # a day as a URL gives it: no sign, no space, no 40 digits


def host_name(host_header: str) -> str:
    """The host of a ``Host`` header, without its port or an IPv6 address's brackets."""
    if host_header.startswith("["):
        return host_header[1:].partition("]")[0]
    return host_header.partition(":")[0]


def check_host(host: str, allow_remote: bool) -> None:
    """Refuse to listen where other machines can reach, unless the user says so."""
    if host not in LOCAL_HOSTS and not allow_remote:
        raise ConfigError(
            f"--host {host}: the studio shows subscribers' names and listens on 127.0.0.1 "
            "only; add --allow-remote to serve it to other machines"
        )


def fingerprint(emails_dir: Path) -> str:
    """Changes whenever a file under ``emails_dir`` is saved, added, removed or renamed."""
    digest = hashlib.sha1()
    for root, dirs, files in os.walk(emails_dir):
        dirs.sort()
        for name in sorted(files):
            path = Path(root, name)
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue  # removed while we looked; the next poll sees it
            digest.update(f"{path}\0{stat.st_mtime_ns}\0{stat.st_size}\n".encode())
    return digest.hexdigest()[:16]


@dataclass
class Snapshot:
    """The courses as they were at one fingerprint: findings, facts, and a renderer."""

    fingerprint: str
    layout: list[Finding]
    reports: dict[str, CourseReport]
    renderer: Renderer | None


class Courses:
    """Re-reads the course files when they change; one snapshot serves every request until then.

    (The scheduler's Catalog reads each course once per process; the studio must not.)
    """

    def __init__(self, emails_dir: Path) -> None:
        self.emails_dir = emails_dir
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None

    def current(self) -> Snapshot:
        now = fingerprint(self.emails_dir)
        with self._lock:
            if self._snapshot is None or self._snapshot.fingerprint != now:
                layout, renderer = layout_and_renderer(self.emails_dir)
                reports = {
                    slug: check_course(self.emails_dir, slug, renderer)
                    for slug in course_slugs(self.emails_dir)
                }
                self._snapshot = Snapshot(now, layout, reports, renderer)
            return self._snapshot


class NoSuchLesson(Exception):
    """An address naming a course or day there are no files for; the 404 page says what there is.

    ``day`` is the address's text, a number or not.
    """

    def __init__(self, slug: str, day: str) -> None:
        super().__init__(slug, day)
        self.slug = slug
        self.day = day


@dataclass
class LessonView:
    """What the lesson page shows: the parts of the message, or the errors instead."""

    subject: str = ""
    html: str = ""
    text: str = ""
    errors: tuple[Finding, ...] = ()


def create_studio(
    rt: Runtime, *, allow_remote: bool = False, report: Callable[[], str] | None = None
) -> Flask:
    """The studio app over the courses in the ``emails_dir`` setting.

    ``report`` makes the programme's report (the command line's adapter hands it in: the
    report's numbers live above this package); without it the Report page says so.
    """
    # The templates are dripcourse's, shared with the subscriber's pages.
    app = Flask(__name__, root_path=str(Path(__file__).resolve().parent.parent))
    courses = Courses(rt.settings.path(rt.settings.emails_dir))

    @app.before_request
    def local_names_only() -> None:
        """Answer only to local names: a web page elsewhere cannot reach in by rebinding its
        DNS. (Werkzeug's TRUSTED_HOSTS cannot name an IPv6 address: browsers send
        ``Host: [::1]:PORT``, which it never matched.)"""
        if not allow_remote and host_name(request.host) not in LOCAL_HOSTS:
            abort(400)

    def reader_for(slug: str) -> tuple[Reader, str]:
        """The sample reader, or the subscriber named by ``?as=``; and a problem to show."""
        wanted = request.args.get("as", "").strip()
        if not wanted:
            return sample_reader(), ""
        try:
            with rt.sessions() as session:
                return find_reader(session, wanted), ""
        except DripcourseError as exc:
            return sample_reader(), f"{exc}; showing the sample reader"
        except SQLAlchemyError:
            problem = "the database is not ready (dripcourse init); showing the sample reader"
            return sample_reader(), problem

    def view(snapshot: Snapshot, report: CourseReport, day: int, reader: Reader) -> LessonView:
        errors = [f for f in report.findings if f.severity == "error" and f.day in (day, None)]
        errors += [f for f in snapshot.layout if f.severity == "error"]
        course = report.course
        if errors or course is None or snapshot.renderer is None:
            return LessonView(errors=tuple(errors))
        try:
            msg = lesson_message(snapshot.renderer, course, day, rt.links, reader, now=utcnow())
        except CourseError as exc:
            where = Path(str(exc.path)) if exc.path else course.path
            return LessonView(errors=(Finding(where, exc.line or 1, "error", exc.detail, day),))
        return LessonView(
            subject=str(msg["Subject"]), html=_part(msg, "html"), text=_part(msg, "plain")
        )

    @app.get("/")
    def index() -> str:
        snapshot = courses.current()
        return render_template(
            "studio_index.html",
            snapshot=snapshot,
            counts=counts,
            rows=_rows,
            poll=POLL_MILLISECONDS,
        )

    @app.get("/course/<slug>/<day_text>")
    def lesson(slug: str, day_text: str) -> str:
        snapshot = courses.current()
        report, day = _find(snapshot, slug, day_text)
        reader, problem = reader_for(slug)
        shown = view(snapshot, report, day, reader)
        course = report.course
        return render_template(
            "studio_lesson.html",
            snapshot=snapshot,
            slug=slug,
            day=day,
            course=course,
            lesson=_lesson_or_none(report, day),
            reader=reader,
            problem=problem,
            view=shown,
            warnings=[f for f in report.for_day(day) if f.severity == "warning"],
            as_email=request.args.get("as", ""),
            days=_days(report),
            poll=POLL_MILLISECONDS,
        )

    @app.get("/course/<slug>/<day_text>/html")
    def lesson_html(slug: str, day_text: str) -> Response:
        snapshot = courses.current()
        report, day = _find(snapshot, slug, day_text)
        reader, _problem = reader_for(slug)
        shown = view(snapshot, report, day, reader)
        if shown.errors:
            text = "\n".join(str(f) for f in shown.errors)
            return Response(text, status=422, mimetype="text/plain")
        return Response(shown.html, mimetype="text/html")

    @app.get("/report")
    def report_page() -> str:
        """The programme's report, made afresh at each visit (and each visit logged)."""
        problem, body = "", ""
        if report is None:
            problem = "the report is not available here"
        else:
            try:
                body = report()
            except SQLAlchemyError:
                problem = "the database is not ready (dripcourse init): there is nothing to report"
        return render_template(
            "studio_report.html",
            snapshot=courses.current(),
            body=Markup(body),
            problem=problem,
            poll=POLL_MILLISECONDS,
        )

    @app.get("/_fingerprint")
    def current_fingerprint() -> dict[str, str]:
        return {"fingerprint": fingerprint(courses.emails_dir)}

    @app.errorhandler(NoSuchLesson)
    @app.errorhandler(NotFound)
    def missing(exc: NoSuchLesson | NotFound) -> tuple[str, int]:
        """No lesson here: say which courses and days there are; the page reloads, so a day
        asked for before its file is saved shows once it is."""
        snapshot = courses.current()
        asked = exc if isinstance(exc, NoSuchLesson) else None
        return render_template(
            "studio_missing.html",
            snapshot=snapshot,
            asked=asked,
            report=snapshot.reports.get(asked.slug) if asked else None,
            days_of=_days,
            span=_span,
            poll=POLL_MILLISECONDS,
        ), 404

    return app


def _find(snapshot: Snapshot, slug: str, day_text: str) -> tuple[CourseReport, int]:
    """The course report and day an address names; NoSuchLesson if there are no files for it.

    While a course's course.toml cannot be read its lessons are not known, so any day shows
    the page with that error in place, as a broken lesson does.
    """
    report = snapshot.reports.get(slug)
    if report is None or not _DAY.fullmatch(day_text):
        raise NoSuchLesson(slug, day_text)
    day = int(day_text)
    if report.course is not None and day not in _days(report):
        raise NoSuchLesson(slug, day_text)
    return report, day


def _days(report: CourseReport) -> list[int]:
    """Every lesson day there is a file for, loaded or not (one that does not shows its errors)."""
    return sorted({*report.lessons, *(f.day for f in report.findings if f.day)})


def _span(days: list[int]) -> str:
    """days 1 to 7, or days 1, 2 and 5 when some are missing."""
    if not days:
        return "no lessons"
    if len(days) == 1:
        return f"day {days[0]}"
    if days == list(range(days[0], days[-1] + 1)):
        return f"days {days[0]} to {days[-1]}"
    return f"days {', '.join(map(str, days[:-1]))} and {days[-1]}"


def _lesson_or_none(report: CourseReport, day: int):  # type: ignore[no-untyped-def]
    if report.course is None:
        return None
    try:
        return report.course.lesson(day)
    except CourseError:
        return None


def _rows(report: CourseReport) -> list[tuple[int, object, list[Finding]]]:
    """One row per lesson day found, loaded or not, with its findings."""
    return [(day, report.lessons.get(day), report.for_day(day)) for day in _days(report)]


def _part(msg: Message, subtype: str) -> str:
    for part in msg.walk():
        if part.get_content_type() == f"text/{subtype}":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode("utf-8").replace("\r\n", "\n")
    return ""
