"""Put enrollments whose lesson failed back on schedule, once the cause has been fixed.

A lesson fails when a passing trouble outlasted its retry budget (a mailbox full for a day,
a relay refusing for longer than ``retry_hours``). After the operator has dealt with the cause,
``retry_failed`` gives those subscribers their lesson again: the failed delivery row itself
goes back to waiting (its unique (enrollment, day) still guards against a second copy), timed
for the subscriber's next local window, never the night. Bounced and unsubscribed people are
left alone, and so is anyone whose address is suppressed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from dripcourse import schedule
from dripcourse.courses.course import Course
from dripcourse.models import (
    Cohort,
    Delivery,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Subscriber,
    Suppression,
)


@dataclass(frozen=True)
class Retried:
    email: str
    cohort: str
    day: int
    at: dt.datetime  # when the lesson goes out again (UTC)


def retry_failed(
    session: Session,
    course_for: Callable[[str], Course],
    now: dt.datetime,
    *,
    cohort: str | None = None,
    since: dt.datetime | None = None,
) -> list[Retried]:
    """Put every ``failed`` enrollment (optionally of one cohort, failed at or after ``since``)
    back on schedule; returns who gets which lesson when. ``course_for`` loads a course by slug."""
    query = (
        select(Enrollment, Delivery, Subscriber.email, Cohort.name, Cohort.course_slug)
        .join(Subscriber, Enrollment.subscriber_id == Subscriber.id)
        .join(Cohort, Enrollment.cohort_id == Cohort.id)
        .outerjoin(Suppression, Suppression.email == Subscriber.email)
        .join(
            Delivery,
            (Delivery.enrollment_id == Enrollment.id) & (Delivery.day == Enrollment.day + 1),
            isouter=True,
        )
        .where(Enrollment.status == EnrollmentStatus.FAILED, Suppression.id.is_(None))
        .order_by(Cohort.name, Subscriber.email)
        .with_for_update(of=Enrollment)
    )
    if cohort is not None:
        query = query.where(Cohort.name == cohort)
    if since is not None:
        query = query.where(Enrollment.updated_at >= since)
    out: list[Retried] = []
    for enrollment, failed, email, cohort_name, slug in session.execute(query).all():
        course = course_for(slug)
        tz = schedule.zone(enrollment.subscriber.timezone)
        at = schedule.window_start(course.cadence, tz, now)
        enrollment.status = EnrollmentStatus.ACTIVE
        enrollment.updated_at = now
        if failed is not None and failed.status in (
            DeliveryStatus.FAILED,
            DeliveryStatus.CANCELLED,
        ):
            # The same row goes out again: the sweep queues it when ``at`` comes.
            failed.status = DeliveryStatus.WAITING
            failed.next_attempt_at = at
            failed.attempts = 0
            failed.created_at = now  # a fresh retry budget
            failed.updated_at = now
            enrollment.next_send_at = None  # in flight, as after a claim
        else:
            enrollment.next_send_at = at
        out.append(Retried(email, cohort_name, enrollment.day + 1, at))
    session.flush()
    return out
