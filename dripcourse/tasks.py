"""Celery app and beat schedule: thin adapters over dripcourse.delivery and dripcourse.sending.

Beat only ticks; the schedule itself lives in the database. Tasks carry ids (JSON), are queued
after the claim commits, and are acknowledged late so a killed worker's task is redelivered.
A task that cannot reach the database is tried again within seconds (dripcourse.outages), a
tick notices a broker that lost its queue (dripcourse.queue_loss), and every task a worker
takes leaves a heartbeat for ``dripcourse health`` (dripcourse.liveness).
Start it the standard way: ``celery -A dripcourse.tasks worker`` and
``celery -A dripcourse.tasks beat``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import dbm
import logging
import shelve
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from celery import Celery, Task, signals
from celery.beat import PersistentScheduler
from kombu.exceptions import BatchPublishError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from dripcourse import db
from dripcourse.clock import utcnow
from dripcourse.db import is_outage, transaction
from dripcourse.errors import ConfigError, NotSetUp
from dripcourse.files import FILE_MODE, private_dir, private_sqlite_file
from dripcourse.reader import privacy
from dripcourse.runtime import Runtime
from dripcourse.sending import batch as sending
from dripcourse.sending import claim as delivery
from dripcourse.sending import notices, outages, queue_loss
from dripcourse.sending.liveness import Heartbeat
from dripcourse.settings import Settings, check_existing_secret_key, load_settings

log = logging.getLogger(__name__)

# Handing a task to the broker waits out a blip of about ten seconds before the tick gives up.
PUBLISH_RETRY = {"max_retries": 8, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2}

app = Celery("dripcourse")
RETENTION_EVERY_SECONDS = 24 * 3600
_runtime: Runtime | None = None
_marker: queue_loss.BrokerMarker = queue_loss.DurableBroker()
_heartbeat: Heartbeat | None = None


def configure(settings: Settings, *, make_files: bool = True) -> Celery:
    """Point the Celery app and this process's Runtime at ``settings``.

    ``make_files`` makes var/ and the embedded broker's file (private) now; a worker or beat
    started by celery makes them only once it found the database set up (``_make_files``),
    so one started before `dripcourse init` leaves nothing behind.
    """
    global _runtime, _marker, _heartbeat
    if _runtime is not None:
        _runtime.close()
    # A worker never makes the database: one started before `dripcourse init` would leave an
    # empty SQLite file that looks set up to every other command.
    _runtime = Runtime(settings, create_database=False)
    _marker = queue_loss.marker_for(settings.broker_url)
    _heartbeat = Heartbeat(every=settings.worker_stale_seconds / 10)
    var = settings.path(settings.var_dir)
    app.conf.update(
        broker_url=settings.broker_url,
        broker_connection_retry_on_startup=True,
        task_publish_retry=True,
        task_publish_retry_policy=PUBLISH_RETRY,
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
            },
            # Retention (reflections_retention_days; inbound records after the duplicate window).
            "delete-old-reflections": {
                "task": "dripcourse.delete_old_reflections",
                "schedule": RETENTION_EVERY_SECONDS,
                "options": {"expires": RETENTION_EVERY_SECONDS},
            },
        },
        beat_schedule_filename=str(var / "celerybeat-schedule"),
        beat_scheduler=f"{__name__}:PrivateScheduler",
    )
    if make_files:
        _make_files(settings)
    return app


def _make_files(settings: Settings) -> None:
    private_dir(settings.path(settings.var_dir))
    if settings.broker_url.startswith("sqla+sqlite:///"):
        # kombu's SQLite file: made private before kombu opens it (SQLite keeps the mode).
        broker_file = make_url(settings.broker_url.removeprefix("sqla+")).database
        if broker_file and broker_file != ":memory:":
            private_sqlite_file(Path(broker_file).expanduser())


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
        configure(load_settings(), make_files=False)
    assert _runtime is not None
    return _runtime


@signals.worker_init.connect
def _refuse_a_weak_signing_key(**_: object) -> None:
    # Links are signed in the worker: with a missing or short key it must not start at all,
    # rather than fail every send.
    # In this order: a weak key file is refused first, then a database not set up, and only
    # then is anything made (the signing key, var/, the embedded broker's file).
    try:
        rt = runtime()
        check_existing_secret_key(rt.settings)
        _check_database(rt)
        rt.links  # noqa: B018
    except (ConfigError, NotSetUp) as exc:
        raise SystemExit(f"dripcourse: {exc}") from None
    _make_files(rt.settings)


@signals.beat_init.connect
def _beat_files(**_: object) -> None:
    _make_files(runtime().settings)
    sys.unraisablehook = stop_signal_during_cleanup


def stop_signal_during_cleanup(unraisable: sys.UnraisableHookArgs) -> None:
    """Beat's process is told to stop (Ctrl-C, or the worker stopping it) by billiard's handler,
    which raises SystemExit wherever the process is. Inside a callback the garbage collector
    runs (a finalizer of the broker's database session), Python cannot raise it and printed it
    as a traceback on the operator's terminal; the process stops with the worker all the same.
    Anything else goes to Python's own hook."""
    if isinstance(unraisable.exc_value, SystemExit):
        log.info("beat: stopping (the stop signal came during a cleanup)")
        return
    sys.__unraisablehook__(unraisable)


def _check_database(rt: Runtime) -> None:
    """Not set up, or left at an older release's schema: say what to run, and do not start. A
    database out of reach for now is the worker's to wait for, as it is at any other time."""
    try:
        db.check_schema(rt.engine)
    except DBAPIError as exc:
        if not is_outage(exc):
            raise
        log.warning("database not checked at start: %s", db.unavailable(rt.engine, exc))


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


@signals.task_prerun.connect
def _worker_seen(task: Task | None = None, **_: object) -> None:
    hostname = getattr(getattr(task, "request", None), "hostname", None)
    if _heartbeat is None or not hostname:
        return  # not in a worker (a task run in-process)
    try:
        _heartbeat.beat(runtime(), hostname, utcnow())
    except Exception as exc:  # noqa: BLE001 - a missed heartbeat must never cost the task
        log.warning("heartbeat not recorded: %s", exc)


# Messages buffered before one round trip to Redis: a claim batch (batch_size) fits in one.
ENQUEUE_BATCH = 1000


def batches(ids: Sequence[int], size: int) -> list[list[int]]:
    """``ids`` cut into lists of at most ``size``, in order."""
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]


def enqueue(ids: Sequence[int]) -> None:
    """Queue the delivery ids as send tasks of ``send_batch_size`` ids each, in one broker
    round trip per ENQUEUE_BATCH tasks.

    On Redis, kombu's publish batch collects the pushes in a pipeline and sends them together;
    other brokers publish each message at once over the one producer. If that fails on its
    way, the tasks are published again one by one with Celery's retrying publish; ids the
    broker still refuses are released for the next tick (outages.publish_each). A task queued
    twice is harmless: the second finds its deliveries taken (the take is a compare-and-set).
    """
    if not ids:
        return
    tasks = batches(ids, runtime().settings.send_batch_size)
    try:
        with app.producer_or_acquire() as producer, producer.batch(max_size=ENQUEUE_BATCH):
            for batch in tasks:
                send_lessons.apply_async((batch,), producer=producer)
    except BatchPublishError as exc:
        log.warning("queueing %d deliveries in one batch failed (%s); task by task", len(ids), exc)
        outages.publish_each(runtime(), tasks, lambda b: send_lessons.apply_async((b,)), utcnow())


def scheduler_pass(rt: Runtime, now: dt.datetime) -> delivery.TickResult:
    """Queue again what a broker lost since the last pass, then claim and sweep as usual;
    last, queue the messages asking readers about replies from other addresses."""
    recovered = queue_loss.requeue_if_lost(rt, now, enqueue, _marker)
    result = delivery.tick(rt, now, enqueue)
    notices.queue_due(rt, now, enqueue_notices)
    return dataclasses.replace(result, requeued=result.requeued + recovered)


def enqueue_notices(ids: Sequence[int]) -> None:
    """Queue the held-reply notices, one task per ``send_batch_size`` of them; one the broker
    refuses is queued again by a later pass, once its time passes."""
    for batch in batches(ids, runtime().settings.send_batch_size):
        send_held_notices.apply_async((batch,))


@app.task(name="dripcourse.tick", ignore_result=True)
def tick() -> dict[str, int]:
    """One scheduler pass: claim due lessons and queue them, after the claim commits."""
    result = scheduler_pass(runtime(), utcnow())
    return {"claimed": result.claimed, "requeued": result.requeued}


@app.task(
    name="dripcourse.send_lessons", bind=True, ignore_result=True, acks_late=True, max_retries=None
)
def send_lessons(self: Task, delivery_ids: list[int]) -> dict[str, int]:
    """Send a batch of claimed deliveries over this worker's connection. Retries are scheduled
    in the database, not in the broker; only a database out of reach makes the task itself
    run again, seconds later."""
    return _send(self, delivery_ids)


@app.task(
    name="dripcourse.send_lesson", bind=True, ignore_result=True, acks_late=True, max_retries=None
)
def send_lesson(self: Task, delivery_id: int) -> dict[str, int]:
    """One delivery: the task earlier versions queued, still taken after an upgrade."""
    return _send(self, [delivery_id])


def _send(task: Task, delivery_ids: list[int]) -> dict[str, int]:
    rt = runtime()
    retries = task.request.retries or 0
    try:
        outcomes = sending.send_batch(rt, delivery_ids, utcnow(), clock=utcnow)
    except Exception as exc:
        if not is_outage(exc):
            raise
        what = _describe(delivery_ids)
        delay = outages.retry_delay(retries, rt.settings.requeue_after_seconds)
        if delay is None:
            log.error("%s: database unavailable, left for the sweep: %s", what, exc)
            raise
        log.warning("%s: database unavailable, task tried again in %.1fs: %s", what, delay, exc)
        raise task.retry(countdown=delay, exc=exc) from None
    if retries:
        done = [i for i, outcome in outcomes.items() if outcome is not sending.Outcome.SKIPPED]
        outages.note_interrupted(rt, done, utcnow(), retries)
    return dict(Counter(str(outcome) for outcome in outcomes.values()))


def _describe(delivery_ids: Sequence[int]) -> str:
    if len(delivery_ids) == 1:
        return f"delivery {delivery_ids[0]}"
    return f"deliveries {delivery_ids[0]}..{delivery_ids[-1]} ({len(delivery_ids)})"


@app.task(name="dripcourse.send_held_notices", ignore_result=True, acks_late=True)
def send_held_notices(held_ids: list[int]) -> dict[str, int]:
    """Ask the readers of these held replies, at their own address, whether each is theirs."""
    outcomes = notices.send_notices(runtime(), held_ids, utcnow())
    return dict(Counter(outcomes.values()))


@app.task(name="dripcourse.delete_old_reflections", ignore_result=True)
def delete_old_reflections() -> int:
    """Delete reflections past reflections_retention_days, the records of inbound mail past
    theirs (privacy.expire_inbound_records) and held replies past theirs; returns how many
    reflections."""
    rt = runtime()
    with transaction(rt.sessions) as session:
        deleted = privacy.delete_old_reflections(
            session, rt.settings.reflections_retention_days, utcnow()
        )
        privacy.expire_inbound_records(session, utcnow())
        privacy.expire_held_replies(session, utcnow())
    if deleted:
        log.info(
            "retention: %d reflections older than %d days deleted",
            deleted,
            rt.settings.reflections_retention_days,
        )
    return deleted


try:
    configure(load_settings(), make_files=False)  # the worker or beat makes them at start
except ConfigError as exc:
    # `celery -A dripcourse.tasks ...` with a wrong setting: one line, not a traceback.
    raise SystemExit(f"dripcourse: {exc}") from None
