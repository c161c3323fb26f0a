"""What operators see: where each enrollment is, and per cohort and day what happened."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dripcourse import schedule
from dripcourse.models import (
    Cohort,
    Delivery,
    DeliveryProblem,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    InboundKind,
    InboundMessage,
    Reflection,
    Subscriber,
)
from dripcourse.settings import Settings


def _iso(value):  # type: ignore[no-untyped-def]
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _local_iso(value: dt.datetime | None, zone: str) -> str | None:
    return None if value is None else value.astimezone(schedule.zone(zone)).isoformat()


def enrollment_rows(session: Session, cohort: str | None = None) -> list[dict[str, object]]:
    """One dict per enrollment: email, name, cohort, course, day, status, timezone,
    next_send_at (UTC ISO 8601) and next_send_at_local (with the subscriber's offset),
    paused_until, and the last error any of its deliveries met (or null)."""
    last_error = (
        select(Delivery.last_error)
        .where(Delivery.enrollment_id == Enrollment.id, Delivery.last_error.is_not(None))
        .order_by(Delivery.day.desc())
        .limit(1)
        .correlate(Enrollment)
        .scalar_subquery()
    )
    query = (
        select(
            Subscriber.email,
            Subscriber.name.label("person"),
            Subscriber.timezone,
            Cohort.name,
            Cohort.course_slug,
            Enrollment.day,
            Enrollment.status,
            Enrollment.next_send_at,
            Enrollment.paused_until,
            last_error.label("last_error"),
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
            "name": row.person,
            "cohort": row.name,
            "course": row.course_slug,
            "day": row.day,
            "status": str(row.status),
            "timezone": row.timezone,
            "next_send_at": _iso(row.next_send_at),
            "next_send_at_local": _local_iso(row.next_send_at, row.timezone),
            "paused_until": _iso(row.paused_until),
            "last_error": row.last_error,
        }
        for row in session.execute(query)
    ]


@dataclass
class DayCounts:
    day: int
    at: int = 0  # active enrollments whose last lesson is this day
    sent: int = 0
    pending: int = 0
    retrying: int = 0  # of the pending: tried and waiting for another attempt
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
    course_length: int | None = None  # None: the course does not load
    paused: int = 0
    retry_errors: list[tuple[str, int]] = field(default_factory=list)  # most common first


def cohort_summaries(
    session: Session,
    cohort: str | None = None,
    now: dt.datetime | None = None,
    course_length: Callable[[str], int | None] = lambda slug: None,
) -> list[CohortSummary]:
    """Per cohort and day: who is at that day, sent, pending (of them retrying), failed,
    suppressed and reflected counts; failures, the commonest errors of those retrying, how
    many are paused at ``now``, and the length of the course each cohort runs against."""
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
            select(Enrollment.day, func.count())
            .where(Enrollment.cohort_id == c.id, Enrollment.status == EnrollmentStatus.ACTIVE)
            .group_by(Enrollment.day)
        ):
            days.setdefault(day, DayCounts(day)).at = count
        retrying: Counter[str] = Counter()
        for day, error in session.execute(
            select(Delivery.day, Delivery.last_error)
            .join(Enrollment, Delivery.enrollment_id == Enrollment.id)
            .where(
                Enrollment.cohort_id == c.id,
                Delivery.status.in_((DeliveryStatus.PENDING, DeliveryStatus.WAITING)),
                Delivery.attempts > 0,
            )
        ):
            days[day].retrying += 1
            retrying[error or "(no reply recorded)"] += 1
        paused = 0
        if now is not None:
            paused = (
                session.scalar(
                    select(func.count()).where(
                        Enrollment.cohort_id == c.id,
                        Enrollment.status == EnrollmentStatus.ACTIVE,
                        Enrollment.paused_until > now,
                    )
                )
                or 0
            )
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
                course_length=course_length(c.course_slug),
                paused=paused,
                retry_errors=retrying.most_common(3),
            )
        )
    return out


def retention(settings: Settings) -> str:
    """How long reflections are kept, as the status command shows it."""
    days = settings.reflections_retention_days
    if not days:
        return "reflections: kept until deleted (reflections_retention_days = 0)"
    return (
        f"reflections: deleted {days} days after last written, daily "
        f"(reflections_retention_days = {days})"
    )


def inbound_line(session: Session, settings: Settings, cohort: str | None = None) -> str | None:
    """What came back by email, and reflections by where they were written, for every cohort
    or for ``cohort`` alone; without reply by email, the reflections alone; None when there is
    nothing to say.

    Messages that were never tied to a subscriber (junk, an unknown address) belong to no
    cohort, so a cohort's line counts only what came from its own people.
    """
    came = inbound_counts(session, cohort)
    sources = select(Reflection.source, func.count()).group_by(Reflection.source)
    if cohort is not None:
        sources = sources.where(Reflection.enrollment_id.in_(_enrollments_of(cohort)))
    by_source = dict(session.execute(sources).all())
    if not settings.reply_domain and not came and not by_source:
        return None
    labels = {
        InboundKind.REPLY: "replies saved",
        InboundKind.HELD: "held (from another address)",
        InboundKind.LIMITED: "over the limits",
        InboundKind.AUTO_REPLY: "auto-replies",
        InboundKind.BOUNCE: "bounces",
        InboundKind.DELAY: "delays",
        InboundKind.COMPLAINT: "complaints",
        InboundKind.JUNK: "dropped",
    }
    parts = [f"{came.get(str(kind), 0)} {label}" for kind, label in labels.items()]
    written = f"{by_source.get('web', 0)} from the web, {by_source.get('email', 0)} from email"
    scope = "" if cohort is None else f" (cohort {cohort})"
    if not settings.reply_domain and not came:
        return f"reflections{scope}: {written}"
    return f"inbound{scope}: {', '.join(parts)}; reflections: {written}"


def inbound_counts(session: Session, cohort: str | None = None) -> dict[str, int]:
    """How many inbound messages of each kind were processed (for ``status``), in all or
    from the people of ``cohort``."""
    query = select(InboundMessage.kind, func.count()).group_by(InboundMessage.kind)
    if cohort is not None:
        query = query.where(InboundMessage.enrollment_id.in_(_enrollments_of(cohort)))
    return {str(kind): n for kind, n in session.execute(query).all()}


def _enrollments_of(cohort: str):  # type: ignore[no-untyped-def]
    return (
        select(Enrollment.id)
        .join(Cohort, Enrollment.cohort_id == Cohort.id)
        .where(Cohort.name == cohort)
        .scalar_subquery()
    )


# Deliverability: blocks that are about us


WARNING_DAYS = 7  # how far back a block still warns


@dataclass(frozen=True)
class DeliverabilityWarning:
    """Bounces or complaints of one reason that are about our sending, not the subscriber."""

    kind: str  # "bounce" or "complaint"
    reason: str  # the bounce family ("content or policy block") or the feedback type
    count: int
    last: dt.datetime
    statuses: tuple[str, ...]  # the enhanced codes seen, most frequent first (at most 3)

    def describe(self) -> str:
        codes = f" {', '.join(self.statuses)}" if self.statuses else ""
        noun = "bounce" if self.kind == "bounce" else "complaint"
        plural = "" if self.count == 1 else "s"
        return f"{self.count} {noun}{plural} ({self.reason}{codes}), the last {_iso(self.last)}"


def deliverability_warnings(
    session: Session, now: dt.datetime, *, days: int = WARNING_DAYS
) -> list[DeliverabilityWarning]:
    """Bounces and complaints of the last ``days`` that were about us: a policy or content
    block, our sender refused or unauthenticated, a message too large, a report of failed
    authentication or of fraud. Whichever way they came (our bounce address, a provider's
    webhook), they are read from ``delivery_problems``; the most frequent first."""
    rows = session.execute(
        select(
            DeliveryProblem.kind,
            DeliveryProblem.reason,
            DeliveryProblem.status,
            func.count(),
            func.max(DeliveryProblem.at),
        )
        .where(
            DeliveryProblem.effect == "warn",
            DeliveryProblem.at > now - dt.timedelta(days=days),
            DeliveryProblem.at <= now,
        )
        .group_by(DeliveryProblem.kind, DeliveryProblem.reason, DeliveryProblem.status)
    ).all()
    grouped: dict[tuple[str, str], list[tuple[str, int, dt.datetime]]] = {}
    for kind, reason, code, count, last in rows:
        grouped.setdefault((kind, reason), []).append((code, count, last))
    warnings = [
        DeliverabilityWarning(
            kind=kind,
            reason=reason,
            count=sum(n for _code, n, _last in seen),
            last=max(last for _code, _n, last in seen),
            statuses=tuple(
                code for code, _n, _last in sorted(seen, key=lambda each: -each[1]) if code
            )[:3],
        )
        for (kind, reason), seen in grouped.items()
    ]
    return sorted(warnings, key=lambda w: (-w.count, w.kind, w.reason))


def deliverability_line(
    warnings: list[DeliverabilityWarning], *, days: int = WARNING_DAYS
) -> str | None:
    """The warning ``status`` and ``health`` print, or None when there is nothing to say."""
    if not warnings:
        return None
    return (
        f"deliverability warning: in the last {days} days, "
        + "; ".join(w.describe() for w in warnings)
        + ". These are about our sending (sender domain, SPF/DKIM/DMARC, content, size), "
        "not the subscribers: their addresses are kept (docs/inbound.md)"
    )
