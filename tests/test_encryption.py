"""Reflections are sealed at rest: a stolen database file or dump shows none of them."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from dripcourse import db, links
from dripcourse.db import transaction
from dripcourse.encryption import KEY_FILE, WrongReflectionsKey, key_from_var, new_key
from dripcourse.errors import ConfigError
from dripcourse.models import Reflection
from dripcourse.reader import reflections
from dripcourse.runtime import Runtime
from dripcourse.settings import Settings, load_settings
from dripcourse.web import create_app
from tests.conftest import REFLECTIONS_KEY, make_settings
from tests.test_web_support import Clock, enroll, make_app, path, post_form, run_cli, send_days

SECRET = "I have stopped sleeping before night shifts and I am afraid to say so."
NOW = dt.datetime(2025, 3, 5, 12, tzinfo=dt.UTC)


@pytest.fixture
def rt(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    runtime = Runtime(make_settings(tmp_path, database_url=database_url))
    yield runtime
    runtime.close()


@pytest.fixture
def ana(rt: Runtime) -> int:
    enrollment_id = enroll(rt, "ana@example.org")
    send_days(rt, 3)
    return enrollment_id


def runtime_with(rt: Runtime, **changes: object) -> Runtime:
    return Runtime(dataclasses.replace(rt.settings, **changes))


def write_through_the_page(rt: Runtime, enrollment_id: int, day: int, words: str) -> None:
    client = make_app(rt, Clock(NOW)).test_client()
    response = post_form(client, path(rt, links.REFLECT, enrollment_id, day), reflection=words)
    assert response.status_code == 303


def raw_database(rt: Runtime) -> bytes:
    """Every byte the database holds: the SQLite file and its journal, or a pg_dump."""
    url = make_url(rt.settings.database_url)
    if url.get_backend_name() == "sqlite":
        rt.engine.dispose()
        files = sorted(Path(url.database).parent.glob(Path(url.database).name + "*"))
        return b"".join(f.read_bytes() for f in files)
    libpq = url.set(drivername="postgresql").render_as_string(hide_password=False)
    return subprocess.run(
        ["pg_dump", "--no-owner", f"--dbname={libpq}"], check=True, capture_output=True
    ).stdout


def test_a_reflection_written_on_the_page_is_nowhere_in_the_database_bytes(
    rt: Runtime, ana: int
) -> None:
    write_through_the_page(rt, ana, 2, SECRET)
    dump = raw_database(rt)
    assert b"reflections" in dump  # the dump or file is really the database
    for fragment in (SECRET, "afraid to say so", "night shifts"):
        assert fragment.encode() not in dump
    # ...and the writer still reads it back.
    client = make_app(rt, Clock(NOW)).test_client()
    page = client.get(path(rt, links.REFLECT, ana, 2)).get_data(as_text=True)
    assert SECRET in page


def test_a_new_key_put_first_opens_old_text_and_rekey_reseals_everything_under_it(
    rt: Runtime, ana: int
) -> None:
    write_through_the_page(rt, ana, 1, "Under the old key.")
    write_through_the_page(rt, ana, 2, "Also under the old key.")
    fresh = new_key()
    both = runtime_with(rt, reflections_key=f"{fresh},{REFLECTIONS_KEY}")
    result = run_cli(both.settings, "reflections", "rekey")
    assert result.exit_code == 0, result.output
    assert "2 reflections sealed again under the first key" in result.output
    only_new = runtime_with(rt, reflections_key=fresh)
    with transaction(only_new.sessions) as session:
        reflections.check_key(session, only_new.reflection_cipher)
        texts = [
            only_new.reflection_cipher.open(sealed)
            for sealed in session.scalars(select(Reflection.sealed_body).order_by(Reflection.day))
        ]
    assert texts == ["Under the old key.", "Also under the old key."]
    only_new.close()
    both.close()


@pytest.mark.parametrize(
    "key", [pytest.param(None, id="embedded-key-file-lost"), pytest.param("new", id="wrong-key")]
)
def test_a_key_that_cannot_open_the_stored_reflections_stops_the_pages_at_start(
    rt: Runtime, ana: int, key: str | None, tmp_path: Path
) -> None:
    write_through_the_page(rt, ana, 1, SECRET)
    other = runtime_with(
        rt, reflections_key=new_key() if key else "", var_dir=str(tmp_path / "new-var")
    )
    with pytest.raises(WrongReflectionsKey, match="setting reflections_key"):
        create_app(other)
    result = run_cli(other.settings, "init")
    assert result.exit_code == 1
    # With PostgreSQL there is no key file to lose: a missing key is refused as a setting.
    on_postgres = "postgresql" in rt.settings.database_url
    refused = "required with PostgreSQL" if key is None and on_postgres else None
    assert result.output.startswith(
        f"Error: setting reflections_key: {refused or 'the key(s) given do not'}"
    )
    assert "Traceback" not in result.output
    other.close()


def test_export_opens_the_text_and_writes_who_ran_it_in_the_operator_log(
    rt: Runtime, ana: int, tmp_path: Path
) -> None:
    write_through_the_page(rt, ana, 1, SECRET)
    out = tmp_path / "out.csv"
    result = run_cli(rt.settings, "reflections", "export", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert SECRET in out.read_text(encoding="utf-8")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    log = Path(rt.settings.var_dir) / "operator.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    (line,) = log.read_text(encoding="utf-8").splitlines()
    stamp, who, action = line.split(" ", 2)
    assert dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")) <= dt.datetime.now(dt.UTC)
    assert "@" in who
    assert action == f"reflections export: 1 reflections to {out.resolve()}"
    assert SECRET not in line


def test_plain_reflections_from_before_sealing_are_sealed_by_the_upgrade(
    rt: Runtime, ana: int
) -> None:
    db.downgrade(rt.engine, "b41c0faults1")  # the revision before sealing
    with rt.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO reflections (enrollment_id, day, prompt, body, created_at, "
                "updated_at) VALUES (:e, 1, 'Q?', :body, :now, :now)"
            ),
            {"e": ana, "body": SECRET, "now": NOW.replace(tzinfo=None)},
        )
    with pytest.raises(RuntimeError, match="run `dripcourse init`"):
        db.upgrade(rt.engine)  # no key handed over: refused, nothing left half-done
    db.upgrade(rt.engine, rt.reflection_cipher)
    assert SECRET.encode() not in raw_database(rt)
    with transaction(rt.sessions) as session:
        (found,) = session.scalars(select(Reflection))
        assert reflections.WrittenReflection.opened(found, rt.reflection_cipher).body == SECRET


def test_the_embedded_key_is_made_once_with_mode_0600_and_no_leftovers(tmp_path: Path) -> None:
    var = tmp_path / "var"
    keys: list[str] = []
    threads = [threading.Thread(target=lambda: keys.append(key_from_var(var))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keys)) == 1, "processes starting together agree on one key"
    assert key_from_var(var) == keys[0]
    assert os.listdir(var) == [KEY_FILE]
    assert stat.S_IMODE((var / KEY_FILE).stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {
                "DRIPCOURSE_DATABASE_URL": "postgresql+psycopg://u@db/x",
                "DRIPCOURSE_SECRET_KEY": "k" * 40,
            },
            "setting reflections_key: required with PostgreSQL",
        ),
        (
            {"DRIPCOURSE_REFLECTIONS_KEY": f"{REFLECTIONS_KEY},not-a-key"},
            "setting reflections_key: key 2 of 2 is not a key",
        ),
        (
            {"DRIPCOURSE_REFLECTIONS_RETENTION_DAYS": "-1"},
            "setting reflections_retention_days: must be 0",
        ),
    ],
    ids=["postgres-without-key", "malformed-second-key", "negative-retention"],
)
def test_reflection_settings_are_checked_at_start(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(environ=environ)


def test_a_key_given_in_the_settings_is_used_rather_than_one_in_var(tmp_path: Path) -> None:
    settings: Settings = make_settings(tmp_path)
    runtime = Runtime(settings)
    sealed = runtime.reflection_cipher.seal("x")
    assert not (Path(settings.var_dir) / KEY_FILE).exists()
    with_file_key = Runtime(dataclasses.replace(settings, reflections_key=""))
    with pytest.raises(WrongReflectionsKey):
        with_file_key.reflection_cipher.open(sealed)
    assert (Path(settings.var_dir) / KEY_FILE).exists()


def test_status_counts_reflections_without_opening_them(rt: Runtime, ana: int) -> None:
    write_through_the_page(rt, ana, 1, SECRET)
    locked_out = runtime_with(rt, reflections_key=new_key())
    result = run_cli(locked_out.settings, "status")
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    assert "reflected" in result.output
    locked_out.close()


def test_rekey_with_keys_that_cannot_open_the_rows_changes_nothing(rt: Runtime, ana: int) -> None:
    write_through_the_page(rt, ana, 1, SECRET)
    with transaction(rt.sessions) as session:
        before = list(session.scalars(select(Reflection.sealed_body)))
    stranger = runtime_with(rt, reflections_key=new_key())
    result = run_cli(stranger.settings, "reflections", "rekey")
    assert result.exit_code == 1
    assert result.output.startswith("Error: setting reflections_key: the key(s) given do not")
    with transaction(rt.sessions) as session:
        assert list(session.scalars(select(Reflection.sealed_body))) == before
    stranger.close()


def test_rekey_on_postgresql_keeps_an_edit_made_while_it_runs(
    tmp_path: Path, postgres_url: str
) -> None:
    """rekey read a batch, resealed it and wrote it back by id: a reflection saved on its page
    in between (PostgreSQL lets that commit while rekey's transaction runs) got its old text
    back."""
    rt = Runtime(make_settings(tmp_path, database_url=postgres_url))
    ana = enroll(rt, "ana@example.org")
    send_days(rt, 3)
    write_through_the_page(rt, ana, 1, "Before the edit.")
    write_through_the_page(rt, ana, 2, "Day 2, left alone.")
    fresh = new_key()
    both = runtime_with(rt, reflections_key=f"{fresh},{REFLECTIONS_KEY}")

    class EditedMeanwhile:
        """The key, with the subscriber saving an edit just after rekey read the rows."""

        edited = False

        def reseal(self, sealed: str) -> str:
            if not self.edited:
                self.edited = True
                write_through_the_page(rt, ana, 1, "Edited while rekey ran.")
            return both.reflection_cipher.reseal(sealed)

    with transaction(both.sessions) as session:
        assert reflections.rekey(session, EditedMeanwhile()) == 2  # type: ignore[arg-type]
    only_new = runtime_with(rt, reflections_key=fresh)
    with only_new.sessions() as session:
        texts = [
            only_new.reflection_cipher.open(sealed)
            for sealed in session.scalars(select(Reflection.sealed_body).order_by(Reflection.day))
        ]
    assert texts == ["Edited while rekey ran.", "Day 2, left alone."]
    for each in (only_new, both, rt):
        each.close()
