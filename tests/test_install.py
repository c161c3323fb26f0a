"""A production install: the project alone, no extras, in a fresh virtual environment.

The development venv holds the test extras, which pull in packages the transports need; an
install step missing from ``dependencies`` only shows up where they are absent. pip's cache
keeps this to well under a minute.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_settings
from tests.workers import ROOT, private_redis_server, settings_env, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.redis]


def run(args: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300):
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip install .`` of a copy of the project (so no build output lands in the worktree)."""
    tmp = tmp_path_factory.mktemp("install")
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "dripcourse", source / "dripcourse", ignore=shutil.ignore_patterns("__pycache__")
    )
    venv = tmp / "venv"
    # This venv's own pip installs into the new one (no pip of its own to set up there), from
    # pip's cache of wheels when it is warm.
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    python = str(venv / "bin" / "python")
    run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", str(source)],
        cwd=tmp)  # fmt: skip
    return venv / "bin"


def test_a_plain_install_ticks_and_sends_through_a_redis_broker(
    fresh_venv: Path, tmp_path: Path
) -> None:
    with private_redis_server(tmp_path / "redis") as redis_server:
        settings = make_settings(
            tmp_path,
            broker_url=redis_server.url,
            database_url=f"sqlite:///{tmp_path / 'prod.sqlite3'}",
        )
        env = settings_env(settings)
        # Run from an empty folder, so only the installed package can be imported.
        work = tmp_path / "elsewhere"
        work.mkdir()
        dripcourse = str(fresh_venv / "dripcourse")
        show = "import dripcourse; print(dripcourse.__file__)"
        where = run([str(fresh_venv / "python"), "-c", show], cwd=work, env=env)
        assert where.startswith(str(fresh_venv.parent))
        run([dripcourse, "init"], cwd=work, env=env)
        # The package data came along: the subscriber's pages render from their templates and
        # serve their style sheet, and the studio finds its own.
        pages = (
            "from dripcourse.web import create_app\n"
            "from dripcourse.courses.studio import create_studio\n"
            "from dripcourse.runtime import Runtime\n"
            "from dripcourse.settings import load_settings\n"
            "web = create_app().test_client()\n"
            "studio = create_studio(Runtime(load_settings())).test_client()\n"
            "print(web.get('/privacy').status_code, web.get('/static/web.css').status_code,"
            " studio.get('/').status_code)\n"
        )
        got = run([str(fresh_venv / "python"), "-c", pages], cwd=work, env=env)
        assert got.split() == ["200", "200", "200"], got
        run([dripcourse, "cohort", "create", "c1", "--course", "white-coat", "--start", "now"],
            cwd=work, env=env)  # fmt: skip
        run([dripcourse, "enroll", "ada@example.org", "--cohort", "c1", "--timezone", "UTC"],
            cwd=work, env=env)  # fmt: skip

        assert "queued 1 for the workers" in run([dripcourse, "tick"], cwd=work, env=env)

        log = tmp_path / "worker.log"
        with log.open("wb") as out:
            worker = subprocess.Popen(
                [str(fresh_venv / "celery"), "-A", "dripcourse.tasks", "worker", "--pool", "solo",
                 "--without-gossip", "--without-mingle", "--loglevel", "INFO"],
                cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        outbox = Path(settings.mail_url.removeprefix("file://"))
        try:
            wait_until(
                lambda: len(list(outbox.glob("*.eml"))) == 1,
                60,
                "Day 1 in the outbox",
                lambda: log.read_text(errors="replace"),
            )
        finally:
            worker.terminate()
            worker.wait(30)

        # The programme's report is a page of its own, with its style sheet from the package.
        report = tmp_path / "report.html"
        run([dripcourse, "report", "--out", str(report)], cwd=work, env=env)
        assert "<svg" in report.read_text(encoding="utf-8")
