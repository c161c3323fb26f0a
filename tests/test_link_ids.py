"""A signed link whose ids no row can have gets the "not valid" page, never a 500.

Only the holder of the secret key can make such a link, but a link is still input: an id past
what an id column holds (PostgreSQL's 32-bit integer, SQLite's 64-bit one) must not reach the
database, where it fails the whole query.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from dripcourse import links
from dripcourse.models import MAX_ID, EnrollmentStatus
from dripcourse.runtime import Runtime
from tests.conftest import make_settings
from tests.test_web_support import DAY, DAY_1_UTC, Clock, enroll, load, make_app, send_days, token

# Past PostgreSQL's integer, past SQLite's, and below both; 0 and -1 are no row's id either.
OUT_OF_RANGE = [MAX_ID + 1, 2**63 - 1, 2**63, 10**30, -(2**31) - 1, -(2**63) - 1, 0, -1]

# Every page opened by a signed link: how to make its path from the ids, and its methods.
PAGES = {
    "reflect, enrollment": (links.REFLECT, lambda n: (n, 1), "", ("GET", "POST")),
    "reflect, day": (links.REFLECT, lambda n: (1, n), "", ("GET", "POST")),
    "journal": (links.JOURNAL, lambda n: (n,), "", ("GET",)),
    "journal.md": (links.JOURNAL, lambda n: (n,), "/journal.md", ("GET",)),
    "journal to print": (links.JOURNAL, lambda n: (n,), "/journal.html", ("GET",)),
    "delete everything": (links.JOURNAL, lambda n: (n,), "/delete/everything", ("GET", "POST")),
    "lesson, enrollment": (links.LESSON, lambda n: (n, 1), "", ("GET",)),
    "lesson, day": (links.LESSON, lambda n: (1, n), "", ("GET",)),
    "pause": (links.PAUSE, lambda n: (n,), "", ("GET", "POST")),
    "unsubscribe": (links.UNSUBSCRIBE, lambda n: (n,), "", ("GET", "POST")),
    "confirm, enrollment": (links.CONFIRM, lambda n: (n, 1), "", ("GET", "POST")),
    "confirm, held reply": (links.CONFIRM, lambda n: (1, n), "", ("GET", "POST")),
}


@pytest.fixture
def rt(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    runtime = Runtime(make_settings(tmp_path, database_url=database_url))
    yield runtime
    runtime.close()


@pytest.fixture
def client(rt: Runtime) -> FlaskClient:
    """As in production: an error becomes a 500 page instead of reaching the test."""
    enroll(rt)
    send_days(rt, 2)
    return make_app(rt, Clock(DAY_1_UTC + 2 * DAY), PROPAGATE_EXCEPTIONS=False).test_client()


def url(rt: Runtime, purpose: str, ids: tuple[int, ...], suffix: str) -> str:
    return f"/{links.PATHS[purpose]}/{token(rt, purpose, *ids)}{suffix}"


@pytest.mark.parametrize(
    ("purpose", "make_ids", "suffix", "methods"), PAGES.values(), ids=PAGES.keys()
)
def test_a_signed_link_with_an_id_no_row_can_have_gets_the_not_valid_page(
    rt: Runtime, client: FlaskClient, purpose: str, make_ids, suffix: str, methods: tuple[str, ...]
) -> None:  # type: ignore[no-untyped-def]
    answered = {}
    for n in OUT_OF_RANGE:
        for method in methods:
            data = {"List-Unsubscribe": "One-Click"} if method == "POST" else None
            response = client.open(url(rt, purpose, make_ids(n), suffix), method=method, data=data)
            page = response.get_data(as_text=True)
            answered[(n, method)] = (response.status_code, "This link is not valid" in page)
    assert set(answered.values()) == {(404, True)}, answered
    assert load(rt, 1).status == EnrollmentStatus.ACTIVE


def test_the_largest_id_the_database_holds_is_still_looked_up(
    rt: Runtime, client: FlaskClient
) -> None:
    """The bound is the database's, not tighter: a genuine link to a deleted enrollment with
    the largest id says "no longer available", as for any other deleted one."""
    response = client.get(url(rt, links.JOURNAL, (MAX_ID,), ""))
    assert response.status_code == 410
    assert client.get(url(rt, links.REFLECT, (1, MAX_ID), "")).status_code == 404  # not sent
