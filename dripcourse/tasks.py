"""Celery app and beat schedule: thin adapters over dripcourse.delivery.

Beat only ticks; the schedule itself lives in the database. Tasks carry ids (JSON), are queued
after the claim commits, and are acknowledged late so a killed worker's task is redelivered.
Start it the standard way: ``celery -A dripcourse.tasks worker`` and
``celery -A dripcourse.tasks beat``.
"""

from __future__ import annotations

import dbm
import shelve
from collections.abc import Sequence
from pathlib import Path

from celery import Celery, signals
from celery.beat import PersistentScheduler
from sqlalchemy.engine import make_url

from dripcourse import delivery
from dripcourse.clock import utcnow
from dripcourse.errors import ConfigError
from dripcourse.files import FILE_MODE, private_dir, private_sqlite_file
from dripcourse.runtime import Runtime
from dripcourse.settings import Settings, load_settings

app = Celery("dripcourse")
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
        beat_scheduler=f"{__name__}:PrivateScheduler",
    )
    private_dir(var)
    if settings.broker_url.startswith("sqla+sqlite:///"):
        # kombu's SQLite file: made private before kombu opens it (SQLite keeps the mode).
        broker_file = make_url(settings.broker_url.removeprefix("sqla+")).database
        if broker_file and broker_file != ":memory:":
            private_sqlite_file(Path(broker_file).expanduser())
    return app


class PrivateScheduler(PersistentScheduler):
    """Celery's beat scheduler, with its schedule file 0600 like everything else in var/."""

    def _open_schedule(self) -> shelve.Shelf[object]:
        db = dbm.open(self.schedule_filename, "c", FILE_MODE)  # noqa: SIM115 - the Shelf owns it
        store = shelve.Shelf(db, writeback=True)
        for suffix in self.known_suffixes:  # dbm may add one; and files from older versions
            made = Path(self.schedule_filename + suffix)
            if made.is_file():
                made.chmod(FILE_MODE)
        return store


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


@signals.worker_init.connect
def _refuse_a_weak_signing_key(**_: object) -> None:
    # Links are signed in the worker: with a missing or short key it must not start at all,
    # rather than fail every send.
    try:
        runtime().links  # noqa: B018
    except ConfigError as exc:
        raise SystemExit(f"dripcourse: {exc}") from None


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


def enqueue(ids: Sequence[int]) -> None:
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
