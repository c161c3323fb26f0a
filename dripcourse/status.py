"""What operators see: where each enrollment is, and per cohort and day what happened."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dripcourse.models import (
    Cohort,
    Delivery,
    DeliveryStatus,
    Enrollment,
    Reflection,
    Subscriber,
)


def _iso(value):  # type: ignore[no-untyped-def]
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def enrollment_rows(session: Session, cohort: str | None = None) -> list[dict[str, object]]:
    """One dict per enrollment: email, cohort, course, day, status, next_send_at (UTC ISO 8601)."""
    query = (
        select(
            Subscriber.email,
            Subscriber.timezone,
            Cohort.name,
            Cohort.course_slug,
            Enrollment.day,
            Enrollment.status,
            Enrollment.next_send_at,
            Enrollment.paused_until,
        )
        .join(Enrollment, Enrollment.subscriber_id == Subscriber.id)
        .join(Cohort, Enrollment.cohort_id == Cohort.id)
        .order_by(Cohort.name, Subscriber.email)
    )
    if cohort is not None:
        query = query.where(Cohort.name == cohort)
    return [
        {
            "email": row.email,
            "cohort": row.name,
            "course": row.course_slug,
            "day": row.day,
            "status": str(row.status),
            "timezone": row.timezone,
            "next_send_at": _iso(row.next_send_at),
            "paused_until": _iso(row.paused_until),
        }
        for row in session.execute(query)
    ]


@dataclass
class DayCounts:
    day: int
    sent: int = 0
    pending: int = 0
    failed: int = 0
    suppressed: int = 0  # claimed but not sent: the address was suppressed or the person left
    reflected: int = 0


@dataclass
class CohortSummary:
    name: str
    course: str
    enrolled: int
    by_status: dict[str, int]
    days: list[DayCounts]
    failures: list[tuple[str, int, str]]  # (email, day, reason)


def cohort_summaries(session: Session, cohort: str | None = None) -> list[CohortSummary]:
    """Per cohort and day: sent, pending, failed, suppressed and reflected counts, plus failures."""
    cohorts = session.scalars(
        select(Cohort).where(Cohort.name == cohort)
        if cohort
        else select(Cohort).order_by(Cohort.name)
    ).all()
    out = []
    for c in cohorts:
        by_status = dict(
            session.execute(
                select(Enrollment.status, func.count())
                .where(Enrollment.cohort_id == c.id)
                .group_by(Enrollment.status)
            ).all()
        )
        days: dict[int, DayCounts] = {}
        for day, status, count in session.execute(
            select(Delivery.day, Delivery.status, func.count())
            .join(Enrollment, Delivery.enrollment_id == Enrollment.id)
            .where(Enrollment.cohort_id == c.id)
            .group_by(Delivery.day, Delivery.status)
        ):
            counts = days.setdefault(day, DayCounts(day))
            if status in (DeliveryStatus.PENDING, DeliveryStatus.WAITING, DeliveryStatus.SENDING):
                counts.pending += count
            elif status == DeliveryStatus.CANCELLED:
                counts.suppressed += count
            elif status == DeliveryStatus.SENT:
                counts.sent += count
            else:
                counts.failed += count
        for day, count in session.execute(
            select(Reflection.day, func.count())
            .join(Enrollment, Reflection.enrollment_id == Enrollment.id)
            .where(Enrollment.cohort_id == c.id)
            .group_by(Reflection.day)
        ):
            days.setdefault(day, DayCounts(day)).reflected = count
        failures = [
            (row.email, row.day, row.last_error or "")
            for row in session.execute(
                select(Subscriber.email, Delivery.day, Delivery.last_error)
                .join(Enrollment, Delivery.enrollment_id == Enrollment.id)
                .join(Subscriber, Enrollment.subscriber_id == Subscriber.id)
                .where(Enrollment.cohort_id == c.id, Delivery.status == DeliveryStatus.FAILED)
                .order_by(Delivery.day, Subscriber.email)
            )
        ]
        out.append(
            CohortSummary(
                name=c.name,
                course=c.course_slug,
                enrolled=sum(by_status.values()),
                by_status={str(k): v for k, v in by_status.items()},
                days=[days[d] for d in sorted(days)],
                failures=failures,
            )
        )
    return out
