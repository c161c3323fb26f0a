"""The one message asking a reader about a reply from another address: queued, sent, recorded.

The held reply's row is the outbox. The inbound core makes it, due, inside the transaction
that records the message (reader.held_replies), so nothing is sent for a message whose
processing rolled back. Each scheduler pass (``queue_due``) picks the rows that are due once
that commit is done, and hands their ids to the workers after its own commit, as the tick does
with lessons; a worker (``send_notices``) takes each with a compare-and-set, sends it and
records it. A task lost on the way is picked up again once its time passes, as a lost lesson
is. The message names the day and a masked sender, carries the confirm link, is marked
``Auto-Submitted: auto-replied`` and never contains the reply.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Callable, Sequence
from email.utils import formataddr
from pathlib import Path
from typing import TYPE_CHECKING

import jinja2
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dripcourse.courses.course import Course
from dripcourse.courses.message import reply_addresses
from dripcourse.courses.plaintext import reflow
from dripcourse.courses.small_notice import plain_notice
from dripcourse.courses.wire import WireMessage, envelope
from dripcourse.db import transaction
from dripcourse.links import CONFIRM
from dripcourse.models import Enrollment, HeldReply, NoticeState
from dripcourse.reader import held_replies
from dripcourse.sending import breaker
from dripcourse.sending.record import backoff
from dripcourse.sending.take import course_or_none, seconds
from dripcourse.sending.transport import PermanentMailError, RelayError, TransientMailError

if TYPE_CHECKING:
    from dripcourse.runtime import Runtime  # passed in; the adapters build it

log = logging.getLogger(__name__)

Enqueue = Callable[[Sequence[int]], None]
# A notice that still fails after this many tries is given up (the reply expires unasked).
MAX_ATTEMPTS = 8
TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "mail"
_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES)),
    autoescape=False,  # plain text only
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)


def queue_due(rt: Runtime, now: dt.datetime, enqueue: Enqueue) -> int:
    """Hand the notices whose time has come to ``enqueue``, after the commit; how many.

    A due notice, and one whose worker's lease ran out, are picked; each is given
    ``requeue_after_seconds`` before it may be picked again (a task lost by the broker comes
    back then). While sending is paused for a failure of ours, nothing is queued: the notices
    wait with the lessons. Held replies past their time are deleted on the way.
    """
    with transaction(rt.sessions) as session:
        held_replies.expire(session, now)
        if breaker.current(session) is not None:
            return 0
        query = (
            select(HeldReply.id)
            .where(
                HeldReply.notice_state.in_((NoticeState.DUE, NoticeState.SENDING)),
                HeldReply.notice_next_at <= now,
            )
            .order_by(HeldReply.id)
            .limit(rt.settings.batch_size)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        ids = list(session.scalars(query))
        if ids:
            session.execute(
                update(HeldReply)
                .where(HeldReply.id.in_(ids))
                .values(
                    notice_state=NoticeState.DUE,
                    notice_next_at=now + seconds(rt.settings.requeue_after_seconds),
                )
                .execution_options(synchronize_session=False)
            )
    if ids:
        enqueue(ids)
    return len(ids)


def send_notices(rt: Runtime, ids: Sequence[int], now: dt.datetime) -> dict[int, str]:
    """Send each notice in ``ids``; what became of each: sent, skipped, waiting or failed."""
    return {held_id: send_notice(rt, held_id, now) for held_id in ids}


def send_notice(rt: Runtime, held_id: int, now: dt.datetime) -> str:
    """Take one due notice (a compare-and-set: a task delivered twice sends once), send it,
    record it. A passing failure waits and tries again, up to MAX_ATTEMPTS; a failure of our
    relay puts it back without spending a try; a refusal of the address ends it."""
    with transaction(rt.sessions) as session:
        taken = session.execute(
            update(HeldReply)
            .where(
                HeldReply.id == held_id,
                HeldReply.notice_state == NoticeState.DUE,
                HeldReply.resolution.is_(None),
                HeldReply.expires_at > now,
            )
            .values(
                notice_state=NoticeState.SENDING,
                notice_next_at=now + seconds(rt.settings.send_lease_seconds),
                notice_attempts=HeldReply.notice_attempts + 1,
            )
            .execution_options(synchronize_session=False)
        ).rowcount
        if not taken:
            return "skipped"
        row = session.get(HeldReply, held_id)
        assert row is not None and row.sealed_sender is not None
        enrollment = row.enrollment
        if not held_replies.may_mail(session, enrollment):
            _set(session, held_id, NoticeState.FAILED, error="the reader may not be mailed")
            return "failed"
        course = course_or_none(rt, enrollment.cohort.course_slug)
        if course is None:
            return _again(session, rt, row, now, "the course cannot be loaded")
        msg = notice_message(rt, row, enrollment, course, now)
        attempts = row.notice_attempts
    try:
        rt.throttle()
        rt.transport.send(msg)
    except RelayError as exc:
        with transaction(rt.sessions) as session:
            _set(
                session,
                held_id,
                NoticeState.DUE,
                next_at=now + seconds(rt.settings.relay_retry_seconds),
                attempts=attempts - 1,  # ours, not the reader's: no try spent
                error=str(exc),
            )
        return "waiting"
    except TransientMailError as exc:
        with transaction(rt.sessions) as session:
            row = session.get(HeldReply, held_id)
            assert row is not None
            return _again(session, rt, row, now, str(exc))
    except PermanentMailError as exc:
        with transaction(rt.sessions) as session:
            _set(session, held_id, NoticeState.FAILED, error=str(exc))
        return "failed"
    with transaction(rt.sessions) as session:
        _set(session, held_id, NoticeState.SENT, sent_at=now, error=None)
    log.info("held reply %d: its reader was asked (enrollment %d)", held_id, enrollment.id)
    return "sent"


def _again(session: Session, rt: Runtime, row: HeldReply, now: dt.datetime, error: str) -> str:
    if row.notice_attempts >= MAX_ATTEMPTS:
        _set(session, row.id, NoticeState.FAILED, error=error)
        return "failed"
    delay = backoff(
        row.notice_attempts, rt.settings.retry_base_seconds, rt.settings.retry_max_seconds
    )
    _set(session, row.id, NoticeState.DUE, next_at=now + seconds(delay), error=error)
    return "waiting"


def _set(session: Session, held_id: int, state: NoticeState, **values: object) -> None:
    names = {
        "next_at": "notice_next_at",
        "attempts": "notice_attempts",
        "error": "notice_error",
        "sent_at": "notice_sent_at",
    }
    session.execute(
        update(HeldReply)
        .where(HeldReply.id == held_id)
        .values(notice_state=state, **{names[k]: v for k, v in values.items()})
        .execution_options(synchronize_session=False)
    )


def notice_message(
    rt: Runtime, row: HeldReply, enrollment: Enrollment, course: Course, now: dt.datetime
) -> WireMessage:
    """The message to the subscriber's own address: which day, from which (masked) address,
    and the link that shows the reply. Never the reply's text."""
    assert row.sealed_sender is not None
    subscriber = enrollment.subscriber
    sender = rt.reflection_cipher.open(row.sealed_sender)
    # Signed now, as a lesson's links are: it expires CONFIRM_MAX_AGE_DAYS after it was sent,
    # moments after the held reply's own expiry, which the page checks first.
    link = rt.links.url(CONFIRM, enrollment.id, row.id, key=enrollment.link_key)
    text = _env.get_template("held_reply.txt").render(
        day=row.day,
        course_title=course.title,
        sender=held_replies.mask(sender),
        link=link,
        days=held_replies.HOLD_DAYS,
        team_name=rt.settings.team_name,
        team_contact=rt.settings.team_contact,
    )
    secret = hashlib.sha256(f"{rt.links.secret_key}:held:{row.id}".encode()).hexdigest()[:20]
    headers = {"X-Auto-Response-Suppress": "All"}
    addresses = reply_addresses(
        rt.links, rt.settings.reply_domain, enrollment.id, row.day, enrollment.link_key
    )
    if addresses:
        # Its bounce comes back as a lesson's does; it has no reply address to answer.
        headers["Return-Path"] = f"<{addresses['bounce_to']}>"
    msg = plain_notice(
        reflow(text),
        sender=course.sender,
        to=formataddr((subscriber.name, subscriber.email), charset="utf-8"),
        subject=f"A reply to Day {row.day} arrived from another address",
        now=now,
        # The same for every try: a resend after a crash looks like the same mail.
        message_id=f"<held.{secret}@{rt.settings.message_id_domain}>",
        headers=headers,
    )
    sender_address, data = envelope(msg)
    return WireMessage(
        sender=sender_address,
        recipients=(subscriber.email,),
        data=data,
        label=f"{course.slug}-day{row.day:02d}-held-reply",
    )
