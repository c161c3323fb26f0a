"""The lesson a provider's event is about: by the header we set, else by our Message-ID.

The address in an event is the provider's word, and anyone who can post to the webhook URL
could write any address there; so an event counts only when it names one of our deliveries
by something only we make (the signed ``delivery`` token in our header, or our Message-ID,
which is a keyed hash of the delivery's id), and only when the address it gives is that
delivery's subscriber.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from dripcourse.inbound.providers.common import Event
from dripcourse.links import DELIVERY, BadToken, Links, enrollment_of
from dripcourse.models import Delivery, Enrollment


@dataclass(frozen=True)
class Found:
    enrollment: Enrollment
    day: int


def find(session: Session, links: Links, event: Event) -> Found | None:
    """The enrollment and day ``event`` is about, or None when it names none of ours (or
    names one whose subscriber has another address)."""
    found = _by_tag(session, links, event.tag) if event.tag else None
    if found is None and event.message_id:
        found = _by_message_id(session, event.message_id)
    if found is None:
        return None
    if not event.recipient or event.recipient != found.enrollment.subscriber.email.casefold():
        return None
    return found


def _by_tag(session: Session, links: Links, tag: str) -> Found | None:
    try:
        token = links.load_address_token(DELIVERY, tag)
    except BadToken:
        return None
    enrollment = enrollment_of(session, token)
    return Found(enrollment, token.ids[1]) if enrollment is not None else None


def _by_message_id(session: Session, message_id: str) -> Found | None:
    value = message_id.strip()
    if not value.startswith("<"):
        value = f"<{value}>"  # Mailgun hands it back without the brackets
    delivery = session.scalar(select(Delivery).where(Delivery.message_id == value).limit(1))
    if delivery is None:
        return None
    return Found(delivery.enrollment, delivery.day)
