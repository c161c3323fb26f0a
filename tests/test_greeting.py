"""Lessons greet people the way they would be addressed, whatever shape their name comes in."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from freezegun import freeze_time
from sqlalchemy import select

from dripcourse.cli import cli
from dripcourse.courses.greeting import check_greeting, derive_greeting, given_name, greeting_for
from dripcourse.courses.render import Personal
from dripcourse.errors import InputError
from dripcourse.models import Subscriber
from dripcourse.runtime import Runtime
from dripcourse.settings import Settings
from tests.workers import settings_env

FALLBACK = "colleague"


@pytest.mark.parametrize(
    ("name", "greeting"),
    [
        ("Dr. Amara Okafor", "Dr. Okafor"),
        ("Dr Amara Okafor", "Dr. Okafor"),
        ("DR. AMARA OKAFOR", "Dr. Okafor"),
        ("dr. amara okafor", "Dr. Okafor"),
        ("Prof. Zoë Ñúñez-García", "Prof. Ñúñez-García"),
        ("Prof Dr. Hans Müller", "Prof. Müller"),
        ("Mr. Tomas Lindqvist", "Mr. Lindqvist"),
        ("Ms Priya Raman", "Ms. Raman"),
        ("Mrs. Grace Whitfield", "Mrs. Whitfield"),
        ("Dr. Jan van der Berg", "Dr. van der Berg"),
        ("Dr. Amara", "Dr. Amara"),
        ("Okafor, Amara", "Amara"),
        ("van der Berg, Jan", "Jan"),
        ("Okafor, Dr. Amara", "Dr. Okafor"),
        ("Amara Okafor", "Amara"),
        ("Amara Okafor, MD", "Amara"),
        ("Amara Okafor MD", "Amara"),
        ("amara okafor", "Amara"),
        ("Amara", "Amara"),
        ("Łukasz Żółć-Grzegorzewski", "Łukasz"),
        ("Mere   Tane", "Mere"),
        ("王小明", "王小明"),
        ("A. Okafor", "A. Okafor"),
        ("Sir Tomas Lindqvist", "Sir Tomas"),
        ("Sister Mary Ellen", "Sister Mary Ellen"),
        ("Sr. Anne Marie", "Sr. Anne Marie"),
        ("Father John Okafor", "Father John Okafor"),
        ("Dr. Ramesh K.C.", "Dr. K.C."),
        ("", FALLBACK),
        ("   ", FALLBACK),
        ("Dr.", FALLBACK),
        ("---", FALLBACK),
    ],
)
def test_greeting_is_derived_from_the_name_as_written(name: str, greeting: str) -> None:
    assert derive_greeting(name, FALLBACK) == greeting


@pytest.mark.parametrize(
    ("name", "given"),
    [("Dr. Amara Okafor", "Amara"), ("Okafor, Amara", "Amara"), ("", ""), ("A. Okafor", "")],
)
def test_first_name_is_the_given_name_never_a_title(name: str, given: str) -> None:
    assert given_name(name) == given


def test_a_greeting_set_by_hand_wins_over_the_name() -> None:
    assert greeting_for("Dr. Amara Okafor", "Amara", FALLBACK) == "Amara"
    assert greeting_for("Dr. Amara Okafor", "  ", FALLBACK) == "Dr. Okafor"
    assert greeting_for("", None, FALLBACK) == FALLBACK


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("Dr.\nOkafor", "line breaks"),
        ("Dr.\tOkafor", "line breaks"),
        ("x" * 101, "at most 100"),
        ("<b>Amara</b>", "may not hold"),
    ],
)
def test_a_bad_greeting_is_refused_saying_why(text: str, problem: str) -> None:
    with pytest.raises(InputError, match=problem):
        check_greeting(text)


@pytest.fixture
def run(settings: Settings):  # type: ignore[no-untyped-def]
    env = settings_env(settings)

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)

    invoke("init")
    invoke("cohort", "create", "c", "--course", "white-coat", "--start", "now")
    return invoke


def tick_in_the_morning(run) -> Result:  # type: ignore[no-untyped-def]
    """``tick --inline`` at 09:00 UTC tomorrow, after the cohort's "now" start: these readers
    (in UTC and London) get their lesson in the morning, so it opens "Good morning" whatever
    the hour the tests run at (docs/courses.md, Salutation)."""
    tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    with freeze_time(dt.datetime.combine(tomorrow, dt.time(9), tzinfo=dt.UTC)):
        return run("tick", "--inline")


def _sent_texts(outbox: Path) -> dict[str, str]:
    texts = {}
    for path in outbox.glob("*.eml"):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        texts[str(msg["To"])] = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    return texts


def test_sent_lessons_greet_by_title_given_greeting_or_the_course_fallback(
    run, tmp_path: Path, outbox: Path
) -> None:  # type: ignore[no-untyped-def]
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
    assert "4 sent" in tick_in_the_morning(run).output

    greetings = {
        to: re.search(r"Good morning, [^\r\n]*", text).group()  # type: ignore[union-attr]
        for to, text in _sent_texts(outbox).items()
    }
    assert greetings == {
        '"Dr. Amara Okafor" <amara@example.org>': "Good morning, Dr. Okafor.",
        '"Okafor, Amara" <okafor@example.org>': "Good morning, Amara.",
        "Tomas Lindqvist <tomas@example.org>": "Good morning, Dr. Tom.",
        "nobody@example.org": "Good morning, colleague.",
    }


def test_set_greeting_changes_what_the_next_lesson_says(run, rt: Runtime, outbox: Path) -> None:  # type: ignore[no-untyped-def]
    run(
        "enroll",
        "amara@example.org",
        "--cohort",
        "c",
        "--name",
        "Dr. Amara Okafor",
        "--timezone",
        "Europe/London",
    )
    changed = run("set-greeting", "AMARA@example.org", "Amara")
    assert changed.exit_code == 0, changed.output
    assert "lessons now say 'Amara' (set)" in changed.output
    with rt.sessions() as session:
        assert session.scalar(select(Subscriber.greeting)) == "Amara"
    tick_in_the_morning(run)
    (text,) = _sent_texts(outbox).values()
    assert "Good morning, Amara." in text

    back = run("set-greeting", "amara@example.org", "")
    assert "lessons now say 'Dr. Okafor' (derived from the name)" in back.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("set-greeting", "who@example.org", "Hi"), "no subscriber with the address"),
        (("set-greeting", "amara@example.org", "a\nb"), "greeting: "),
    ],
)
def test_set_greeting_mistakes_are_one_line(run, args: tuple[str, ...], message: str) -> None:  # type: ignore[no-untyped-def]
    run("enroll", "amara@example.org", "--cohort", "c", "--timezone", "Europe/London")
    result = run(*args)
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and message in result.output
    assert "Traceback" not in result.output


def test_a_bad_greeting_in_the_csv_names_the_line(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    csv = tmp_path / "people.csv"
    csv.write_text('email,name,greeting\na@example.org,A,"<b>A</b>"\n', encoding="utf-8")
    result = run("import", str(csv), "--cohort", "c")
    assert result.exit_code == 1
    assert "people.csv:2: greeting: '<b>A</b>' may not hold" in result.output


def test_the_default_preview_greets_the_sample_reader_by_title(run) -> None:  # type: ignore[no-untyped-def]
    text = run("preview", "white-coat", "1", "--text").output
    assert "Good morning, Dr. Reader." in text
    assert "Dr.." not in text


@pytest.mark.parametrize(
    ("name", "greeting", "first_name"),
    [
        ("Dr. Amara Okafor", "", "Amara"),  # was "Dr."
        ("Okafor, Amara", "", "Amara"),  # was "Okafor,"
        ("Dr.", "colleague", "colleague"),
        ("", "", "there"),
    ],
)
def test_first_name_in_a_lesson_is_never_a_title(name: str, greeting: str, first_name: str) -> None:
    links = dict.fromkeys(("reflect", "journal", "pause", "unsubscribe"), "https://x.example/")
    who = Personal(email="a@example.org", name=name, greeting=greeting, **links)
    assert who.value("first_name") == first_name


def test_a_greeting_ending_in_a_full_stop_gets_no_second_one(
    run, tmp_path: Path, outbox: Path
) -> None:  # type: ignore[no-untyped-def]
    csv = tmp_path / "people.csv"
    csv.write_text(
        "email,name,timezone,greeting\nramesh@example.org,Dr. Ramesh K.C.,UTC,\n"
        "ana@example.org,Ana,UTC,Dr. A.\n",
        encoding="utf-8",
    )
    assert run("import", str(csv), "--cohort", "c").exit_code == 0
    assert "2 sent" in tick_in_the_morning(run).output
    for text in _sent_texts(outbox).values():
        opening = re.search(r"Good morning, [^\r\n]*", text).group()  # type: ignore[union-attr]
        assert opening in ("Good morning, Dr. K.C.", "Good morning, Dr. A."), opening


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "import"])
def test_the_import_summary_lists_every_unusual_greeting_before_anyone_is_mailed(
    run, tmp_path: Path, dry_run: bool
) -> None:  # type: ignore[no-untyped-def]
    csv = tmp_path / "people.csv"
    csv.write_text(
        "email,name,timezone,greeting\n"
        "amara@example.org,Dr. Amara Okafor,UTC,\n"
        "ramesh@example.org,Dr. Ramesh K.C.,UTC,\n"
        "mary@example.org,Sister Mary Ellen,UTC,\n"
        "nobody@example.org,,UTC,\n"
        "set@example.org,Dr. X. Y.,UTC,Dr. Yates\n",
        encoding="utf-8",
    )
    result = run("import", str(csv), "--cohort", "c", *(["--dry-run"] if dry_run else []))
    assert result.exit_code == 0, result.output
    listed = result.output.split("greeting(s) to look at before Day 1", 1)[1].splitlines()[1:]
    assert listed == [
        "  line 3: ramesh@example.org  'Dr. K.C.' from 'Dr. Ramesh K.C.': it holds initials",
        "  line 4: mary@example.org  'Sister Mary Ellen' from 'Sister Mary Ellen': the title "
        "'Sister' is kept as typed",
        "  line 5: nobody@example.org  'colleague' from '': the name gives no greeting: the "
        "course's fallback",
    ]
    assert "3 greeting(s) to look at" in result.output


def test_show_says_how_the_person_is_greeted(run) -> None:  # type: ignore[no-untyped-def]
    run(
        "enroll",
        "ramesh@example.org",
        "--cohort",
        "c",
        "--name",
        "Dr. Ramesh K.C.",
        "--timezone",
        "UTC",
    )
    shown = run("show", "ramesh@example.org").output
    assert "  greeted as: 'Dr. K.C.' (from the name; look at it: it holds initials)" in shown
    run("set-greeting", "ramesh@example.org", "Dr. KC")
    shown = run("show", "ramesh@example.org").output
    assert "  greeted as: 'Dr. KC' (set by hand;" in shown
