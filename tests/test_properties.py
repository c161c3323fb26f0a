"""Property-based: any Unicode a person can type is refused in one line or kept exactly as meant.

Names and addresses go through a CSV import into the database and into a finished message;
reflection text goes through the web form and back out on the pages. Whatever Hypothesis
tries: never a traceback, never a header that reads back differently from what was meant,
never text shown as HTML.
"""

from __future__ import annotations

import csv
import email
import email.policy
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from markupsafe import escape
from sqlalchemy import select

from dripcourse import links
from dripcourse.courses.message import build_message, message_id
from dripcourse.courses.render import Personal
from dripcourse.courses.wire import wire_bytes
from dripcourse.db import transaction
from dripcourse.errors import InputError
from dripcourse.links import Links
from dripcourse.models import Reflection, Subscriber
from dripcourse.people import csv_file, enrollment
from dripcourse.people.signup import Signup
from dripcourse.reader import reflections
from dripcourse.runtime import Runtime
from tests.conftest import EMAILS, make_settings, utc
from tests.test_web_support import DAY_1_UTC, Clock, make_app, path, post_form, send_days
from tests.test_web_support import enroll as enroll_one

EXAMPLES = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
NOW = utc(2026, 3, 2, 7)
LINKS = Links(secret_key="property-test-key-of-at-least-32-bytes", base_url="https://x.example")
KEY = "abcdefghij23"  # an enrollment's link key
EXPECTED_HEADERS = {
    "content-type",
    "mime-version",
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
}
# Names as people type them, and the characters that broke headers before.
NAMES = st.text(max_size=60) | st.text(
    alphabet=st.sampled_from(list("Aa é李,;:\"'<>()\\@=?\x0b\x0c\x00\r\n\t\u2028\u202e\u200b")),
    max_size=30,
)
ADDRESSES = (
    st.emails()
    | st.text(max_size=40)
    | st.builds(
        "{}@{}".format,
        st.text(alphabet="ab.\x00\x0c é@", max_size=6),
        st.text(alphabet="ab.-\x0c é", max_size=12),
    )
)


@pytest.fixture(scope="module")
def emails(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample course, its Day 1 subject carrying the name: a header built from it."""
    folder = tmp_path_factory.mktemp("emails") / "emails"
    shutil.copytree(EMAILS, folder)
    lesson = folder / "white-coat" / "day-01.md"
    text = lesson.read_text(encoding="utf-8")
    lesson.write_text(text.replace('subject: "Day 1:', 'subject: "Day 1 for {{ name }}:'))
    return folder


@pytest.fixture
def rt(tmp_path: Path, database_url: str, emails: Path) -> Iterator[Runtime]:
    runtime = Runtime(make_settings(tmp_path, database_url=database_url, emails_dir=str(emails)))
    with transaction(runtime.sessions) as session:
        course = runtime.catalog.course("white-coat")
        enrollment.create_cohort(session, "c", course, "2026-03-02", NOW)
    yield runtime
    runtime.close()


def import_row(tmp_path: Path, address: str, name: str) -> list[Signup]:
    path = tmp_path / "cohort.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows([["email", "name", "timezone"], [address, name, "UTC"]])
    parsed = csv_file.read_csv(path)
    if parsed.errors:
        raise InputError("\n".join(parsed.errors))
    return [row.signup for row in parsed.rows]


@EXAMPLES
@given(address=ADDRESSES, name=NAMES)
@example(address="ana@example.org", name="Ana\x0cBcc: everyone@example.org")
@example(address="ana@example.org", name="Ana\x0bBcc: everyone@example.org")
@example(address="ana@example.org", name="Ana\x00")
@example(address="a@example..org", name="Ana")
@example(address="ana@example.org", name='Dr. "Ana" <x@y.org>, Z')
@example(address="ana@example.org", name="Ana, de la Cruz; =?utf-8?q?x?=")
def test_any_name_and_address_is_refused_in_one_line_or_delivered_as_meant(
    rt: Runtime, tmp_path: Path, address: str, name: str
) -> None:
    try:
        signups = import_row(tmp_path, address, name)
    except InputError as exc:
        event("refused")
        assert str(exc).startswith(str(tmp_path / "cohort.csv"))
        assert "Traceback" not in str(exc)
        return
    (signup,) = signups
    event("accepted" + (" with a name" if signup.name else ""))
    course = rt.catalog.course("white-coat")
    try:
        with transaction(rt.sessions) as session:
            cohort = enrollment.get_cohort(session, "c")
            enrollment.enroll_all(session, cohort, course, signups, NOW)
    except InputError as exc:
        # An address Hypothesis tried before: already in the cohort, or on record by another name.
        assert "is already enrolled" in str(exc) or "is already on record" in str(exc)
    else:
        with transaction(rt.sessions) as session:
            stored = session.scalar(select(Subscriber).where(Subscriber.email == signup.email))
            assert stored is not None and stored.name == signup.name

    who = Personal(email=signup.email, name=signup.name, **LINKS.for_lesson(1, 1, KEY))
    rendered = rt.catalog.renderer.lesson(course, 1)
    msg = build_message(rendered, who, now=NOW, msg_id=message_id("x.example", 1, "k"))
    parsed = email.message_from_bytes(wire_bytes(msg), policy=email.policy.default)

    assert {k.lower() for k in parsed} == EXPECTED_HEADERS
    (to,) = parsed["To"].addresses
    assert (to.display_name, to.addr_spec) == (signup.name, signup.email)
    assert str(parsed["Subject"]) == rendered.subject.render(who)
    assert signup.name in str(parsed["Subject"])
    assert parsed["List-Unsubscribe"].strip() == f"<{who.unsubscribe}>"  # folded after the colon
    html = parsed.get_body(("html",)).get_content()  # type: ignore[union-attr]
    text = parsed.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert f"Good morning, {escape(who.first_name)}." in html
    assert f"Good morning, {who.first_name}." in text


@pytest.fixture
def reader(rt: Runtime) -> tuple[FlaskClient, str, int]:
    """A subscriber who got Day 1, their reflect page and a browser."""
    enrollment_id = enroll_one(rt, "reader@example.org", cohort="r")
    send_days(rt, 1)
    return (
        make_app(rt, Clock(DAY_1_UTC)).test_client(),
        path(rt, links.REFLECT, enrollment_id, 1),
        enrollment_id,
    )


@EXAMPLES
@given(text=st.text(max_size=200) | st.sampled_from(["</textarea><script>x()</script>", "&amp;"]))
def test_any_reflection_is_saved_or_refused_and_always_shown_as_text(
    rt: Runtime, reader: tuple[FlaskClient, str, int], text: str
) -> None:
    client, url, enrollment_id = reader
    before = client.get(url).get_data(as_text=True)
    response = post_form(client, url, reflection=text)
    assert response.status_code in (303, 400), response.status_code
    cleaned = reflections.clean_text(text)
    if response.status_code == 400:
        pages = [response.get_data(as_text=True)]
        with transaction(rt.sessions) as session:
            earlier = session.scalar(
                select(Reflection).where(Reflection.enrollment_id == enrollment_id)
            )
        if earlier is None:
            assert "Your reflection is empty" in pages[0]
            cleaned = reflections.as_typed(text)  # what the form shows again
        else:  # an emptied box saves nothing: the earlier reflection is shown again
            assert "The box was empty, so nothing was saved" in pages[0]
            cleaned = reflections.WrittenReflection.opened(earlier, rt.reflection_cipher).body
    else:
        with transaction(rt.sessions) as session:
            saved = session.scalar(
                select(Reflection).where(Reflection.enrollment_id == enrollment_id)
            )
            assert saved is not None
            opened = reflections.WrittenReflection.opened(saved, rt.reflection_cipher)
            assert opened.body == cleaned
        pages = [
            client.get(url).get_data(as_text=True),
            client.get(path(rt, links.JOURNAL, enrollment_id)).get_data(as_text=True),
        ]
    for page in pages:
        assert str(escape(cleaned)) in page
        if "<" in cleaned and cleaned not in before:  # "<" alone is in every page's markup
            assert cleaned not in page
        assert "<script" not in page
