"""Notice that the broker lost its queue, and queue every lesson it held again at once.

A Redis restarted without persistence, or flushed, takes every queued task with it. The
deliveries are safe in the database, but the sweep finds them only after
``requeue_after_seconds`` (15 minutes by default), and raising that sweep's pace would queue a
long but healthy morning queue twice. So the broker holds a marker key, set by the first tick
that finds it missing: a broker that has forgotten the marker has forgotten its queue too, and
that tick queues again every delivery whose task was in the broker (``queued_at`` set). A
broker that keeps its queue keeps the marker, and nothing is queued twice however slowly the
queue drains.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Protocol

import redis
from sqlalchemy import Select, select, update

from dripcourse.db import transaction
from dripcourse.models import Delivery, DeliveryStatus
from dripcourse.sending.claim import Enqueue, picked

if TYPE_CHECKING:
    from dripcourse.runtime import Runtime  # passed in; the adapters build it


log = logging.getLogger(__name__)

MARKER_KEY = "dripcourse:broker-marker"


class BrokerMarker(Protocol):
    def forgotten(self) -> bool:
        """Set the marker; whether it was missing (a new, restarted or emptied broker)."""
        ...

    def forget(self) -> None:
        """Remove the marker, so that the next tick looks again."""
        ...


class RedisMarker:
    """The marker as one key beside the queue, in the broker's own Redis database."""

    def __init__(self, client: redis.Redis, key: str = MARKER_KEY) -> None:
        self.client = client
        self.key = key

    @classmethod
    def from_url(cls, url: str) -> RedisMarker:
        return cls(redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5))

    def forgotten(self) -> bool:
        return bool(self.client.set(self.key, "1", nx=True))

    def forget(self) -> None:
        self.client.delete(self.key)


class DurableBroker:
    """Brokers that keep their queue in a file (kombu's SQLAlchemy and filesystem transports)
    or live only as long as the process (memory://): nothing to notice."""

    def forgotten(self) -> bool:
        return False

    def forget(self) -> None:
        pass


def marker_for(broker_url: str) -> BrokerMarker:
    if broker_url.startswith(("redis://", "rediss://")):
        return RedisMarker.from_url(broker_url)
    return DurableBroker()


def queued_deliveries(before: dt.datetime, limit: int) -> Select[tuple[int]]:
    """Pending deliveries whose task was handed to the broker before ``before`` and not yet
    taken by a worker. A delivery waiting for a retry has no task anywhere and is left alone."""
    return (
        select(Delivery.id)
        .where(
            Delivery.status == DeliveryStatus.PENDING,
            Delivery.queued_at.is_not(None),
            Delivery.queued_at < before,
        )
        .limit(limit)
    )


def requeue_queued(rt: Runtime, now: dt.datetime, enqueue: Enqueue) -> int:
    """Queue again every delivery whose task was in the broker; return how many.

    One UPDATE ... RETURNING per batch is the compare-and-set: it stamps ``queued_at`` with
    ``now``, so each delivery is taken once by this pass and never by a concurrent one.
    """
    total = 0
    later = now + dt.timedelta(seconds=rt.settings.requeue_after_seconds)
    while True:
        with transaction(rt.sessions) as session:
            pick = picked(Delivery.id, queued_deliveries(now, rt.settings.batch_size), session)
            ids = session.scalars(
                update(Delivery)
                .where(
                    pick,
                    Delivery.status == DeliveryStatus.PENDING,
                    Delivery.queued_at < now,
                )
                .values(queued_at=now, next_attempt_at=later, updated_at=now)
                .returning(Delivery.id)
                .execution_options(synchronize_session=False)
            ).all()
        if not ids:
            return total
        enqueue(ids)
        total += len(ids)


def requeue_if_lost(rt: Runtime, now: dt.datetime, enqueue: Enqueue, marker: BrokerMarker) -> int:
    """If the broker has lost its queue since the last tick, queue its lessons again at once.

    Returns how many were queued again. A broker that cannot be reached tells nothing: the
    tick's own queueing then fails, and a later tick looks again.
    """
    try:
        lost = marker.forgotten()
    except redis.RedisError as exc:
        log.warning("broker unreachable; cannot tell whether it kept its queue: %s", exc)
        return 0
    if not lost:
        return 0
    try:
        count = requeue_queued(rt, now, enqueue)
    except BaseException:
        # Let the next tick notice the loss again rather than leave the lessons to the sweep.
        try:
            marker.forget()
        except redis.RedisError:
            log.warning("broker unreachable; lessons it lost wait for the sweep")
        raise
    if count:
        log.warning(
            "the broker lost its queue (restarted or emptied): %d lessons queued again", count
        )
    return count
