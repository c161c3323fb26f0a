"""Whether workers are taking tasks: the heartbeat they leave, and the health verdict on it.

A worker can stay up while taking nothing (kombu's Redis transport has been seen to stop
consuming after a Redis restart), and a stopped beat or an unreachable broker looks the same
from outside. What they share is that no worker takes a task. Beat sends a tick every
``tick_seconds``, so a working set-up takes a task at least that often; when lessons are
waiting and no worker has taken one for ``worker_stale_seconds``, something is stuck.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from dripcourse.db import transaction
from dripcourse.models import (
    Delivery,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    WorkerBeat,
)

if TYPE_CHECKING:
    from dripcourse.runtime import Runtime  # passed in; the adapters build it


def record_worker_seen(rt: Runtime, worker: str, now: dt.datetime) -> None:
    """Note that ``worker`` took a task at ``now`` (one row per worker, overwritten)."""
    with transaction(rt.sessions) as session:
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        statement = dialect.insert(WorkerBeat).values(worker=worker, last_task_at=now)
        session.execute(
            statement.on_conflict_do_update(
                index_elements=[WorkerBeat.worker],
                set_={"last_task_at": statement.excluded.last_task_at},
            )
        )


class Heartbeat:
    """Writes a worker's heartbeat at most once every ``every`` seconds per process: one
    short write now and then, not one per message at a cohort's morning."""

    def __init__(self, every: float) -> None:
        self.every = dt.timedelta(seconds=every)
        self._written: dt.datetime | None = None

    def beat(self, rt: Runtime, worker: str, now: dt.datetime) -> bool:
        """Record the heartbeat if it is due; whether it was written."""
        if self._written is not None and now - self._written < self.every:
            return False
        record_worker_seen(rt, worker, now)
        self._written = now
        return True


def _last_seen(session: Session) -> dt.datetime | None:
    return session.scalar(select(func.max(WorkerBeat.last_task_at)))


def last_worker_seen(rt: Runtime) -> dt.datetime | None:
    """When any worker last took a task, or None if none ever has."""
    with transaction(rt.sessions) as session:
        return _last_seen(session)


@dataclass(frozen=True)
class Health:
    now: dt.datetime
    last_seen: dt.datetime | None
    due: int  # lessons due now that no tick has claimed yet
    open: int  # deliveries claimed and not finished (pending or sending)
    stale_after: dt.timedelta

    @property
    def silent_for(self) -> dt.timedelta | None:
        return None if self.last_seen is None else self.now - self.last_seen

    @property
    def healthy(self) -> bool:
        if not (self.due or self.open):
            return True
        return self.silent_for is not None and self.silent_for <= self.stale_after

    def describe(self) -> str:
        """One line for a probe's log: the verdict and the numbers behind it."""
        work = f"{self.due} lessons due, {self.open} deliveries open"
        if self.last_seen is None:
            seen = "no worker has taken a task yet"
        else:
            seen = f"a worker last took a task {_span(self.silent_for)} ago"  # type: ignore[arg-type]
        if self.healthy:
            return f"ok: {seen}; {work}"
        return f"unhealthy: {work}, and {seen} (limit {_span(self.stale_after)})"


def _span(delta: dt.timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 120:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def check_health(rt: Runtime, now: dt.datetime, stale_after: dt.timedelta) -> Health:
    """Whether lessons are waiting while no worker takes tasks (see the module's docstring)."""
    with transaction(rt.sessions) as session:
        due = session.scalar(
            select(func.count())
            .select_from(Enrollment)
            .where(Enrollment.next_send_at <= now, Enrollment.status == EnrollmentStatus.ACTIVE)
        )
        open_ = session.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(Delivery.status.in_((DeliveryStatus.PENDING, DeliveryStatus.SENDING)))
        )
        return Health(
            now=now,
            last_seen=_last_seen(session),
            due=due or 0,
            open=open_ or 0,
            stale_after=stale_after,
        )
