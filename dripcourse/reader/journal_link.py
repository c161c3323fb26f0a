"""A fresh journal link, emailed to the reader's own address when they ask for it on the pause
or unsubscribed page.

Those two pages are opened by links that never expire, and the unsubscribe link also travels
in a mail header to the reader's mail provider and in every forwarded lesson: whoever holds
one must not reach what the reader wrote. So those pages link no journal. Their button sends
a journal link, made now, to the address the lessons go to, which only the mailbox's owner
reads; the page never shows the address. At most one an hour per reader, so the button cannot
be used to fill a mailbox, and never to an address suppressed for any reason but the reader's
own unsubscribe (a bounce, a complaint, an operator's decision).
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
from collections.abc import Callable
from email.message import Message
from email.utils import make_msgid

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from dripcourse.courses.course import Course
from dripcourse.courses.small_notice import plain_notice
from dripcourse.links import JOURNAL, Links
from dripcourse.models import Enrollment, Subscriber, Suppression

log = logging.getLogger(__name__)

EVERY = dt.timedelta(hours=1)
# The one suppression that still lets the reader's own request through: their unsubscribe.
_OWN_CHOICE = "unsubscribed"


class Asked(enum.StrEnum):
    """What became of a reader's request (shown on the page they pressed it on)."""

    SENT = "sent"
    TOO_SOON = "soon"  # one went less than EVERY ago
    BLOCKED = "blocked"  # the address may not be mailed
    FAILED = "failed"  # the mail server did not take it: nothing recorded, ask again later


class NotSent(Exception):
    """The mail server did not take the message; the caller's transaction must roll back."""


def may_mail(session: Session, email: str) -> bool:
    """Whether a journal link may go to ``email``: not suppressed, or only by unsubscribing."""
    reason = session.scalar(select(Suppression.reason).where(Suppression.email == email))
    return reason is None or reason == _OWN_CHOICE


def send(
    session: Session,
    enrollment: Enrollment,
    course: Course,
    links: Links,
    deliver: Callable[[Message], None],
    now: dt.datetime,
    *,
    message_id_domain: str,
    team_name: str,
    max_age_days: int = 0,
) -> Asked:
    """Email the reader of ``enrollment`` a journal link made now, if they may have one now.

    The time is recorded with a compare-and-set before the message goes, so two presses at
    once send one. ``deliver`` failing raises NotSent: rolled back, the reader may ask again.
    """
    subscriber = enrollment.subscriber
    if not may_mail(session, subscriber.email):
        return Asked.BLOCKED
    taken = session.execute(
        update(Subscriber)
        .where(
            Subscriber.id == subscriber.id,
            or_(
                Subscriber.journal_link_sent_at.is_(None),
                Subscriber.journal_link_sent_at <= now - EVERY,
            ),
        )
        .values(journal_link_sent_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if taken != 1:
        return Asked.TOO_SOON
    url = links.url(JOURNAL, enrollment.id, key=enrollment.link_key)
    msg = message(course, subscriber, url, now, message_id_domain, team_name, max_age_days)
    try:
        deliver(msg)
    except Exception as exc:  # noqa: BLE001 - whatever the relay says, the reader asks later
        log.warning("journal link for enrollment %s not sent: %s", enrollment.id, exc)
        raise NotSent(str(exc)) from None
    log.info("journal link sent for enrollment %s at the reader's request", enrollment.id)
    return Asked.SENT


def message(
    course: Course,
    subscriber: Subscriber,
    url: str,
    now: dt.datetime,
    message_id_domain: str,
    team_name: str,
    max_age_days: int = 0,
) -> Message:
    """The plain-text email that carries the link, from the course's sender."""
    lasts = (
        f"It works for {max_age_days} days; after that, ask for a new one on the same page.\n\n"
        if max_age_days
        else ""
    )
    body = (
        "Hello,\n\n"
        f"You asked for a link to your journal of {course.title}. Here it is:\n\n"
        f"{url}\n\n"
        "Anyone who has this link can read what you wrote, so please keep this email to\n"
        f"yourself. {lasts}"
        "If you did not ask for it, you can ignore this email: nothing has changed.\n\n"
        f"{team_name}\n"
    )
    return plain_notice(
        body,
        sender=course.sender,
        # The address alone: the name is the reader's to give, and nothing else is needed here.
        to=subscriber.email,
        subject=f"Your journal: {course.title}",
        now=now,
        message_id=make_msgid(domain=message_id_domain),
    )
