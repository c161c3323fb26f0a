"""The take: a batch of claimed deliveries becomes this worker's, and what each needs is read.

One UPDATE ... RETURNING takes the deliveries that are free (pending, or sending with a lease
run out) and one joined SELECT reads what their messages need. Those that must not go out now
are settled at once: a stopped enrollment or a suppressed address is cancelled, a broken course,
a paused relay or a closed local window puts the delivery back unsent with its attempt given
back. Every later step holds a delivery only through ``ours``: a compare-and-set on its status
and the attempt count this take set, so a batch handed out twice sends each message once.

It stays whole (about 450 lines): the take, the Job it hands on and ``ours``, by which every
later step holds a delivery, are one guarantee and are read together.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, and_, bindparam, or_, select, tuple_, update
from sqlalchemy.orm import Session

from dripcourse import schedule
from dripcourse.courses.course import Course
from dripcourse.courses.message import delivery_headers, message_id, reply_addresses
from dripcourse.courses.render import Personal, RenderedLesson
from dripcourse.courses.wire import encoded, personalise
from dripcourse.db import among, among_ids, postgres, transaction
from dripcourse.errors import CourseError
from dripcourse.links import LESSON
from dripcourse.models import (
    CirclePost,
    Cohort,
    Delivery,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Subscriber,
    Suppression,
)
from dripcourse.sending import breaker

if TYPE_CHECKING:
    from dripcourse.runtime import Runtime  # passed in; the adapters build it

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]


class Outcome(enum.StrEnum):
    SENT = "sent"
    RETRY = "retry"
    FAILED = "failed"
    BOUNCED = "bounced"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"  # another worker has it, or it is already finished
    HELD = "held"  # put back unsent: outside the local window, relay paused, course broken


def seconds(n: float) -> dt.timedelta:
    return dt.timedelta(seconds=n)


def course_or_none(rt: Runtime, slug: str) -> Course | None:
    """The course, or None (with the reason in the log) when it cannot be loaded or rendered.

    Any error counts, not only a CourseError: a TypeError from a template, a file that is not
    UTF-8. One course's mistake must never stop another course.
    """
    try:
        return rt.catalog.course(slug)
    except CourseError as exc:
        log.error("course %s is held back: %s", slug, exc)
    except Exception:
        log.exception("course %s is held back: unexpected error loading it", slug)
    return None


def sendable(
    course: Course, tz: ZoneInfo, now: dt.datetime, *, day: int, started_at: dt.datetime | None
) -> bool:
    """Whether lesson ``day`` may go out at ``now``: inside the subscriber's local window, or
    Day 1 of a cohort the operator started "now" (at once, whatever the hour)."""
    return schedule.at_once(day, started_at) or schedule.in_window(course.cadence, tz, now)


@dataclass(frozen=True)
class Job:
    """What one attempt needs to know after its claim has committed."""

    delivery_id: int
    enrollment_id: int
    day: int
    attempts: int
    timezone: str
    paused_until: dt.datetime | None
    started_at: dt.datetime | None
    created_at: dt.datetime


@dataclass(frozen=True)
class Ready:
    """A taken delivery that passed every check at the take: what its message needs."""

    job: Job
    email: str
    name: str | None
    greeting: str | None
    course: Course
    rendered: RenderedLesson
    link_key: str  # the enrollment's: binds its links and reply address to it
    # How many others in the cohort shared their reflection on the previous lesson, when the
    # lesson says so (2 or more; see ``circle_counts``), else 0.
    circle: int = 0
    # What the name gives, kept on the row when the name was written (subscribers'
    # derived_greeting and derived_given_name); None: not yet, the message parses the name.
    derived_greeting: str | None = None
    derived_given_name: str | None = None


def ours(jobs: Sequence[Job]):  # type: ignore[no-untyped-def]
    """Rows still held by these attempts: sending, with the attempt count each attempt set."""
    return and_(
        Delivery.status == DeliveryStatus.SENDING,
        tuple_(Delivery.id, Delivery.attempts).in_([(j.delivery_id, j.attempts) for j in jobs]),
    )


def take(
    rt: Runtime,
    session: Session,
    delivery_ids: Sequence[int],
    now: dt.datetime,
    lease_until: dt.datetime,
    outcomes: dict[int, Outcome],
) -> tuple[list[Ready], dt.datetime | None]:
    """Take the batch's deliveries that are free (one UPDATE ... RETURNING), read what sending
    them needs (one joined SELECT), and settle those that must not be sent now.

    Returns the ones to send, in the order given, and the relay's pause (its end) if the
    breaker is open. Every settled one gets its outcome in ``outcomes``; so do ids not taken
    (SKIPPED).
    """
    wanted = list(dict.fromkeys(delivery_ids))
    # On the session's connection, not through the ORM: plain rows, with no ORM loading of
    # each (a batch's rows are read as Core reads them, all at once; nothing here is an ORM
    # object). The statements are built once (``_take_statements``).
    conn = session.connection()
    take_them, read_them = _take_statements(postgres(session))
    taken = {
        row.id: row
        for row in conn.execute(
            take_them, {"ids": wanted, "now": now, "lease_until": lease_until}
        ).all()
    }
    for delivery_id in wanted:
        if delivery_id not in taken:
            outcomes[delivery_id] = Outcome.SKIPPED
    if not taken:
        return [], None
    enrollment_ids = list({row.enrollment_id for row in taken.values()})
    details = {row.id: row for row in conn.execute(read_them, {"ids": enrollment_ids}).all()}
    ready: list[Ready] = []
    relay_paused_until = None
    for delivery_id in wanted:
        row = taken.get(delivery_id)
        if row is None:
            continue
        info = details.get(row.enrollment_id)
        if info is None:  # its reader was deleted (forget) since the claim
            outcomes[delivery_id] = Outcome.CANCELLED
            continue
        relay_paused_until = info.relay_paused_until
        job = Job(
            delivery_id,
            row.enrollment_id,
            row.day,
            row.attempts,
            info.timezone,
            info.paused_until,
            info.started_at,
            row.created_at,
        )
        budget = dt.timedelta(hours=rt.settings.retry_hours)
        if row.attempts > 1 and now - budget_start(job) >= budget:
            # A retry whose time came past the budget (sending paused, workers down): the
            # budget is checked before trying, not after.
            outcomes[delivery_id] = give_up(session, job, row.last_error, budget, now)
            continue
        if info.status != EnrollmentStatus.ACTIVE or info.reason is not None:
            why = info.reason or str(info.status)
            set_delivery(session, delivery_id, DeliveryStatus.CANCELLED, now, last_error=why)
            outcomes[delivery_id] = Outcome.CANCELLED
            continue
        later = now + seconds(rt.settings.requeue_after_seconds)
        course = course_or_none(rt, info.course_slug)
        if course is None:
            outcomes[delivery_id] = hold(session, job, later, now)
            continue
        try:
            rendered = rt.catalog.renderer.lesson(course, row.day)
        except Exception as exc:  # a lesson that stopped rendering: never the subscriber's fault
            log.error("course %s day %s is held back: %s", course.slug, row.day, exc)
            outcomes[delivery_id] = hold(session, job, later, now)
            continue
        if relay_paused_until is not None and relay_paused_until > now:
            outcomes[delivery_id] = hold(session, job, relay_paused_until, now)
            continue
        tz = schedule.zone(info.timezone)
        if not sendable(course, tz, now, day=row.day, started_at=info.started_at):
            # Picked up outside the subscriber's window (a long queue, a retry, a late worker).
            until = schedule.window_start(course.cadence, tz, now)
            outcomes[delivery_id] = hold(session, job, until, now)
            continue
        ready.append(
            Ready(
                job,
                info.email,
                info.name,
                info.greeting,
                course,
                rendered,
                info.link_key,
                derived_greeting=info.derived_greeting,
                derived_given_name=info.derived_given_name,
            )
        )
    shared = circle_counts(
        session, ready, {r.id: (r.cohort_id, r.circle) for r in details.values()}
    )
    for i, item in enumerate(ready):
        count = shared.get(item.job.delivery_id, 0)
        if count >= CIRCLE_LINE_FROM:
            rendered = rt.catalog.renderer.lesson(item.course, item.job.day, circle=True)
            ready[i] = dataclasses.replace(item, rendered=rendered, circle=count)
    return ready, relay_paused_until


@functools.cache
def _take_statements(postgres: bool):  # type: ignore[no-untyped-def]
    """The take's two statements, built once with their values as parameters (``ids``,
    ``now``, ``lease_until``): building them for each batch, and SQLAlchemy working out each
    one's cache key again, was a fifth of the take's CPU.

    The first takes the batch's deliveries that are free and returns what their attempt needs;
    the second reads what their messages need of each enrollment."""
    d = Delivery.__table__.c
    now = bindparam("now", type_=d.updated_at.type)
    free = (
        among_ids(d.id, "ids", postgres=postgres),
        # Never "waiting": a second task for a delivery waiting out its retry delay or
        # the night must not send it early. The sweep turns it "pending" when its time
        # has come.
        or_(
            d.status == DeliveryStatus.PENDING,
            and_(d.status == DeliveryStatus.SENDING, d.next_attempt_at <= now),
        ),
    )
    if postgres:
        # A row locked now is being sent (its sender's last look holds it, lease run out or
        # not) or changed by a person's request: skip it rather than wait, so no one else's
        # lesson waits for it. The sweep finds it again if it is still free later.
        free = (d.id.in_(select(d.id).where(*free).with_for_update(skip_locked=True)),)
    take_them = (
        update(Delivery.__table__)
        .where(*free)
        .values(
            status=DeliveryStatus.SENDING,
            attempts=d.attempts + 1,
            updated_at=now,
            next_attempt_at=bindparam("lease_until", type_=d.next_attempt_at.type),
            queued_at=None,  # its task is taken: nothing of it is left in the broker
        )
        .returning(d.id, d.enrollment_id, d.day, d.attempts, d.created_at, d.last_error)
    )
    read_them = (
        select(
            Enrollment.id,
            Enrollment.status,
            Enrollment.paused_until,
            Enrollment.link_key,
            Enrollment.cohort_id,
            Cohort.circle,
            Subscriber.email,
            Subscriber.name,
            Subscriber.greeting,
            Subscriber.derived_greeting,
            Subscriber.derived_given_name,
            Subscriber.timezone,
            Cohort.course_slug,
            Cohort.started_at,
            Suppression.reason,
            breaker.gate_column().label("relay_paused_until"),
        )
        .join(Subscriber, Enrollment.subscriber_id == Subscriber.id)
        .join(Cohort, Enrollment.cohort_id == Cohort.id)
        .outerjoin(Suppression, Suppression.email == Subscriber.email)
        .where(among_ids(Enrollment.id, "ids", postgres=postgres))
    )
    return take_them, read_them


# The next lesson mentions the cohort circle only when at least this many others shared.
CIRCLE_LINE_FROM = 2


def circle_counts(
    session: Session, ready: list[Ready], cohorts: dict[int, tuple[int, bool]]
) -> dict[int, int]:
    """For each delivery whose course and cohort have the circle on: how many others in the
    reader's cohort shared their reflection on the previous lesson (visible ones only), by
    delivery id. One query for the batch; no text is read."""
    wanted = {
        item.job.delivery_id: (cohorts[item.job.enrollment_id][0], item.job.day - 1)
        for item in ready
        if item.course.circle and cohorts[item.job.enrollment_id][1] and item.job.day > 1
    }
    if not wanted:
        return {}
    pairs = set(wanted.values())
    # Cohorts and days as two arrays (a batch is mostly one cohort on one day): the posts of
    # every pair of them, each counted under its own pair only.
    posts = (
        session.connection()
        .execute(
            select(CirclePost.cohort_id, CirclePost.day, CirclePost.enrollment_id).where(
                among(session, CirclePost.cohort_id, {cohort for cohort, _ in pairs}),
                among(session, CirclePost.day, {day for _, day in pairs}),
                CirclePost.hidden_reason.is_(None),
            )
        )
        .all()
    )
    by_day: dict[tuple[int, int], set[int]] = {}
    for cohort_id, day, enrollment_id in posts:
        by_day.setdefault((cohort_id, day), set()).add(enrollment_id)
    jobs = {item.job.delivery_id: item.job.enrollment_id for item in ready}
    return {
        delivery_id: len(by_day.get(key, set()) - {jobs[delivery_id]})
        for delivery_id, key in wanted.items()
    }


def budget_start(job: Job) -> dt.datetime:
    """Since when a delivery's retry budget runs: its claim, or the end of a pause the reader
    took after it (the days they chose to wait are not the relay's trouble)."""
    if job.paused_until is not None and job.paused_until > job.created_at:
        return job.paused_until
    return job.created_at


def give_up(
    session: Session, job: Job, error: str | None, budget: dt.timedelta, now: dt.datetime
) -> Outcome:
    """Fail a retry whose budget ran out before its next try; its enrollment stops."""
    hours = f"{budget.total_seconds() / 3600:g} h"
    why = f"{error or 'not sent'} (the retry budget of {hours} ran out before the next try)"
    set_delivery(session, job.delivery_id, DeliveryStatus.FAILED, now, last_error=why)
    session.execute(
        update(Enrollment)
        .where(Enrollment.id == job.enrollment_id, Enrollment.status == EnrollmentStatus.ACTIVE)
        .values(status=EnrollmentStatus.FAILED, next_send_at=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    log.warning("delivery %s failed: %s", job.delivery_id, why)
    return Outcome.FAILED


def message(rt: Runtime, item: Ready, now: dt.datetime):  # type: ignore[no-untyped-def]
    """The personalised message for one delivery, in wire form, and its Message-ID."""
    job = item.job
    # Only the links the lesson shows are signed (and unsubscribe, for its header).
    shown = encoded(item.rendered).shown
    links = rt.links.for_lesson(job.enrollment_id, job.day, item.link_key, shown=shown)
    if item.circle:
        # The previous lesson's page, at its circle: a count and a link, never their words.
        links["circle_count"] = str(item.circle)
        links["circle"] = (
            rt.links.url(LESSON, job.enrollment_id, job.day - 1, key=item.link_key) + "#circle"
        )
    who = Personal(
        email=item.email,
        name=item.name,
        # Worked out only if the lesson shows it: deriving one parses the name.
        greeting=(item.greeting or "").strip(),
        greeting_fallback=item.course.greeting_fallback,
        derived_greeting=item.derived_greeting,
        derived_given_name=item.derived_given_name,
        # By the reader's clock at this send, not the course's send time: a lesson that goes
        # out late (a resume, a cohort started "now", the window's last hours) is not greeted
        # "Good morning".
        salutation=item.course.salutation_at(now.astimezone(schedule.zone(job.timezone))),
        **links,
        **reply_addresses(
            rt.links, rt.settings.reply_domain, job.enrollment_id, job.day, item.link_key
        ),
        tags=delivery_headers(
            rt.links, rt.settings.webhook_providers, job.enrollment_id, job.day, item.link_key
        ),
    )
    msg_id = message_id(rt.settings.message_id_domain, job.delivery_id, rt.links.secret_key)
    # Straight into wire bytes: the same bytes build_message gives (tests/test_wire.py), at a
    # tenth of the cost per recipient.
    return personalise(item.rendered, who, now=now, msg_id=msg_id), msg_id


def put_back(
    rt: Runtime, jobs: Sequence[Job], until: dt.datetime, now: dt.datetime, why: str
) -> Outcome:
    """Put deliveries back unsent until ``until``, without spending their attempts; those no
    longer ours (taken over after a lease ran out) are left as they are."""
    with transaction(rt.sessions) as session:
        back = session.execute(
            update(Delivery)
            .where(ours(jobs))
            .values(**waiting_again(until, now))
            .execution_options(synchronize_session=False)
        ).rowcount
    for job in jobs:
        log.info("delivery %s put back until %s: %s", job.delivery_id, until.isoformat(), why)
    return Outcome.HELD if back else Outcome.SKIPPED


def hold(session: Session, job: Job, until: dt.datetime, now: dt.datetime) -> Outcome:
    """Put a delivery just taken back unsent until ``until``, giving its attempt back."""
    session.execute(
        update(Delivery)
        .where(Delivery.id == job.delivery_id)
        .values(**waiting_again(until, now))
        .execution_options(synchronize_session=False)
    )
    log.info("delivery %s put back until %s", job.delivery_id, until.isoformat())
    return Outcome.HELD


def waiting_again(until: dt.datetime, now: dt.datetime) -> dict[str, object]:
    """A taken delivery put back unsent: waiting until ``until``, its attempt given back."""
    return {
        "status": DeliveryStatus.WAITING,
        "attempts": Delivery.attempts - 1,
        "next_attempt_at": until,
        "updated_at": now,
    }


def set_delivery(
    session: Session | Connection,
    delivery_id: int,
    status: DeliveryStatus,
    now: dt.datetime,
    **values: object,
) -> None:
    """Finish a delivery: it leaves the sweep's index range (next_attempt_at NULL)."""
    session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id)
        .values(status=status, next_attempt_at=None, updated_at=now, **values)
        .execution_options(synchronize_session=False)
    )


def still_ours(session: Session, job: Job, now: dt.datetime) -> bool:
    """Whether this attempt still holds the delivery; from here on, this transaction does.

    A worker whose lease ran out (a send slower than ``send_lease_seconds``) may hear back
    after another worker took the delivery over and perhaps sent it: its failure must not
    undo that. The compare-and-set also locks the row (PostgreSQL) or the file (SQLite).
    """
    held = session.execute(
        update(Delivery)
        .where(ours([job]))
        .values(updated_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if held != 1:
        log.warning(
            "delivery %s: attempt %d outlived its lease; left as it is",
            job.delivery_id,
            job.attempts,
        )
    return held == 1
