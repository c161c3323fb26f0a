"""Their data in their hands: deleting reflections, deleting everything, retention, the
privacy page."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import func, select

from dripcourse import links
from dripcourse.cli import cli
from dripcourse.db import transaction
from dripcourse.errors import InputError
from dripcourse.models import (
    Cohort,
    Delivery,
    Enrollment,
    LessonVersion,
    Reflection,
    Subscriber,
    Suppression,
)
from dripcourse.people import enrollment
from dripcourse.reader import privacy, reflections
from dripcourse.runtime import Runtime
from dripcourse.sending import batch as sending
from dripcourse.sending import claim as delivery
from tests.conftest import make_settings
from tests.test_web_support import (
    DAY,
    DAY_1_UTC,
    Clock,
    enroll,
    form_token,
    load,
    make_app,
    path,
    post_form,
    run_cli,
    send_days,
    tick,
)
from tests.workers import settings_env

NOW = DAY_1_UTC + 2 * DAY + dt.timedelta(hours=5)


@pytest.fixture
def rt(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    runtime = Runtime(make_settings(tmp_path, database_url=database_url))
    yield runtime
    runtime.close()


@pytest.fixture
def client(rt: Runtime) -> FlaskClient:
    return make_app(rt, Clock(NOW)).test_client()


@pytest.fixture
def ana(rt: Runtime) -> int:
    """Enrolled in two cohorts, has had Days 1-3 of each and written two reflections."""
    enrollment_id = enroll(rt, "ana@example.org")
    enroll(rt, "ana@example.org", cohort="autumn")
    enroll(rt, "ben@example.org")
    send_days(rt, 3)
    for day in (1, 2):
        write(rt, enrollment_id, day, f"Ana's day {day}.")
    return enrollment_id


def write(rt: Runtime, enrollment_id: int, day: int, text: str) -> None:
    with transaction(rt.sessions) as session:
        found = session.get(Enrollment, enrollment_id)
        assert found is not None
        reflections.save_reflection(
            session, found, day, "Q?", text, cipher=rt.reflection_cipher, max_chars=999, now=NOW
        )


def counts(rt: Runtime, email: str) -> dict[str, int]:
    """How many rows of each kind still mention this person."""
    with transaction(rt.sessions) as session:
        subscriber_ids = select(Subscriber.id).where(Subscriber.email == email)
        enrollment_ids = select(Enrollment.id).where(Enrollment.subscriber_id.in_(subscriber_ids))

        def n(query) -> int:  # type: ignore[no-untyped-def]
            return session.scalar(select(func.count()).select_from(query.subquery())) or 0

        return {
            "subscribers": n(select(Subscriber.id).where(Subscriber.email == email)),
            "enrollments": n(select(Enrollment.id).where(Enrollment.id.in_(enrollment_ids))),
            "deliveries": n(select(Delivery.id).where(Delivery.enrollment_id.in_(enrollment_ids))),
            "reflections": n(
                select(Reflection.id).where(Reflection.enrollment_id.in_(enrollment_ids))
            ),
            "suppressions": n(select(Suppression.id).where(Suppression.email == email)),
        }


NOTHING_BUT_A_SUPPRESSION = {
    "subscribers": 0,
    "enrollments": 0,
    "deliveries": 0,
    "reflections": 0,
    "suppressions": 1,
}


# -- forgetting: the core --------------------------------------------------------------------


def test_forgetting_keeps_only_a_suppression_and_leaves_everyone_else_alone(
    rt: Runtime, ana: int
) -> None:
    ben_before = counts(rt, "ben@example.org")
    with transaction(rt.sessions) as session:
        forgotten = privacy.forget_subscriber(
            session, privacy.find_subscriber(session, "Ana@Example.org"), NOW
        )
    assert forgotten == privacy.Forgotten(enrollments=2, deliveries=6, reflections=2)
    assert counts(rt, "ana@example.org") == NOTHING_BUT_A_SUPPRESSION
    assert counts(rt, "ben@example.org") == ben_before
    with transaction(rt.sessions) as session:
        assert session.scalar(select(func.count()).select_from(Cohort)) == 2
        assert session.scalar(select(func.count()).select_from(LessonVersion)) >= 3
    with pytest.raises(InputError, match="suppressed"):
        enroll(rt, "ana@example.org", cohort="winter")


def test_a_lesson_already_queued_for_a_forgotten_person_is_never_sent(
    rt: Runtime, ana: int
) -> None:
    queued: list[int] = []
    delivery.tick(rt, DAY_1_UTC + 3 * DAY, queued.extend)  # Day 4 claimed, not yet sent
    assert queued
    with transaction(rt.sessions) as session:
        privacy.forget_subscriber(session, privacy.find_subscriber(session, "ana@example.org"), NOW)
    outbox = Path(rt.settings.mail_url.removeprefix("file://"))
    before = set(outbox.glob("*.eml"))
    outcomes = [sending.send_delivery(rt, i, DAY_1_UTC + 3 * DAY) for i in queued]
    assert outcomes.count(sending.Outcome.SENT) == 1  # Ben's Day 4 only
    (new,) = set(outbox.glob("*.eml")) - before
    assert b"ben@example.org" in new.read_bytes()
    assert b"ana@example.org" not in new.read_bytes()


# -- the subscriber's buttons ------------------------------------------------------------


def test_the_journal_offers_both_deletions_and_the_privacy_page(
    rt: Runtime, client: FlaskClient, ana: int
) -> None:
    page = client.get(path(rt, links.JOURNAL, ana)).get_data(as_text=True)
    assert "Delete my reflections</a>" in page
    assert "Delete everything about me</a>" in page
    assert re.search(r'href="/j/[\w.-]+/privacy">What we keep', page)


@pytest.mark.parametrize("what", ["reflections", "everything"])
def test_opening_a_delete_page_only_asks_to_confirm(
    rt: Runtime, client: FlaskClient, ana: int, what: str
) -> None:
    before = counts(rt, "ana@example.org")
    page = client.get(path(rt, links.JOURNAL, ana) + f"/delete/{what}").get_data(as_text=True)
    assert '<form method="post"' in page and "Keep everything" in page
    assert "2 reflections" in page or "all 2 of your reflections" in page
    assert counts(rt, "ana@example.org") == before


@pytest.mark.parametrize("what", ["reflections", "everything"])
@pytest.mark.parametrize("method", ["HEAD", "OPTIONS", "PUT"])
def test_a_head_or_other_request_to_a_delete_page_deletes_nothing(
    rt: Runtime, client: FlaskClient, ana: int, what: str, method: str
) -> None:
    # Link scanners send HEAD; only the confirmation button's POST may delete.
    before = counts(rt, "ana@example.org")
    response = client.open(path(rt, links.JOURNAL, ana) + f"/delete/{what}", method=method)
    assert response.status_code == (200 if method == "HEAD" else 405)
    if method == "HEAD":
        assert response.get_data() == b""
    assert counts(rt, "ana@example.org") == before


def test_delete_my_reflections_deletes_every_reflection_and_the_lessons_carry_on(
    rt: Runtime, client: FlaskClient, ana: int
) -> None:
    write(rt, load_other_enrollment(rt, ana), 1, "Written in the other cohort.")
    url = path(rt, links.JOURNAL, ana) + "/delete/reflections"
    response = post_form(client, url)
    assert response.status_code == 200
    assert "Your reflections are deleted" in response.get_data(as_text=True)
    assert counts(rt, "ana@example.org")["reflections"] == 0
    assert load(rt, ana).status == "active"
    journal = client.get(path(rt, links.JOURNAL, ana)).get_data(as_text=True)
    assert "Ana&#39;s day" not in journal and "Ana's day" not in journal
    assert len(tick(rt, DAY_1_UTC + 3 * DAY)) == 3  # Day 4 for Ana, Ana (autumn) and Ben


def load_other_enrollment(rt: Runtime, enrollment_id: int) -> int:
    with transaction(rt.sessions) as session:
        found = session.get(Enrollment, enrollment_id)
        assert found is not None
        (other,) = [e.id for e in found.subscriber.enrollments if e.id != enrollment_id]
        return other


def test_delete_everything_leaves_a_suppression_and_old_links_say_no_longer_available(
    rt: Runtime, client: FlaskClient, ana: int
) -> None:
    old_links = [
        path(rt, links.REFLECT, ana, 1),
        path(rt, links.JOURNAL, ana),
        path(rt, links.PAUSE, ana),
        path(rt, links.UNSUBSCRIBE, ana),
        path(rt, links.LESSON, ana, 1),
        path(rt, links.JOURNAL, ana) + "/delete/everything",
    ]
    response = post_form(client, path(rt, links.JOURNAL, ana) + "/delete/everything")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "Everything about you is deleted" in page
    assert "do-not-mail list" in page
    assert counts(rt, "ana@example.org") == NOTHING_BUT_A_SUPPRESSION
    for url in old_links:
        gone = client.get(url)
        assert gone.status_code == 410, url
        text = gone.get_data(as_text=True)
        assert "No longer available" in text and "deleted" in text
    # A mail provider's one-click unsubscribe for the forgotten address changes nothing.
    one_click = client.post(old_links[3], data={"List-Unsubscribe": "One-Click"})
    assert one_click.status_code == 410


@pytest.mark.parametrize(
    ("headers", "token"),
    [({}, None), ({}, "forged"), ({"Sec-Fetch-Site": "cross-site"}, "ours")],
    ids=["no form token", "forged form token", "cross-site"],
)
@pytest.mark.parametrize("what", ["reflections", "everything"])
def test_a_delete_post_not_from_our_page_deletes_nothing(
    rt: Runtime,
    client: FlaskClient,
    ana: int,
    what: str,
    headers: dict[str, str],
    token: str | None,
) -> None:
    url = path(rt, links.JOURNAL, ana) + f"/delete/{what}"
    before = counts(rt, "ana@example.org")
    data = {}
    if token == "ours":
        data["form_token"] = form_token(client.get(url).get_data(as_text=True))
    elif token:
        data["form_token"] = token
    assert client.post(url, data=data, headers=headers).status_code == 403
    assert counts(rt, "ana@example.org") == before


def test_a_form_token_for_deleting_reflections_cannot_delete_everything(
    rt: Runtime, client: FlaskClient, ana: int
) -> None:
    base = path(rt, links.JOURNAL, ana) + "/delete/"
    token = form_token(client.get(base + "reflections").get_data(as_text=True))
    assert client.post(base + "everything", data={"form_token": token}).status_code == 403
    assert counts(rt, "ana@example.org")["subscribers"] == 1


# -- the operators' command --------------------------------------------------------------


def test_forget_command_asks_first_and_does_what_the_subscriber_button_does(
    rt: Runtime, ana: int
) -> None:
    runner = CliRunner()
    env = settings_env(rt.settings)
    declined = runner.invoke(cli, ["forget", "ana@example.org"], input="n\n", env=env)
    assert declined.exit_code == 1
    assert "Delete everything about ana@example.org (2 enrollment(s), 2 reflection(s))?" in (
        declined.output
    )
    assert counts(rt, "ana@example.org")["subscribers"] == 1
    result = run_cli(rt.settings, "forget", "ana@example.org", "--yes")
    assert result.exit_code == 0, result.output
    assert "forgot ana@example.org: 2 enrollment(s), 6 delivery record(s), 2 reflection(s)" in (
        result.output
    )
    assert counts(rt, "ana@example.org") == NOTHING_BUT_A_SUPPRESSION
    log = (Path(rt.settings.var_dir) / "operator.log").read_text(encoding="utf-8")
    assert "forget: one subscriber (2 enrollment(s), 2 reflection(s))" in log
    assert "ana@example.org" not in log


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("nobody@example.org", "Error: no subscriber with the address nobody@example.org"),
        ("not an address", "Error: email: 'not an address' is not an email address"),
    ],
)
def test_forgetting_someone_unknown_is_one_clear_line(
    rt: Runtime, address: str, message: str
) -> None:
    result = run_cli(rt.settings, "forget", address, "--yes")
    assert result.exit_code == 1
    assert result.output.strip().startswith(message)


# -- retention ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("days", "left"),
    [(0, 2), (30, 2), (10, 1), (1, 0)],
    ids=["keep", "none-old-enough", "older-one-deleted", "all-deleted"],
)
def test_retention_deletes_reflections_last_written_longer_ago_than_the_setting(
    rt: Runtime, ana: int, days: int, left: int
) -> None:
    with transaction(rt.sessions) as session:
        old = session.scalars(select(Reflection).where(Reflection.day == 1)).one()
        old.updated_at = NOW - dt.timedelta(days=20)
    now = NOW + dt.timedelta(days=2)
    with transaction(rt.sessions) as session:
        deleted = privacy.delete_old_reflections(session, days, now)
    assert (deleted, counts(rt, "ana@example.org")["reflections"]) == (2 - left, left)


def test_enrollment_helpers_are_untouched_by_forget(rt: Runtime) -> None:
    """forget reuses the suppression list: the same check import and enroll make."""
    with transaction(rt.sessions) as session:
        enrollment.suppress(session, "x@example.org", privacy.FORGOTTEN, NOW)
    with pytest.raises(InputError, match="suppressed"):
        enroll(rt, "x@example.org")


def test_settings_reach_the_privacy_page(rt: Runtime) -> None:
    cases = [
        ({}, ["kept until you delete them", "links do not expire"]),
        (
            {"reflections_retention_days": 90, "reflect_max_age_days": 30},
            ["deleted automatically 90 days after you last saved it", "30 days after"],
        ),
    ]
    for changes, phrases in cases:
        runtime = Runtime(dataclasses.replace(rt.settings, **changes))
        page = make_app(runtime, Clock(NOW)).test_client().get("/privacy")
        text = page.get_data(as_text=True).replace("&#39;", "'")
        assert page.status_code == 200
        for phrase in phrases:
            assert phrase in text, (changes, phrase)
        runtime.close()


def test_every_lesson_email_links_to_the_privacy_page(rt: Runtime, ana: int) -> None:
    outbox = Path(rt.settings.mail_url.removeprefix("file://"))
    for message in outbox.glob("*.eml"):
        raw = message.read_bytes().replace(b"=\r\n", b"")
        assert raw.count(b"https://course.example.org/privacy") == 2, message  # text and HTML


def test_beat_deletes_old_reflections_daily_and_status_shows_the_setting(
    rt: Runtime, ana: int
) -> None:
    from dripcourse import tasks

    settings = dataclasses.replace(rt.settings, reflections_retention_days=1)
    app = tasks.configure(settings)
    try:
        entry = app.conf.beat_schedule["delete-old-reflections"]
        assert (entry["task"], entry["schedule"]) == ("dripcourse.delete_old_reflections", 86400)
        # The reflections were written at NOW, years before the real clock the task reads.
        assert tasks.delete_old_reflections() == 2
    finally:
        tasks.configure(rt.settings)
    assert counts(rt, "ana@example.org")["reflections"] == 0
    shown = run_cli(settings, "status")
    assert "reflections: deleted 1 days after last written, daily" in shown.output
    assert "kept until deleted" in run_cli(rt.settings, "status").output


def test_someone_with_no_reflections_is_told_there_is_nothing_to_delete(
    rt: Runtime, client: FlaskClient
) -> None:
    eli = enroll(rt, "eli@example.org")
    send_days(rt, 1)
    page = client.get(path(rt, links.JOURNAL, eli) + "/delete/reflections").get_data(as_text=True)
    assert "No reflections to delete" in page and "<form" not in page


def test_the_delete_page_speaks_of_one_reflection_in_the_singular(
    rt: Runtime, client: FlaskClient
) -> None:
    eli = enroll(rt, "eli@example.org")
    send_days(rt, 1)
    write(rt, eli, 1, "Only one.")
    page = client.get(path(rt, links.JOURNAL, eli) + "/delete/reflections").get_data(as_text=True)
    text = " ".join(page.split())
    assert "the one reflection you have written. It cannot be brought back." in text


def test_forget_without_an_answer_says_to_add_yes_and_deletes_nothing(
    rt: Runtime, ana: int
) -> None:
    """Run from a script with no terminal, it printed only "Aborted!"."""
    result = CliRunner().invoke(
        cli, ["forget", "ana@example.org"], input="", env=settings_env(rt.settings)
    )
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        "Error: forget asks before it deletes everything about ana@example.org, and no answer "
        "came (no terminal?): nothing was deleted; add --yes to forget without asking"
    )
    assert counts(rt, "ana@example.org")["subscribers"] == 1
