"""The unsubscribed page is no dead end: for 30 days the reader can undo it, and the course
carries on where it stopped; the pause and unsubscribed pages email a journal link."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, update

from dripcourse import links
from dripcourse.db import transaction
from dripcourse.models import Delivery, DeliveryStatus, Enrollment, EnrollmentStatus, Suppression
from dripcourse.people import enrollment as enrollments
from dripcourse.people import rejoining
from dripcourse.runtime import Runtime
from dripcourse.sending import claim
from tests.conftest import make_settings, utc
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
    send_days,
    tick,
)

PRIVATE_WORDS = "What I wrote on Day 1."


@pytest.fixture
def rt(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    runtime = Runtime(make_settings(tmp_path, database_url=database_url))
    yield runtime
    runtime.close()


@pytest.fixture
def outbox(rt: Runtime) -> Path:
    return Path(rt.settings.mail_url.removeprefix("file://"))


@pytest.fixture
def clock() -> Clock:
    return Clock(DAY_1_UTC)


@pytest.fixture
def client(rt: Runtime, clock: Clock) -> FlaskClient:
    return make_app(rt, clock).test_client()


def unsubscribe(client: FlaskClient, rt: Runtime, enrollment_id: int) -> str:
    response = post_form(client, path(rt, links.UNSUBSCRIBE, enrollment_id))
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "You are unsubscribed" in page
    return page


def resubscribe(client: FlaskClient, rt: Runtime, enrollment_id: int) -> str:
    """Press Resubscribe on the unsubscribed page; the page it lands on."""
    url = path(rt, links.UNSUBSCRIBE, enrollment_id)
    page = client.get(url).get_data(as_text=True)
    action = re.search(r'action="(/u/[^"]+/resubscribe)"', page)
    assert action, page
    token = re.search(
        r'action="/u/[^"]+/resubscribe">\s*<input type="hidden" name="form_token" value="([^"]+)"',
        page,
    )
    assert token
    response = client.post(action.group(1), data={"form_token": token.group(1)})
    assert response.status_code == 303
    return client.get(response.headers["Location"]).get_data(as_text=True)


def suppression(rt: Runtime) -> str | None:
    with rt.sessions() as session:
        return session.scalar(select(Suppression.reason))


def test_resubscribing_brings_the_next_lesson_the_next_morning_not_a_backlog(
    rt: Runtime, client: FlaskClient, clock: Clock
) -> None:
    ana = enroll(rt)
    send_days(rt, 2)  # Days 1 and 2 at 07:00 UTC, 3 and 4 March
    clock.now = DAY_1_UTC + DAY + dt.timedelta(hours=2)  # Tuesday 09:00
    page = unsubscribe(client, rt, ana)
    assert "Changed your mind?" in page and "Day 3 at the next 07:00" in page
    assert suppression(rt) == "unsubscribed"
    for i in range(2, 7):  # five mornings pass unsent
        assert tick(rt, DAY_1_UTC + i * DAY) == []

    clock.now = DAY_1_UTC + 6 * DAY + dt.timedelta(hours=3)  # Sunday 10:00, inside the window
    back = resubscribe(client, rt, ana)
    assert "You are subscribed again" in back
    assert "Day 3 will come on Monday 10 March at 07:00 (UTC)" in back
    assert suppression(rt) is None
    assert tick(rt, clock.now) == [], "not at once, although today's window is open"
    (sent,) = tick(rt, DAY_1_UTC + 7 * DAY)
    assert tick(rt, DAY_1_UTC + 7 * DAY + dt.timedelta(hours=1)) == [], "one lesson that day"
    assert len(tick(rt, DAY_1_UTC + 8 * DAY)) == 1
    found = load(rt, ana)
    assert (found.status, found.day) == (EnrollmentStatus.ACTIVE, 4)


def test_a_lesson_cancelled_on_its_way_goes_out_the_next_morning(
    rt: Runtime, client: FlaskClient, clock: Clock
) -> None:
    ana = enroll(rt)
    send_days(rt, 1)
    claimed: list[int] = []
    claim.tick(rt, DAY_1_UTC + DAY, claimed.extend)  # Day 2 claimed, not yet sent
    clock.now = DAY_1_UTC + DAY + dt.timedelta(minutes=1)
    unsubscribe(client, rt, ana)
    with rt.sessions() as session:
        assert session.get(Delivery, claimed[0]).status == DeliveryStatus.CANCELLED  # type: ignore[union-attr]

    resubscribe(client, rt, ana)
    with rt.sessions() as session:
        revived = session.get(Delivery, claimed[0])
        assert revived is not None
        assert (revived.status, revived.day) == (DeliveryStatus.WAITING, 2)
        assert revived.next_attempt_at == DAY_1_UTC + 2 * DAY
    assert tick(rt, DAY_1_UTC + 2 * DAY) == [claimed[0]]
    assert load(rt, ana).day == 2


def test_every_course_the_unsubscribe_stopped_comes_back(
    rt: Runtime, client: FlaskClient, clock: Clock
) -> None:
    spring = enroll(rt, cohort="spring")
    summer = enroll(rt, cohort="summer", start=dt.date(2025, 3, 10))
    unsubscribe(client, rt, spring)
    assert {load(rt, e).status for e in (spring, summer)} == {EnrollmentStatus.UNSUBSCRIBED}
    resubscribe(client, rt, spring)
    assert load(rt, spring).next_send_at == DAY_1_UTC + DAY  # Day 1 passed at 07:00 today
    assert load(rt, summer).next_send_at == utc(2025, 3, 10, 7)  # its own start, as planned
    assert {load(rt, e).status for e in (spring, summer)} == {EnrollmentStatus.ACTIVE}


@pytest.mark.parametrize("reason", ["bounced: 550 no such user", "complained", "operator: asked"])
def test_a_bounce_complaint_or_operator_suppression_stays_and_the_page_says_whom_to_ask(
    rt: Runtime, client: FlaskClient, reason: str
) -> None:
    ana = enroll(rt)
    unsubscribe(client, rt, ana)
    url = path(rt, links.UNSUBSCRIBE, ana)
    pressed = form_token(client.get(url).get_data(as_text=True))  # the resubscribe form's
    with transaction(rt.sessions) as session:
        session.execute(update(Suppression).values(reason=reason))
    page = client.get(url).get_data(as_text=True)
    assert "Resubscribe" not in page and "Email me a link" not in page
    assert "Lessons can no longer be sent to this address" in page
    assert "ask the course team" in page
    response = client.post(url + "/resubscribe", data={"form_token": pressed})
    assert response.status_code == 303
    assert suppression(rt) == reason
    assert load(rt, ana).status == EnrollmentStatus.UNSUBSCRIBED


def test_after_30_days_the_page_says_to_ask_the_programme(tmp_path: Path, sqlite_url: str) -> None:
    rt = Runtime(make_settings(tmp_path, database_url=sqlite_url, team_contact="team@example.org"))
    clock = Clock(DAY_1_UTC)
    client = make_app(rt, clock).test_client()
    ana = enroll(rt)
    unsubscribe(client, rt, ana)
    clock.now = DAY_1_UTC + 30 * DAY
    assert "Resubscribe" in client.get(path(rt, links.UNSUBSCRIBE, ana)).get_data(as_text=True)
    clock.now = DAY_1_UTC + 30 * DAY + dt.timedelta(minutes=1)
    page = client.get(path(rt, links.UNSUBSCRIBE, ana)).get_data(as_text=True)
    assert "Resubscribe" not in page
    assert "ask the course team (team@example.org)" in page and "for 30 days" in page
    with transaction(rt.sessions) as session:
        found = session.get(Enrollment, ana)
        assert found is not None
        assert rejoining.resubscribe(session, found, rt.catalog.course, clock.now) == []
    assert suppression(rt) == "unsubscribed"
    rt.close()


def test_resubscribing_needs_the_pages_form_and_our_own_site(
    rt: Runtime, client: FlaskClient
) -> None:
    ana = enroll(rt)
    unsubscribe(client, rt, ana)
    url = path(rt, links.UNSUBSCRIBE, ana) + "/resubscribe"
    assert client.post(url).status_code == 403
    good = form_token(client.get(path(rt, links.UNSUBSCRIBE, ana)).get_data(as_text=True))
    forged = client.post(url, data={"form_token": good}, headers={"Sec-Fetch-Site": "cross-site"})
    assert forged.status_code == 403
    assert client.get(url).status_code == 405
    assert load(rt, ana).status == EnrollmentStatus.UNSUBSCRIBED


def test_a_reader_who_had_every_lesson_comes_back_as_completed(
    rt: Runtime, client: FlaskClient, clock: Clock
) -> None:
    ana = enroll(rt)
    send_days(rt, 8)
    assert load(rt, ana).status == EnrollmentStatus.COMPLETED
    clock.now = DAY_1_UTC + 8 * DAY
    unsubscribe(client, rt, ana)
    back = resubscribe(client, rt, ana)
    assert "You had every lesson" in back
    assert load(rt, ana).status == EnrollmentStatus.COMPLETED
    assert suppression(rt) is None


# -- the journal, by email -----------------------------------------------------------------


def journal_mail(outbox: Path) -> list[email.message.EmailMessage]:
    found = []
    for eml in sorted(outbox.glob("*.eml")):
        msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        if str(msg["Subject"]).startswith("Your journal"):
            found.append(msg)
    return found  # type: ignore[return-value]


def journal_form(page: str) -> tuple[str, str]:
    """The journal button's form on a page: where it posts, and its form token."""
    match = re.search(
        r'action="([^"]+/journal-link[^"]*)">\s*<input type="hidden" name="form_token" '
        r'value="([^"]+)"',
        page,
    )
    assert match, page
    return match.group(1).replace("&amp;", "&"), match.group(2)


def press_journal_button(client: FlaskClient, page_url: str) -> str:
    action, token = journal_form(client.get(page_url).get_data(as_text=True))
    response = client.post(action, data={"form_token": token})
    assert response.status_code == 303
    return client.get(response.headers["Location"]).get_data(as_text=True)


@pytest.mark.parametrize("page", [links.PAUSE, links.UNSUBSCRIBE])
def test_the_journal_button_emails_a_fresh_link_to_the_readers_own_address(
    rt: Runtime, client: FlaskClient, clock: Clock, outbox: Path, page: str
) -> None:
    ana = enroll(rt)
    send_days(rt, 1)
    post_form(client, path(rt, links.REFLECT, ana, 1), reflection=PRIVATE_WORDS)
    if page == links.UNSUBSCRIBE:
        unsubscribe(client, rt, ana)
    url = path(rt, page, ana)
    shown = press_journal_button(client, url)
    assert "on its way to the address your lessons come to" in shown
    assert "ana@example.org" not in shown and "/j/" not in shown
    (mail,) = journal_mail(outbox)
    assert mail["To"] == "ana@example.org" and mail["Auto-Submitted"] == "auto-replied"
    text = mail.get_content()
    (journal_url,) = re.findall(r"https://course\.example\.org(/j/\S+)", text)
    assert PRIVATE_WORDS in client.get(journal_url).get_data(as_text=True)

    again = press_journal_button(client, url)
    assert "less than an hour ago" in again
    assert len(journal_mail(outbox)) == 1, "one an hour at most"
    clock.now += dt.timedelta(hours=1)
    press_journal_button(client, url)
    assert len(journal_mail(outbox)) == 2


def test_no_journal_link_goes_to_a_bounced_address(
    rt: Runtime, client: FlaskClient, outbox: Path
) -> None:
    ana = enroll(rt)
    url = path(rt, links.PAUSE, ana)
    _action, token = journal_form(client.get(url).get_data(as_text=True))
    with transaction(rt.sessions) as session:
        enrollments.suppress(session, "ana@example.org", "bounced: 550", DAY_1_UTC)
    assert "Email me a link" not in client.get(url).get_data(as_text=True)
    response = client.post(url + "/journal-link", data={"form_token": token})
    assert response.status_code == 303 and "journal=blocked" in response.headers["Location"]
    assert journal_mail(outbox) == []


def test_a_relay_that_refuses_the_journal_link_lets_the_reader_ask_again(
    rt: Runtime, client: FlaskClient, outbox: Path
) -> None:
    ana = enroll(rt)
    url = path(rt, links.PAUSE, ana)

    class Refusing:
        def send(self, msg: object, deadline: float | None = None) -> None:
            raise ConnectionRefusedError("relay down")

    real = rt.transport
    rt._transport = Refusing()  # type: ignore[assignment]
    assert "could not be sent just now" in press_journal_button(client, url)
    rt._transport = real
    assert "on its way" in press_journal_button(client, url), "nothing recorded by the failure"
    assert len(journal_mail(outbox)) == 1
