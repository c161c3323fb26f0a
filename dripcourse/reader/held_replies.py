"""Replies from another address: held sealed until their reader says whether they are theirs.

A reply address is in every lesson a reader forwards, so a reply from an address other than
theirs (a hospital alias, a phone's other account, or someone else) is not saved. It is kept
here, sealed like a reflection, for ``HOLD_DAYS``; the reader is asked once, at their own
address, with a link to a page that shows it (``sending.notices`` sends that message, the
page is ``pages.confirming``). Saving appends it to the day's reflection as a reply from the
right address would be; discarding clears it; either way the row stays, emptied, until it
expires, so the link says it was used and no second message goes out for that sender.

Plain functions over a session and a ``now``; the inbound core, the page, forget and the
retention task are adapters over them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from dripcourse.encryption import ReflectionCipher
from dripcourse.links import CONFIRM_MAX_AGE_DAYS, Links
from dripcourse.models import (
    Enrollment,
    EnrollmentStatus,
    HeldReply,
    NoticeState,
    Subscriber,
    Suppression,
)
from dripcourse.reader.reflections import ReflectionRejected, append_from_email, check_text

# How long a held reply waits for its reader: as long as the link that asks them lives.
HOLD_DAYS = CONFIRM_MAX_AGE_DAYS
SAVED = "saved"
DISCARDED = "discarded"
# The enrollments whose reader is never mailed again: no one could be asked.
_UNREACHABLE = (EnrollmentStatus.UNSUBSCRIBED, EnrollmentStatus.BOUNCED)


def sender_digest(links: Links, address: str) -> str:
    """The address as the table keeps it in clear: a keyed digest (no dictionary of known
    addresses can turn it back without our key), the same whatever the address's case."""
    secret = links.address_key or links.secret_key
    key = hashlib.sha256(f"dripcourse.held-sender:{secret}".encode()).digest()
    return hmac.new(key, address.strip().casefold().encode("utf-8"), hashlib.sha256).hexdigest()


def hold(
    session: Session,
    enrollment: Enrollment,
    day: int,
    sender: str,
    text: str,
    prompt: str,
    *,
    cipher: ReflectionCipher,
    links: Links,
    max_chars: int,
    notices_per_day: int,
    now: dt.datetime,
) -> str:
    """Keep a reply from ``sender`` (not the subscriber's address) until its reader decides.

    Returns what became of it, for the log line (never the address or the text). A first
    reply from that sender to that day is held and its notice made due; a later one while the
    first still waits joins it (no second notice); one after the reader already answered for
    that sender and day, or past ``notices_per_day`` notices to this subscriber in a day, or
    for a reader who may not be mailed, is not kept: nobody could be asked about it.
    ReflectionRejected for an empty reply or one that would be too long. The caller holds the
    subscriber's row lock, so the counts below cannot be passed by two replies at once.
    """
    cleaned = check_text(text, max_chars)
    digest = sender_digest(links, sender)
    _drop_expired(session, now, enrollment_id=enrollment.id)
    found = session.scalar(
        select(HeldReply).where(
            HeldReply.enrollment_id == enrollment.id,
            HeldReply.day == day,
            HeldReply.sender_digest == digest,
        )
    )
    if found is not None:
        if found.resolution is not None or found.sealed_body is None:
            return f"not kept: the reader already {found.resolution or 'answered'} a reply from it"
        joined = check_text(f"{cipher.open(found.sealed_body)}\n\n{cleaned}", max_chars)
        found.sealed_body = cipher.seal(joined)
        return "held with the earlier reply from that address"
    if not may_mail(session, enrollment):
        return "not kept: the reader may not be mailed to ask"
    if asked_today(session, enrollment.subscriber_id, now) >= notices_per_day:
        return f"not kept: {notices_per_day} notices to this reader in a day already"
    session.add(
        HeldReply(
            enrollment_id=enrollment.id,
            day=day,
            sender_digest=digest,
            sealed_sender=cipher.seal(sender.strip()),
            sealed_body=cipher.seal(cleaned),
            prompt=prompt,
            received_at=now,
            expires_at=now + dt.timedelta(days=HOLD_DAYS),
            notice_state=NoticeState.DUE,
            notice_next_at=now,
            notice_attempts=0,
        )
    )
    session.flush()
    return "held; the reader is asked"


def may_mail(session: Session, enrollment: Enrollment) -> bool:
    """Whether the subscriber may be sent the message asking about a held reply: not
    unsubscribed or bounced from this course, and the address not suppressed."""
    if enrollment.status in _UNREACHABLE:
        return False
    address = enrollment.subscriber.email
    return session.scalar(select(Suppression.id).where(Suppression.email == address)) is None


def asked_today(session: Session, subscriber_id: int, now: dt.datetime) -> int:
    """How many replies from other addresses this subscriber was (or is about to be) asked
    about in the last day."""
    return (
        session.scalar(
            select(func.count())
            .select_from(HeldReply)
            .join(Enrollment, HeldReply.enrollment_id == Enrollment.id)
            .where(
                Enrollment.subscriber_id == subscriber_id,
                HeldReply.received_at > now - dt.timedelta(days=1),
            )
        )
        or 0
    )


@dataclass(frozen=True)
class Waiting:
    """A held reply as its reader sees it on the confirm page: the text and sender opened."""

    id: int
    day: int
    sender: str
    body: str
    received_at: dt.datetime
    expires_at: dt.datetime


class NotWaiting(Exception):
    """The held reply is no longer there to save or discard; the message says why."""

    def __init__(self, resolution: str | None) -> None:
        super().__init__(resolution or "expired")
        self.resolution = resolution  # "saved", "discarded", or None: expired or deleted


def waiting(
    session: Session,
    enrollment_id: int,
    held_id: int,
    cipher: ReflectionCipher,
    now: dt.datetime,
    *,
    lock: bool = False,
) -> Waiting:
    """The held reply ``held_id`` of this enrollment, opened; NotWaiting when it was saved,
    discarded or has expired (an expired one is deleted here, not left for the sweep).

    ``lock`` takes its row for update (PostgreSQL), so of two presses at once one acts.
    """
    query = select(HeldReply).where(
        HeldReply.id == held_id, HeldReply.enrollment_id == enrollment_id
    )
    if lock and session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    row = session.scalar(query.execution_options(populate_existing=True))
    if row is None:
        raise NotWaiting(None)
    if row.expires_at <= now:
        session.delete(row)
        session.flush()
        raise NotWaiting(None)
    if row.resolution is not None or row.sealed_body is None or row.sealed_sender is None:
        raise NotWaiting(row.resolution)
    return Waiting(
        id=row.id,
        day=row.day,
        sender=cipher.open(row.sealed_sender),
        body=cipher.open(row.sealed_body),
        received_at=row.received_at,
        expires_at=row.expires_at,
    )


def save(
    session: Session,
    enrollment: Enrollment,
    held_id: int,
    *,
    cipher: ReflectionCipher,
    max_chars: int,
    now: dt.datetime,
) -> None:
    """Append the held reply to the day's reflection, as a reply from the subscriber's own
    address would be, and clear it. NotWaiting if it is gone; ReflectionRejected if the
    reflection would grow past ``max_chars`` (the reply stays held)."""
    # The lock a reply by email takes before appending (inbound.route): a reply arriving for
    # the same day meanwhile cannot write the day's text without this one, nor this without it.
    session.execute(
        select(Subscriber.id).where(Subscriber.id == enrollment.subscriber_id).with_for_update()
    )
    held = waiting(session, enrollment.id, held_id, cipher, now, lock=True)
    row = session.get(HeldReply, held.id)
    assert row is not None
    zone = ZoneInfo(enrollment.subscriber.timezone)
    append_from_email(
        session,
        enrollment,
        held.day,
        row.prompt,
        held.body,
        cipher=cipher,
        max_chars=max_chars,
        now=now,
        local_day=held.received_at.astimezone(zone).date(),
    )
    _resolve(row, SAVED, now)


def discard(
    session: Session,
    enrollment: Enrollment,
    held_id: int,
    cipher: ReflectionCipher,
    now: dt.datetime,
) -> None:
    """Clear the held reply without saving it; NotWaiting if it is gone already."""
    held = waiting(session, enrollment.id, held_id, cipher, now, lock=True)
    row = session.get(HeldReply, held.id)
    assert row is not None
    _resolve(row, DISCARDED, now)


def _resolve(row: HeldReply, resolution: str, now: dt.datetime) -> None:
    row.sealed_body = row.sealed_sender = None
    row.resolution, row.resolved_at = resolution, now


def expire(session: Session, now: dt.datetime) -> int:
    """Delete every held reply past its time, read or not; returns how many.

    Looks before it deletes: each scheduler pass calls this, and on SQLite even a DELETE that
    finds nothing takes the one write lock the web pages and the worker share.
    """
    if session.scalar(select(HeldReply.id).where(HeldReply.expires_at <= now).limit(1)) is None:
        return 0
    return _drop_expired(session, now)


def _drop_expired(session: Session, now: dt.datetime, enrollment_id: int | None = None) -> int:
    statement = delete(HeldReply).where(HeldReply.expires_at <= now)
    if enrollment_id is not None:
        statement = statement.where(HeldReply.enrollment_id == enrollment_id)
    return session.execute(statement.execution_options(synchronize_session=False)).rowcount


def delete_for(session: Session, enrollment_ids: list[int]) -> int:
    """Delete the held replies of these enrollments (forget, delete my reflections)."""
    if not enrollment_ids:
        return 0
    return session.execute(
        delete(HeldReply)
        .where(HeldReply.enrollment_id.in_(enrollment_ids))
        .execution_options(synchronize_session=False)
    ).rowcount


def mask(address: str) -> str:
    """The address as the notice names it: enough for its owner to know it, little for a
    stranger to write with (``dr.ana.k@hospital.example`` becomes ``dr…@hospital.example``)."""
    local, _, domain = address.strip().rpartition("@")
    shown = local[:2] if len(local) > 3 else local[:1]
    return f"{shown}…@{domain}"


def rekey(session: Session, cipher: ReflectionCipher) -> int:
    """Seal every held reply's text and sender again under the first key; how many rows."""
    total = 0
    for row in session.scalars(select(HeldReply).where(HeldReply.sealed_body.is_not(None))):
        row.sealed_body = cipher.reseal(row.sealed_body) if row.sealed_body else None
        row.sealed_sender = cipher.reseal(row.sealed_sender) if row.sealed_sender else None
        total += 1
    session.flush()
    return total


__all__ = [
    "DISCARDED",
    "HOLD_DAYS",
    "SAVED",
    "NotWaiting",
    "ReflectionRejected",
    "Waiting",
    "asked_today",
    "delete_for",
    "discard",
    "expire",
    "hold",
    "mask",
    "may_mail",
    "rekey",
    "save",
    "sender_digest",
    "waiting",
]
