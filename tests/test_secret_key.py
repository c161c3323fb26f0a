"""The key that signs every link: never empty, never short, one key for every process."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dripcourse.cli import cli
from dripcourse.errors import ConfigError
from dripcourse.runtime import Runtime
from dripcourse.settings import Settings, load_settings, secret_key
from dripcourse.web import create_app
from tests.conftest import make_settings
from tests.workers import settings_env


class Crash(BaseException):
    """The process dies here (power cut, kill -9) while the key is being written."""


def _crash(*args: object, **kwargs: object) -> None:
    raise Crash


def test_a_crash_while_the_key_is_written_leaves_no_empty_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(var_dir=str(tmp_path / "var"))
    with monkeypatch.context() as patched:
        patched.setattr(os, "fdopen", _crash)
        with pytest.raises(Crash):
            secret_key(settings)
    key = secret_key(settings)
    assert len(key.encode()) >= 32
    assert [p.name for p in (tmp_path / "var").iterdir()] == ["secret_key"]


@pytest.mark.parametrize("content", ["", "\n", "short-key"], ids=["empty", "blank", "short"])
def test_an_empty_or_short_key_file_is_refused_saying_how_to_fix_it(
    tmp_path: Path, content: str
) -> None:
    var = tmp_path / "var"
    var.mkdir()
    (var / "secret_key").write_text(content)
    with pytest.raises(ConfigError, match=r"secret_key: .*shorter than 32 bytes.*delete the file"):
        secret_key(Settings(var_dir=str(var)), wait_seconds=0)


@pytest.mark.parametrize("key", ["x", "a-long-random-shared-key"])
def test_a_configured_key_shorter_than_32_bytes_is_refused_at_start(key: str) -> None:
    with pytest.raises(ConfigError, match="setting secret_key: .* at least 32 .*openssl rand"):
        load_settings(environ={"DRIPCOURSE_SECRET_KEY": key})


def test_the_web_app_and_the_cli_refuse_to_start_with_a_short_key(
    tmp_path: Path, sqlite_url: str
) -> None:
    settings = make_settings(tmp_path, database_url=sqlite_url, secret_key="")
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "secret_key").write_text("")
    with pytest.raises(ConfigError, match="shorter than 32 bytes"):
        create_app(Runtime(settings))
    env = {**settings_env(settings), "DRIPCOURSE_SECRET_KEY": "too-short"}
    result = CliRunner().invoke(cli, ["status"], env=env)
    assert result.exit_code == 1
    assert result.output.startswith("Error: setting secret_key: 9 bytes")
    assert "Traceback" not in result.output


def _read_key(var: str, start: Any, out: Any) -> None:
    start.wait()
    out.put(secret_key(Settings(var_dir=var)))


@pytest.mark.parametrize("attempt", range(3))
def test_processes_starting_together_all_get_the_same_full_key(
    tmp_path: Path, attempt: int
) -> None:
    processes = 8
    ctx = multiprocessing.get_context("fork")
    start, out = ctx.Barrier(processes), ctx.Queue()
    children = [
        ctx.Process(target=_read_key, args=(str(tmp_path / "var"), start, out))
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    keys = [out.get(timeout=30) for _ in children]
    for child in children:
        child.join(timeout=30)
    assert len(set(keys)) == 1
    assert len(keys[0].encode()) >= 32
    assert (tmp_path / "var" / "secret_key").read_text() == keys[0]


def test_a_celery_worker_refuses_to_start_with_an_empty_key_file(tmp_path: Path) -> None:
    from tests.workers import worker_refusing_to_start

    var = tmp_path / "var"
    var.mkdir()
    (var / "secret_key").write_text("")
    done = worker_refusing_to_start(make_settings(tmp_path, secret_key="", var_dir=str(var)))
    assert done.returncode != 0
    assert "dripcourse: " in done.stderr and "shorter than 32 bytes" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


@pytest.mark.parametrize("command", [["tick", "--inline"], ["tick"], ["status"]])
def test_a_short_key_file_stops_every_command_before_anything_is_claimed(
    tmp_path: Path, sqlite_url: str, command: list[str]
) -> None:
    settings = make_settings(tmp_path, database_url=sqlite_url, secret_key="")
    var = tmp_path / "var"
    var.mkdir(mode=0o700)
    (var / "secret_key").write_text("short")
    result = CliRunner().invoke(cli, command, env=settings_env(settings))
    assert result.exit_code == 1
    assert (
        result.output.startswith("Error: ")
        and "the secret key is empty or shorter" in result.output
    )
    assert "Traceback" not in result.output
