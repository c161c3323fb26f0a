"""What readers write and answer: reflections and check-in answers."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from dripcourse.models.base import Base, UTCDateTime
from dripcourse.models.enrollments import Enrollment


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
