"""SQLAlchemy 2 models: subscribers, cohorts, enrollments, deliveries, reflections, suppressions."""

from __future__ import annotations

import datetime as dt
import enum
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
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


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


class Base(DeclarativeBase):
    pass


class EnrollmentStatus(enum.StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    FAILED = "failed"


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
    timezone: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

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
        Index("ix_enrollments_next_send_at", "next_send_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
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

    enrollment: Mapped[Enrollment] = relationship(back_populates="deliveries")


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
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

    enrollment: Mapped[Enrollment] = relationship()


__all__ = [
    "Base",
    "CircuitBreaker",
    "Cohort",
    "Delivery",
    "DeliveryStatus",
    "Enrollment",
    "EnrollmentStatus",
    "Reflection",
    "Subscriber",
    "Suppression",
    "UTCDateTime",
]
