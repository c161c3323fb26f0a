"""Pause all sending when a failure is ours, and resume by itself when the relay works again.

Wrong relay credentials, a TLS failure, a relay that refuses connections or answers 421 to
everyone say nothing about the subscriber. Counting them against each delivery would fail
whole cohorts for our own mistake, and fixing the password afterwards would change nothing.
Instead the first such failure opens this breaker: workers put every delivery they are handed
back without an attempt, the scheduler claims nothing, and after a growing pause (30 s, 1 min,
2 min ... at most 10 min) one delivery probes the relay. Its success closes the breaker and
sending resumes where it stopped, each lesson still inside its subscriber's local window.

The state is one database row, so every worker on every machine sees it, and so do `status`
and `health`.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from dripcourse.models import CircuitBreaker

log = logging.getLogger(__name__)

MAIL = "mail"
FIRST_PAUSE_SECONDS = 30.0
LONGEST_PAUSE_SECONDS = 600.0


class Gate(StrEnum):
    OPEN = "open"  # sending as usual (the breaker is closed)
    PROBE = "probe"  # the pause is over: try one delivery
    SHUT = "shut"  # paused: send nothing


@dataclass(frozen=True)
class Pause:
    """Sending is paused: since when, until when the next probe waits, and why."""

    since: dt.datetime
    retry_at: dt.datetime
    failures: int
    reason: str

    def gate(self, now: dt.datetime) -> Gate:
        return Gate.SHUT if now < self.retry_at else Gate.PROBE

    def describe(self) -> str:
        return (
            f"sending paused since {self.since:%Y-%m-%d %H:%M:%S} UTC after {self.failures} "
            f"failure(s) of our own set-up; next try {self.retry_at:%Y-%m-%d %H:%M:%S} UTC: "
            f"{self.reason}"
        )


def current(session: Session, name: str = MAIL) -> Pause | None:
    """The pause in force, or None when sending runs as usual."""
    row = session.get(CircuitBreaker, name)
    return _pause(row)


def _pause(row: CircuitBreaker | None) -> Pause | None:
    if row is None or not row.failures or row.retry_at is None or row.opened_at is None:
        return None
    return Pause(row.opened_at, row.retry_at, row.failures, row.reason or "")


def pause_seconds(failures: int, first: float = FIRST_PAUSE_SECONDS) -> float:
    """How long to wait before probing after ``failures`` failures in a row."""
    return min(max(first, LONGEST_PAUSE_SECONDS), first * 2 ** max(0, failures - 1))


def trip(
    session: Session,
    now: dt.datetime,
    reason: str,
    *,
    first_pause: float = FIRST_PAUSE_SECONDS,
    name: str = MAIL,
) -> Pause:
    """Record one failure of ours: open the breaker, or keep it open for longer.

    Several workers often fail at the same moment, before any of them has seen the breaker
    open: those failures join the pause in force. Only a failure after the pause ran out (a
    failed probe) makes the next pause longer.
    """
    row = session.get(CircuitBreaker, name, with_for_update=True)
    if row is None:
        session.execute(insert(CircuitBreaker).values(name=name, failures=0))
        row = session.get(CircuitBreaker, name, with_for_update=True)
        assert row is not None
    if not row.failures:
        row.opened_at = now
        log.error("sending paused: %s", reason)
    if not row.failures or row.retry_at is None or now >= row.retry_at:
        row.failures += 1
        row.retry_at = now + dt.timedelta(seconds=pause_seconds(row.failures, first_pause))
    row.reason = reason
    row.updated_at = now
    session.flush()
    pause = _pause(row)
    assert pause is not None
    return pause


def close(session: Session, now: dt.datetime, name: str = MAIL) -> bool:
    """The relay took a message: resume sending. Returns True if it had been paused."""
    closed = session.execute(
        update(CircuitBreaker)
        .where(CircuitBreaker.name == name, CircuitBreaker.failures > 0)
        .values(failures=0, opened_at=None, retry_at=None, updated_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if closed:
        log.warning("sending resumed: the mail relay accepted a message again")
    return bool(closed)


def gate_column(name: str = MAIL):  # type: ignore[no-untyped-def]
    """A scalar subquery giving the breaker's retry_at (NULL when closed), for reading the
    breaker in the same statement as other data."""
    return (
        select(CircuitBreaker.retry_at)
        .where(CircuitBreaker.name == name, CircuitBreaker.failures > 0)
        .scalar_subquery()
    )
