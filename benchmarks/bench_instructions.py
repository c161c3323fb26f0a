"""Instructions per message on the send path, counted by valgrind: the same on a busy machine.

Our CPU per message in seconds (bench_cpu.py) moves by half from one run to the next on a
virtual machine whose host lends its cores to others. Callgrind counts the instructions the
process runs instead, which does not depend on that. Two runs, each in a fresh scratch
database with a cohort's Day 2 claimed: one sends ``small`` messages, one ``large``, both after
the same warm-up, both with the null transport; what is the same in both (start-up, imports,
the warm-up) cancels out of the difference, and the difference over ``large - small`` is the
instructions per message of ``send_batch``: our Python, the driver, the email and signing
libraries. Not counted: the kernel's work for each round trip, and the database's.

    .venv/bin/python benchmarks/bench_instructions.py              # this checkout
    .venv/bin/python benchmarks/bench_instructions.py --root DIR   # another checkout of it

Takes a few minutes (callgrind runs Python about fifty times slower). Needs valgrind and a
PostgreSQL it may make scratch databases on.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
WARM = 100
BATCHES = 100  # send_batch_size: every run sends whole batches


def _use_checkout(root: Path) -> None:
    """Import dripcourse from ``root`` rather than the installed (editable) one."""
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f)]
    sys.path[:0] = [str(root), str(root / "benchmarks")]


def _prepare(admin_url: str, n: int, ids_file: Path) -> str:
    """A scratch database with ``n + WARM`` readers due and claimed; their ids in ``ids_file``.
    Returns its URL (the caller drops it)."""
    import uuid

    import bench_setup as bench
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from dripcourse import db
    from dripcourse.clock import utcnow
    from dripcourse.runtime import Runtime
    from dripcourse.sending import claim

    name = f"dripcourse_instr_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    engine = db.make_engine(url)
    db.upgrade(engine)
    engine.dispose()
    now = utcnow()
    bench.seed(url, n + WARM, n + WARM, now)
    with tempfile.TemporaryDirectory() as tmp:
        rt = Runtime(bench.settings_for(Path(tmp), database_url=url))
        ids: list[int] = []
        claim.claim_due_lessons(rt, now, ids.extend)
        rt.close()
    ids_file.write_text(json.dumps(ids))
    return url


def _send(url: str, n: int, ids_file: Path) -> None:
    """Send the first ``WARM + n`` claimed deliveries (run under callgrind)."""
    import bench_setup as bench
    from bench_cpu import NullTransport

    from dripcourse.clock import utcnow
    from dripcourse.runtime import Runtime
    from dripcourse.sending import batch

    ids = json.loads(ids_file.read_text())[: WARM + n]
    with tempfile.TemporaryDirectory() as tmp:
        rt = Runtime(bench.settings_for(Path(tmp), database_url=url))
        rt._transport = NullTransport()  # noqa: SLF001 - swapped on purpose
        now = utcnow()
        for i in range(0, len(ids), BATCHES):
            outcomes = batch.send_batch(rt, ids[i : i + BATCHES], now)
            assert set(outcomes.values()) == {batch.Outcome.SENT}, outcomes
        rt.close()


def _drop(admin_url: str, url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    admin.dispose()


def instructions(root: Path, admin_url: str, n: int) -> int:
    """Instructions callgrind counted in a process sending ``WARM + n`` messages."""
    with tempfile.TemporaryDirectory() as tmp:
        ids_file = Path(tmp) / "ids.json"
        url = _prepare(admin_url, n, ids_file)
        try:
            found = subprocess.run(
                [
                    "valgrind",
                    "--tool=callgrind",
                    "--callgrind-out-file=/dev/null",
                    sys.executable,
                    __file__,
                    "--root",
                    str(root),
                    "--send",
                    url,
                    str(n),
                    str(ids_file),
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stderr
        finally:
            _drop(admin_url, url)
    counted = re.search(r"Collected : (\d+)", found)
    if counted is None:
        raise SystemExit(f"callgrind said no count:\n{found[-2000:]}")
    return int(counted.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--root", default=str(HERE.parent), help="the checkout to measure")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "DRIPCOURSE_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--large", type=int, default=400)
    parser.add_argument("--send", nargs=3, metavar=("URL", "N", "IDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    root = Path(args.root).resolve()
    _use_checkout(root)
    if args.send:
        url, n, ids_file = args.send
        _send(url, int(n), Path(ids_file))
        return
    small = instructions(root, args.postgres, args.small)
    large = instructions(root, args.postgres, args.large)
    per = (large - small) / (args.large - args.small)
    print(
        f"instructions per message, send_batch, null transport, PostgreSQL ({root}): "
        f"{per / 1e6:.2f} million ({args.small} and {args.large} messages after {WARM}: "
        f"{small:,} and {large:,})"
    )


if __name__ == "__main__":
    main()
