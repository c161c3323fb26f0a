"""The cohort circle: who takes part, shared reflections, notes and reports."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from dripcourse.models.base import Base, UTCDateTime


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
