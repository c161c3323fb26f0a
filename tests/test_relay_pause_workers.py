"""The relay's login fails for a while under real Celery workers: sending pauses as a whole,
no subscriber's attempts are spent, and everything arrives once when the login works again.

Real prefork workers with embedded beat, a private redis-server, PostgreSQL and an SMTP server
that wants a login. The test waits on the processes, never on the calendar.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
from click.testing import CliRunner

from dripcourse.cli import cli
from tests.conftest import make_settings
from tests.smtp_sink import SMTPSink
from tests.workers import (
    CeleryProcess,
    delivery_rows,
    private_redis_server,
    settings_env,
    start_cohort,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


def test_a_wrong_relay_password_pauses_the_workers_and_spends_no_attempts(
    tmp_path: Path, postgres_url: str
) -> None:
    accounts = {"course": "expired-password"}
    sink = SMTPSink(credentials=accounts).start()
    size = 40
    with private_redis_server(tmp_path / "redis") as redis_server:
        settings = make_settings(
            tmp_path,
            database_url=postgres_url,
            broker_url=redis_server.url,
            mail_url=f"smtp://course:current-password@127.0.0.1:{sink.port}",
            tick_seconds=0.5,
            batch_size=50,
            requeue_after_seconds=4,
            send_lease_seconds=15,
            smtp_timeout_seconds=1.2,
            retry_base_seconds=1,
            retry_max_seconds=2,
            max_attempts=2,
            relay_retry_seconds=1.0,
        )
        addresses = start_cohort(settings, size, name="relay")
        worker = CeleryProcess.worker(
            settings, tmp_path / "w1.log", beat=True, pool="prefork", concurrency=2
        )
        try:
            # Every delivery ends up waiting for the relay, none spent its attempts.
            def all_waiting() -> bool:
                rows = delivery_rows(settings)
                return len(rows) == size and all(r["status"] == "waiting" for r in rows)

            wait_until(all_waiting, 60, "every delivery waiting for the relay", worker.output)
            # Keep it failing for a few probes: max_attempts is 2, so spending attempts would
            # fail everyone by now.
            wait_until(lambda: len(sink.logins) == 0 and _probes(worker) >= 3, 60, "3 probes")
            rows = delivery_rows(settings)
            # Only a probe in flight holds an attempt; nobody has used up any, nobody failed.
            assert {r["status"] for r in rows} <= {"waiting", "pending", "sending"}
            assert sum(r["attempts"] for r in rows) <= 2  # type: ignore[misc]
            assert {r["enrollment"] for r in rows} == {"active"}
            status = CliRunner().invoke(cli, ["status"], env=settings_env(settings))
            assert "sending paused since" in status.output, status.output

            # The relay account is fixed: the next probe goes through and everyone gets Day 1.
            accounts["course"] = "current-password"
            wait_until(
                lambda: all(r["status"] == "sent" for r in delivery_rows(settings)),
                90,
                "every delivery sent",
                worker.output,
            )
        finally:
            worker.kill()
            sink.stop()
    rows = delivery_rows(settings)
    assert {(r["status"], r["attempts"]) for r in rows} == {("sent", 1)}
    assert sink.handler.counts() == collections.Counter(addresses)


def _probes(worker: CeleryProcess) -> int:
    return worker.output().count("probing the relay")
