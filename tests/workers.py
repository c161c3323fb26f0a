"""Celery worker and beat processes for tests whose behaviour depends on real processes."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
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


def unreachable_database_env(settings: Settings) -> dict[str, str]:
    """``settings``, but with a PostgreSQL database on a port nobody listens on."""
    return {
        **settings_env(settings),
        "DRIPCOURSE_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none",
        "DRIPCOURSE_SECRET_KEY": "k" * 40,
    }


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


def worker_refusing_to_start(settings: Settings) -> subprocess.CompletedProcess[str]:
    """Run ``celery ... worker`` (solo pool) for a start it is expected to refuse; its exit."""
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "dripcourse.tasks", "worker", "--pool", "solo"],
        cwd=ROOT,
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )


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


class RedisServer:
    """A private ``redis-server`` on a free loopback port, that a test may restart or flush.

    Nothing is persisted (``--save "" --appendonly no``): a restart loses every queued task,
    which is the fault the tests want.
    """

    def __init__(self, folder: Path, port: int | None = None) -> None:
        import shutil

        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not on PATH")
        self.binary = binary
        self.folder = folder
        self.port = port or _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        import redis

        self.folder.mkdir(parents=True, exist_ok=True)
        log = (self.folder / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.folder),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        client = redis.Redis(port=self.port, socket_timeout=1)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_until(answers, 10, f"redis-server on port {self.port}")
        client.close()
        return self

    def stop(self) -> None:
        """Kill the server at once, as a crash or an OOM kill would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        """Crash and come back empty on the same port."""
        self.stop()
        self.start()
        self.restarts += 1


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_cohort(
    settings: Settings, size: int, *, name: str = "fault", now: dt.datetime | None = None
) -> list[str]:
    """Enroll ``size`` subscribers in a cohort with Day 1 due at once; return their addresses."""
    from dripcourse import db
    from dripcourse.clock import utcnow
    from dripcourse.people import enrollment
    from dripcourse.people.signup import Signup
    from dripcourse.runtime import Runtime

    rt = Runtime(settings)
    now = now or utcnow()
    course = rt.catalog.course("white-coat")
    addresses = [f"{name}-{i:05d}@example.org" for i in range(size)]
    with db.transaction(rt.sessions) as session:
        cohort = enrollment.create_cohort(session, name, course, "now", now)
        for address in addresses:
            signup = Signup(email=address, name="Dr. Test", timezone="UTC")
            enrollment.enroll(session, cohort, course, signup, now)
    rt.close()
    return addresses


def delivery_rows(settings: Settings) -> list[dict[str, object]]:
    """Every delivery with its subscriber's address, as plain dicts, oldest first."""
    from sqlalchemy import select

    from dripcourse import db
    from dripcourse.models import Delivery, Enrollment, Subscriber

    engine = db.make_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(
                    Subscriber.email,
                    Enrollment.status.label("enrollment"),
                    Enrollment.day.label("enrollment_day"),
                    Delivery.day,
                    Delivery.status,
                    Delivery.attempts,
                    Delivery.last_error,
                )
                .join(Enrollment, Delivery.enrollment_id == Enrollment.id)
                .join(Subscriber, Enrollment.subscriber_id == Subscriber.id)
                .order_by(Delivery.id)
            ).all()
    finally:
        engine.dispose()
    return [dict(row._mapping) for row in rows]


@contextlib.contextmanager
def private_redis_server(folder: Path) -> Iterator[RedisServer]:
    """A private Redis for one test. The shared one on 6379 is flushed by any concurrent test
    run's ``redis_url`` fixture, which would also wipe this test's queues and Celery's bindings."""
    from tests.conftest import service_missing

    try:
        server = RedisServer(folder).start()
    except (FileNotFoundError, AssertionError) as exc:
        service_missing("redis-server", exc)
    try:
        yield server
    finally:
        server.stop()
