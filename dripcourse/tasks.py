"""Celery app and beat schedule: thin adapters over dripcourse.delivery.

Beat only ticks; the schedule itself lives in the database. Tasks carry ids (JSON), are queued
after the claim commits, and are acknowledged late so a killed worker's task is redelivered.
Start it the standard way: ``celery -A dripcourse.tasks worker`` and
``celery -A dripcourse.tasks beat``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from celery import Celery, signals
from kombu.exceptions import BatchPublishError

from dripcourse import delivery
from dripcourse.clock import utcnow
from dripcourse.errors import ConfigError
from dripcourse.runtime import Runtime
from dripcourse.settings import Settings, load_settings

app = Celery("dripcourse")
log = logging.getLogger(__name__)
_runtime: Runtime | None = None


def configure(settings: Settings) -> Celery:
    """Point the Celery app and this process's Runtime at ``settings``."""
    global _runtime
    if _runtime is not None:
        _runtime.close()
    _runtime = Runtime(settings)
    var = settings.path(settings.var_dir)
    app.conf.update(
        broker_url=settings.broker_url,
        broker_connection_retry_on_startup=True,
        broker_transport_options=_transport_options(settings.broker_url),
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        enable_utc=True,
        timezone="UTC",
        beat_schedule={
            "tick": {
                "task": "dripcourse.tick",
                "schedule": settings.tick_seconds,
                # A tick queued while workers were down is stale by the next one.
                "options": {"expires": settings.tick_seconds},
            }
        },
        beat_schedule_filename=str(var / "celerybeat-schedule"),
    )
    var.mkdir(parents=True, exist_ok=True)
    return app


def _transport_options(broker_url: str) -> dict[str, object]:
    if broker_url.startswith(("redis", "rediss")):
        # Redis redelivers a task not acknowledged within this time; it must outlast any send.
        return {"visibility_timeout": 3600}
    if broker_url.startswith("sqla+sqlite"):
        # Worker threads and beat share one SQLite file: wait for its lock rather than fail.
        return {"connect_args": {"timeout": 30}}
    return {}


def runtime() -> Runtime:
    if _runtime is None:
        configure(load_settings())
    assert _runtime is not None
    return _runtime


@signals.worker_process_init.connect
def _fresh_connections_after_fork(**_: object) -> None:
    # A forked pool process must not share the parent's database connections or SMTP socket,
    # nor close them under the parent: it opens its own.
    if _runtime is not None:
        _runtime.after_fork()


@signals.worker_shutdown.connect
def _close(**_: object) -> None:
    if _runtime is not None:
        _runtime.close()


# Messages buffered before one round trip to Redis: a claim batch (batch_size) fits in one.
ENQUEUE_BATCH = 1000


def enqueue(ids: Sequence[int]) -> None:
    """Queue one send task per delivery id, in one broker round trip per batch of ids.

    On Redis, kombu's publish batch collects the pushes in a pipeline and sends them together
    (one round trip per ENQUEUE_BATCH messages instead of one per message); other brokers
    publish each message at once over the one producer. A batch that fails on its way is
    published again id by id; should the broker be gone altogether, the claim has committed
    and the sweep (requeue_lost) queues the ids once requeue_after_seconds have passed.
    """
    if not ids:
        return
    try:
        with app.producer_or_acquire() as producer, producer.batch(max_size=ENQUEUE_BATCH):
            for delivery_id in ids:
                send_lesson.apply_async((delivery_id,), producer=producer)
    except BatchPublishError as exc:
        # A batch is sent without retries (which of its pushes arrived is unknown); publish
        # each id again with Celery's retrying publish. A task queued twice is harmless: the
        # second finds its delivery taken (send_delivery's compare-and-set).
        log.warning("queueing %d deliveries in one batch failed (%s); one by one", len(ids), exc)
        for delivery_id in ids:
            send_lesson.apply_async((delivery_id,))


@app.task(name="dripcourse.tick", ignore_result=True)
def tick() -> dict[str, int]:
    """One scheduler pass: claim due lessons and queue them, after the claim commits."""
    result = delivery.tick(runtime(), utcnow(), enqueue)
    return {"claimed": result.claimed, "requeued": result.requeued}


@app.task(name="dripcourse.send_lesson", ignore_result=True, acks_late=True)
def send_lesson(delivery_id: int) -> str:
    """Send one claimed delivery. Retries are scheduled in the database, not in the broker."""
    return str(delivery.send_delivery(runtime(), delivery_id, utcnow(), clock=utcnow))


try:
    configure(load_settings())
except ConfigError as exc:
    # `celery -A dripcourse.tasks ...` with a wrong setting: one line, not a traceback.
    raise SystemExit(f"dripcourse: {exc}") from None
