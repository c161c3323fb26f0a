"""Sending benchmark: render cost per message, claim throughput and memory, inline send rate.

Run with `make bench` (or `.venv/bin/python benchmarks/bench_send.py [--postgres URL]`).
It prints a Markdown table; benchmarks/RESULTS.md keeps the numbers with the command.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path

from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dripcourse import db, encryption
from dripcourse.courses.message import build_message, message_id
from dripcourse.courses.render import Personal
from dripcourse.courses.wire import as_wire, wire_bytes
from dripcourse.db import transaction
from dripcourse.models import Enrollment, EnrollmentStatus, Subscriber
from dripcourse.people import enrollment
from dripcourse.runtime import Runtime
from dripcourse.sending import batch as sending
from dripcourse.sending import claim as delivery
from dripcourse.settings import Settings

NOW = dt.datetime(2027, 3, 10, 12, tzinfo=dt.UTC)
REFLECTIONS_KEY = encryption.new_key()
LINK_KEY = "benchlinkkey"  # an enrollment's random link key: 12 characters


class NullTransport:
    """Takes each message in wire form, as SMTP would, then drops it: our side only."""

    def send(self, msg, deadline: float | None = None) -> None:  # type: ignore[no-untyped-def]
        as_wire(msg)

    def close(self) -> None:
        pass


def settings_for(url: str, tmp: Path) -> Settings:
    return Settings(
        database_url=url,
        broker_url="memory://",
        mail_url=f"file://{tmp}/outbox",
        secret_key="bench-secret-key-" + "k" * 32,
        reflections_key=REFLECTIONS_KEY,  # PostgreSQL needs one set
        emails_dir=str(ROOT / "emails"),
        var_dir=str(tmp / "var"),
        batch_size=500,
    )


def seed(rt: Runtime, n: int) -> None:
    """n subscribers in one cohort, all with Day 1 due, inserted in bulk."""
    course = rt.catalog.course("white-coat")
    with transaction(rt.sessions) as session:
        cohort = enrollment.create_cohort(
            session, f"bench-{uuid.uuid4().hex[:6]}", course, "now", NOW
        )
        cohort_id = cohort.id
    zones = [
        "America/New_York",
        "Europe/London",
        "Asia/Kolkata",
        "Australia/Adelaide",
        "Pacific/Auckland",
    ]
    with rt.engine.begin() as conn:
        for start in range(0, n, 5000):
            rows = range(start, min(n, start + 5000))
            ids = (
                conn.execute(
                    insert(Subscriber).returning(Subscriber.id),
                    [
                        {
                            "email": f"p{i}-{cohort_id}@example.org",
                            "name": f"Reader {i}",
                            "timezone": zones[i % 5],
                            "created_at": NOW,
                        }
                        for i in rows
                    ],
                )
                .scalars()
                .all()
            )
            conn.execute(
                insert(Enrollment),
                [
                    {
                        "subscriber_id": sid,
                        "cohort_id": cohort_id,
                        "day": 0,
                        "next_send_at": NOW,
                        "status": EnrollmentStatus.ACTIVE,
                        "created_at": NOW,
                        "updated_at": NOW,
                    }
                    for sid in ids
                ],
            )


def bench_render(rt: Runtime, n: int = 2000) -> float:
    course = rt.catalog.course("white-coat")
    rendered = rt.catalog.renderer.lesson(course, 3)
    start = time.perf_counter()
    for i in range(n):
        who = Personal(
            email=f"p{i}@example.org", name="Amara Okafor", **rt.links.for_lesson(i, 3, LINK_KEY)
        )
        wire_bytes(build_message(rendered, who, now=NOW, msg_id=message_id("b.org", i, "k")))
    return (time.perf_counter() - start) / n * 1000


def bench_claim(rt: Runtime, n: int) -> tuple[float, float, float]:
    """Claim n due lessons; then claim n more under tracemalloc for the peak Python memory."""
    seed(rt, n)
    claimed: list[int] = []
    start = time.perf_counter()
    delivery.claim_due_lessons(rt, NOW, claimed.extend)
    elapsed = time.perf_counter() - start
    assert len(claimed) == n, (len(claimed), n)
    seed(rt, n)
    tracemalloc.start()
    delivery.claim_due_lessons(rt, NOW, lambda ids: None)  # ids dropped: measure the claim alone
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return elapsed, n / elapsed, peak / 2**20


def bench_inline_send(rt: Runtime, n: int, batch: int) -> float:
    """Messages per second through the send path in one process: claim, personalise, record;
    ``batch`` deliveries to a call of send_batch (1: one task per message, as before)."""
    seed(rt, n)
    rt._transport = NullTransport()  # noqa: SLF001 - the benchmark swaps the transport on purpose
    ids: list[int] = []
    delivery.claim_due_lessons(rt, NOW, lambda claimed: ids.extend(claimed))
    start = time.perf_counter()
    for i in range(0, len(ids), batch):
        outcomes = sending.send_batch(rt, ids[i : i + batch], NOW)
        assert set(outcomes.values()) == {sending.Outcome.SENT}
    return n / (time.perf_counter() - start)


def fresh_postgres(admin_url: str) -> tuple[str, callable]:  # type: ignore[valid-type]
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"dripcourse_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    return make_url(admin_url).set(database=name).render_as_string(hide_password=False), drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--postgres",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
        help="admin URL for a scratch database ('' to skip PostgreSQL)",
    )
    parser.add_argument("--claim", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--send", type=int, default=2000)
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        backends = [
            ("SQLite", lambda: (f"sqlite:///{tmp}/{uuid.uuid4().hex}.sqlite3", lambda: None))
        ]
        if args.postgres:
            backends.append(("PostgreSQL", lambda: fresh_postgres(args.postgres)))
        probe = Runtime(settings_for(f"sqlite:///{tmp}/probe.sqlite3", tmp))
        samples = [bench_render(probe, 500) for _ in range(3)]
        rows.append(
            (
                "render + serialise one message",
                f"{statistics.median(samples):.2f} ms (median of 3 x 500)",
            )
        )
        probe.close()
        for label, make in backends:
            for n in args.claim:
                url, drop = make()
                rt = Runtime(settings_for(url, tmp))
                db.upgrade(rt.engine)
                elapsed, rate, peak = bench_claim(rt, n)
                rows.append(
                    (
                        f"{label}: claim {n:,} due lessons (batches of 500)",
                        f"{elapsed:.1f} s, {rate:,.0f}/s, peak Python memory {peak:.1f} MiB",
                    )
                )
                rt.close()
                drop()
            for batch in (1, 100):
                url, drop = make()
                rt = Runtime(settings_for(url, tmp))
                db.upgrade(rt.engine)
                rate = bench_inline_send(rt, args.send, batch)
                rows.append(
                    (
                        f"{label}: send {args.send:,} inline in batches of {batch}, one process "
                        "(null transport)",
                        f"{rate:,.0f} messages/s",
                    )
                )
                rt.close()
                drop()
    print("| what | result |\n|---|---|")
    for what, result in rows:
        print(f"| {what} | {result} |")


if __name__ == "__main__":
    main()
