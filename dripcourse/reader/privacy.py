"""Subscribers' data in their hands: deleting reflections, forgetting a person, retention.

Plain functions over a session and a ``now``. The journal's delete buttons, the operators'
``dripcourse forget`` and the daily retention task are thin adapters over them, so a
subscriber's "delete everything about me" does exactly what an operator's ``forget`` does.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from dripcourse.courses.render import check_address
from dripcourse.errors import NotFound
from dripcourse.models import Delivery, Enrollment, Reflection, Subscriber
from dripcourse.people.enrollment import suppress

FORGOTTEN = "forgotten: everything else about this person was deleted at their request"


@dataclass(frozen=True)
class Forgotten:
    """What ``forget_subscriber`` deleted."""

    enrollments: int
    deliveries: int
    reflections: int


def find_subscriber(session: Session, email: str) -> Subscriber:
    """The subscriber with this address; NotFound names the address otherwise."""
    try:
        address = check_address(email)
    except ValueError as exc:
        raise NotFound(f"email: {exc}") from None
    found = session.scalar(select(Subscriber).where(Subscriber.email == address))
    if found is None:
        raise NotFound(f"no subscriber with the address {address}")
    return found


def _enrollment_ids(session: Session, subscriber: Subscriber) -> list[int]:
    """Every enrollment of this person, locked (PostgreSQL) so that a tick claiming one of
    them finishes first and its new delivery is deleted with the rest."""
    query = select(Enrollment.id).where(Enrollment.subscriber_id == subscriber.id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    return list(session.scalars(query))


def delete_reflections(session: Session, subscriber: Subscriber) -> int:
    """Delete every reflection this person wrote, in every course; returns how many."""
    ids = _enrollment_ids(session, subscriber)
    if not ids:
        return 0
    return session.execute(
        delete(Reflection)
        .where(Reflection.enrollment_id.in_(ids))
        .execution_options(synchronize_session=False)
    ).rowcount


def forget_subscriber(session: Session, subscriber: Subscriber, now: dt.datetime) -> Forgotten:
    """Delete everything about a person, keeping only a suppression entry for the address.

    The suppression is what stops any later import or enrollment from mailing them again
    (and cancels a lesson already queued, which finds its delivery gone or the address
    suppressed). Their name, time zone, enrollments, delivery records and reflections go.
    """
    email = subscriber.email
    ids = _enrollment_ids(session, subscriber)
    suppress(session, email, FORGOTTEN, now)
    counts = Forgotten(
        enrollments=len(ids),
        deliveries=_delete(session, delete(Delivery).where(Delivery.enrollment_id.in_(ids))),
        reflections=_delete(session, delete(Reflection).where(Reflection.enrollment_id.in_(ids))),
    )
    _delete(session, delete(Enrollment).where(Enrollment.id.in_(ids)))
    _delete(session, delete(Subscriber).where(Subscriber.id == subscriber.id))
    session.expunge_all()
    return counts


def _delete(session: Session, statement) -> int:  # type: ignore[no-untyped-def]
    return session.execute(statement.execution_options(synchronize_session=False)).rowcount


def delete_old_reflections(session: Session, retention_days: int, now: dt.datetime) -> int:
    """Delete reflections last written more than ``retention_days`` ago (0 keeps them all)."""
    if retention_days <= 0:
        return 0
    cutoff = now - dt.timedelta(days=retention_days)
    return _delete(session, delete(Reflection).where(Reflection.updated_at < cutoff))


def reflections_of(session: Session, subscriber: Subscriber) -> int:
    """How many reflections this person has written (none of them is read)."""
    return (
        session.scalar(
            select(func.count())
            .select_from(Reflection)
            .join(Enrollment, Reflection.enrollment_id == Enrollment.id)
            .where(Enrollment.subscriber_id == subscriber.id)
        )
        or 0
    )
