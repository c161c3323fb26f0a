"""Subscribers' data in their hands: deleting reflections, forgetting a person, retention.

Plain functions over a session and a ``now``. The journal's delete buttons, the operators'
``dripcourse forget`` and the daily retention task are thin adapters over them, so a
subscriber's "delete everything about me" does exactly what an operator's ``forget`` does.
"""

from __future__ import annotations

import datetime as dt
import email.parser
import email.policy
import logging
import re
from dataclasses import dataclass
from email.utils import getaddresses
from pathlib import Path

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from dripcourse.errors import NotFound
from dripcourse.models import (
    CheckinAnswer,
    CircuitBreaker,
    Delivery,
    Enrollment,
    InboundKind,
    InboundMessage,
    Reflection,
    Subscriber,
    Suppression,
)
from dripcourse.reader import circle, held_replies
from dripcourse.validate import check_address

log = logging.getLogger(__name__)

FORGOTTEN = "forgotten: everything else about this person was deleted at their request"
# How long the record of a message that saved nothing (junk, held, an auto-reply, a report) is
# kept: long enough that a mail server delivering it again (they retry for up to five days) is
# still recognised as a duplicate, no longer.
DUPLICATE_WINDOW = dt.timedelta(days=7)
# What is written instead of a forgotten address in the texts that are kept (a relay's error).
ERASED = "(address erased)"


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
    # What they shared and wrote in the cohort circle goes with their reflections.
    circle.erase(session, ids)
    # The record of each reply says which day they wrote back and when: it goes with the text;
    # replies from other addresses still waiting to be saved go too.
    held_replies.delete_for(session, ids)
    _delete(
        session,
        delete(InboundMessage).where(
            InboundMessage.enrollment_id.in_(ids), InboundMessage.kind == InboundKind.REPLY
        ),
    )
    return session.execute(
        delete(Reflection)
        .where(Reflection.enrollment_id.in_(ids))
        .execution_options(synchronize_session=False)
    ).rowcount


def forget_subscriber(session: Session, subscriber: Subscriber, now: dt.datetime) -> Forgotten:
    """Delete everything about a person, keeping only a suppression entry for the address.

    The suppression is what stops any later import or enrollment from mailing them again
    (and cancels a lesson already queued, which finds its delivery gone or the address
    suppressed); it says only that they were forgotten, and when (an earlier bounce's text,
    which may quote the address, goes). Their name, time zone, enrollments, delivery records,
    reflections, check-in answers, the records of their inbound mail and the replies from other
    addresses held for them go, and their address is erased from the error texts kept
    elsewhere. Their lesson files in the outbox are the caller's to remove
    (``remove_outbox_files``): they are not in the database.
    """
    email = subscriber.email
    ids = _enrollment_ids(session, subscriber)
    _suppress_as_forgotten(session, email, now)
    circle.erase(session, ids)
    _delete(session, delete(InboundMessage).where(InboundMessage.enrollment_id.in_(ids)))
    held_replies.delete_for(session, ids)
    counts = Forgotten(
        enrollments=len(ids),
        deliveries=_delete(session, delete(Delivery).where(Delivery.enrollment_id.in_(ids))),
        reflections=_delete(session, delete(Reflection).where(Reflection.enrollment_id.in_(ids))),
    )
    _delete(session, delete(CheckinAnswer).where(CheckinAnswer.enrollment_id.in_(ids)))
    _erase_address(session, email)
    _delete(session, delete(Enrollment).where(Enrollment.id.in_(ids)))
    _delete(session, delete(Subscriber).where(Subscriber.id == subscriber.id))
    session.expunge_all()
    return counts


def _suppress_as_forgotten(session: Session, email: str, now: dt.datetime) -> None:
    """The one entry kept: "forgotten on DATE at their request", whatever it said before."""
    found = session.scalar(select(Suppression).where(Suppression.email == email))
    if found is None:
        session.add(Suppression(email=email, reason=FORGOTTEN, created_at=now))
    else:
        found.reason, found.created_at = FORGOTTEN, now


def _erase_address(session: Session, email: str) -> None:
    """Erase the address, in any case, from the error texts kept beyond the person's own rows
    (another delivery's error, the relay pause's reason): a relay's refusal may quote it."""
    pattern = f"%{_like_escape(email)}%"
    for model, key, column in (
        (Delivery, Delivery.id, Delivery.last_error),
        (CircuitBreaker, CircuitBreaker.name, CircuitBreaker.reason),
    ):
        found = session.execute(select(key, column).where(column.ilike(pattern, escape="\\")))
        for row_key, text in found.all():
            session.execute(
                update(model)
                .where(key == row_key)
                .values({column.key: _replace_folded(text, email)})
                .execution_options(synchronize_session=False)
            )


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _replace_folded(text: str, email: str) -> str:
    return re.sub(re.escape(email), ERASED, text, flags=re.IGNORECASE)


def remove_outbox_files(folder: Path | None, email: str) -> int:
    """Delete the lessons to ``email`` that the file transport left in ``folder``; how many.

    They hold the person's name and working links. A file that cannot be read is left, with
    a warning naming it (never the address).
    """
    if folder is None or not folder.is_dir():
        return 0
    wanted = email.casefold()
    parser = email_parser()
    removed = 0
    for path in sorted(folder.glob("*.eml")):
        try:
            with path.open("rb") as fh:
                headers = parser.parse(fh, headersonly=True)
            to = [addr.casefold() for _, addr in getaddresses(headers.get_all("To", []))]
        except (OSError, ValueError, TypeError) as exc:
            log.warning("forget: could not read %s: %s", path.name, type(exc).__name__)
            continue
        if wanted in to:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def email_parser() -> email.parser.BytesParser:
    return email.parser.BytesParser(policy=email.policy.compat32)


def _delete(session: Session, statement) -> int:  # type: ignore[no-untyped-def]
    return session.execute(statement.execution_options(synchronize_session=False)).rowcount


def delete_old_reflections(session: Session, retention_days: int, now: dt.datetime) -> int:
    """Delete reflections last written more than ``retention_days`` ago (0 keeps them all),
    and the records of the replies received as long ago."""
    if retention_days <= 0:
        return 0
    cutoff = now - dt.timedelta(days=retention_days)
    _delete(
        session,
        delete(InboundMessage).where(
            InboundMessage.kind == InboundKind.REPLY, InboundMessage.received_at < cutoff
        ),
    )
    return _delete(session, delete(Reflection).where(Reflection.updated_at < cutoff))


def expire_inbound_records(session: Session, now: dt.datetime) -> int:
    """Delete the records of inbound messages that saved nothing once ``DUPLICATE_WINDOW`` has
    passed (a reply's record goes with its reflection instead); returns how many."""
    return _delete(
        session,
        delete(InboundMessage).where(
            InboundMessage.kind != InboundKind.REPLY,
            InboundMessage.received_at < now - DUPLICATE_WINDOW,
        ),
    )


def expire_held_replies(session: Session, now: dt.datetime) -> int:
    """Delete the replies from other addresses held past their seven days; how many."""
    return held_replies.expire(session, now)


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
