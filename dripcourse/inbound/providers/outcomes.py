"""What a provider's bounce or complaint does to the subscriber: the rules of bounces by mail.

A failure whose family says the address is gone (user or host unknown) suppresses it and
stops every enrollment of that person; soft failures (mailbox full, disabled, expired)
suppress only when they add up under ``SoftRule``; a block that is about us (policy, our
sender, size) keeps the address, stops this enrollment and warns the operator; anything
else is noted on the delivery. A spam complaint suppresses and unsubscribes; an unsubscribe
the provider took is an unsubscribe; a complaint about us (authentication, fraud) warns.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dripcourse.inbound.bounces import Bounce, Effect, SoftRule
from dripcourse.inbound.complaints import Complaint, Reaction
from dripcourse.models import Delivery, Enrollment, EnrollmentStatus, WebhookEvent
from dripcourse.people.enrollment import stop_enrollment, suppress, unsubscribe

log = logging.getLogger(__name__)


def apply_bounce(
    session: Session,
    enrollment: Enrollment,
    day: int,
    bounce: Bounce,
    *,
    now: dt.datetime,
    soft_rule: SoftRule,
    source: str,
) -> str:
    """Act on one bounce a provider reported; returns the kind recorded for ``status``."""
    detail = f"{bounce.status} {bounce.diagnostic}".strip() or str(bounce.family)
    if not bounce.failed:
        _note(session, enrollment.id, day, f"delayed after sending ({source}): {detail}", now)
        return "delay"
    _note(session, enrollment.id, day, f"bounced after sending ({source}): {detail}", now)
    subscriber = enrollment.subscriber
    effect = bounce.effect
    if effect == Effect.SOFT:
        if not soft_rule.suppresses([*_soft_times(session, subscriber.id), now], now):
            return "soft"
    elif effect == Effect.WARN:
        log.warning(
            "deliverability: %s refused a lesson (enrollment %s, day %s) for a reason "
            "about our sending (%s: %s); the address is kept",
            source, enrollment.id, day, bounce.family, bounce.status or "no status",
        )  # fmt: skip
        if enrollment.status == EnrollmentStatus.ACTIVE:
            stop_enrollment(session, enrollment, EnrollmentStatus.FAILED, now)
        return "bounce"
    elif effect == Effect.NOTE:
        return "bounce"
    suppress(session, subscriber.email, f"bounced: {detail} (reported by {source})", now)
    _stop_all(session, enrollment, EnrollmentStatus.BOUNCED, now)
    return "bounce" if effect == Effect.SUPPRESS else "soft"


def apply_complaint(
    session: Session,
    enrollment: Enrollment,
    day: int,
    complaint: Complaint,
    *,
    now: dt.datetime,
    source: str,
) -> str:
    """Act on one complaint or unsubscribe a provider reported; returns the kind recorded."""
    if complaint.reaction == Reaction.COMPLAINED:
        suppress(session, enrollment.subscriber.email, f"complained (reported by {source})", now)
        _stop_all(session, enrollment, EnrollmentStatus.UNSUBSCRIBED, now)
        return "complaint"
    if complaint.reaction == Reaction.UNSUBSCRIBE:
        unsubscribe(session, enrollment, now)
        return "unsubscribe"
    if complaint.reaction == Reaction.WARN:
        log.warning(
            "deliverability: %s reported a %s report about a lesson (enrollment %s, day %s): "
            "it is about our sending, not the reader",
            source, complaint.feedback_type, enrollment.id, day,
        )  # fmt: skip
        return "warning"
    return "ignored"


def _stop_all(
    session: Session, enrollment: Enrollment, status: EnrollmentStatus, now: dt.datetime
) -> None:
    for each in enrollment.subscriber.enrollments:
        if each.status == EnrollmentStatus.ACTIVE:
            stop_enrollment(session, each, status, now)


def _soft_times(session: Session, subscriber_id: int) -> list[dt.datetime]:
    """When this person's earlier soft failures were reported by a provider."""
    return list(
        session.scalars(
            select(WebhookEvent.received_at)
            .join(Enrollment, WebhookEvent.enrollment_id == Enrollment.id)
            .where(Enrollment.subscriber_id == subscriber_id, WebhookEvent.kind == "soft")
        )
    )


def _note(session: Session, enrollment_id: int, day: int, error: str, now: dt.datetime) -> None:
    session.execute(
        update(Delivery)
        .where(Delivery.enrollment_id == enrollment_id, Delivery.day == day)
        .values(last_error=error[:1000], updated_at=now)
        .execution_options(synchronize_session=False)
    )
