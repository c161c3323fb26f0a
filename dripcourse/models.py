"""SQLAlchemy 2 models: subscribers, cohorts, enrollments, deliveries, reflections, suppressions."""

from __future__ import annotations

import base64
import datetime as dt
import enum
import secrets
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Boolean,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.sql.expression import FunctionElement


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Stores naive UTC, returns aware UTC, on every backend alike.

    SQLite keeps no zone; PostgreSQL would shift by the session zone. One rule for both keeps
    comparisons in queries exact.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: object) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where UTC is required")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(
        self, value: dt.datetime | None, dialect: object
    ) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=dt.UTC)


# The largest id (or day) the Integer columns hold on every backend: 32 bits on PostgreSQL, 64 on
# SQLite. A value past a column's range fails the whole query there, not just finds nothing.
MAX_ID = 2**31 - 1


LINK_KEY_CHARS = 12  # 60 random bits of lower-case base32: fits a reply address's local part


def new_link_key() -> str:
    """A fresh random ``Enrollment.link_key`` (see links.py)."""
    return base64.b32encode(secrets.token_bytes(8)).decode().lower()[:LINK_KEY_CHARS]


class random_link_key(FunctionElement[str]):  # noqa: N801 - reads as the SQL function it is
    """The database's own random key, for rows added without one (raw SQL, a release from
    before keys still running during the upgrade): never the same for two rows."""

    type = String()
    inherit_cache = True


@compiles(random_link_key, "sqlite")
def _random_link_key_sqlite(element: random_link_key, compiler: object, **kw: object) -> str:
    return "lower(hex(randomblob(6)))"


@compiles(random_link_key, "postgresql")
def _random_link_key_postgresql(element: random_link_key, compiler: object, **kw: object) -> str:
    return "substr(md5(random()::text || clock_timestamp()::text), 1, 12)"


class Base(DeclarativeBase):
    pass


class EnrollmentStatus(enum.StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    FAILED = "failed"
    REMOVED = "removed"  # an operator took them out of the cohort (or moved them)


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # claimed and queued, waiting for a worker
    WAITING = "waiting"  # put back until next_attempt_at: a retry, the window, a paused relay
    SENDING = "sending"  # a worker holds it until next_attempt_at
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"  # the subscriber left before it went out


def _enum(kind: type[enum.Enum], name: str) -> Enum:
    return Enum(
        kind,
        name=name,
        native_enum=False,
        length=16,
        values_callable=lambda e: [m.value for m in e],
    )


class Subscriber(Base):
    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    # How lessons address them, set by hand or from the import; "" derives it from the name.
    greeting: Mapped[str] = mapped_column(String(200), default="", server_default="")
    timezone: Mapped[str] = mapped_column(String(64))
    # The country whose places to turn they are shown, when an operator set it (ISO 3166 code);
    # "" means their time zone's country in the tz database (reader/care.py).
    country: Mapped[str] = mapped_column(String(2), default="", server_default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    # When a journal link was last emailed at their request from the pause or unsubscribe
    # page (reader.journal_link): one an hour at most.
    journal_link_sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)

    enrollments: Mapped[list[Enrollment]] = relationship(back_populates="subscriber")


class Cohort(Base):
    __tablename__ = "cohorts"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    course_slug: Mapped[str] = mapped_column(String(100))
    # Day 1 goes out on this local date at the course's send time in each subscriber's zone...
    start_date: Mapped[dt.date | None] = mapped_column(default=None)
    # ...or, for a cohort started "now", at once.
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    # Started "today": each subscriber's own local date at created_at, not one date for all.
    start_today: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    # The zone for people imported or enrolled without one (NULL: such a person is refused).
    timezone: Mapped[str | None] = mapped_column(String(64), default=None)
    # The cohort circle (reader/circle.py), when the course allows one; off hides everything
    # shared in it without deleting anything.
    circle: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

    def start_date_in(self, tz: ZoneInfo) -> dt.date | None:
        """The local date Day 1 is planned for, in a subscriber's zone (None: started now)."""
        if self.start_today:
            return self.created_at.astimezone(tz).date()
        return self.start_date

    enrollments: Mapped[list[Enrollment]] = relationship(back_populates="cohort")


class Enrollment(Base):
    """One subscriber taking one cohort's course; knows the day they are on."""

    __tablename__ = "enrollments"
    __table_args__ = (
        UniqueConstraint("subscriber_id", "cohort_id", name="uq_enrollment_subscriber_cohort"),
        # Only enrollments with a lesson due: one without (in flight, completed, stopped) is
        # never looked up by its due time, and such entries misled PostgreSQL's planner into
        # this index for the record's "next_send_at IS NULL" guard (send01_partial_due_index).
        Index(
            "ix_enrollments_next_send_at",
            "next_send_at",
            postgresql_where=text("next_send_at IS NOT NULL"),
            sqlite_where=text("next_send_at IS NOT NULL"),
        ),
        # Its id is in every link and reply address: SQLite must never hand a deleted one
        # out again (links01_bound_links).
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Every link and reply address of this enrollment carries it (links.py): a token made for
    # an earlier row with the same id (reused, restored, imported) opens nothing.
    link_key: Mapped[str] = mapped_column(
        String(16), default=new_link_key, server_default=random_link_key()
    )
    # Made before tokens carried a key: its unbound tokens are still accepted (links.py).
    legacy_links: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    cohort_id: Mapped[int] = mapped_column(ForeignKey("cohorts.id", ondelete="CASCADE"))
    status: Mapped[EnrollmentStatus] = mapped_column(
        _enum(EnrollmentStatus, "enrollment_status"), default=EnrollmentStatus.ACTIVE
    )
    # The last lesson delivered; 0 before the first.
    day: Mapped[int] = mapped_column(Integer, default=0)
    # When the next lesson is due (UTC). NULL while a lesson is in flight or when none is due.
    next_send_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    paused_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

    subscriber: Mapped[Subscriber] = relationship(back_populates="enrollments")
    cohort: Mapped[Cohort] = relationship(back_populates="enrollments")
    deliveries: Mapped[list[Delivery]] = relationship(back_populates="enrollment")


class Delivery(Base):
    """One lesson email for one enrollment. The unique (enrollment, day) is the duplicate guard."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("enrollment_id", "day", name="uq_delivery_enrollment_day"),
        Index("ix_deliveries_open", "status", "next_attempt_at"),
        # A provider's webhook names the lesson by its Message-ID.
        Index("ix_deliveries_message_id", "message_id"),
        # Its id makes the lesson's Message-ID, which replies quote: never handed out twice.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    enrollment_id: Mapped[int] = mapped_column(ForeignKey("enrollments.id", ondelete="CASCADE"))
    day: Mapped[int] = mapped_column(Integer)
    status: Mapped[DeliveryStatus] = mapped_column(
        _enum(DeliveryStatus, "delivery_status"), default=DeliveryStatus.PENDING
    )
    # PENDING: when to (re-)enqueue it; SENDING: when the worker's lease runs out.
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    message_id: Mapped[str | None] = mapped_column(String(255), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    # When its task was last handed to the broker; NULL once a worker has taken it, and while
    # it waits for a retry. A tick that finds the broker emptied queues exactly these again.
    queued_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    # The version of the lesson that went out (set when it is sent); NULL for lessons sent
    # before versions were kept.
    lesson_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("lesson_versions.id"), default=None
    )

    enrollment: Mapped[Enrollment] = relationship(back_populates="deliveries")
    lesson_version: Mapped[LessonVersion | None] = relationship()


class LessonVersion(Base):
    """A lesson's words as they were sent: one row per distinct version, shared by everyone
    who received it, so "read in your browser" shows what each person got even after the
    course file changes. Holds nothing personal (names are placeholders)."""

    __tablename__ = "lesson_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    course_slug: Mapped[str] = mapped_column(String(100))
    day: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(Text)
    prompt: Mapped[str] = mapped_column(Text)
    questions: Mapped[str] = mapped_column(Text)  # a JSON list
    body_html: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class Suppression(Base):
    """An address that is never mailed again (hard bounce or complaint)."""

    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class CircuitBreaker(Base):
    """Sending paused as a whole because a failure was ours (relay login, TLS, relay down).

    One row per breaker ("mail"); ``failures`` 0 means closed. While ``retry_at`` is ahead
    nothing is sent; when it passes, one delivery probes the relay and its success closes it.
    """

    __tablename__ = "circuit_breakers"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    opened_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    retry_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)


class DeliveryProblem(Base):
    """One bounce or complaint as it was applied: its reason family, never an address or text.

    Enough to count a subscriber's soft failures (mailbox full, expired) over days and to
    warn the operator of blocks that are about us (``people.status.deliverability_warnings``),
    whichever way the report came in (our bounce address or a provider's webhook).
    """

    __tablename__ = "delivery_problems"
    __table_args__ = (Index("ix_delivery_problems_at", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # Kept when the subscriber is forgotten: a warning about us outlives them.
    enrollment_id: Mapped[int | None] = mapped_column(
        ForeignKey("enrollments.id", ondelete="SET NULL"), default=None, index=True
    )
    day: Mapped[int | None] = mapped_column(Integer, default=None)
    kind: Mapped[str] = mapped_column(String(16))  # "bounce" or "complaint"
    # A bounce's reason family ("mailbox full") or a complaint's feedback type ("fraud").
    reason: Mapped[str] = mapped_column(String(40))
    # What it did: suppress, soft, warn, note, delay; complained, unsubscribe, ignore.
    effect: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="")  # the enhanced code, "5.7.1"
    source: Mapped[str] = mapped_column(String(16))  # "mail", or the provider ("ses", ...)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class WorkerBeat(Base):
    """When a worker last took a task (any task, the tick included): how health tells that
    workers are up but taking nothing."""

    __tablename__ = "worker_beats"

    worker: Mapped[str] = mapped_column(String(255), primary_key=True)
    last_task_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class Reflection(Base):
    """What a subscriber wrote back about one day's question. Private."""

    __tablename__ = "reflections"
    __table_args__ = (
        UniqueConstraint("enrollment_id", "day", name="uq_reflection_enrollment_day"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    enrollment_id: Mapped[int] = mapped_column(ForeignKey("enrollments.id", ondelete="CASCADE"))
    day: Mapped[int] = mapped_column(Integer)
    # The question as it was asked, kept even if the lesson file changes later.
    prompt: Mapped[str] = mapped_column(Text)
    # The text sealed under the reflections key (see encryption.py): never plain text.
    sealed_body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    # Where the latest text came from: "web" (the reflect page) or "email" (a reply).
    source: Mapped[str] = mapped_column(String(16), default="web", server_default="web")

    enrollment: Mapped[Enrollment] = relationship()


class CheckinAnswer(Base):
    """A subscriber's answer, 1 to 5, to one of the course's check-in questions, asked in its
    first and last lesson. Theirs: in their journal, changeable, gone with them."""

    __tablename__ = "checkin_answers"
    __table_args__ = (
        UniqueConstraint("enrollment_id", "day", "question", name="uq_checkin_answer"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    enrollment_id: Mapped[int] = mapped_column(ForeignKey("enrollments.id", ondelete="CASCADE"))
    day: Mapped[int] = mapped_column(Integer)  # the lesson that asked it
    question: Mapped[int] = mapped_column(Integer)  # its place in course.toml, from 1
    # The question as it was asked, kept even if course.toml changes later.
    wording: Mapped[str] = mapped_column(Text)
    answer: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class CircleMember(Base):
    """How one enrollment appears in its cohort's circle: by first name and initial, or as
    "A colleague" (``anonymous``). Chosen on the reflect page, changeable."""

    __tablename__ = "circle_members"

    enrollment_id: Mapped[int] = mapped_column(
        ForeignKey("enrollments.id", ondelete="CASCADE"), primary_key=True
    )
    anonymous: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class CirclePost(Base):
    """A reflection its author chose to share with their cohort: a sealed copy of the text
    as last saved on the reflect page (a reply by email is never shared by itself)."""

    __tablename__ = "circle_posts"
    __table_args__ = (Index("ix_circle_posts_cohort_day", "cohort_id", "day"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    reflection_id: Mapped[int] = mapped_column(
        ForeignKey("reflections.id", ondelete="CASCADE"), unique=True
    )
    enrollment_id: Mapped[int] = mapped_column(ForeignKey("enrollments.id", ondelete="CASCADE"))
    cohort_id: Mapped[int] = mapped_column(ForeignKey("cohorts.id", ondelete="CASCADE"))
    day: Mapped[int] = mapped_column(Integer)
    # Sealed under the reflections key, like the reflection itself.
    sealed_body: Mapped[str] = mapped_column(Text)
    # Shown as "A colleague": set from the author's choice when shared.
    anonymous: Mapped[bool] = mapped_column(Boolean, default=False)
    # Hidden by a moderator (``dripcourse circle hide``): gone for the cohort, shown to its
    # author with the reason.
    hidden_reason: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class CircleNote(Base):
    """A member's short note of support under a shared reflection; sealed like it."""

    __tablename__ = "circle_notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    post_id: Mapped[int] = mapped_column(
        ForeignKey("circle_posts.id", ondelete="CASCADE"), index=True
    )
    enrollment_id: Mapped[int] = mapped_column(
        ForeignKey("enrollments.id", ondelete="CASCADE"), index=True
    )
    sealed_body: Mapped[str] = mapped_column(Text)
    anonymous: Mapped[bool] = mapped_column(Boolean, default=False)
    hidden_reason: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class CircleReport(Base):
    """A member's report of a shared reflection or a note, for the moderators."""

    __tablename__ = "circle_reports"
    __table_args__ = (Index("ix_circle_reports_reporter", "enrollment_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    enrollment_id: Mapped[int] = mapped_column(ForeignKey("enrollments.id", ondelete="CASCADE"))
    post_id: Mapped[int | None] = mapped_column(
        ForeignKey("circle_posts.id", ondelete="CASCADE"), default=None
    )
    note_id: Mapped[int | None] = mapped_column(
        ForeignKey("circle_notes.id", ondelete="CASCADE"), default=None
    )
    reason: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


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
        _enum(NoticeState, "notice_state"), default=NoticeState.DUE
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


__all__ = [
    "Base",
    "CheckinAnswer",
    "CircleMember",
    "CircleNote",
    "CirclePost",
    "CircleReport",
    "CircuitBreaker",
    "Cohort",
    "Delivery",
    "DeliveryProblem",
    "DeliveryStatus",
    "Enrollment",
    "EnrollmentStatus",
    "HeldReply",
    "InboundKind",
    "InboundMessage",
    "LessonVersion",
    "NoticeState",
    "Reflection",
    "Subscriber",
    "Suppression",
    "UTCDateTime",
    "WebhookEvent",
    "WorkerBeat",
    "new_link_key",
]
