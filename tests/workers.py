"""Celery worker and beat processes for tests whose behaviour depends on real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from dripcourse.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process load exactly ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIPCOURSE_")}
    for name in Settings.__dataclass_fields__:
        if name != "source":
            env[f"DRIPCOURSE_{name.upper()}"] = str(getattr(settings, name))
    env["DRIPCOURSE_CONFIG"] = str(ROOT / "config" / "default.toml")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class CeleryProcess:
    """``celery -A dripcourse.tasks worker|beat`` as a child process with its log in a file."""

    def __init__(self, settings: Settings, log: Path, *args: str) -> None:
        self.log_path = log
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "dripcourse.tasks", *args, "--loglevel", "INFO"],
            cwd=ROOT,
            env=settings_env(settings),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @classmethod
    def worker(
        cls,
        settings: Settings,
        log: Path,
        *,
        beat: bool = False,
        pool: str = "threads",
        concurrency: int = 4,
        name: str = "w1",
    ) -> CeleryProcess:
        args = [
            "worker",
            "--pool",
            pool,
            "--concurrency",
            str(concurrency),
            "--hostname",
            f"{name}@%h",
            "--without-gossip",
            "--without-mingle",
        ]
        if beat:
            args.append("--beat")
            args += ["--schedule", str(log.with_suffix(".beat-schedule"))]
        return cls(settings, log, *args)

    @classmethod
    def beat(cls, settings: Settings, log: Path) -> CeleryProcess:
        return cls(settings, log, "beat", "--schedule", str(log.with_suffix(".beat-schedule")))

    def kill(self) -> None:
        """SIGKILL the whole process group: no warm shutdown, no acks."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()

    def stop(self, timeout: float = 30) -> int:
        """Warm shutdown, as Ctrl-C would; returns the exit status."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, on_timeout: Callable[[], str] = lambda: ""
) -> None:
    """Poll ``check`` until it holds; processes do real work here, so this waits on them,
    not on the calendar."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{on_timeout()}")
