"""When the database or the broker is briefly away: try the task again soon, and say so.

A send task that cannot reach the database has done nothing yet (or nothing that its retry
cannot see), so it is simply run again after a short backoff instead of being acknowledged
as done. A tick that cannot hand its tasks to the broker marks them unqueued, so the next
tick queues them rather than the sweep many minutes later.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from sqlalchemy import func, update

from dripcourse.db import transaction
from dripcourse.models import Delivery, DeliveryStatus

if TYPE_CHECKING:
    from dripcourse.runtime import Runtime  # passed in; the adapters build it

log = logging.getLogger(__name__)


def retry_delay(
    retries: int,
    patience: float,
    *,
    base: float = 1.0,
    cap: float = 30.0,
    rng: random.Random | None = None,
) -> float | None:
    """Seconds to wait before trying a task again after its ``retries``-th failed try to reach
    the database: about 1, 2, 4 ... up to ``cap``. None once the waits so far add up to
    ``patience``: from then on the sweep queues the delivery again, as for any lost task."""
    waited = sum(min(cap, base * 2**k) for k in range(retries))
    if waited >= patience:
        return None
    return min(cap, base * 2**retries) * (rng or random).uniform(0.75, 1.0)


def note_interrupted(
    rt: Runtime, delivery_ids: Sequence[int], now: dt.datetime, retries: int
) -> None:
    """Add to each delivery's last error that its task could not reach the database at first,
    so ``status`` shows why it went out late (the note stays when the delivery is sent)."""
    if not delivery_ids:
        return
    note = f"{now:%Y-%m-%d %H:%M:%S}Z database unavailable, task tried again {retries}x"
    with transaction(rt.sessions) as session:
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(list(delivery_ids)))
            .values(last_error=func.coalesce(Delivery.last_error.concat("; "), "").concat(note))
            .execution_options(synchronize_session=False)
        )


def release_unqueued(rt: Runtime, ids: Sequence[int], now: dt.datetime) -> None:
    """Deliveries whose task never reached the broker: the next tick's sweep queues them."""
    with transaction(rt.sessions) as session:
        session.execute(
            update(Delivery)
            .where(
                Delivery.id.in_(list(ids)),
                Delivery.status == DeliveryStatus.PENDING,
                Delivery.queued_at.is_not(None),
            )
            .values(queued_at=None, next_attempt_at=now, updated_at=now)
            .execution_options(synchronize_session=False)
        )


def publish_each(
    rt: Runtime,
    batches: Sequence[Sequence[int]],
    publish: Callable[[Sequence[int]], object],
    now: dt.datetime,
) -> None:
    """Hand each batch's task to the broker. If the broker cannot take one (after the
    publisher's own retries), the deliveries of the rest are released for the next tick, and
    the error raised."""
    for n, batch in enumerate(batches):
        try:
            publish(batch)
        except Exception:
            rest = [delivery_id for each in batches[n:] for delivery_id in each]
            try:
                release_unqueued(rt, rest, now)
            except Exception as exc:  # noqa: BLE001 - the broker's error is the one to raise
                log.warning("%d lessons not queued wait for the sweep: %s", len(rest), exc)
            else:
                log.warning("broker unavailable: %d lessons left for the next tick", len(rest))
            raise
