"""The cohort circle's notes, reports and moderation, its on/off setting, and its keys."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from dripcourse import links
from dripcourse.db import transaction
from dripcourse.models import CircleNote, CirclePost, Cohort
from dripcourse.reader import circle, circle_notes
from dripcourse.runtime import Runtime
from tests import circle_support
from tests.circle_support import (
    NOW,
    act,
    lesson_page,
    post_id,
    share,
)
from tests.test_web_support import (
    DAY,
    Clock,
    load,
    path,
    post_form,
    run_cli,
)

# The fixtures clock, client and people (tests/circle_support.py).
clock_fixture = circle_support.clock_fixture
client_fixture = circle_support.client_fixture
people_fixture = circle_support.people_fixture


# -- notes -----------------------------------------------------------------------------


def test_a_member_leaves_a_note_the_author_sees_in_the_journal_and_can_delete_it(
    rt: Runtime, client: FlaskClient, people: dict[str, int]
) -> None:
    share(client, rt, people["ana"], 1, "A hard week.")
    post = str(post_id(rt, people["ana"], 1))
    response = act(
        client, rt, people["ben"], 1, action="note", post=post, text="You are not alone."
    )
    assert "said=noted" in response.location
    journal = client.get(path(rt, links.JOURNAL, people["ana"])).get_data(as_text=True)
    assert "You are not alone." in journal and "left a note" in journal
    assert "ben@example.org" not in journal
    with transaction(rt.sessions) as session:
        note = session.scalar(select(CircleNote))
        assert note is not None and "alone" not in note.sealed_body
        note_id = str(note.id)
    # Only its author can delete it.
    assert (
        "said=gone"
        in act(client, rt, people["ana"], 1, action="delete-note", note=note_id).location
    )
    assert (
        "said=note-deleted"
        in act(client, rt, people["ben"], 1, action="delete-note", note=note_id).location
    )
    assert "You are not alone." not in lesson_page(client, rt, people["ana"], 1)


def test_a_note_over_the_limit_or_empty_is_refused(
    rt: Runtime, client: FlaskClient, people: dict[str, int]
) -> None:
    share(client, rt, people["ana"], 1, "Notes, please.")
    post = str(post_id(rt, people["ana"], 1))
    long = "x" * (circle_notes.NOTE_MAX_CHARS + 1)
    assert (
        "said=too-long"
        in act(client, rt, people["ben"], 1, action="note", post=post, text=long).location
    )
    assert (
        "said=empty"
        in act(client, rt, people["ben"], 1, action="note", post=post, text=" \u200b ").location
    )
    exact = "y" * circle_notes.NOTE_MAX_CHARS
    assert (
        "said=noted"
        in act(client, rt, people["ben"], 1, action="note", post=post, text=exact).location
    )


def test_notes_and_reports_are_rate_limited(
    rt: Runtime, client: FlaskClient, clock: Clock, people: dict[str, int]
) -> None:
    share(client, rt, people["ana"], 1, "Rate me.")
    post = str(post_id(rt, people["ana"], 1))
    for _ in range(circle_notes.NOTES_PER_DAY):
        assert (
            "said=noted"
            in act(client, rt, people["ben"], 1, action="note", post=post, text="again").location
        )
    assert (
        "said=too-many"
        in act(client, rt, people["ben"], 1, action="note", post=post, text="once more").location
    )
    clock.now += DAY + dt.timedelta(minutes=1)
    assert (
        "said=noted"
        in act(client, rt, people["ben"], 1, action="note", post=post, text="a day later").location
    )
    with transaction(rt.sessions) as session:
        ben = session.get(type(load(rt, people["ben"])), people["ben"])
        course = rt.catalog.course("white-coat")
        notes = list(session.scalars(select(CircleNote.id)))
        for note_id in notes[: circle_notes.REPORTS_PER_DAY]:
            assert circle_notes.report(
                session, course, ben, 1, reason="spam", now=clock.now, note_id=note_id
            )
        with pytest.raises(circle.CircleRefused):
            circle_notes.report(
                session, course, ben, 1, reason="spam", now=clock.now, note_id=notes[-1]
            )


# -- moderation ------------------------------------------------------------------------


def test_a_report_reaches_the_moderators_who_hide_and_restore(
    rt: Runtime, client: FlaskClient, people: dict[str, int]
) -> None:
    share(client, rt, people["ana"], 1, "Something reported.")
    post = str(post_id(rt, people["ana"], 1))
    assert (
        "said=reported"
        in act(client, rt, people["ben"], 1, action="report", post=post, reason="hurtful").location
    )
    listed = run_cli(rt.settings, "circle", "list", "--cohort", "spring", "--reported")
    assert listed.exit_code == 0, listed.output
    assert f"r{post}" in listed.output and "Something reported." in listed.output
    assert "1 hurtful" in listed.output
    hidden = run_cli(rt.settings, "circle", "hide", f"r{post}", "--reason", "Names a patient")
    assert hidden.exit_code == 0, hidden.output
    assert "Something reported." not in lesson_page(client, rt, people["ben"], 1)
    own = lesson_page(client, rt, people["ana"], 1)
    assert "Something reported." in own and "Names a patient" in own
    reflect = client.get(path(rt, links.REFLECT, people["ana"], 1)).get_data(as_text=True)
    assert "A moderator has hidden this reflection" in reflect
    assert run_cli(rt.settings, "circle", "restore", f"r{post}").exit_code == 0
    assert "Something reported." in lesson_page(client, rt, people["ben"], 1)
    log = (rt.settings.path(rt.settings.var_dir) / "operator.log").read_text()
    assert "circle list: cohort 'spring', 1 item(s) (reported only)" in log
    assert f"circle hide: r{post}" in log and f"circle restore: r{post}" in log


def test_a_bad_item_or_empty_reason_is_one_error_line(rt: Runtime, people: dict[str, int]) -> None:
    for args in (
        ["hide", "x1", "--reason", "r"],
        ["hide", "r999", "--reason", "r"],
        ["restore", "n5"],
        ["list", "--cohort", "nobody"],
    ):
        result = run_cli(rt.settings, "circle", *args)
        assert result.exit_code == 1 and result.output.startswith("Error:"), result.output
        assert "Traceback" not in result.output


# -- the setting -----------------------------------------------------------------------


def test_circle_off_hides_everything_and_on_brings_it_back(
    rt: Runtime, client: FlaskClient, people: dict[str, int]
) -> None:
    share(client, rt, people["ana"], 1, "Still here later.")
    assert run_cli(rt.settings, "circle", "off", "--cohort", "spring").exit_code == 0
    assert 'id="circle"' not in lesson_page(client, rt, people["ben"], 1)
    reflect = client.get(path(rt, links.REFLECT, people["ana"], 1)).get_data(as_text=True)
    assert "Share with my cohort" not in reflect
    # Saving while it is off withdraws nothing.
    post_form(client, path(rt, links.REFLECT, people["ana"], 1), reflection="Still here later.")
    assert run_cli(rt.settings, "circle", "on", "--cohort", "spring").exit_code == 0
    assert "Still here later." in lesson_page(client, rt, people["ben"], 1)


def test_a_cohort_is_created_with_the_circle_on_or_off(rt: Runtime) -> None:
    made = run_cli(
        rt.settings,
        "cohort",
        "create",
        "quiet",
        "--course",
        "white-coat",
        "--start",
        "now",
        "--circle",
        "off",
    )
    assert made.exit_code == 0, made.output
    with transaction(rt.sessions) as session:
        assert session.scalar(select(Cohort.circle).where(Cohort.name == "quiet")) is False


def test_a_course_without_a_circle_refuses_to_turn_it_on(rt: Runtime, tmp_path: Path) -> None:
    import shutil

    from tests.conftest import EMAILS, make_settings

    emails = tmp_path / "emails"
    shutil.copytree(EMAILS, emails)
    toml = emails / "white-coat" / "course.toml"
    toml.write_text(toml.read_text().replace("circle = true", ""))
    settings = make_settings(
        tmp_path, database_url=rt.settings.database_url, emails_dir=str(emails)
    )
    result = run_cli(
        settings,
        "cohort",
        "create",
        "x",
        "--course",
        "white-coat",
        "--start",
        "now",
        "--circle",
        "on",
    )
    assert result.exit_code == 1 and "has no circle" in result.output


def test_course_toml_circle_must_be_true_or_false(tmp_path: Path) -> None:
    import shutil

    from dripcourse.courses.course_folder import read_course
    from tests.conftest import EMAILS

    shutil.copytree(EMAILS, tmp_path / "emails")
    toml = tmp_path / "emails" / "white-coat" / "course.toml"
    toml.write_text(toml.read_text().replace("circle = true", 'circle = "yes"'))
    found = read_course(tmp_path / "emails", "white-coat").errors
    assert [f.message for f in found] == ["circle must be true or false"]
    assert found[0].line == toml.read_text().splitlines().index('circle = "yes"') + 1


def test_rekey_seals_the_circle_again_under_the_new_key(
    rt: Runtime, client: FlaskClient, people: dict[str, int], tmp_path: Path
) -> None:
    from dripcourse.encryption import ReflectionCipher, new_key
    from tests.conftest import REFLECTIONS_KEY, make_settings

    share(client, rt, people["ana"], 1, "Resealed words.")
    act(
        client,
        rt,
        people["ben"],
        1,
        action="note",
        post=str(post_id(rt, people["ana"], 1)),
        text="A resealed note.",
    )
    fresh = new_key()
    settings = make_settings(
        tmp_path,
        database_url=rt.settings.database_url,
        reflections_key=f"{fresh},{REFLECTIONS_KEY}",
    )
    result = run_cli(settings, "reflections", "rekey")
    assert result.exit_code == 0 and "2 shared reflections and notes" in result.output
    only_new = ReflectionCipher([fresh])
    with transaction(rt.sessions) as session:
        assert only_new.open(session.scalar(select(CirclePost.sealed_body))) == "Resealed words."
        assert only_new.open(session.scalar(select(CircleNote.sealed_body))) == "A resealed note."


def test_retention_deletes_the_shared_copy_with_its_reflection(
    rt: Runtime, client: FlaskClient, people: dict[str, int]
) -> None:
    from dripcourse.reader import privacy

    share(client, rt, people["ana"], 1, "Old words.")
    act(
        client,
        rt,
        people["ben"],
        1,
        action="note",
        post=str(post_id(rt, people["ana"], 1)),
        text="Old note.",
    )
    with transaction(rt.sessions) as session:
        assert privacy.delete_old_reflections(session, 30, NOW + 31 * DAY) == 1
    with transaction(rt.sessions) as session:
        assert session.scalar(select(CirclePost)) is None
        assert session.scalar(select(CircleNote)) is None
