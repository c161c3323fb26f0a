"""`make bench`'s cpu part: our own CPU per message on the send path, in one process.

A cohort's Day 2 is claimed on PostgreSQL, then sent by ``send_batch`` in batches of
``send_batch_size``, as a worker's tasks would send it: a first ``warm`` messages to warm up
(the course loaded and rendered, the lesson's version recorded, connections open), then
``n`` measured. Measured: the CPU time of this process (``time.process_time``: our Python,
the driver, the transport's client side) and of the database's backends that served it (from
/proc, when PostgreSQL runs on this machine), each per message.

Two transports: a null one (the message in wire form, then dropped: our side only) and the
SMTP transport into a local sink running in a process of its own (adds smtplib's work).
``--profile`` writes a cProfile (in CPU time) of the measured part of the first null run.
"""

from __future__ import annotations

import cProfile
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text

from dripcourse.clock import utcnow
from dripcourse.courses.wire import as_wire
from dripcourse.runtime import Runtime
from dripcourse.sending import batch as sending
from dripcourse.sending import claim as delivery


class NullTransport:
    """Takes each message in wire form, as SMTP would, then drops it: our side only."""

    worst_case_seconds = 0.0

    def send(self, msg, deadline: float | None = None) -> None:  # type: ignore[no-untyped-def]
        as_wire(msg)

    def close(self) -> None:
        pass


def _backend_cpu(rt: Runtime) -> float | None:
    """CPU seconds used so far by every backend of ``rt``'s database (None when they are not
    processes of this machine we can read)."""
    with rt.engine.connect() as conn:
        pids = conn.scalars(
            text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        ).all()
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def cpu_per_message(
    bench: Any,
    tmp: Path,
    admin_url: str,
    n: int,
    *,
    warm: int = 200,
    transport: Callable[[], object] | None = None,
    profile: Path | None = None,
) -> dict[str, float]:
    """Milliseconds of CPU per message, ours and the database's, and the wall time, over ``n``
    messages sent after ``warm``; ``transport`` makes the transport (None: the null one).

    ``bench`` is benchmarks/bench_setup.py (its scratch database, seed and settings).
    """
    with bench.scratch_postgres(admin_url) as url:
        now = utcnow()
        bench.seed(url, n + warm, n + warm, now)
        rt = Runtime(bench.settings_for(tmp, database_url=url))
        rt._transport = (transport or NullTransport)()  # noqa: SLF001 - swapped on purpose
        ids: list[int] = []
        delivery.claim_due_lessons(rt, now, ids.extend)
        assert len(ids) == n + warm, (len(ids), n + warm)
        size = rt.settings.send_batch_size

        def send(part: list[int]) -> None:
            for i in range(0, len(part), size):
                outcomes = sending.send_batch(rt, part[i : i + size], now)
                assert set(outcomes.values()) == {sending.Outcome.SENT}, outcomes

        send(ids[:warm])
        db_before = _backend_cpu(rt)
        profiler = cProfile.Profile(time.process_time) if profile else None
        wall, cpu = time.perf_counter(), time.process_time()
        if profiler:
            profiler.enable()
        send(ids[warm:])
        if profiler:
            profiler.disable()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        db_after = _backend_cpu(rt)
        if profiler and profile:
            profiler.dump_stats(profile)
        rt.close()
    found = {"ours": cpu / n * 1000, "wall": wall / n * 1000}
    if db_before is not None and db_after is not None:
        found["database"] = (db_after - db_before) / n * 1000
    return found
