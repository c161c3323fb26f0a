"""What a bounce or a complaint does to a subscriber, however it reached us.

The classifiers (``bounces``, ``complaints``) say what a report means; this module applies
the rules of docs/inbound.md to one enrollment and day: a mailbox that does not exist is
suppressed at once, a full or disabled one only after repeated failures over days (the
``SoftRule``), a block that is about us (policy, our sender, size) never touches the
subscriber and warns the operator instead, and anything else is noted on the delivery.
Mail to our bounce address (``route``) and providers' webhooks (source "ses", "postmark",
...) call the same two functions, so a subscriber is treated alike whichever way the news
came. Each applied report leaves one ``DeliveryProblem`` row (a reason family, never an
address or text): the soft rule counts them and ``people.status`` warns from them.
"""

from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dripcourse.inbound.bounces import Bounce, Effect, SoftRule
from dripcourse.inbound.complaints import Complaint, Reaction
from dripcourse.inbound.decision import Decision
from dripcourse.models import (
    Delivery,
    DeliveryProblem,
    Enrollment,
    EnrollmentStatus,
    InboundKind,
    Subscriber,
)
from dripcourse.people.enrollment import stop_enrollment, suppress, unsubscribe
from dripcourse.validate import without_controls


def apply_bounce(
    session: Session,
    enrollment: Enrollment,
    day: int,
    bounce: Bounce,
    *,
    now: dt.datetime,
    soft_rule: SoftRule,
    source: str,
) -> Decision:
    """Act on a bounce of ``enrollment``'s lesson of ``day``, in the caller's transaction.

    The bounce must name the subscriber's own address as the one that failed: a report
    about anyone else (or about no one) changes nothing.
    """
    subscriber = enrollment.subscriber
    eid = enrollment.id
    if not bounce.recipient or bounce.recipient.casefold() != subscriber.email.casefold():
        return Decision(InboundKind.JUNK, "a delivery report about another recipient", eid, day)
    if bounce.action == "delivered":
        return Decision(InboundKind.JUNK, "a delivery report of a delivery", eid, day)
    detail = _detail(bounce)
    if not bounce.failed:
        _record(
            session, enrollment, day, "bounce", bounce.family, "delay", bounce.status, source, now
        )
        _note_delivery(session, eid, day, f"delayed after sending: {detail}", now)
        return Decision(InboundKind.DELAY, bounce.status, eid, day)
    effect = bounce.effect
    _record(session, enrollment, day, "bounce", bounce.family, effect, bounce.status, source, now)
    code = bounce.status or "no status"
    if effect == Effect.SUPPRESS:
        _note_delivery(session, eid, day, f"bounced after sending: {detail}", now)
        suppress(session, subscriber.email, f"bounced: {detail}", now)
        stop_all(session, subscriber, EnrollmentStatus.BOUNCED, now)
        return Decision(InboundKind.BOUNCE, bounce.status or str(bounce.family), eid, day)
    if effect == Effect.SOFT:
        _note_delivery(session, eid, day, f"bounced after sending ({bounce.family}): {detail}", now)
        times = _soft_failures(session, subscriber, soft_rule, now)
        if soft_rule.suppresses(times, now):
            suppress(
                session,
                subscriber.email,
                # "bounced:" first: the kind `suppressions list` reads.
                f"bounced: {bounce.family}, {len(times)} times: {detail}",
                now,
            )
            stop_all(session, subscriber, EnrollmentStatus.BOUNCED, now)
            return Decision(
                InboundKind.BOUNCE,
                f"{code}, {bounce.family} {len(times)} times: suppressed",
                eid,
                day,
            )
        return Decision(
            InboundKind.BOUNCE,
            f"{code}, {bounce.family} ({len(times)} of {soft_rule.failures}): address kept",
            eid,
            day,
        )
    if effect == Effect.WARN:
        _note_delivery(
            session, eid, day, f"blocked after sending ({bounce.family}, about us): {detail}", now
        )
        return Decision(
            InboundKind.BOUNCE, f"{code}, {bounce.family}: about us, address kept", eid, day
        )
    _note_delivery(session, eid, day, f"bounced after sending ({bounce.family}): {detail}", now)
    return Decision(InboundKind.BOUNCE, f"{code}, {bounce.family}: noted", eid, day)


def apply_complaint(
    session: Session,
    enrollment: Enrollment,
    day: int,
    complaint: Complaint,
    *,
    now: dt.datetime,
    source: str,
) -> Decision:
    """Act on a feedback report about ``enrollment``'s lesson of ``day``: a spam mark stops
    every lesson and suppresses the address, an opt-out unsubscribes, a report that is about
    us (authentication, fraud) warns the operator, anything else is dropped."""
    eid = enrollment.id
    reaction = complaint.reaction
    if reaction == Reaction.IGNORE:
        return Decision(InboundKind.JUNK, "a feedback report that is not a complaint", eid, day)
    kind = _feedback_type(complaint.feedback_type)
    _record(session, enrollment, day, "complaint", kind, reaction, "", source, now)
    if reaction == Reaction.COMPLAINED:
        subscriber = enrollment.subscriber
        suppress(session, subscriber.email, "complained", now)
        stop_all(session, subscriber, EnrollmentStatus.UNSUBSCRIBED, now)
        return Decision(InboundKind.COMPLAINT, "", eid, day)
    if reaction == Reaction.UNSUBSCRIBE:
        unsubscribe(session, enrollment, now)
        return Decision(InboundKind.COMPLAINT, f"{kind}: unsubscribed", eid, day)
    return Decision(InboundKind.COMPLAINT, f"{kind}: about us, address kept", eid, day)


def stop_all(
    session: Session, subscriber: Subscriber, status: EnrollmentStatus, now: dt.datetime
) -> None:
    """Stop every active enrollment of ``subscriber`` with ``status``."""
    for each in subscriber.enrollments:
        if each.status == EnrollmentStatus.ACTIVE:
            stop_enrollment(session, each, status, now)


def _detail(bounce: Bounce) -> str:
    return without_controls(f"{bounce.status} {bounce.diagnostic}".strip())[:400]


def _feedback_type(value: str) -> str:
    """A feedback type as stored: the report's sender writes it, so only its plain letters."""
    return re.sub(r"[^a-z0-9-]", "", value.lower())[:40] or "abuse"


def _record(
    session: Session,
    enrollment: Enrollment,
    day: int,
    kind: str,
    reason: str,
    effect: str,
    status: str,
    source: str,
    now: dt.datetime,
) -> None:
    session.add(
        DeliveryProblem(
            enrollment_id=enrollment.id,
            day=day,
            kind=kind,
            reason=str(reason)[:40],
            effect=str(effect)[:16],
            status=status[:16],
            source=source[:16],
            at=now,
        )
    )
    session.flush()


def _soft_failures(
    session: Session, subscriber: Subscriber, rule: SoftRule, now: dt.datetime
) -> list[dt.datetime]:
    """When this subscriber's soft failures happened within the rule's window, this one
    included (it was recorded just before), over all their enrollments."""
    return list(
        session.scalars(
            select(DeliveryProblem.at)
            .join(Enrollment, DeliveryProblem.enrollment_id == Enrollment.id)
            .where(
                Enrollment.subscriber_id == subscriber.id,
                DeliveryProblem.effect == str(Effect.SOFT),
                DeliveryProblem.at > now - dt.timedelta(days=rule.window_days),
                DeliveryProblem.at <= now,
            )
            .order_by(DeliveryProblem.at)
        )
    )


def _note_delivery(
    session: Session, enrollment_id: int, day: int, error: str, now: dt.datetime
) -> None:
    session.execute(
        update(Delivery)
        .where(Delivery.enrollment_id == enrollment_id, Delivery.day == day)
        .values(last_error=error, updated_at=now)
        .execution_options(synchronize_session=False)
    )
