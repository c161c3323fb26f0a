"""The programme's report: per cohort, how the course went, in aggregates only.

Numbers for people who must never see a person: how many received each lesson, completed,
paused, left (and after which lesson), wrote a reflection (on the web or by email) and
shared it to the cohort circle, when lessons arrived in local time against the send window,
what held or retried them, where a cohort in progress stands today, the check-in answers at
the start and the end, and (``report_delivery``) bounces, complaints and the deliverability
warnings in force. The rule that hides small counts is ``report_figures``.

Every figure is counted here once and shown by ``report_html`` and ``--json`` alike, so the
two cannot disagree. No text anyone wrote and no name or address leaves this module: only
counts, each with the number of people behind it. A count behind fewer than ``threshold``
people (but more than none) is replaced by the words "fewer than N". When figures add up to
a total that is shown (the statuses of a cohort, the hours of the day, the web and email
halves of a day's reflections), one hidden figure could be worked out from the others, so
the smallest other one is hidden too.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dripcourse import schedule
from dripcourse.courses.checkins import SCALE
from dripcourse.courses.course import Course
from dripcourse.models import (
    CheckinAnswer,
    CirclePost,
    CircuitBreaker,
    Cohort,
    Delivery,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Reflection,
    Subscriber,
)
from dripcourse.people import report_delivery
from dripcourse.people.report_figures import Cell, Figures, Shown, iso
from dripcourse.people.report_figures import cell as _cell

SCHEMA = 1
# The statuses an enrollment ends in, in the order the report lists them; they add up to
# everyone enrolled.
STATUSES = ("active", "completed", "unsubscribed", "bounced", "failed", "removed")
# What record.py writes as the last error of a lesson held back by a relay pause.
RELAY_PAUSE_NOTE = "sending paused:"


@dataclass
class _Raw:
    """What the database holds for one cohort, before anything is hidden."""

    statuses: Counter[str]
    paused: int
    received: dict[int, int]
    left: dict[str, Counter[int]]  # status -> lesson day after which people left
    wrote: dict[int, Counter[str]]  # day -> source -> people
    shared: Counter[int]  # day -> people whose reflection is in the circle, not hidden
    hours: dict[int, set[int]]  # local hour -> enrollments
    hour_lessons: Counter[int]
    sent: list[int]  # the enrollment of each lesson sent
    outside: list[int]  # enrollments of each lesson sent outside the window
    held: list[int]  # enrollments of each lesson the window held over to a later day
    retried: list[int]
    relay: list[int]
    today: Counter[int]


def build(
    session: Session,
    now: dt.datetime,
    course_of: Callable[[str], Course | None],
    *,
    cohorts: Sequence[str] = (),
    threshold: int = 5,
) -> dict[str, object]:
    """The report as plain data (the ``--json`` output; docs/operators.md gives its schema).

    ``cohorts`` names the cohorts to include (all when empty); ``course_of`` gives a cohort's
    course, or None when it does not load (its window, length and questions are then
    unknown).
    """
    figures = Figures(threshold)
    query = select(Cohort).order_by(Cohort.created_at, Cohort.name)
    if cohorts:
        query = query.where(Cohort.name.in_(list(cohorts)))
    out = []
    for cohort in session.scalars(query):
        course = course_of(cohort.course_slug)
        raw = _raw(session, cohort, course, now)
        section = _shown(cohort, course, raw, figures)
        section["checkins"] = _checkins(session, cohort, course, figures)
        section["deliverability"] = report_delivery.cohort_section(session, cohort.id, now, figures)
        out.append(section)
    paused = session.scalar(
        select(CircuitBreaker.opened_at).where(
            CircuitBreaker.name == "mail", CircuitBreaker.failures > 0
        )
    )
    return {
        "schema": SCHEMA,
        "generated_at": iso(now),
        # The relay pause in force (sending/breaker.py), or null: lessons wait meanwhile.
        "sending_paused_since": iso(paused) if paused is not None else None,
        "threshold": threshold,
        "hidden_as": figures.hidden,
        # Bounces and complaints of the whole programme, and the warnings of the last days.
        "warning_days": report_delivery.WARNING_DAYS,
        "deliverability": report_delivery.overall_section(session, now, figures),
        "cohorts": out,
    }


def _raw(session: Session, cohort: Cohort, course: Course | None, now: dt.datetime) -> _Raw:
    mine = Enrollment.cohort_id == cohort.id
    statuses: Counter[str] = Counter(
        {
            str(status): n
            for status, n in session.execute(
                select(Enrollment.status, func.count()).where(mine).group_by(Enrollment.status)
            )
        }
    )
    paused = session.scalar(
        select(func.count()).where(
            mine, Enrollment.status == EnrollmentStatus.ACTIVE, Enrollment.paused_until > now
        )
    )
    left: dict[str, Counter[int]] = {"unsubscribed": Counter(), "bounced": Counter()}
    for status, day, n in session.execute(
        select(Enrollment.status, Enrollment.day, func.count())
        .where(
            mine, Enrollment.status.in_([EnrollmentStatus.UNSUBSCRIBED, EnrollmentStatus.BOUNCED])
        )
        .group_by(Enrollment.status, Enrollment.day)
    ):
        left[str(status)][day] = n
    wrote: dict[int, Counter[str]] = defaultdict(Counter)
    for day, source, n in session.execute(
        select(Reflection.day, Reflection.source, func.count())
        .join(Enrollment, Reflection.enrollment_id == Enrollment.id)
        .where(mine)
        .group_by(Reflection.day, Reflection.source)
    ):
        wrote[day][source] = n
    # What members shared to the cohort circle (one post per reflection), less what a
    # moderator hid; what was withdrawn is deleted and so not counted.
    shared: Counter[int] = Counter(
        dict(
            session.execute(  # type: ignore[arg-type]
                select(CirclePost.day, func.count())
                .where(CirclePost.cohort_id == cohort.id, CirclePost.hidden_reason.is_(None))
                .group_by(CirclePost.day)
            ).all()
        )
    )
    today: Counter[int] = Counter(
        dict(
            session.execute(  # type: ignore[arg-type]
                select(Enrollment.day, func.count())
                .where(mine, Enrollment.status == EnrollmentStatus.ACTIVE)
                .group_by(Enrollment.day)
            ).all()
        )
    )
    raw = _Raw(
        statuses=statuses,
        paused=paused or 0,
        received=Counter(),
        left=left,
        wrote=dict(wrote),
        shared=shared,
        hours=defaultdict(set),
        hour_lessons=Counter(),
        sent=[],
        outside=[],
        held=[],
        retried=[],
        relay=[],
        today=today,
    )
    _deliveries(session, cohort, course, raw)
    return raw


def _deliveries(session: Session, cohort: Cohort, course: Course | None, raw: _Raw) -> None:
    """Arrival hours, and what held or retried each lesson sent, from the delivery rows."""
    rows = session.execute(
        select(
            Delivery.enrollment_id,
            Delivery.day,
            Delivery.created_at,
            Delivery.sent_at,
            Delivery.attempts,
            Delivery.last_error,
            Subscriber.timezone,
        )
        .join(Enrollment, Delivery.enrollment_id == Enrollment.id)
        .join(Subscriber, Enrollment.subscriber_id == Subscriber.id)
        .where(Enrollment.cohort_id == cohort.id, Delivery.status == DeliveryStatus.SENT)
    )
    received: Counter[int] = Counter()
    for who, day, claimed, sent, attempts, error, zone_name in rows:
        received[day] += 1
        if sent is None:
            continue
        tz = schedule.zone(zone_name)
        local = sent.astimezone(tz)
        raw.sent.append(who)
        raw.hours[local.hour].add(who)
        raw.hour_lessons[local.hour] += 1
        at_once = schedule.at_once(day, cohort.started_at)
        if course is not None and not at_once and not schedule.in_window(course.cadence, tz, sent):
            raw.outside.append(who)
        # A lesson is claimed inside its window; sent on a later local day, the window closed
        # on it (after a retry, a paused relay, a queue) and held it to the next opening.
        if local.date() > claimed.astimezone(tz).date():
            raw.held.append(who)
        if attempts > 1:
            raw.retried.append(who)
        if error and RELAY_PAUSE_NOTE in error:
            raw.relay.append(who)
    raw.received = dict(received)


def _lessons(figures: Figures, whose: list[int]) -> Shown:
    """A count of lessons, hidden when they went to fewer than ``threshold`` people."""
    return figures.one(Cell(len(whose), len(set(whose))))


def _shown(cohort: Cohort, course: Course | None, raw: _Raw, figures: Figures) -> dict[str, object]:
    enrolled = sum(raw.statuses.values())
    length = course.length if course is not None else max(raw.received, default=0)
    days = range(1, length + 1)
    statuses = figures.parts([_cell(raw.statuses.get(s, 0)) for s in STATUSES])
    left = {
        status: figures.parts([_cell(raw.left[status].get(d, 0)) for d in range(0, length + 1)])
        for status in raw.left
    }
    reflections = []
    # "shared" is null when the course has no circle (and nothing was shared).
    circle = course is None or course.circle or bool(raw.shared)
    for d in days:
        by = raw.wrote.get(d, Counter())
        web, mail = figures.parts([_cell(by.get("web", 0)), _cell(by.get("email", 0))])
        reflections.append(
            {
                "day": d,
                "wrote": figures.one(_cell(sum(by.values()))),
                "web": web,
                "email": mail,
                "shared": figures.one(_cell(raw.shared[d])) if circle else None,
            }
        )
    hours = figures.parts([Cell(raw.hour_lessons[h], len(raw.hours[h])) for h in range(24)])
    window = None
    if course is not None:
        cadence = course.cadence
        window = {
            "from": f"{cadence.send_time:%H:%M}",
            "until": f"{cadence.latest_send_time:%H:%M}",
        }
    in_progress = raw.statuses.get("active", 0) > 0
    section: dict[str, object] = {
        "name": cohort.name,
        "course": cohort.course_slug,
        "course_title": course.title if course is not None else None,
        "lessons": length,
        "in_progress": in_progress,
        "funnel": {
            "enrolled": figures.one(_cell(enrolled)),
            **dict(zip(STATUSES, statuses, strict=True)),
            "paused_now": figures.one(_cell(raw.paused)),
            "received": [
                {"day": d, "people": figures.one(_cell(raw.received.get(d, 0)))} for d in days
            ],
            "left_after": [
                {"day": d, "unsubscribed": left["unsubscribed"][d], "bounced": left["bounced"][d]}
                for d in range(0, length + 1)
            ],
        },
        "reflections": reflections,
        "delivery": {
            "window": window,
            "sent": _lessons(figures, raw.sent),
            "arrival_hours": [{"hour": h, "lessons": hours[h]} for h in range(24)],
            "outside_window": _lessons(figures, raw.outside),
            "held_by_window": _lessons(figures, raw.held),
            "retried": _lessons(figures, raw.retried),
            "held_by_relay_pause": _lessons(figures, raw.relay),
        },
        "today": None,
    }
    if in_progress:
        at = figures.parts([_cell(raw.today.get(d, 0)) for d in range(0, length + 1)])
        section["today"] = [{"after_day": d, "people": at[d]} for d in range(0, length + 1)]
    return section


def _checkins(
    session: Session, cohort: Cohort, course: Course | None, figures: Figures
) -> list[dict[str, object]]:
    """Per check-in question, how many people gave each answer in the first lesson and in
    the last (none when the course asks none, or does not load)."""
    if course is None or not course.checkins:
        return []
    ends = {"start": 1, "end": course.length}
    counts: dict[tuple[int, int, int], int] = {}
    for day, question, answer, n in session.execute(
        select(CheckinAnswer.day, CheckinAnswer.question, CheckinAnswer.answer, func.count())
        .join(Enrollment, CheckinAnswer.enrollment_id == Enrollment.id)
        .where(Enrollment.cohort_id == cohort.id, CheckinAnswer.day.in_(list(ends.values())))
        .group_by(CheckinAnswer.day, CheckinAnswer.question, CheckinAnswer.answer)
    ):
        counts[(day, question, answer)] = n
    out: list[dict[str, object]] = []
    for checkin in course.checkins:
        section: dict[str, object] = {
            "question": checkin.number,
            "wording": checkin.question,
            "low": checkin.low,
            "high": checkin.high,
            "scale": checkin.scale,
        }
        for when, day in ends.items():
            cells = [_cell(counts.get((day, checkin.number, a), 0)) for a in SCALE]
            shown = figures.parts(cells)
            section[when] = {
                "answered": figures.one(_cell(sum(c.value for c in cells))),
                "answers": [{"answer": a, "people": v} for a, v in zip(SCALE, shown, strict=True)],
            }
        out.append(section)
    return out
