"""Mail that came in: inbound messages, provider webhook events, replies held for confirmation."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import (
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from dripcourse.models.base import Base, UTCDateTime, enum_type
from dripcourse.models.enrollments import Enrollment


class InboundKind(enum.StrEnum):
    """What an inbound message turned out to be (``InboundMessage.kind``)."""

    REPLY = "reply"  # saved as the day's reflection
    HELD = "held"  # a reply from another address: kept sealed until its reader says (HeldReply)
    LIMITED = "limited"  # a reply over the rate limits: not saved, counted
    AUTO_REPLY = "auto-reply"  # out-of-office and the like: dropped, counted
    BOUNCE = "bounce"  # a permanent delivery failure: the address is suppressed
    DELAY = "delay"  # a transient delivery failure: recorded on the delivery
    COMPLAINT = "complaint"  # marked as spam: suppressed, enrollments stopped
    JUNK = "junk"  # anything else, or a bad token: dropped
    DUPLICATE = "duplicate"  # this Message-ID was processed already


class InboundMessage(Base):
    """One inbound message as processed: what it was, never what it said.

    The raw message is not kept. This row guards against processing a Message-ID twice,
    and counts what came in (for ``status`` and for the inbound rate limits).
    """

    __tablename__ = "inbound_messages"
    __table_args__ = (Index("ix_inbound_messages_received_at", "received_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # sha256 of the Message-ID (of the bytes when there is none): no address in clear.
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # an InboundKind
    enrollment_id: Mapped[int | None] = mapped_column(
        ForeignKey("enrollments.id", ondelete="CASCADE"), default=None
    )
    day: Mapped[int | None] = mapped_column(Integer, default=None)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class WebhookEvent(Base):
    """One event an email provider's webhook reported, as processed: what it was, for whom.

    Its digest (of the provider and the event's own id, or of a signed request's nonce) is
    what makes a repeated event or a replayed request change nothing; the rows count what
    came back for ``status``. Nothing of the payload is kept, the address neither.
    """

    __tablename__ = "webhook_events"
    __table_args__ = (Index("ix_webhook_events_received_at", "received_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    provider: Mapped[str] = mapped_column(String(16))  # "ses", "mailgun", ...
    # "bounce", "delay", "complaint", "unsubscribe", "unmatched", "ignored", "request"
    kind: Mapped[str] = mapped_column(String(16))
    enrollment_id: Mapped[int | None] = mapped_column(
        ForeignKey("enrollments.id", ondelete="CASCADE"), default=None
    )
    day: Mapped[int | None] = mapped_column(Integer, default=None)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class NoticeState(enum.StrEnum):
    """Where the message asking about a held reply is (``HeldReply.notice_state``)."""

    DUE = "due"  # to be queued by the tick once notice_next_at has passed
    SENDING = "sending"  # a worker holds it until notice_next_at
    SENT = "sent"
    FAILED = "failed"  # not sent: the address may not be mailed, the course is gone, refused


class HeldReply(Base):
    """A reply to a lesson from another address than the subscriber's, waiting for them to say
    whether it is theirs (docs/inbound.md, "Replies from another address").

    The text and the sender's address are sealed like reflections; the address is also kept
    as a keyed digest, which is how "one message per (enrollment, day, sender)" is checked
    without it in clear. Once the reader saves or discards it, both sealed values are cleared
    and the row stays, without them, until ``expires_at`` (so a used link says so); then it
    is deleted.
    """

    __tablename__ = "held_replies"
    __table_args__ = (
        UniqueConstraint(
            "enrollment_id", "day", "sender_digest", name="uq_held_reply_enrollment_day_sender"
        ),
        Index("ix_held_replies_notice", "notice_state", "notice_next_at"),
        Index("ix_held_replies_expires_at", "expires_at"),
        # Its id is in the confirm link: never handed out twice.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    enrollment_id: Mapped[int] = mapped_column(ForeignKey("enrollments.id", ondelete="CASCADE"))
    day: Mapped[int] = mapped_column(Integer)
    # HMAC-SHA256 of the case-folded address under a key of ours: no address in clear.
    sender_digest: Mapped[str] = mapped_column(String(64))
    # Both sealed under the reflections key; NULL once saved or discarded.
    sealed_sender: Mapped[str | None] = mapped_column(Text, default=None)
    sealed_body: Mapped[str | None] = mapped_column(Text, default=None)
    # The question as it was asked, for the reflection a saved reply becomes.
    prompt: Mapped[str] = mapped_column(Text)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    notice_state: Mapped[NoticeState] = mapped_column(
        enum_type(NoticeState, "notice_state"), default=NoticeState.DUE
    )
    # DUE: when the tick may queue it; SENDING: when the worker's lease runs out.
    notice_next_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    notice_attempts: Mapped[int] = mapped_column(Integer, default=0)
    notice_sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    notice_error: Mapped[str | None] = mapped_column(Text, default=None)
    # "saved" or "discarded" once the reader chose; NULL while it waits.
    resolution: Mapped[str | None] = mapped_column(String(16), default=None)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)

    enrollment: Mapped[Enrollment] = relationship()
