"""What a name gives is worked out when the name is written and kept on the row; the send path
reads it and parses a name only where nothing is kept yet."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import MetaData, event, select, update

from dripcourse.cli import cli
from dripcourse.courses import greeting
from dripcourse.courses.render import Personal
from dripcourse.db import transaction
from dripcourse.models import Subscriber
from dripcourse.runtime import Runtime
from dripcourse.settings import Settings
from tests.test_greeting import _sent_texts, tick_in_the_morning
from tests.workers import settings_env

LINKS = dict.fromkeys(("reflect", "journal", "pause", "unsubscribe"), "https://x.example/")


@pytest.fixture
def run(settings: Settings):  # type: ignore[no-untyped-def]
    """The CLI, set up with a cohort "c" of white-coat started now (as in test_greeting)."""
    env = settings_env(settings)

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)

    invoke("init")
    invoke("cohort", "create", "c", "--course", "white-coat", "--start", "now")
    return invoke


def _enroll(run, name: str, email: str = "amara@example.org", *more: str) -> Result:  # type: ignore[no-untyped-def]
    args = ("enroll", email, "--cohort", "c", "--name", name, "--timezone", "UTC", *more)
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


def _kept(rt: Runtime) -> dict[str, tuple[str | None, str | None]]:
    with rt.sessions() as session:
        rows = session.execute(
            select(Subscriber.email, Subscriber.derived_greeting, Subscriber.derived_given_name)
        )
        return {email: (kept, given) for email, kept, given in rows}


def _no_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on, parsing a name fails the lesson (the caches, which might hide one, empty)."""

    def refuse(*_args: object) -> None:
        raise AssertionError("a name was parsed on the send path")

    greeting.greeting_from_name.cache_clear()
    greeting._parts.cache_clear()
    monkeypatch.setattr(greeting, "_parts", refuse)


def _opening(outbox: Path) -> str:
    (text,) = _sent_texts(outbox).values()
    return re.search(r"Good morning, [^\r\n]*", text).group()  # type: ignore[union-attr]


def test_enrolling_keeps_what_the_name_gives_on_the_row(run, rt: Runtime) -> None:  # type: ignore[no-untyped-def]
    _enroll(run, "Dr. Amara Okafor")
    _enroll(run, "", "nobody@example.org")
    assert _kept(rt) == {
        "amara@example.org": ("Dr. Okafor", "Amara"),
        "nobody@example.org": ("", ""),  # the name gives none: the course's fallback, at send
    }


def test_a_kept_greeting_is_what_the_lesson_says_and_no_name_is_parsed_to_send_it(
    run, rt: Runtime, outbox: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    _enroll(run, "Dr. Amara Okafor")
    with transaction(rt.sessions) as session:  # proof it is read, not parsed again
        session.execute(update(Subscriber).values(derived_greeting="Dr. Kept"))
    _no_parsing(monkeypatch)
    assert "1 sent" in tick_in_the_morning(run).output
    assert _opening(outbox) == "Good morning, Dr. Kept."


def test_a_row_with_nothing_kept_yet_is_greeted_from_its_name_as_before(
    run, rt: Runtime, outbox: Path
) -> None:  # type: ignore[no-untyped-def]
    _enroll(run, "Dr. Amara Okafor")
    with transaction(rt.sessions) as session:  # as rows written before the columns were
        session.execute(update(Subscriber).values(derived_greeting=None, derived_given_name=None))
    assert "1 sent" in tick_in_the_morning(run).output
    assert _opening(outbox) == "Good morning, Dr. Okafor."


@pytest.mark.parametrize(
    ("name", "kept", "greeting", "first_name"),
    [
        ("Dr. Amara Okafor", None, "Dr. Okafor", "Amara"),
        ("Dr. Amara Okafor", ("Dr. Okafor", "Amara"), "Dr. Okafor", "Amara"),
        ("Dr.", None, "colleague", "colleague"),
        ("Dr.", ("", ""), "colleague", "colleague"),  # "" is "none": the course's fallback
        ("A. Okafor", ("A. Okafor", ""), "A. Okafor", "A. Okafor"),
    ],
)
def test_a_lesson_shows_the_same_whether_the_row_kept_it_or_not(
    name: str, kept: tuple[str, str] | None, greeting: str, first_name: str
) -> None:
    derived = dict(
        zip(("derived_greeting", "derived_given_name"), kept or (None, None), strict=True)
    )
    who = Personal(
        email="a@example.org", name=name, greeting_fallback="colleague", **derived, **LINKS
    )
    assert (who.value("greeting"), who.value("first_name")) == (greeting, first_name)


def test_a_greeting_set_by_hand_still_wins_over_the_kept_one() -> None:
    who = Personal(
        email="a@example.org",
        name="Dr. Amara Okafor",
        greeting="Amara",
        derived_greeting="Dr. Okafor",
        derived_given_name="Amara",
        **LINKS,
    )
    assert who.value("greeting") == "Amara"


def test_the_import_keeps_what_each_name_gives(run, rt: Runtime, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    csv = tmp_path / "people.csv"
    csv.write_text(
        "email,name,timezone,greeting\n"
        "amara@example.org,Dr. Amara Okafor,UTC,\n"
        'okafor@example.org,"Okafor, Amara",UTC,\n'
        "tomas@example.org,Tomas Lindqvist,UTC,Dr. Tom\n"
        "nobody@example.org,,UTC,\n",
        encoding="utf-8",
    )
    assert run("import", str(csv), "--cohort", "c").exit_code == 0
    assert _kept(rt) == {
        "amara@example.org": ("Dr. Okafor", "Amara"),
        "okafor@example.org": ("Amara", "Amara"),
        "tomas@example.org": ("Tomas", "Tomas"),  # the hand-set "Dr. Tom" wins when sending
        "nobody@example.org": ("", ""),
    }


def test_a_new_name_gives_a_new_greeting(run, rt: Runtime) -> None:  # type: ignore[no-untyped-def]
    _enroll(run, "Dr. Amara Okafor")
    run("cohort", "create", "d", "--course", "white-coat", "--start", "now")
    renamed = ("--name", "Prof. Amara Eze", "--timezone", "UTC", "--update")
    changed = run("enroll", "amara@example.org", "--cohort", "d", *renamed)
    assert changed.exit_code == 0, changed.output
    assert _kept(rt) == {"amara@example.org": ("Prof. Eze", "Amara")}


def test_a_name_written_through_the_orm_anywhere_refills_what_it_gives(rt: Runtime) -> None:
    with transaction(rt.sessions) as session:
        person = Subscriber(email="a@example.org", name="Dr. Amara Okafor", timezone="UTC")
        assert (person.derived_greeting, person.derived_given_name) == ("Dr. Okafor", "Amara")
        person.created_at = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
        session.add(person)
        session.flush()
        person.name = "okafor, ben"  # a loaded row, renamed: the UPDATE carries them too
    assert _kept(rt) == {"a@example.org": ("Ben", "Ben")}


def test_where_the_greeting_rules_are_not_loaded_a_new_name_leaves_nothing_stale() -> None:
    person = Subscriber(email="a@example.org", name="Dr. Amara Okafor", timezone="UTC")
    event.remove(Subscriber.name, "set", greeting._keep_what_the_name_gives)
    try:
        person.name = "Ben Eze"
        assert (person.derived_greeting, person.derived_given_name) == (None, None)
    finally:
        event.listen(Subscriber.name, "set", greeting._keep_what_the_name_gives)


def test_forget_leaves_nothing_the_name_gave(run, rt: Runtime) -> None:  # type: ignore[no-untyped-def]
    _enroll(run, "Dr. Zephyrine Quoll")
    _enroll(run, "Ben Eze", "ben@example.org")
    assert _kept(rt)["amara@example.org"] == ("Dr. Quoll", "Zephyrine")
    assert run("forget", "--yes", "amara@example.org").exit_code == 0
    meta = MetaData()
    with rt.engine.connect() as conn:
        meta.reflect(conn)
        for table in meta.sorted_tables:
            for row in conn.execute(select(table)):
                text = " ".join(str(v) for v in row).casefold()
                assert "quoll" not in text and "zephyrine" not in text, table.name
    assert _kept(rt) == {"ben@example.org": ("Ben", "Ben")}
