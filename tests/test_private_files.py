"""var/ is 0700 and every file in it 0600, whatever the umask of whoever starts dripcourse."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from dripcourse.settings import Settings
from tests.conftest import make_settings
from tests.smtp_sink import _free_port as free_port
from tests.workers import ROOT, settings_env, wait_until

pytestmark = pytest.mark.slow


def modes(root: Path) -> dict[str, str]:
    """Every folder and file under ``root`` (itself included) with its permission bits."""
    found = {".": oct(stat.S_IMODE(root.stat().st_mode))}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = oct(stat.S_IMODE(path.stat().st_mode))
    return found


@pytest.fixture
def embedded(tmp_path: Path) -> Settings:
    """The embedded set-up with everything in one var/ folder, as `make run` has it."""
    var = tmp_path / "var"
    return make_settings(
        tmp_path,
        var_dir=str(var),
        database_url=f"sqlite:///{var / 'dripcourse.sqlite3'}",
        broker_url=f"sqla+sqlite:///{var / 'broker.sqlite3'}",
        mail_url=f"file://{var / 'outbox'}",
        secret_key="",
        tick_seconds=1,
        web_port=free_port(),
    )


def test_everything_dripcourse_run_writes_in_var_is_private_under_an_open_umask(
    embedded: Settings, tmp_path: Path
) -> None:
    env = settings_env(embedded)
    dripcourse = str(Path(sys.executable).with_name("dripcourse"))

    def start(*args: str, log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            return subprocess.Popen(
                [dripcourse, *args],
                cwd=tmp_path,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=lambda: os.umask(0),  # everything made with the umask is 0666/0777
            )

    for step in (["init"], ["demo", "--csv", str(ROOT / "config" / "sample-cohort.csv")]):
        assert start(*step, log=tmp_path / f"{step[0]}.log").wait(60) == 0
    log = tmp_path / "run.log"
    proc = start("run", "--concurrency", "2", log=log)
    var = Path(embedded.var_dir)
    outbox = var / "outbox"
    try:
        wait_until(
            lambda: outbox.is_dir() and len(list(outbox.glob("*.eml"))) >= 6,
            90,
            "Day 1 in the outbox",
            lambda: log.read_text(errors="replace"),
        )
        wait_until(
            lambda: any(var.glob("celerybeat-schedule*")),
            30,
            "beat's schedule file",
            lambda: log.read_text(errors="replace"),
        )
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(60) == 0, log.read_text(errors="replace")
    found = modes(var)
    expected = {
        "secret_key",
        "dripcourse.sqlite3",
        "broker.sqlite3",
        "outbox",
    }
    assert expected <= set(found)
    assert any(name.startswith("celerybeat-schedule") for name in found)
    assert len([name for name in found if name.endswith(".eml")]) == 6
    wrong = {
        name: mode
        for name, mode in found.items()
        if mode != ("0o700" if (var / name).is_dir() else "0o600")
    }
    assert wrong == {}
