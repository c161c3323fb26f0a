"""Who is enrolled in which cohort, what each was sent, and who must never be mailed."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from dripcourse.models.base import (
    Base,
    DeliveryStatus,
    EnrollmentStatus,
    UTCDateTime,
    enum_type,
    new_link_key,
    random_link_key,
)


class Subscriber(Base):
    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    # How lessons address them, set by hand or from the import; "" derives it from the name.
    greeting: Mapped[str] = mapped_column(String(200), default="", server_default="")
    # What the name gives, worked out when it is written (courses/greeting.py), so that no
    # lesson sent parses it: the greeting without the course's fallback ("" when it gives
    # none) and the given name for {{ first_name }}. NULL: not worked out yet, the send path
    # parses the name. Text: capitalising can lengthen a name. They go with the name: SQL that
    # writes a name without the ORM (bulk_insert fills them) must set them, or NULL.
    derived_greeting: Mapped[str | None] = mapped_column(Text, default=None)
    derived_given_name: Mapped[str | None] = mapped_column(Text, default=None)
    timezone: Mapped[str] = mapped_column(String(64))
    # The country whose places to turn they are shown, when an operator set it (ISO 3166 code);
    # "" means their time zone's country in the tz database (reader/care.py).
    country: Mapped[str] = mapped_column(String(2), default="", server_default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    # When a journal link was last emailed at their request from the pause or unsubscribe
    # page (reader.journal_link): one an hour at most.
    journal_link_sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)

    enrollments: Mapped[list[Enrollment]] = relationship(back_populates="subscriber")


@event.listens_for(Subscriber.name, "set")
def _name_changed(target: Subscriber, _value, _old, _initiator) -> None:  # type: ignore[no-untyped-def]
    # What the old name gave must never outlive it, even where courses/greeting.py (which
    # fills them again, in a listener registered after this one) is not imported.
    target.derived_greeting = target.derived_given_name = None


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
        enum_type(EnrollmentStatus, "enrollment_status"), default=EnrollmentStatus.ACTIVE
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
        enum_type(DeliveryStatus, "delivery_status"), default=DeliveryStatus.PENDING
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
