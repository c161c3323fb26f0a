"""The benchmarks run against the code as it is: their settings pass the same checks a worker
makes, so `make bench` cannot silently rot while the settings grow stricter."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import bench_rates, bench_send, bench_setup
from dripcourse import db, tasks
from dripcourse.runtime import Runtime
from dripcourse.settings import validate


def test_the_benchmark_settings_pass_a_workers_checks_on_postgresql(tmp_path: Path) -> None:
    settings = bench_setup.settings_for(
        tmp_path,
        database_url="postgresql+psycopg://postgres@127.0.0.1:5432/test",
        broker_url="redis://127.0.0.1:6379/12",
        mail_url="smtp://127.0.0.1:2525",
    )
    validate(settings)


def test_the_inline_send_benchmark_runs_on_sqlite(tmp_path: Path) -> None:
    rt = Runtime(bench_send.settings_for(f"sqlite:///{tmp_path}/bench.sqlite3", tmp_path))
    try:
        db.upgrade(rt.engine)
        for batch in (1, 10):
            assert bench_send.bench_inline_send(rt, 20, batch) > 0
    finally:
        rt.close()


@pytest.mark.redis
def test_the_enqueue_benchmark_counts_what_it_queued(tmp_path: Path, redis_url: str) -> None:
    before = tasks.runtime().settings
    try:
        one_by_one, batched = bench_rates.enqueue_rates(tmp_path, redis_url, 250)
    finally:
        tasks.configure(before)
    assert one_by_one > 0 and batched > 0


@pytest.mark.postgres
@pytest.mark.redis
def test_the_claim_benchmark_claims_and_queues_what_is_due(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    from functools import partial

    from benchmarks import bench_claim

    before = tasks.runtime().settings
    now = bench_rates.utcnow()
    bench_setup.seed(postgres_url, 2000, 700, now)
    rt = Runtime(
        bench_setup.settings_for(tmp_path, database_url=postgres_url, broker_url=redis_url)
    )
    try:
        found = bench_claim.claim_rates(
            rt, now, 700, redis_url, partial(bench_rates.make_due_again, rt, now)
        )
    finally:
        rt.close()
        tasks.configure(before)
    # Each way asserts it claimed all 700; the first batch reached Redis before the last.
    assert 0 < found["first queued"] < found["queued"]
    assert found["raw"] > 0 and found["claim"] > 0


def test_the_inbound_benchmarks_run_and_print_their_tables(capsys: pytest.CaptureFixture) -> None:
    from benchmarks import bounces, reply_parsers

    bounces.main()
    reply_parsers.main()
    out = capsys.readouterr().out
    assert "| **all** | 259 |" in out
    assert "| ours, headers and the lesson known | 94/97" in out
