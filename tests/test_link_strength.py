"""No page hands out a link stronger than the one it was opened with; HEAD and other methods."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from freezegun import freeze_time

from dripcourse import links
from dripcourse.models import EnrollmentStatus
from dripcourse.runtime import Runtime
from tests.conftest import make_settings
from tests.test_web_support import DAY, DAY_1_UTC, Clock, enroll, load, make_app, post_form
from tests.test_web_support import path as link_path

SENT = dt.datetime(2025, 3, 3, 8, 0)  # when the lesson email (and its links) went out
TOKEN = re.compile(r"/([rjpu])/([A-Za-z0-9_.-]+)")
PURPOSE = {short: purpose for purpose, short in links.PATHS.items()}
PRIVATE = (links.REFLECT, links.JOURNAL)  # the links to reflections, which may expire


@pytest.fixture
def rt(tmp_path: Path, sqlite_url: str):  # type: ignore[no-untyped-def]
    runtime = Runtime(make_settings(tmp_path, database_url=sqlite_url, reflect_max_age_days=1))
    yield runtime
    runtime.close()


@pytest.fixture
def client(rt: Runtime) -> FlaskClient:
    return make_app(rt, Clock(DAY_1_UTC + 40 * DAY)).test_client()


@pytest.fixture
def ana(rt: Runtime) -> int:
    """A subscriber who was sent Day 1 and wrote a private reflection about it."""
    from tests.test_web_support import send_days

    enrollment_id = enroll(rt)
    send_days(rt, 1)
    client = make_app(rt, Clock(DAY_1_UTC)).test_client()
    with freeze_time(SENT):
        post_form(client, link_path(rt, links.REFLECT, enrollment_id, 1), reflection="Private.")
    return enrollment_id


def emailed(rt: Runtime, purpose: str, *ids: int) -> str:
    """A link as the lesson email carried it, made when the email was sent."""
    with freeze_time(SENT):
        return link_path(rt, purpose, *ids)


def offered(page: str) -> list[tuple[str, str]]:
    """Every (purpose, path) of a link token on a page."""
    return [(PURPOSE[short], f"/{short}/{token}") for short, token in TOKEN.findall(page)]


def test_a_month_old_unsubscribe_link_leads_to_nothing_private(
    rt: Runtime, client: FlaskClient, ana: int
) -> None:
    """The issue's case: reflect and journal links expire after a day; unsubscribe never."""
    with freeze_time(SENT + 30 * DAY):
        for purpose, ids in ((links.REFLECT, (ana, 1)), (links.JOURNAL, (ana,))):
            assert client.get(emailed(rt, purpose, *ids)).status_code == 404
        seen: set[str] = set()
        pages = [emailed(rt, links.UNSUBSCRIBE, ana)]
        while pages:  # follow every link offered, from page to page
            url = pages.pop()
            seen.add(url)
            response = client.get(url)
            page = response.get_data(as_text=True)
            assert "Private." not in page
            for purpose, found in offered(page):
                if found not in seen:
                    assert purpose not in PRIVATE or client.get(found).status_code == 404
                    pages.append(found)
        assert {url.split("/")[1] for url in seen} == {"u", "p"}


@pytest.mark.parametrize(
    ("opened_with", "leads_to"), [(links.REFLECT, links.JOURNAL), (links.JOURNAL, links.REFLECT)]
)
def test_following_links_never_renews_an_expiring_one(
    rt: Runtime, client: FlaskClient, ana: int, opened_with: str, leads_to: str
) -> None:
    ids = (ana, 1) if opened_with == links.REFLECT else (ana,)
    with freeze_time(SENT + dt.timedelta(hours=20)):  # still valid: the limit is one day
        page = client.get(emailed(rt, opened_with, *ids)).get_data(as_text=True)
    onward = [url for purpose, url in offered(page) if purpose == leads_to]
    assert onward
    with freeze_time(SENT + dt.timedelta(hours=28)):  # the emailed links have expired
        assert [client.get(url).status_code for url in onward] == [404] * len(onward)


@pytest.mark.parametrize("opened_with", [links.PAUSE, links.UNSUBSCRIBE])
def test_pages_of_never_expiring_links_offer_no_link_to_reflections(
    tmp_path: Path, sqlite_url: str, opened_with: str
) -> None:
    # Even when nothing expires: the unsubscribe link travels in a header to mail providers.
    rt = Runtime(make_settings(tmp_path, database_url=sqlite_url))
    enrollment_id = enroll(rt)
    page = (
        make_app(rt, Clock(DAY_1_UTC)).test_client().get(link_path(rt, opened_with, enrollment_id))
    )
    assert page.status_code == 200
    purposes = {purpose for purpose, _ in offered(page.get_data(as_text=True))}
    assert not purposes & set(PRIVATE)
    rt.close()


# -- methods -----------------------------------------------------------------------------

PAGES = {
    links.REFLECT: (lambda rt, ana: link_path(rt, links.REFLECT, ana, 1), "GET, HEAD, POST"),
    links.JOURNAL: (lambda rt, ana: link_path(rt, links.JOURNAL, ana), "GET, HEAD"),
    links.PAUSE: (lambda rt, ana: link_path(rt, links.PAUSE, ana), "GET, HEAD, POST"),
    links.UNSUBSCRIBE: (lambda rt, ana: link_path(rt, links.UNSUBSCRIBE, ana), "GET, HEAD, POST"),
    "privacy": (lambda rt, ana: "/privacy", "GET, HEAD"),  # no link, the same rule
}


@pytest.fixture
def fresh(rt: Runtime) -> tuple[FlaskClient, int]:
    """A client at a time when every link of Day 1 still works."""
    from tests.test_web_support import send_days

    enrollment_id = enroll(rt)
    send_days(rt, 1)
    return make_app(rt, Clock(DAY_1_UTC + DAY)).test_client(), enrollment_id


@pytest.mark.parametrize("page", PAGES.keys())
def test_head_answers_as_get_without_a_body_and_changes_nothing(
    rt: Runtime, fresh: tuple[FlaskClient, int], page: str
) -> None:
    client, ana = fresh
    url = PAGES[page][0](rt, ana)
    got, head = client.get(url), client.head(url)
    assert (
        (head.status_code, head.content_type)
        == (got.status_code, got.content_type)
        == (
            200,
            "text/html; charset=utf-8",
        )
    )
    assert head.get_data() == b""
    assert head.headers["Content-Security-Policy"] == got.headers["Content-Security-Policy"]
    assert load(rt, ana).status == EnrollmentStatus.ACTIVE


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"])
@pytest.mark.parametrize("page", PAGES.keys())
def test_any_other_method_gets_405(
    rt: Runtime, fresh: tuple[FlaskClient, int], page: str, method: str
) -> None:
    client, ana = fresh
    make_url, allowed = PAGES[page]
    response = client.open(make_url(rt, ana), method=method, data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 405
    assert sorted(response.headers["Allow"].split(", ")) == allowed.split(", ")
    assert load(rt, ana).status == EnrollmentStatus.ACTIVE
