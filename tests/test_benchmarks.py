"""The benchmarks run against the code as it is: their settings pass the same checks a worker
makes, so `make bench` cannot silently rot while the settings grow stricter."""

from __future__ import annotations

from pathlib import Path

from benchmarks import bench
from dripcourse.settings import validate


def test_the_benchmark_settings_pass_a_workers_checks_on_postgresql(tmp_path: Path) -> None:
    settings = bench.settings_for(
        tmp_path,
        database_url="postgresql+psycopg://postgres@127.0.0.1:5432/test",
        broker_url="redis://127.0.0.1:6379/12",
        mail_url="smtp://127.0.0.1:2525",
    )
    validate(settings)
