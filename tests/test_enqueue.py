"""Queueing claimed deliveries: one task per send_batch_size ids, one Redis round trip per
ENQUEUE_BATCH tasks, not one per id."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

from dripcourse import tasks
from tests.conftest import make_settings

pytestmark = pytest.mark.redis


@pytest.fixture
def redis_app(tmp_path: Path, redis_url: str) -> Iterator[Celery]:
    before = tasks.runtime().settings
    yield tasks.configure(make_settings(tmp_path, broker_url=redis_url))
    tasks.configure(before)


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times the client wrote to Redis: one write per round trip (a pipeline is one)."""
    counted: list[int] = []
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):  # type: ignore[no-untyped-def]
        counted.append(1)
        return original(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    return counted


def queued_batches(redis_url: str) -> list[list[int]]:
    client = redis.Redis.from_url(redis_url)
    batches = []
    for raw in reversed(client.lrange("celery", 0, -1)):  # LPUSH: the newest is first
        message = json.loads(raw)
        assert message["headers"]["task"] == "dripcourse.send_lessons"
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        batches.append(*args)
    return batches


def queued_ids(redis_url: str) -> list[int]:
    return [delivery_id for batch in queued_batches(redis_url) for delivery_id in batch]


@pytest.mark.parametrize("count", [1, 500, 2500, 250_000])
def test_a_batch_of_ids_reaches_redis_in_a_few_round_trips(
    redis_app: Celery, redis_url: str, writes: list[int], count: int
) -> None:
    tasks.enqueue([0])  # connecting and declaring the queue happen once: not measured
    redis.Redis.from_url(redis_url).delete("celery")
    writes.clear()
    ids = list(range(1, count + 1))
    tasks.enqueue(ids)
    size = tasks.runtime().settings.send_batch_size
    assert len(writes) <= count // (size * tasks.ENQUEUE_BATCH) + 1
    assert queued_ids(redis_url) == ids


def test_each_task_carries_send_batch_size_ids(redis_app: Celery, redis_url: str) -> None:
    size = tasks.runtime().settings.send_batch_size
    tasks.enqueue(list(range(1, 2 * size + 8)))
    assert [len(batch) for batch in queued_batches(redis_url)] == [size, size, 7]


def test_a_batch_that_fails_on_the_way_is_queued_again_one_by_one(
    redis_app: Celery, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tasks.enqueue([0])  # connect and declare the queue before the fault
    redis.Redis.from_url(redis_url).delete("celery")
    original = redis.client.Pipeline.execute
    failures = []

    def drops_the_first_batch(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not failures and len(self.command_stack) > 1:
            failures.append(len(self.command_stack))
            self.reset()
            raise redis.ConnectionError("connection reset by peer")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(redis.client.Pipeline, "execute", drops_the_first_batch)
    tasks.enqueue(list(range(1, 301)))
    assert failures == [3]  # three tasks of 100 ids in the pipeline that failed
    assert queued_ids(redis_url) == list(range(1, 301))


def test_nothing_to_queue_touches_no_broker(redis_app: Celery, writes: list[int]) -> None:
    tasks.enqueue([])
    assert writes == []
