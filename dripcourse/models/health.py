"""How sending is going: the relay's circuit breaker, delivery problems, workers' beats."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from dripcourse.models.base import Base, UTCDateTime


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
