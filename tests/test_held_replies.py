"""A reply from another address is held sealed, its reader asked once at their own address,
and the page behind that message's link saves it to the journal or discards it."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from freezegun import freeze_time
from sqlalchemy import select

from dripcourse import links, tasks
from dripcourse.db import transaction
from dripcourse.encryption import new_key
from dripcourse.inbound import route as inbound
from dripcourse.inbound.listener import receive as receive_in_own_transaction
from dripcourse.links import BOUNCE, REPLY
from dripcourse.models import (
    Enrollment,
    EnrollmentStatus,
    HeldReply,
    InboundKind,
    NoticeState,
    Suppression,
)
from dripcourse.reader import held_replies, privacy, reflections
from dripcourse.runtime import Runtime
from dripcourse.sending import notices
from tests.conftest import REFLECTIONS_KEY, make_settings, service_missing, utc
from tests.smtp_sink import Received, SMTPSink
from tests.test_care import DESPAIR
from tests.test_inbound import DOMAIN, MAIL, REPLIES
from tests.test_spam_score import scored_rules
from tests.test_web_support import Clock, address, enroll, make_app, run_cli, send_days

ANA = "ana@example.org"
ALIAS = "dr.ana.okafor@st-elsewhere.example.org"
NOW = utc(2025, 3, 5, 21)  # the evening of Day 3
DAY = dt.timedelta(days=1)
WEEK = dt.timedelta(days=held_replies.HOLD_DAYS)
TEXT = REPLIES["gmail"]


@pytest.fixture
def rt(tmp_path: Path, database_url: str, smtp_sink: SMTPSink) -> Iterator[Runtime]:
    runtime = Runtime(
        make_settings(
            tmp_path, database_url=database_url, reply_domain=DOMAIN, mail_url=smtp_sink.url
        )
    )
    yield runtime
    runtime.close()


@pytest.fixture
def ana(rt: Runtime) -> int:
    """Enrolled, has had Days 1-3 (their lessons went to the sink too)."""
    enrollment_id = enroll(rt, ANA)
    send_days(rt, 3)
    return enrollment_id


_counter = iter(range(1, 10**6))


def reply(
    rt: Runtime, enrollment_id: int, sender: str = ALIAS, day: int = 3, name: str = "gmail"
) -> bytes:
    """A real client's reply to Day ``day`` from ``sender``, with a Message-ID of its own."""
    raw = (MAIL / f"{name}.eml").read_bytes()
    raw = raw.replace(b"@@REPLY@@", address(rt, REPLY, enrollment_id, day, DOMAIN).encode())
    raw = raw.replace(b"@@FROM@@", sender.encode())
    raw = re.sub(
        rb"(?im)^Message-ID:.*$", f"Message-ID: <r{next(_counter)}@x.example>".encode(), raw
    )
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def receive(rt: Runtime, raw: bytes, now: dt.datetime = NOW) -> inbound.Decision:
    with transaction(rt.sessions) as session:
        return inbound.process(session, raw, rt.inbound, now=now)


def notices_pass(rt: Runtime, now: dt.datetime = NOW) -> dict[int, str]:
    """One scheduler pass's share of notices, each sent at once in this process."""
    outcomes: dict[int, str] = {}
    notices.queue_due(rt, now, lambda ids: outcomes.update(notices.send_notices(rt, ids, now)))
    return outcomes


def asked(sink: SMTPSink) -> list[Received]:
    """The notices the sink received (lessons are there too)."""
    return [r for r in sink.handler.received if "another address" in str(r.message["Subject"])]


def held_rows(rt: Runtime) -> list[HeldReply]:
    with rt.sessions() as session:
        return list(session.scalars(select(HeldReply).order_by(HeldReply.id)))


def saved(rt: Runtime, enrollment_id: int, day: int = 3) -> str | None:
    with transaction(rt.sessions) as session:
        found = reflections.get_reflection(session, enrollment_id, day, rt.reflection_cipher)
        return None if found is None else found.body


def confirm_path(message: Received) -> str:
    found = re.search(r"https://course\.example\.org(/h/[A-Za-z0-9_.-]+)", body_of(message))
    assert found, "the notice carries no confirm link"
    return found.group(1)


def body_of(message: Received) -> str:
    return str(message.message.get_content())


def client(rt: Runtime, now: dt.datetime = NOW + DAY) -> FlaskClient:
    return make_app(rt, Clock(now)).test_client()


def press(client: FlaskClient, url: str, action: str):  # type: ignore[no-untyped-def]
    page = client.get(url).get_data(as_text=True)
    token = re.search(r'name="form_token" value="([^"]+)"', page)
    assert token, page
    return client.post(url, data={"form_token": token.group(1), "action": action})


# -- holding and asking ----------------------------------------------------------------------


def test_a_reply_from_another_address_is_held_sealed_and_not_saved(rt: Runtime, ana: int) -> None:
    decision = receive(rt, reply(rt, ana))
    assert (decision.kind, decision.enrollment_id, decision.day) == (InboundKind.HELD, ana, 3)
    assert ALIAS not in decision.describe() and TEXT[:20] not in decision.describe()
    assert saved(rt, ana) is None
    (row,) = held_rows(rt)
    assert (row.enrollment_id, row.day, row.notice_state) == (ana, 3, NoticeState.DUE)
    assert row.expires_at == NOW + WEEK
    # Nothing in clear: the text and the address sealed, the address's digest keyed.
    for value in (row.sealed_body, row.sealed_sender, row.sender_digest):
        assert value is not None and TEXT[:20] not in value and "st-elsewhere" not in value
    assert rt.reflection_cipher.open(row.sealed_body or "") == TEXT
    assert rt.reflection_cipher.open(row.sealed_sender or "") == ALIAS


def test_the_reader_is_asked_once_at_their_own_address_without_the_reply(
    rt: Runtime, ana: int, smtp_sink: SMTPSink
) -> None:
    receive(rt, reply(rt, ana))
    assert notices_pass(rt) == {1: "sent"}
    (message,) = asked(smtp_sink)
    assert message.rcpt_tos == [ANA]
    # Bounces come back to this enrollment's bounce address, as a lesson's do.
    assert message.mail_from == address(rt, BOUNCE, ana, 3, DOMAIN)
    headers = message.message
    assert headers["Auto-Submitted"] == "auto-replied"
    assert headers["Reply-To"] is None
    assert str(headers["Subject"]) == "A reply to Day 3 arrived from another address"
    body = body_of(message)
    assert "Day 3" in body and "dr…@st-elsewhere.example.org" in body
    assert ALIAS not in body
    for line in TEXT.splitlines():
        assert line[:30] not in body and line[:30] not in message.data.decode()
    assert confirm_path(message).startswith("/h/")
    # The next pass finds nothing left to send.
    assert notices_pass(rt, NOW + DAY) == {}
    assert [r.notice_state for r in held_rows(rt)] == [NoticeState.SENT]


def test_nothing_is_held_or_sent_when_the_inbound_transaction_rolls_back(
    rt: Runtime, ana: int, smtp_sink: SMTPSink
) -> None:
    session = rt.sessions()
    try:
        assert (
            inbound.process(session, reply(rt, ana), rt.inbound, now=NOW).kind == InboundKind.HELD
        )
        if rt.engine.dialect.name == "postgresql":  # SQLite's one writer would wait for it
            assert notices_pass(rt) == {}  # not committed: no pass can see it yet
    finally:
        session.rollback()
        session.close()
    assert notices_pass(rt) == {}
    assert held_rows(rt) == [] and asked(smtp_sink) == []


def test_a_second_reply_from_that_address_to_that_day_joins_the_first_unasked(
    rt: Runtime, ana: int, smtp_sink: SMTPSink
) -> None:
    receive(rt, reply(rt, ana))
    notices_pass(rt)
    later = receive(
        rt, reply(rt, ana, sender=ALIAS.upper(), name="phone"), NOW + dt.timedelta(hours=1)
    )
    assert later.kind == InboundKind.HELD and "earlier reply" in later.detail
    assert notices_pass(rt, NOW + DAY) == {}
    assert len(asked(smtp_sink)) == 1
    (row,) = held_rows(rt)
    assert rt.reflection_cipher.open(row.sealed_body or "") == f"{TEXT}\n\n{REPLIES['phone']}"


def test_another_day_or_another_address_is_asked_about_on_its_own(
    rt: Runtime, ana: int, smtp_sink: SMTPSink
) -> None:
    receive(rt, reply(rt, ana))
    receive(rt, reply(rt, ana, day=2))
    receive(rt, reply(rt, ana, sender="ana.okafor@phone.example"))
    assert sorted(notices_pass(rt).values()) == ["sent"] * 3
    days = sorted(str(m.message["Subject"]) for m in asked(smtp_sink))
    assert days == [f"A reply to Day {d} arrived from another address" for d in (2, 3, 3)]


def test_no_more_than_the_limit_of_notices_a_day_then_none_kept(
    rt: Runtime, ana: int, smtp_sink: SMTPSink
) -> None:
    assert rt.inbound.limits.held_notices_per_day == 3
    for n in range(4):
        receive(rt, reply(rt, ana, sender=f"someone{n}@elsewhere.example"))
    assert len(held_rows(rt)) == 3
    notices_pass(rt)
    assert len(asked(smtp_sink)) == 3
    # A day later the count has room again.
    later = receive(rt, reply(rt, ana, sender="someone4@elsewhere.example"), NOW + DAY)
    assert "the reader is asked" in later.detail
    assert len(held_rows(rt)) == 4


def test_a_notice_task_delivered_twice_sends_once(
    rt: Runtime, ana: int, smtp_sink: SMTPSink
) -> None:
    receive(rt, reply(rt, ana))
    queued: list[int] = []
    assert notices.queue_due(rt, NOW, queued.extend) == 1
    assert notices.send_notices(rt, queued, NOW) == {1: "sent"}
    assert notices.send_notices(rt, queued, NOW) == {1: "skipped"}
    assert len(asked(smtp_sink)) == 1


def test_a_notice_whose_task_was_lost_is_queued_again_later(
    rt: Runtime, ana: int, smtp_sink: SMTPSink
) -> None:
    receive(rt, reply(rt, ana))
    assert notices.queue_due(rt, NOW, lambda ids: None) == 1  # the broker lost it
    assert notices_pass(rt, NOW + dt.timedelta(seconds=60)) == {}
    later = NOW + dt.timedelta(seconds=rt.settings.requeue_after_seconds)
    assert notices_pass(rt, later) == {1: "sent"}
    assert len(asked(smtp_sink)) == 1


def test_a_passing_refusal_is_tried_again_and_an_address_refused_for_good_ends_it(
    rt: Runtime, ana: int, smtp_sink: SMTPSink
) -> None:
    receive(rt, reply(rt, ana))
    smtp_sink.handler.busy_for = 1
    smtp_sink.handler.busy_reply = "451 4.3.0 Try again later"
    assert notices_pass(rt) == {1: "waiting"}
    assert notices_pass(rt, NOW + dt.timedelta(hours=2)) == {1: "sent"}
    assert len(asked(smtp_sink)) == 1
    receive(rt, reply(rt, ana, day=2))
    smtp_sink.handler.reject[ANA] = "550 5.1.1 No such user"
    assert notices_pass(rt, NOW + dt.timedelta(hours=3)) == {2: "failed"}
    assert [r.notice_state for r in held_rows(rt)] == [NoticeState.SENT, NoticeState.FAILED]


@pytest.mark.parametrize("why", ["unsubscribed", "suppressed"])
def test_a_reader_who_may_not_be_mailed_is_not_asked_and_nothing_is_kept(
    rt: Runtime, ana: int, smtp_sink: SMTPSink, why: str
) -> None:
    with transaction(rt.sessions) as session:
        if why == "unsubscribed":
            found = session.get(Enrollment, ana)
            assert found is not None
            found.status = EnrollmentStatus.UNSUBSCRIBED
        else:
            session.add(Suppression(email=ANA, reason="bounced", created_at=NOW))
    decision = receive(rt, reply(rt, ana))
    assert decision.kind == InboundKind.HELD and "not kept" in decision.detail
    assert held_rows(rt) == [] and notices_pass(rt) == {} and asked(smtp_sink) == []


def test_an_empty_reply_from_another_address_is_not_held(rt: Runtime, ana: int) -> None:
    raw = (
        reply(rt, ana)
        .replace(TEXT.splitlines()[0].encode(), b"")
        .replace(TEXT.splitlines()[1].encode(), b"")
    )
    decision = receive(rt, raw)
    assert decision.kind == InboundKind.JUNK and "not held" in decision.detail
    assert held_rows(rt) == []


def test_the_scheduler_pass_hands_the_notice_to_the_celery_task(
    rt: Runtime, ana: int, smtp_sink: SMTPSink
) -> None:
    """The production path: beat's tick (tasks.scheduler_pass) queues the send_held_notices
    task with the held reply's id, and the task sends it. Celery runs the task in this
    process here (task_always_eager), so no broker's state from other tests is involved."""
    receive(rt, reply(rt, ana))
    before = tasks.runtime().settings
    tasks.configure(rt.settings, make_files=False)
    tasks.app.conf.task_always_eager = True
    try:
        with freeze_time(NOW):
            tasks.scheduler_pass(tasks.runtime(), NOW)
    finally:
        tasks.app.conf.task_always_eager = False
        tasks.configure(before, make_files=False)
    (message,) = asked(smtp_sink)
    assert message.rcpt_tos == [ANA]
    assert [r.notice_state for r in held_rows(rt)] == [NoticeState.SENT]


def test_tick_inline_sends_the_notice_in_its_own_process(
    rt: Runtime, ana: int, smtp_sink: SMTPSink
) -> None:
    receive(rt, reply(rt, ana))
    with freeze_time(NOW):
        result = run_cli(rt.settings, "tick", "--inline")
    assert result.exit_code == 0, result.output
    (message,) = asked(smtp_sink)
    assert message.rcpt_tos == [ANA]


# -- the page ------------------------------------------------------------------------------


def test_the_page_shows_the_reply_and_saves_it_after_what_was_written(
    rt: Runtime, ana: int, smtp_sink: SMTPSink
) -> None:
    receive(rt, reply(rt, ana, name="phone", sender=ANA))  # from ana's own address: saved
    receive(rt, reply(rt, ana))
    notices_pass(rt)
    url = confirm_path(asked(smtp_sink)[0])
    web = client(rt)
    page = web.get(url)
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert ALIAS in text and "Leaving the ward by 18:30" in text
    assert 'value="save"' in text and 'value="discard"' in text
    done = press(web, url, "save")
    assert done.status_code == 200 and "Saved to your journal" in done.get_data(as_text=True)
    separator = reflections.email_separator(NOW.date())
    assert saved(rt, ana) == f"{REPLIES['phone']}\n\n{separator}\n\n{TEXT}"
    (row,) = held_rows(rt)
    assert (row.resolution, row.sealed_body, row.sealed_sender) == ("saved", None, None)
    # Used: the link says so, and shows nothing.
    again = web.get(url)
    assert again.status_code == 410 and "already saved" in again.get_data(as_text=True)
    assert "Leaving the ward" not in again.get_data(as_text=True)
    assert ALIAS not in again.get_data(as_text=True)


def test_discarding_saves_nothing_and_clears_the_reply(
    rt: Runtime, ana: int, smtp_sink: SMTPSink
) -> None:
    receive(rt, reply(rt, ana))
    notices_pass(rt)
    url = confirm_path(asked(smtp_sink)[0])
    web = client(rt)
    assert press(web, url, "discard").status_code == 200
    assert saved(rt, ana) is None
    (row,) = held_rows(rt)
    assert (row.resolution, row.sealed_body) == ("discarded", None)
    assert web.get(url).status_code == 410
    # A further reply from that address to that day is not kept: the reader has answered.
    later = receive(rt, reply(rt, ana, name="phone"), NOW + DAY)
    assert "not kept" in later.detail and notices_pass(rt, NOW + DAY) == {}


def test_the_link_and_the_reply_end_after_seven_days(
    rt: Runtime, ana: int, smtp_sink: SMTPSink
) -> None:
    receive(rt, reply(rt, ana))
    notices_pass(rt)
    url = confirm_path(asked(smtp_sink)[0])
    assert client(rt, NOW + WEEK - dt.timedelta(minutes=1)).get(url).status_code == 200
    late = client(rt, NOW + WEEK).get(url)
    assert late.status_code == 410 and "deleted after 7 days" in late.get_data(as_text=True)
    assert held_rows(rt) == []  # deleted on access, not left for the sweep


def test_an_expired_link_answers_410_even_before_the_sweep(
    rt: Runtime, ana: int, smtp_sink: SMTPSink
) -> None:
    """The link's own signature says when it expired, whatever the row says."""
    receive(rt, reply(rt, ana))
    notices_pass(rt)
    url = confirm_path(asked(smtp_sink)[0])
    with freeze_time(dt.datetime.now(dt.UTC) + WEEK + dt.timedelta(seconds=1)):
        page = client(rt, NOW).get(url)  # the page's clock says the reply is still held
    assert page.status_code == 410 and "Leaving the ward" not in page.get_data(as_text=True)


def test_a_wrong_token_shows_nothing(rt: Runtime, ana: int, smtp_sink: SMTPSink) -> None:
    bob = enroll(rt, "bob@example.org")
    receive(rt, reply(rt, ana))
    notices_pass(rt)
    url = confirm_path(asked(smtp_sink)[0])
    web = client(rt)
    key = lambda n: rt.links.token(links.CONFIRM, n, 1, key=_key(rt, n))  # noqa: E731
    wrong = {
        "tampered": url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB"),
        "another purpose": "/h/" + rt.links.token(links.REFLECT, ana, 1, key=_key(rt, ana)),
        "another reader's enrollment": "/h/" + key(bob),
        "no such held reply": "/h/" + rt.links.token(links.CONFIRM, ana, 99, key=_key(rt, ana)),
        "a key of no row": "/h/" + rt.links.token(links.CONFIRM, ana, 1, key="otherkey1234"),
    }
    for what, path in wrong.items():
        page = web.get(path)
        text = page.get_data(as_text=True)
        assert page.status_code in (404, 410), what
        assert "Leaving the ward" not in text and ALIAS not in text, what
        posted = web.post(path, data={"action": "save"})
        assert posted.status_code in (403, 404, 410), what
    assert saved(rt, ana) is None and saved(rt, bob) is None


def test_a_post_without_the_pages_form_token_saves_nothing(
    rt: Runtime, ana: int, smtp_sink: SMTPSink
) -> None:
    receive(rt, reply(rt, ana))
    notices_pass(rt)
    url = confirm_path(asked(smtp_sink)[0])
    web = client(rt)
    assert web.post(url, data={"action": "save"}).status_code == 403
    assert web.post(url, data={"action": "save", "form_token": "x"}).status_code == 403
    assert saved(rt, ana) is None and held_rows(rt)[0].resolution is None


# -- deleting ------------------------------------------------------------------------------


def _key(rt: Runtime, enrollment_id: int) -> str:
    with rt.sessions() as session:
        found = session.get(Enrollment, enrollment_id)
        return found.link_key if found is not None else "nobodyskey12"


@pytest.mark.parametrize("how", ["forget", "delete everything", "delete my reflections"])
def test_forgetting_or_deleting_removes_held_replies(rt: Runtime, ana: int, how: str) -> None:
    receive(rt, reply(rt, ana))
    assert len(held_rows(rt)) == 1
    with transaction(rt.sessions) as session:
        found = privacy.find_subscriber(session, ANA)
        if how == "delete my reflections":
            privacy.delete_reflections(session, found)
        else:
            privacy.forget_subscriber(session, found, NOW)
    assert held_rows(rt) == []


def test_held_replies_past_their_time_are_deleted_by_the_daily_task_and_each_pass(
    rt: Runtime, ana: int
) -> None:
    receive(rt, reply(rt, ana))
    with transaction(rt.sessions) as session:
        assert privacy.expire_held_replies(session, NOW + WEEK - dt.timedelta(seconds=1)) == 0
        assert privacy.expire_held_replies(session, NOW + WEEK) == 1
    receive(rt, reply(rt, ana, day=2), NOW + DAY)
    assert notices_pass(rt, NOW + DAY + WEEK) == {}
    assert held_rows(rt) == []


def test_the_privacy_page_says_how_replies_from_another_address_are_kept(
    rt: Runtime, tmp_path: Path
) -> None:
    text = " ".join(client(rt).get("/privacy").get_data(as_text=True).split())
    for claim in (
        "A reply from another address than the one your lessons come to is not saved unless "
        "you say so",
        "kept encrypted, like your reflections, for 7 days",
        "never with the reply in it",
        "A reply from another address that you have not saved is deleted after 7 days",
        "Both also delete any reply from another address still waiting for you",
    ):
        assert claim in text, claim
    # Without reply by email there is nothing to hold, and the page does not say otherwise.
    without = Runtime(make_settings(tmp_path / "off", database_url=rt.settings.database_url))
    try:
        off = " ".join(client(without).get("/privacy").get_data(as_text=True).split())
    finally:
        without.close()
    assert "another address" not in off


def test_rekey_seals_held_replies_again_under_the_new_key(rt: Runtime, ana: int) -> None:
    receive(rt, reply(rt, ana))
    fresh = new_key()
    both = Runtime(replace(rt.settings, reflections_key=f"{fresh},{REFLECTIONS_KEY}"))
    only_new = Runtime(replace(rt.settings, reflections_key=fresh))
    try:
        result = run_cli(both.settings, "reflections", "rekey")
        assert result.exit_code == 0, result.output
        assert "and 1 held replies" in result.output
        (row,) = held_rows(rt)
        assert only_new.reflection_cipher.open(row.sealed_body or "") == TEXT
        assert only_new.reflection_cipher.open(row.sealed_sender or "") == ALIAS
    finally:
        both.close()
        only_new.close()


@pytest.mark.postgres
def test_on_postgresql_replies_from_many_addresses_at_once_keep_to_the_notice_limit(
    postgres_url: str, tmp_path: Path
) -> None:
    rt = Runtime(make_settings(tmp_path, database_url=postgres_url, reply_domain=DOMAIN))
    try:
        ana = enroll(rt, ANA)
        send_days(rt, 3)
        start = threading.Barrier(8)

        def one(n: int) -> str:
            raw = reply(rt, ana, sender=f"someone{n}@elsewhere.example")
            start.wait()
            return receive_in_own_transaction(rt.sessions, rt.inbound, raw, now=NOW).detail

        with ThreadPoolExecutor(8) as pool:
            details = list(pool.map(one, range(8)))
        assert sum("the reader is asked" in d for d in details) == 3
        assert len(held_rows(rt)) == 3
    finally:
        rt.close()


@pytest.mark.postgres
def test_on_postgresql_two_presses_at_once_save_the_reply_once(
    postgres_url: str, tmp_path: Path
) -> None:
    rt = Runtime(make_settings(tmp_path, database_url=postgres_url, reply_domain=DOMAIN))
    try:
        ana = enroll(rt, ANA)
        send_days(rt, 3)
        receive(rt, reply(rt, ana))
        url = "/h/" + rt.links.token(links.CONFIRM, ana, 1, key=_key(rt, ana))
        clients = [client(rt), client(rt)]
        forms = [
            re.search(r'name="form_token" value="([^"]+)"', c.get(url).get_data(as_text=True))
            for c in clients
        ]
        start = threading.Barrier(2)

        def press_now(i: int) -> int:
            form = forms[i]
            assert form is not None
            start.wait()
            data = {"form_token": form.group(1), "action": "save"}
            return clients[i].post(url, data=data).status_code

        with ThreadPoolExecutor(2) as pool:
            assert sorted(pool.map(press_now, range(2))) == [200, 410]
        assert saved(rt, ana) == TEXT
    finally:
        rt.close()


def test_the_page_offers_no_link_that_outlives_its_own(
    rt: Runtime, ana: int, smtp_sink: SMTPSink
) -> None:
    receive(rt, reply(rt, ana))
    notices_pass(rt)
    url = confirm_path(asked(smtp_sink)[0])
    web = client(rt)
    pages = [web.get(url).get_data(as_text=True), press(web, url, "save").get_data(as_text=True)]
    for page in pages:
        assert not re.search(r"/[rjplu]/[A-Za-z0-9_.-]{20,}", page), page


@pytest.mark.slow
def test_spamassassin_scores_no_point_for_the_notice(
    rt: Runtime, ana: int, smtp_sink: SMTPSink
) -> None:
    """As for every lesson (tests/test_spam_score.py): the local rules find nothing in it."""
    found = shutil.which("spamassassin")
    if found is None:
        service_missing("SpamAssassin", "spamassassin is not installed")
    receive(rt, reply(rt, ana))
    notices_pass(rt)
    (message,) = asked(smtp_sink)
    rules = scored_rules(str(found), message.data)
    assert "NO_RELAYS" in rules, rules  # the report was read
    assert {name: points for name, points in rules.items() if points != 0} == {}


def test_the_page_links_where_to_turn_and_shows_it_first_after_saving_despair(
    rt: Runtime, ana: int, smtp_sink: SMTPSink
) -> None:
    """Invariant 18: a page a reader writes on links their places to turn, and saving words
    of despair shows them at once (nothing about it is kept)."""
    dark = DESPAIR["en"][0]
    raw = reply(rt, ana).replace(TEXT.splitlines()[0].encode(), dark.encode())
    receive(rt, raw)
    notices_pass(rt)
    url = confirm_path(asked(smtp_sink)[0])
    web = client(rt)
    shown = web.get(url).get_data(as_text=True)
    assert 'class="support-line"' in shown and '<section class="care"' not in shown
    done = press(web, url, "save").get_data(as_text=True)
    assert '<section class="care"' in done and 'class="support-line"' in done
    assert dark in (saved(rt, ana) or "")
    # A calm reply saved the same way shows the line only.
    receive(rt, reply(rt, ana, day=2))
    notices_pass(rt)
    calm = press(web, confirm_path(asked(smtp_sink)[1]), "save").get_data(as_text=True)
    assert '<section class="care"' not in calm and 'class="support-line"' in calm
