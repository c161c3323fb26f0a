"""Erasure that erases: after a forget, nothing of the person is left anywhere we keep things.

``forget`` and "Delete everything about me" left the person's lessons in var/outbox/ (their
name and working links), the records of their inbound mail (which day they replied, and when)
and error texts quoting their address. Records of inbound mail that saved nothing were kept
for ever, and those of replies outlived the reflections they saved.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import MetaData, func, select, update

from dripcourse import links
from dripcourse.db import transaction
from dripcourse.inbound.route import process
from dripcourse.links import BOUNCE, REPLY
from dripcourse.models import (
    CircuitBreaker,
    Delivery,
    Enrollment,
    InboundKind,
    InboundMessage,
    Subscriber,
    Suppression,
)
from dripcourse.people import enrollment
from dripcourse.people.signup import check_signup
from dripcourse.reader import privacy, reflections
from dripcourse.runtime import Runtime
from tests.conftest import make_settings
from tests.test_inbound import MAIL
from tests.test_web_support import (
    COURSE,
    DAY,
    DAY_1_UTC,
    Clock,
    address,
    enroll,
    make_app,
    path,
    post_form,
    run_cli,
    send_days,
)

DOMAIN = "reply.course.example.org"
NOW = DAY_1_UTC + 2 * DAY + dt.timedelta(hours=5)


def settings_in(folder: Path, **overrides: object):  # type: ignore[no-untyped-def]
    """Everything under var/, as in the embedded set-up: database, outbox, keys, logs."""
    var = folder / "var"
    return make_settings(
        folder,
        **{
            "database_url": f"sqlite:///{var / 'dripcourse.sqlite3'}",
            "mail_url": f"file://{var / 'outbox'}",
            "var_dir": str(var),
            "reply_domain": DOMAIN,
            **overrides,
        },
    )


@pytest.fixture
def rt(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    runtime = Runtime(make_settings(tmp_path, database_url=database_url, reply_domain=DOMAIN))
    yield runtime
    runtime.close()


def outbox_holding(rt: Runtime, text: str) -> int:
    assert rt.outbox is not None
    return sum(text.encode() in f.read_bytes() for f in rt.outbox.glob("*.eml"))


def inbound(rt: Runtime, name: str, enrollment_id: int, sender: str, day: int = 2) -> None:
    raw = (MAIL / f"{name}.eml").read_bytes()
    for marker, value in (
        (b"@@REPLY@@", address(rt, REPLY, enrollment_id, day, DOMAIN)),
        (b"@@BOUNCE@@", address(rt, BOUNCE, enrollment_id, day, DOMAIN)),
        (b"@@FROM@@", sender),
    ):
        raw = raw.replace(marker, value.encode())
    with transaction(rt.sessions) as session:
        process(session, raw, rt.inbound, now=NOW)


def inbound_rows(rt: Runtime) -> list[tuple[str, int | None]]:
    with rt.sessions() as session:
        return [
            (row.kind, row.enrollment_id)
            for row in session.scalars(select(InboundMessage).order_by(InboundMessage.id))
        ]


@pytest.mark.parametrize("how", ["operator's forget", "subscriber's delete everything"])
def test_forget_removes_their_lessons_inbound_records_and_quoted_address(
    rt: Runtime, how: str
) -> None:
    ana = enroll(rt, "ana@example.org")
    ben = enroll(rt, "ben@example.org")
    send_days(rt, 3)
    inbound(rt, "gmail", ana, "ana@example.org")  # a reply, saved
    inbound(rt, "bounce_soft", ana, "ana@example.org")  # a delay, quoting the address
    inbound(rt, "phone", ben, "ben@example.org")
    with transaction(rt.sessions) as session:
        # A relay refusing one message may quote its address in what is kept elsewhere.
        session.execute(
            update(Delivery)
            .where(Delivery.enrollment_id == ben, Delivery.day == 1)
            .values(last_error="451 4.7.1 <ANA@example.org> greylisted, and ben's too")
        )
        session.execute(
            update(CircuitBreaker)
            .where(CircuitBreaker.name == "mail")
            .values(reason="550 <ana@example.org> refused")
        )
    assert outbox_holding(rt, "ana@example.org") == 3
    assert {enrollment_id for _, enrollment_id in inbound_rows(rt)} == {ana, ben}

    if how == "operator's forget":
        result = run_cli(rt.settings, "forget", "--yes", "ana@example.org")
        assert result.exit_code == 0, result.output
    else:
        client = make_app(rt, Clock(NOW)).test_client()
        page = path(rt, links.JOURNAL, ana) + "/delete/everything"
        assert post_form(client, page).status_code == 200

    assert outbox_holding(rt, "ana@example.org") == 0
    assert outbox_holding(rt, "ben@example.org") == 3
    assert inbound_rows(rt) == [(InboundKind.REPLY, ben)]
    with rt.sessions() as session:
        errors = list(session.scalars(select(Delivery.last_error).where(Delivery.day == 1)))
        assert errors == [f"451 4.7.1 <{privacy.ERASED}> greylisted, and ben's too"]
        breaker = session.get(CircuitBreaker, "mail")
        assert breaker is not None and breaker.reason == f"550 <{privacy.ERASED}> refused"


def test_a_forgotten_address_keeps_one_entry_saying_only_that_they_were_forgotten(
    rt: Runtime,
) -> None:
    """A bounce's diagnostic, kept as the reason of their suppression, quoted the address."""
    ana = enroll(rt, "ana@example.org")
    send_days(rt, 3)
    inbound(rt, "bounce_hard", ana, "ana@example.org")
    with rt.sessions() as session:
        assert "ana@example.org" in session.scalars(select(Suppression.reason)).one()
    later = NOW + DAY
    with transaction(rt.sessions) as session:
        privacy.forget_subscriber(
            session, privacy.find_subscriber(session, "ana@example.org"), later
        )
    with rt.sessions() as session:
        (entry,) = session.scalars(select(Suppression)).all()
        assert (entry.email, entry.reason, entry.created_at) == (
            "ana@example.org",
            privacy.FORGOTTEN,
            later,
        )


def test_records_of_inbound_mail_that_saved_nothing_expire_after_the_duplicate_window(
    rt: Runtime,
) -> None:
    ana = enroll(rt, "ana@example.org")
    send_days(rt, 3)
    inbound(rt, "gmail", ana, "someone.else@example.org")  # held: from another address
    inbound(rt, "out_of_office", ana, "ana@example.org")
    inbound(rt, "phone", ana, "ana@example.org")  # a reply: goes with its reflection instead
    kept = inbound_rows(rt)
    assert len(kept) == 3
    with transaction(rt.sessions) as session:
        just_inside = NOW + privacy.DUPLICATE_WINDOW
        assert privacy.expire_inbound_records(session, just_inside) == 0
        assert privacy.expire_inbound_records(session, just_inside + dt.timedelta(seconds=1)) == 2
    assert inbound_rows(rt) == [(InboundKind.REPLY, ana)]


@pytest.mark.parametrize("how", ["delete my reflections", "retention"])
def test_the_record_of_a_reply_goes_with_the_reflections(rt: Runtime, how: str) -> None:
    ana = enroll(rt, "ana@example.org")
    send_days(rt, 3)
    inbound(rt, "gmail", ana, "ana@example.org")
    assert inbound_rows(rt) == [(InboundKind.REPLY, ana)]
    with transaction(rt.sessions) as session:
        if how == "retention":
            assert privacy.delete_old_reflections(session, 30, NOW + 31 * DAY) == 1
        else:
            found = privacy.find_subscriber(session, "ana@example.org")
            assert privacy.delete_reflections(session, found) == 1
    assert inbound_rows(rt) == []


# -- the property: after a forget, nothing of the person anywhere -------------------------

# Words distinctive enough that finding them means finding the person's: a random part, and
# a fixed one that no file of ours holds by chance.
TEXTS = st.text(min_size=0, max_size=40).map(lambda s: f"{s}\u2042Qz7")
NAMES = st.text(
    alphabet=st.characters(categories=("L", "M", "N", "Zs"), codec="utf-8"),
    max_size=30,
).map(lambda s: f"Zephyrine {s.strip()} Quoll".strip())
LOCALS = st.from_regex(r"[a-z][a-z0-9._-]{0,20}[a-z0-9]", fullmatch=True)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(local=LOCALS, name=NAMES, written=TEXTS, replied=TEXTS)
@example(local="ana.o", name="Zephyrine Ana Quoll", written="=1+1", replied="dear diary")
def test_after_forget_nothing_holds_their_address_name_or_words(
    migrated_sqlite: Path, local: str, name: str, written: str, replied: str
) -> None:
    email = f"{local}@zz-example.org"
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        (home / "var").mkdir(mode=0o700)
        shutil.copy(migrated_sqlite, home / "var" / "dripcourse.sqlite3")
        rt = Runtime(settings_in(home))
        records: list[str] = []
        handler = _Collect(records)
        logging.getLogger().addHandler(handler)
        try:
            person = _a_person_with_everything(rt, email, name, written, replied)
            result = run_cli(rt.settings, "forget", "--yes", email)
            assert result.exit_code == 0, result.output
        finally:
            logging.getLogger().removeHandler(handler)
            rt.close()
        rt = Runtime(settings_in(home))
        try:
            _assert_nothing_of(rt, home / "var", person, records)
        finally:
            rt.close()


class _Collect(logging.Handler):
    def __init__(self, records: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


def _a_person_with_everything(
    rt: Runtime, email: str, name: str, written: str, replied: str
) -> dict[str, str]:
    """Enrolled beside someone else, sent three lessons, wrote on the page, replied by email,
    had a delivery delayed with a diagnostic quoting the address."""
    course = rt.catalog.course(COURSE)
    with transaction(rt.sessions) as session:
        cohort = enrollment.create_cohort(session, "spring", course, "2025-03-03", NOW - 3 * DAY)
        for who, whose in ((email, name), ("ben@example.org", "Ben")):
            signup = check_signup(who, whose, "UTC")
            enrollment.enroll(session, cohort, course, signup, NOW - 3 * DAY)
    send_days(rt, 3)
    with rt.sessions() as session:
        mine = session.scalar(
            select(Enrollment.id)
            .join(Enrollment.subscriber)
            .where(Enrollment.subscriber.has(email=email))
        )
    assert mine is not None
    with transaction(rt.sessions) as session:
        found = session.get(Enrollment, mine)
        assert found is not None
        reflections.save_reflection(
            session,
            found,
            1,
            "A question?",
            written,
            cipher=rt.reflection_cipher,
            max_chars=5000,
            now=NOW,
        )
    reply = (MAIL / "gmail.eml").read_bytes().replace(b"@@FROM@@", email.encode())
    reply = reply.replace(b"@@REPLY@@", address(rt, REPLY, mine, 2, DOMAIN).encode())
    reply = _with_body(reply, replied)
    delay = (MAIL / "bounce_soft.eml").read_bytes().replace(b"@@FROM@@", email.encode())
    delay = delay.replace(b"@@BOUNCE@@", address(rt, BOUNCE, mine, 3, DOMAIN).encode())
    for raw in (reply, delay):
        with transaction(rt.sessions) as session:
            process(session, raw, rt.inbound, now=NOW)
    with rt.sessions() as session:
        kept = session.execute(
            select(Subscriber.derived_greeting, Subscriber.derived_given_name).where(
                Subscriber.email == email
            )
        ).one()
    assert all(kept), "what the name gives is kept, so its erasure is tested"
    return {
        "address": email,
        "name": name,
        "written": written,
        "replied": replied,
        # What the name gave, kept beside it (courses/greeting.py): it goes with the name.
        "greeting": kept.derived_greeting,
        "given_name": kept.derived_given_name,
    }


def _with_body(raw: bytes, text: str) -> bytes:
    """The reply fixture with ``text`` as its first line (it is UTF-8, 8bit)."""
    head, _, body = raw.partition(b"\n\n")
    return head + b"\n\n" + text.encode() + b"\n\n" + body


def _assert_nothing_of(rt: Runtime, var: Path, person: dict[str, str], records: list[str]) -> None:
    words = [person[key] for key in ("name", "written", "replied", "greeting", "given_name")]
    address = person["address"]
    # Every table, every value (reflections opened): only the do-not-mail entry names them.
    meta = MetaData()
    with rt.engine.connect() as conn:
        meta.reflect(conn)
        for table in meta.sorted_tables:
            for row in conn.execute(select(table)):
                values = dict(row._mapping)
                if "sealed_body" in values:
                    values["body"] = rt.reflection_cipher.open(values.pop("sealed_body"))
                text = " ".join(str(v) for v in values.values()).casefold()
                for word in words:
                    assert word.casefold() not in text, (table.name, word)
                if table.name == "suppressions" and values["email"] == address:
                    assert values["reason"] == privacy.FORGOTTEN
                    continue
                assert address.casefold() not in text, table.name
        assert conn.scalar(select(func.count()).select_from(meta.tables["suppressions"])) == 1
    # Every file under var/: the database file, its log, the outbox, the operator log, keys.
    for file in var.rglob("*"):
        if not file.is_file():
            continue
        data = file.read_bytes()
        for word in words:
            assert word.encode() not in data, (file.name, word)
        if file.name != "dripcourse.sqlite3":
            assert address.encode() not in data, file.name
    # Every log line written while it happened, and after.
    for line in records:
        for word in [*words, address]:
            assert word not in line, line
