"""`make bench`'s claim part: a morning of ``due`` among ``enrolled`` claimed on PostgreSQL,
next to the same writes done by the database alone, and queued on Redis as it is claimed.

- raw: one statement marks every due enrollment in flight and inserts its delivery (no rules,
  no batches, no locks skipped): the floor for these writes on this machine;
- the claim, no broker: `claim_due_lessons` as a tick runs it, batch by batch, every rule
  applied, each batch committed;
- the claim queued on Redis: the same with `tasks.enqueue`, timing the first batch handed to
  the broker (when a worker could start) and the last one (the whole morning queued).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence

import redis
from sqlalchemy import text

from dripcourse import tasks
from dripcourse.runtime import Runtime
from dripcourse.sending import claim as delivery

RAW = """
WITH claimed AS (
    UPDATE enrollments SET next_send_at = NULL, updated_at = :now
    WHERE next_send_at <= :now AND status = 'active' RETURNING id, day
)
INSERT INTO deliveries (enrollment_id, day, status, next_attempt_at, queued_at, attempts,
                        created_at, updated_at)
SELECT id, day + 1, 'pending', :now, :now, 0, :now, :now FROM claimed
"""


def claim_rates(
    rt: Runtime, now: dt.datetime, due: int, redis_url: str, again: Callable[[], None]
) -> dict[str, float]:
    """Seconds of the three ways over ``due`` enrollments due at ``now`` in ``rt``'s database;
    ``again`` makes them due again between two ways."""
    out: dict[str, float] = {}
    rt.catalog.course("white-coat")  # a beat that has been running has it loaded
    naive = now.astimezone(dt.UTC).replace(tzinfo=None)

    start = time.perf_counter()
    with rt.engine.begin() as conn:
        assert conn.execute(text(RAW), {"now": naive}).rowcount == due
    out["raw"] = time.perf_counter() - start
    again()

    start = time.perf_counter()
    assert delivery.claim_due_lessons(rt, now, lambda ids: None) == due
    out["claim"] = time.perf_counter() - start
    again()

    tasks.configure(rt.settings)
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    tasks.enqueue([0])  # connect and declare the queue first: not measured
    client.flushdb()
    first: list[float] = []
    batches: list[int] = []

    def enqueue(ids: Sequence[int]) -> None:
        tasks.enqueue(ids)
        batches.append(len(ids))
        if not first:
            first.append(time.perf_counter())

    start = time.perf_counter()
    assert delivery.claim_due_lessons(rt, now, enqueue) == due
    out["queued"] = time.perf_counter() - start
    out["first queued"] = first[0] - start
    size = rt.settings.send_batch_size
    assert client.llen("celery") == sum(-(-n // size) for n in batches)
    client.flushdb()
    return out
