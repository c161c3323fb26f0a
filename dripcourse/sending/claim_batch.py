"""One batch of the claim: due enrollments marked in flight, and a delivery for each that may
go out now, in a handful of statements whatever the batch's size.

The rules (the window, sending days, pauses, the end of a course, a suppressed address) are
the ones in dripcourse.schedule and take.sendable, decided here once per course and zone of
the batch rather than once per person: everyone in one zone shares one local clock. What
changes per person (a pause, the day reached, Day 1 of a cohort started "now") is read from
the row the claim returned. The writes then go out as sets: on PostgreSQL the pick, the
compare-and-set and the read of what the rules need are one statement, and the new
deliveries one INSERT over two arrays; SQLite keeps the same two steps with plainer SQL.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    any_,
    bindparam,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from dripcourse import schedule
from dripcourse.courses.course import Course
from dripcourse.db import among, postgres
from dripcourse.models import (
    Cohort,
    Delivery,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Subscriber,
    Suppression,
    UTCDateTime,
)
from dripcourse.people.enrollment import stop_enrollment
from dripcourse.sending.take import course_or_none, seconds

if TYPE_CHECKING:
    from dripcourse.runtime import Runtime  # passed in; the adapters build it


def picked(column: ColumnElement[int], query: Select[tuple[int]], session: Session):  # type: ignore[no-untyped-def]
    """``column`` among the ids ``query`` picks, evaluated once per statement.

    On PostgreSQL the pick locks its rows with FOR UPDATE SKIP LOCKED, so two ticks never wait
    for each other, and runs once: as a plain subquery the planner may run it again for every
    row of the UPDATE (a nested loop over a small table), and each run skips the rows the
    statement has just changed and picks new ones, so a pick of one took all. Its ids come
    back as one array, which the UPDATE can only look up by key: as ``IN (SELECT ...)`` the
    planner may hash the pick and scan the whole table for every batch instead (it did for a
    morning of 20,000 readers all due at once).
    SQLite has no row locks; its claims rely on the compare-and-set each caller does on the
    rows it read.
    """
    if not postgres(session):
        return column.in_(query.scalar_subquery())
    once = query.with_for_update(skip_locked=True).cte("picked").prefix_with("MATERIALIZED")
    ids = func.array(select(*once.c).scalar_subquery(), type_=ARRAY(Integer))
    return column == any_(ids)


def due_enrollments(now: dt.datetime, limit: int) -> Select[tuple[int]]:
    """The oldest ``limit`` enrollments whose next lesson is due: a range read on the
    next_send_at index (NULL, meaning "in flight" or "nothing due", is never in range)."""
    return (
        select(Enrollment.id)
        .where(Enrollment.next_send_at <= now, Enrollment.status == EnrollmentStatus.ACTIVE)
        # The index alone gives this order, so a batch stops after ``limit`` rows. A tie-break
        # on id would make PostgreSQL sort every due row for every batch: a whole cohort due
        # at one instant (100,000 rows) meant a full scan and a sort spilled to disk per batch.
        .order_by(Enrollment.next_send_at)
        .limit(limit)
    )


def _mark_in_flight(session: Session, now: dt.datetime, size: int):  # type: ignore[no-untyped-def]
    return (
        update(Enrollment)
        .where(
            picked(Enrollment.id, due_enrollments(now, size), session),
            Enrollment.next_send_at <= now,
            Enrollment.status == EnrollmentStatus.ACTIVE,
        )
        .values(next_send_at=None, updated_at=now)
    )


def claim_statement(session: Session, now: dt.datetime, size: int):  # type: ignore[no-untyped-def]
    """The claim's compare-and-set: up to ``size`` due enrollments marked in flight
    (next_send_at NULL), returning what the rules need of each.

    The UPDATE takes only rows still due and active when it runs, so whatever another tick
    took meanwhile is simply not returned. On PostgreSQL it is a CTE read back joined to the
    subscriber, the cohort and the suppression list, all in one round trip; elsewhere it
    returns the enrollment's own columns and ``details`` reads the rest.
    """
    mark = _mark_in_flight(session, now, size)
    if not postgres(session):
        return mark.returning(Enrollment.id, Enrollment.day, Enrollment.paused_until)
    claimed = mark.returning(
        Enrollment.id,
        Enrollment.day,
        Enrollment.paused_until,
        Enrollment.subscriber_id,
        Enrollment.cohort_id,
    ).cte("claimed")
    return (
        select(
            claimed.c.id,
            claimed.c.day,
            claimed.c.paused_until,
            Subscriber.email,
            Subscriber.timezone,
            Cohort.course_slug,
            Cohort.started_at,
            Suppression.id.label("suppressed"),
        )
        .join(Subscriber, claimed.c.subscriber_id == Subscriber.id)
        .join(Cohort, claimed.c.cohort_id == Cohort.id)
        .outerjoin(Suppression, Suppression.email == Subscriber.email)
    )


def details(session: Session, claimed: Sequence[Any]) -> list[Any]:
    """What the rules need of rows claimed on SQLite, in the claim's order."""
    found = {
        row.id: row
        for row in session.execute(
            select(
                Enrollment.id,
                Subscriber.email,
                Subscriber.timezone,
                Cohort.course_slug,
                Cohort.started_at,
                Suppression.id.label("suppressed"),
            )
            .join(Subscriber, Enrollment.subscriber_id == Subscriber.id)
            .join(Cohort, Enrollment.cohort_id == Cohort.id)
            .outerjoin(Suppression, Suppression.email == Subscriber.email)
            .where(Enrollment.id.in_([row.id for row in claimed]))
        )
    }
    return [_Row(row.id, row.day, row.paused_until, found[row.id]) for row in claimed]


class _Row:
    """A claimed row with its details, shaped like PostgreSQL's one-statement answer."""

    __slots__ = ("id", "day", "paused_until", "timezone", "course_slug", "started_at", "suppressed")

    def __init__(self, id: int, day: int, paused_until: dt.datetime | None, info: Any) -> None:  # noqa: A002
        self.id, self.day, self.paused_until = id, day, paused_until
        self.timezone, self.course_slug = info.timezone, info.course_slug
        self.started_at, self.suppressed = info.started_at, info.suppressed


class _Zone:
    """One course in one zone at ``now``: the answers every reader there shares."""

    def __init__(self, course: Course, tz: ZoneInfo, now: dt.datetime) -> None:
        self.course, self.tz = course, tz
        self.open = schedule.in_window(course.cadence, tz, now)
        self.opens = None if self.open else schedule.window_start(course.cadence, tz, now)


def claim_batch(rt: Runtime, session: Session, now: dt.datetime, size: int) -> list[int] | None:
    """Claim one batch and insert its deliveries; the new delivery ids, or None when nothing
    was due (or another tick took it all as we looked).

    A claimed enrollment whose local window is closed (night, a skipped weekend) gets a new
    due time, the next time its window opens, and no delivery: after downtime nobody is woken
    at 01:35. A course that cannot be loaded holds back only its own enrollments.
    """
    rows = session.execute(
        claim_statement(session, now, size).execution_options(synchronize_session=False)
    ).all()
    if not rows:
        return None
    if not postgres(session):
        rows = details(session, rows)
    later = now + seconds(rt.settings.requeue_after_seconds)
    zones: dict[tuple[str, str], _Zone | None] = {}
    moved: defaultdict[dt.datetime, list[int]] = defaultdict(list)  # new due time -> ids
    completed: list[int] = []
    new: list[tuple[int, int]] = []  # (enrollment, day)
    for row in rows:
        key = (row.course_slug, row.timezone)
        if key not in zones:
            course = course_or_none(rt, row.course_slug)
            zones[key] = None if course is None else _Zone(course, schedule.zone(row.timezone), now)
        where = zones[key]
        if where is None:
            # One broken course must not stop the others: hold its lessons back.
            moved[later].append(row.id)
        elif row.suppressed is not None:
            enrollment = session.get(Enrollment, row.id)
            assert enrollment is not None
            stop_enrollment(session, enrollment, EnrollmentStatus.BOUNCED, now)
        elif row.paused_until is not None and row.paused_until > now:
            due = schedule.resume_due(
                where.course.cadence, where.tz, due=now, paused_until=row.paused_until
            )
            moved[due].append(row.id)
        elif row.day >= where.course.length:
            completed.append(row.id)
        elif where.open or schedule.at_once(row.day + 1, row.started_at):
            # take.sendable, with the zone's half answered once for the batch
            new.append((row.id, row.day + 1))
        else:
            assert where.opens is not None
            moved[where.opens].append(row.id)
    for due, ids in moved.items():
        _set_enrollments(session, ids, next_send_at=due)
    if completed:
        _set_enrollments(session, completed, status=EnrollmentStatus.COMPLETED)
    if not new:
        return []
    return _insert_deliveries(session, new, now, later)


def _set_enrollments(session: Session, ids: Sequence[int], **values: object) -> None:
    session.execute(
        update(Enrollment)
        .where(among(session, Enrollment.id, ids))
        .values(**values)
        .execution_options(synchronize_session=False)
    )


def _insert_deliveries(
    session: Session, new: Sequence[tuple[int, int]], now: dt.datetime, later: dt.datetime
) -> list[int]:
    """A pending delivery for each (enrollment, day); the unique (enrollment, day) stays the
    guard against a second one."""
    if not postgres(session):
        values = [
            {
                "enrollment_id": enrollment_id,
                "day": day,
                "status": DeliveryStatus.PENDING,
                "next_attempt_at": later,
                "queued_at": now,
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
            }
            for enrollment_id, day in new
        ]
        return list(session.scalars(insert(Delivery).returning(Delivery.id), values))
    # Two array parameters rather than eight per row: the driver's work no longer grows with
    # the batch (binding 4,000 parameters cost more than the claim's own statements).
    pairs = (
        func.unnest(
            bindparam("enrollment_ids", [e for e, _ in new], type_=ARRAY(Integer)),
            bindparam("days", [d for _, d in new], type_=ARRAY(Integer)),
        )
        .table_valued("enrollment_id", "day")
        .render_derived(name="pairs")
    )
    at = bindparam("now", now, type_=UTCDateTime())
    statement = insert(Delivery).from_select(
        [
            "enrollment_id",
            "day",
            "status",
            "next_attempt_at",
            "queued_at",
            "attempts",
            "created_at",
            "updated_at",
        ],
        select(
            pairs.c.enrollment_id,
            pairs.c.day,
            bindparam("status", DeliveryStatus.PENDING, type_=Delivery.__table__.c.status.type),
            bindparam("later", later, type_=UTCDateTime()),
            at,
            bindparam("attempts", 0, type_=Integer),
            at,
            at,
        ),
    )
    return list(session.scalars(statement.returning(Delivery.id)))
