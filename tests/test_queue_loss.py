"""A broker that loses its queue: the next tick queues the lost lessons again, and only then.

Tick by tick at the default pace (a tick a minute, the sweep after 15 minutes), against a
private redis-server that is restarted empty or flushed between two ticks.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import select

from dripcourse.db import transaction
from dripcourse.models import Delivery
from dripcourse.runtime import Runtime
from dripcourse.sending import batch as sending
from dripcourse.sending import claim as delivery
from dripcourse.sending import queue_loss
from dripcourse.sending.take import Outcome
from dripcourse.settings import Settings
from tests.conftest import make_settings, utc
from tests.smtp_sink import SMTPSink
from tests.workers import RedisServer, private_redis_server, start_cohort

pytestmark = pytest.mark.redis

T0 = utc(2026, 11, 30, 7)
MINUTE = dt.timedelta(minutes=1)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[RedisServer]:
    with private_redis_server(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def loss_rt(tmp_path: Path, sqlite_url: str, broker: RedisServer, smtp_sink: SMTPSink):  # type: ignore[no-untyped-def]
    # Default pace; only the retry backoff is long, so a retried lesson is still waiting for it
    # when the broker is lost.
    settings: Settings = make_settings(
        tmp_path,
        database_url=sqlite_url,
        broker_url=broker.url,
        mail_url=smtp_sink.url,
        retry_base_seconds=600,
    )
    assert (settings.tick_seconds, settings.requeue_after_seconds) == (60, 900)
    rt = Runtime(settings)
    yield rt
    rt.close()


class Scheduler:
    """What beat and the tick task do, with the broker's queue kept as a list of ids."""

    def __init__(self, rt: Runtime, broker: RedisServer) -> None:
        self.rt = rt
        self.marker = queue_loss.RedisMarker.from_url(broker.url)
        self.queued: list[int] = []

    def tick(self, now: dt.datetime) -> list[int]:
        """One pass; returns the ids it handed to the broker."""
        before = len(self.queued)
        queue_loss.requeue_if_lost(self.rt, now, self.queued.extend, self.marker)
        delivery.tick(self.rt, now, self.queued.extend)
        return self.queued[before:]


def lose_queue(broker: RedisServer, how: str) -> None:
    if how == "restart":
        broker.restart()
    else:
        redis.Redis.from_url(broker.url).flushall()


@pytest.mark.parametrize("how", ["restart", "flushall"])
def test_lessons_a_broker_lost_are_queued_again_by_the_next_tick(
    loss_rt: Runtime, broker: RedisServer, smtp_sink: SMTPSink, how: str
) -> None:
    start_cohort(loss_rt.settings, 30, now=T0)
    scheduler = Scheduler(loss_rt, broker)
    claimed = scheduler.tick(T0)
    assert len(claimed) == 30
    # One lesson is turned away (451, about this message) and waits for its retry: it has no
    # task in the broker, and losing the broker must not hurry it.
    smtp_sink.handler.busy_for = 1
    smtp_sink.handler.busy_reply = "451 4.3.0 Try again later"
    waiting = claimed[0]
    assert sending.send_delivery(loss_rt, waiting, T0 + 10 * dt.timedelta(seconds=1)) == (
        Outcome.RETRY
    )
    assert scheduler.tick(T0 + MINUTE) == []

    lose_queue(broker, how)
    again = scheduler.tick(T0 + 2 * MINUTE)

    assert sorted(again) == sorted(set(claimed) - {waiting})
    assert scheduler.tick(T0 + 3 * MINUTE) == []  # once, not at every tick
    with transaction(loss_rt.sessions) as session:
        retry_at = session.scalar(select(Delivery.next_attempt_at).where(Delivery.id == waiting))
    assert retry_at is not None and retry_at > T0 + 5 * MINUTE


def test_a_long_queue_on_a_healthy_broker_is_never_queued_twice(
    loss_rt: Runtime, broker: RedisServer
) -> None:
    start_cohort(loss_rt.settings, 200, now=T0)
    scheduler = Scheduler(loss_rt, broker)
    assert len(scheduler.tick(T0)) == 200
    # Nobody takes a task for fourteen minutes: a slow morning, not a lost queue.
    for minute in range(1, 15):
        assert scheduler.tick(T0 + minute * MINUTE) == [], minute


def test_a_broker_that_cannot_be_reached_tells_nothing_and_loses_nothing(
    loss_rt: Runtime, broker: RedisServer
) -> None:
    start_cohort(loss_rt.settings, 5, now=T0)
    scheduler = Scheduler(loss_rt, broker)
    claimed = scheduler.tick(T0)
    broker.stop()
    assert queue_loss.requeue_if_lost(loss_rt, T0 + MINUTE, list, scheduler.marker) == 0
    broker.start()  # back, and empty: the tick after notices
    assert sorted(scheduler.tick(T0 + 2 * MINUTE)) == sorted(claimed)


def test_a_broker_kept_in_a_file_is_never_taken_for_lost() -> None:
    marker = queue_loss.marker_for("sqla+sqlite:///var/broker.sqlite3")
    assert [marker.forgotten(), marker.forgotten()] == [False, False]
