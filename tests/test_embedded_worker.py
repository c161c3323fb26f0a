"""The embedded set-up as processes: a Celery worker with beat on kombu's SQLite transport."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dripcourse.clock import utcnow
from dripcourse.db import transaction
from dripcourse.people import csv_file, enrollment
from dripcourse.runtime import Runtime
from dripcourse.settings import Settings
from tests.conftest import make_settings
from tests.smtp_sink import _free_port as free_port
from tests.workers import ROOT, CeleryProcess, settings_env, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def embedded(tmp_path: Path, sqlite_url: str) -> Settings:
    return make_settings(
        tmp_path,
        web_port=free_port(),
        database_url=sqlite_url,
        tick_seconds=1,
        broker_url=f"sqla+sqlite:///{tmp_path / 'broker.sqlite3'}",
    )


def enroll_sample(settings: Settings) -> None:
    rt = Runtime(settings)
    course = rt.catalog.course("white-coat")
    with transaction(rt.sessions) as session:
        cohort = enrollment.create_cohort(session, "sample", course, "now", utcnow())
        parsed = csv_file.read_csv(ROOT / "config" / "sample-cohort.csv")
        signups = [row.signup for row in parsed.rows]
        enrollment.enroll_all(session, cohort, course, signups, utcnow())
    rt.close()


def eml_count(settings: Settings) -> int:
    return len(list(Path(settings.mail_url.removeprefix("file://")).glob("*.eml")))


def test_worker_with_beat_delivers_day_one_to_the_outbox(
    embedded: Settings, tmp_path: Path
) -> None:
    enroll_sample(embedded)
    worker = CeleryProcess.worker(embedded, tmp_path / "worker.log", beat=True)
    try:
        wait_until(lambda: eml_count(embedded) >= 6, 60, "Day 1 in the outbox", worker.output)
        # Further ticks (one a second) claim nothing more: Day 2 is tomorrow morning.
        wait_until(
            lambda: worker.output().count("dripcourse.tick[") >= 6, 30, "more ticks", worker.output
        )
    finally:
        assert worker.stop() == 0
    assert eml_count(embedded) == 6
    assert "Traceback" not in worker.output()


def test_dripcourse_run_sends_day_one_stops_on_ctrl_c_and_never_twice(
    embedded: Settings, tmp_path: Path
) -> None:
    enroll_sample(embedded)
    env = settings_env(embedded)

    def run_once(log_name: str) -> str:
        log = tmp_path / log_name
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(Path(sys.executable).with_name("dripcourse")), "run", "--concurrency", "2"],
                cwd=tmp_path,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                wait_until(
                    lambda: "ready." in log.read_text(errors="replace"),
                    60,
                    "worker ready",
                    lambda: log.read_text(errors="replace"),
                )
                wait_until(
                    lambda: eml_count(embedded) >= 6,
                    60,
                    "Day 1 in the outbox",
                    lambda: log.read_text(errors="replace"),
                )
                wait_until(
                    lambda: "dripcourse.tick[" in log.read_text(errors="replace"),
                    30,
                    "a tick after start",
                    lambda: log.read_text(errors="replace"),
                )
            finally:
                os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's group
                code = proc.wait(60)
        text = log.read_text(errors="replace")
        assert code == 0, text
        return text

    first = run_once("run1.log")
    assert eml_count(embedded) == 6
    second = run_once("run2.log")
    assert eml_count(embedded) == 6, "a second run sent something twice"
    for text in (first, second):
        assert f"web pages at http://127.0.0.1:{embedded.web_port}/" in text
        assert "Traceback" not in text
        assert "Warm shutdown" in text


# Beat's stop handler (billiard's) raises SystemExit wherever the process is; here it fires
# inside a finalizer the garbage collector runs, as it did once under `dripcourse run`.
_STOP_DURING_CLEANUP = """
import signal, sys, weakref
from billiard.common import _shutdown_cleanup
if sys.argv[1] == "ours":
    from dripcourse.tasks import stop_signal_during_cleanup
    sys.unraisablehook = stop_signal_during_cleanup
class Session: pass
session = Session()
weakref.finalize(session, _shutdown_cleanup, signal.SIGINT, None)
del session
weakref.finalize(Session(), lambda: 1 / 0)  # any other error in a finalizer is still shown
print("went on")
"""


@pytest.mark.parametrize("hook", ["python's", "ours"])
def test_a_stop_signal_met_during_a_cleanup_in_beat_prints_no_traceback(hook: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _STOP_DURING_CLEANUP, hook],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "went on" in done.stdout
    assert "ZeroDivisionError" in done.stderr
    assert ("SystemExit" in done.stderr) is (hook == "python's")
