"""A link or a reply/bounce address can never come to mean another person.

SQLite handed a deleted highest id to the next row: after a forget, the next person enrolled
got the forgotten person's id, and the forgotten person's old journal link showed the new
person's reflections, their pause and unsubscribe links acted on the new person, and a fake
bounce to their old address suppressed the new person. Ids are now never handed out twice, and
every token carries its row's random ``link_key``, so a row that gets an old id any other way
(a restore, an import) is still not opened by the old links.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, update

from dripcourse import links
from dripcourse.db import transaction
from dripcourse.inbound.listener import is_our_address
from dripcourse.inbound.route import process
from dripcourse.links import BOUNCE, REPLY, _b36
from dripcourse.models import Enrollment, EnrollmentStatus, InboundKind, Subscriber, Suppression
from dripcourse.reader import privacy, reflections
from dripcourse.runtime import Runtime
from tests.conftest import make_settings
from tests.test_inbound import MAIL
from tests.test_web_support import (
    DAY,
    DAY_1_UTC,
    Clock,
    address,
    enroll,
    key_of,
    load,
    make_app,
    path,
    send_days,
)

DOMAIN = "reply.course.example.org"
NOW = DAY_1_UTC + 2 * DAY + dt.timedelta(hours=5)

# Every page a lesson links to: the ids of its link for an enrollment on Day 3, a suffix to
# its path, and its methods.
PAGES = {
    "journal": (links.JOURNAL, lambda e: (e,), "", ("GET",)),
    "delete everything": (links.JOURNAL, lambda e: (e,), "/delete/everything", ("GET",)),
    "reflect": (links.REFLECT, lambda e: (e, 2), "", ("GET", "POST")),
    "lesson": (links.LESSON, lambda e: (e, 2), "", ("GET",)),
    "pause": (links.PAUSE, lambda e: (e,), "", ("GET", "POST")),
    "unsubscribe": (links.UNSUBSCRIBE, lambda e: (e,), "", ("GET", "POST")),
}


@pytest.fixture
def rt(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    runtime = Runtime(make_settings(tmp_path, database_url=database_url, reply_domain=DOMAIN))
    yield runtime
    runtime.close()


@pytest.fixture
def client(rt: Runtime) -> FlaskClient:
    return make_app(rt, Clock(NOW)).test_client()


def forget(rt: Runtime, email: str) -> None:
    with transaction(rt.sessions) as session:
        privacy.forget_subscriber(session, privacy.find_subscriber(session, email), NOW)


def write(rt: Runtime, enrollment_id: int, day: int, text: str) -> None:
    with transaction(rt.sessions) as session:
        found = session.get(Enrollment, enrollment_id)
        assert found is not None
        reflections.save_reflection(
            session,
            found,
            day,
            "A question?",
            text,
            cipher=rt.reflection_cipher,
            max_chars=5000,
            now=NOW,
        )


def take_over_id(rt: Runtime, old_id: int, email: str) -> None:
    """Give ``email``'s enrollment the id ``old_id``, as a restore or an import can."""
    with transaction(rt.sessions) as session:
        new_id = session.scalar(
            select(Enrollment.id).join(Subscriber).where(Subscriber.email == email)
        )
        session.execute(update(Enrollment).where(Enrollment.id == new_id).values(id=old_id))


def test_a_forgotten_persons_id_is_never_handed_out_again(rt: Runtime) -> None:
    enroll(rt, "ana@example.org")
    highest = enroll(rt, "ben@example.org")
    forget(rt, "ben@example.org")
    assert enroll(rt, "cleo@example.org") > highest


@pytest.mark.parametrize(("purpose", "ids", "suffix", "methods"), PAGES.values(), ids=PAGES.keys())
def test_a_forgotten_persons_old_link_answers_410_even_when_another_row_has_its_id(
    rt: Runtime, client: FlaskClient, purpose: str, ids, suffix: str, methods: tuple[str, ...]
) -> None:  # type: ignore[no-untyped-def]
    ben = enroll(rt, "ben@example.org")
    send_days(rt, 3)
    old = path(rt, purpose, *ids(ben)) + suffix
    forget(rt, "ben@example.org")
    enroll(rt, "cleo@example.org")
    take_over_id(rt, ben, "cleo@example.org")
    send_days(rt, 3)
    write(rt, ben, 2, "Cleo's own words.")

    data = {"List-Unsubscribe": "One-Click", "action": "pause", "days": "7"}
    for method in methods:
        response = client.open(old, method=method, data=data if method == "POST" else None)
        page = response.get_data(as_text=True)
        assert response.status_code == 410, method
        assert "No longer available" in page and "Cleo" not in page
    cleo = load(rt, ben)
    assert cleo.subscriber.email == "cleo@example.org"
    assert cleo.status == EnrollmentStatus.ACTIVE and cleo.paused_until is None
    # Cleo's own link, made for her row, opens her page.
    assert client.get(path(rt, purpose, *ids(ben)) + suffix).status_code == 200


def test_a_forgotten_persons_old_addresses_are_refused_and_a_fake_bounce_suppresses_no_one(
    rt: Runtime,
) -> None:
    ben = enroll(rt, "ben@example.org")
    send_days(rt, 3)
    old = {purpose: address(rt, purpose, ben, 3, DOMAIN) for purpose in (REPLY, BOUNCE)}
    forget(rt, "ben@example.org")
    enroll(rt, "cleo@example.org")
    take_over_id(rt, ben, "cleo@example.org")
    send_days(rt, 3)
    with rt.sessions() as session:
        assert not any(is_our_address(rt.inbound, a, session) for a in old.values())
        assert is_our_address(rt.inbound, address(rt, BOUNCE, ben, 3, DOMAIN), session)
    bounce = (MAIL / "bounce_hard.eml").read_bytes()
    bounce = bounce.replace(b"@@BOUNCE@@", old[BOUNCE].encode()).replace(b"@@FROM@@", b"x@y.org")
    with transaction(rt.sessions) as session:
        decision = process(session, bounce, rt.inbound, now=NOW, recipients=[old[BOUNCE]])
    assert decision.kind == InboundKind.JUNK
    with rt.sessions() as session:
        assert not session.scalar(
            select(Suppression).where(Suppression.email == "cleo@example.org")
        )
    assert load(rt, ben).status == EnrollmentStatus.ACTIVE


# Links already in inboxes when tokens became bound to their row: made without a key.


def unbound_token(rt: Runtime, purpose: str, *ids: int, issued_at: dt.datetime) -> str:
    """A link as the releases before keys made it."""
    return rt.links._serializer(purpose, issued_at).dumps(list(ids))


def unbound_address(rt: Runtime, purpose: str, enrollment_id: int, day: int) -> str:
    payload = f"{_b36(enrollment_id)}-{_b36(day)}"
    prefix = links.ADDRESS_PREFIX[purpose]
    return f"{prefix}+{payload}-{rt.links._address_mac(purpose, payload)}@{DOMAIN}"


def made_before_keys(rt: Runtime, enrollment_id: int) -> None:
    """Mark the row as the migration marks those it found (links01_bound_links)."""
    with transaction(rt.sessions) as session:
        session.execute(
            update(Enrollment).where(Enrollment.id == enrollment_id).values(legacy_links=True)
        )


def test_a_link_issued_before_keys_still_opens_its_own_page(
    rt: Runtime, client: FlaskClient
) -> None:
    ana = enroll(rt, "ana@example.org")
    send_days(rt, 3)
    made_before_keys(rt, ana)
    sent = load(rt, ana).created_at + dt.timedelta(days=3)
    response = client.get(f"/j/{unbound_token(rt, links.JOURNAL, ana, issued_at=sent)}")
    assert response.status_code == 200
    # Its journal offers bound links from then on, as old as the link that opened it.
    offered = [rt.links.load_token(links.REFLECT, t) for t in _tokens(response, "r")]
    assert offered and {t.key for t in offered} == {key_of(rt, ana)}
    assert {t.issued_at for t in offered} == {sent.replace(microsecond=0)}
    with rt.sessions() as session:
        assert is_our_address(rt.inbound, unbound_address(rt, REPLY, ana, 3), session)


@pytest.mark.parametrize(
    "why",
    ["issued before its row was made", "its row was made after keys"],
)
def test_a_link_issued_before_keys_never_opens_a_later_row(
    rt: Runtime, client: FlaskClient, why: str
) -> None:
    ana = enroll(rt, "ana@example.org")
    send_days(rt, 3)
    made = load(rt, ana).created_at
    if why == "issued before its row was made":
        made_before_keys(rt, ana)
        issued = made - dt.timedelta(seconds=1)
    else:
        issued = made + DAY
    response = client.get(f"/j/{unbound_token(rt, links.JOURNAL, ana, issued_at=issued)}")
    assert response.status_code == 410
    if why == "its row was made after keys":
        with rt.sessions() as session:
            assert not is_our_address(rt.inbound, unbound_address(rt, REPLY, ana, 3), session)


def _tokens(response, kind: str) -> list[str]:  # type: ignore[no-untyped-def]
    return re.findall(rf"/{kind}/([A-Za-z0-9_.-]+)", response.get_data(as_text=True))
