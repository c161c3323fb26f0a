"""`make bench`'s morning part: a cohort's whole morning end to end, stage by stage, with the
peak memory of each kind of process.

The scheduler's tick runs in a process of its own (as it does in a worker when beat asks), and
hands each batch to Redis as it commits; two thread-pool workers of 4 threads (the layout
docs/production.md recommends here) send into the local SMTP sink and record each message.
Times are from the start of the tick: the first batch on Redis, the whole claim, the first
message at the sink, the last one, and the last one recorded. Memory is the high-water mark
(VmHWM) of the tick's process and of each worker; Redis's used_memory and the largest
PostgreSQL backend serving the benchmark's database are sampled while it runs.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import create_engine, text

from dripcourse import tasks
from dripcourse.clock import utcnow
from dripcourse.runtime import Runtime
from dripcourse.sending import claim as delivery


def vm_hwm_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _tick_main(settings: Any, out: Any) -> None:  # noqa: ANN401 - a process's entry point
    """The tick in a process of its own: what it timed, and its own peak memory."""
    rt = Runtime(settings)
    tasks.configure(settings)
    rt.catalog.course("white-coat")  # a worker that has ticked before has the course loaded
    first: list[float] = []

    def enqueue(ids: Any) -> None:  # noqa: ANN401
        tasks.enqueue(ids)
        if not first:
            first.append(time.time())

    claimed = delivery.tick(rt, utcnow(), enqueue).claimed
    out.put((claimed, first[0] if first else 0.0, time.time(), vm_hwm_mib(os.getpid())))
    rt.close()


@dataclass
class Sampler:
    """Redis's used memory and the PostgreSQL backends' high-water marks, sampled."""

    redis_url: str
    database_url: str
    redis_peak: float = 0.0
    redis_base: float = 0.0
    pg_peak: float = 0.0
    sent_at: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self._client = redis.Redis.from_url(self.redis_url)
        self.redis_base = self._client.info("memory")["used_memory"] / 2**20
        self._engine = create_engine(self.database_url)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with self._engine.connect() as conn:
            while not self._stop.is_set():
                used = self._client.info("memory")["used_memory"] / 2**20
                self.redis_peak = max(self.redis_peak, used - self.redis_base)
                pids = conn.execute(
                    text(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                        "AND pid <> pg_backend_pid()"
                    )
                ).scalars()
                for pid in pids:
                    self.pg_peak = max(self.pg_peak, vm_hwm_mib(pid))
                conn.rollback()
                self._stop.wait(0.2)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._engine.dispose()


def morning(bench: Any, sink: Any, tmp: Path, admin_url: str, redis_url: str, n: int) -> dict:  # noqa: ANN401
    """One morning of ``n`` readers; the stages' times in seconds and the peaks in MiB."""
    from tests.workers import CeleryProcess, wait_until

    with bench.scratch_postgres(admin_url) as url:
        settings = bench.settings_for(
            tmp, database_url=url, broker_url=redis_url, mail_url=sink.url, batch_size=500
        )
        redis.Redis.from_url(redis_url).flushdb()
        warm = bench.WARM_UP
        bench.seed(url, n + warm, n + warm, utcnow())
        workers = [
            CeleryProcess.worker(
                settings,
                tmp / f"morning-{n}-{i}.log",
                pool="threads",
                concurrency=4,
                name=f"morning{n}t{i}",
            )
            for i in (1, 2)
        ]
        engine = create_engine(url)
        sampler = Sampler(redis_url, url)
        try:
            for each in workers:
                wait_until(lambda w=each: "ready." in w.output(), 120, "a worker", each.output)
            rt = Runtime(settings)
            tasks.configure(settings)
            sink.reset()
            assert delivery.claim_due_lessons(rt, utcnow(), tasks.enqueue, limit=warm) == warm
            wait_until(lambda: sink.count.value >= warm, 600, "the warm-up", workers[0].output)
            rt.close()
            sink.reset()
            sampler.start()
            ctx = multiprocessing.get_context("fork")
            out = ctx.Queue()
            start = time.time()
            ticker = ctx.Process(target=_tick_main, args=(settings, out))
            ticker.start()
            first_sent = None
            while sink.count.value < n:
                if first_sent is None and sink.count.value > 0:
                    first_sent = time.time()
                time.sleep(0.01)
            last_sent = time.time()
            claimed, first_queued, claim_done, tick_hwm = out.get(timeout=600)
            ticker.join(30)
            assert claimed == n, (claimed, n)

            def recorded() -> bool:
                with engine.connect() as conn:
                    return (
                        conn.scalar(
                            text(
                                "SELECT count(*) FROM deliveries WHERE day = 2 AND status = 'sent'"
                            )
                        )
                        == n + warm
                    )

            wait_until(recorded, 600, "every message recorded")
            all_recorded = time.time()
            sampler.stop()
            hwm = [vm_hwm_mib(w.proc.pid) for w in workers]
        finally:
            for each in workers:
                each.stop()
            engine.dispose()
    return {
        "first queued": first_queued - start,
        "claimed and queued": claim_done - start,
        "first sent": (first_sent or last_sent) - start,
        "last sent": last_sent - start,
        "last recorded": all_recorded - start,
        "tick MiB": tick_hwm,
        "worker MiB": max(hwm),
        "redis MiB": sampler.redis_peak,
        "postgres MiB": sampler.pg_peak,
    }
