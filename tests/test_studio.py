"""The preview studio shows every lesson as subscribers will see it, and follows edits on disk."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient

from dripcourse import db
from dripcourse.cli import cli
from dripcourse.courses.studio import check_host, create_studio
from dripcourse.errors import ConfigError
from dripcourse.links import PATHS, BadToken
from dripcourse.people import enrollment
from dripcourse.people.signup import check_signup
from dripcourse.runtime import Runtime
from dripcourse.web import create_app
from tests.conftest import EMAILS, make_settings, utc
from tests.workers import settings_env

NOW = utc(2026, 11, 20, 12)


@pytest.fixture
def emails(tmp_path: Path) -> Path:
    target = tmp_path / "emails"
    shutil.copytree(EMAILS, target)
    return target


@pytest.fixture
def studio_rt(tmp_path: Path, sqlite_url: str, emails: Path) -> Runtime:
    return Runtime(make_settings(tmp_path, database_url=sqlite_url, emails_dir=str(emails)))


@pytest.fixture
def client(studio_rt: Runtime) -> FlaskClient:
    return create_studio(studio_rt).test_client()


def page(client: FlaskClient, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, response.data
    return response.get_data(as_text=True)


def test_the_index_lists_every_lesson_with_its_facts_and_findings(
    client: FlaskClient, emails: Path
) -> None:
    day2 = emails / "white-coat" / "day-02.md"
    day2.write_text(
        day2.read_text().replace('running"', 'running through every single long night shift"')
    )
    (emails / "white-coat" / "NOTES.md").write_text("ideas\n")
    html = page(client, "/")
    for day in range(1, 8):
        assert f'href="/course/white-coat/{day}"' in html
    assert "Day 1: Noticing the weight you carry" in html
    shown = re.sub(r"<[^>]+>", "", " ".join(html.split()))
    assert "keep each course as they loaded it when they started" in shown
    assert "then restart the workers" in shown
    assert "Day 1: Day 1:" not in shown, "a subject naming its day is not labelled twice"
    assert "When did you last finish a shift feeling that the work mattered?" in html
    assert re.search(r"\d+(\.\d)? min read &middot; \d+\.\d KB after inlining", html)
    assert "day-02.md:3: warning: the subject is 78 characters" in html
    assert "NOTES.md:1: ignored: not a lesson" in html


def test_a_lesson_shows_both_widths_dark_mode_text_and_headers(client: FlaskClient) -> None:
    html = page(client, "/course/white-coat/3")
    assert 'width="375"' in html and 'width="600"' in html
    assert 'class="frame dark"' in html
    assert "<dt>From</dt><dd>The White Coat Reset &lt;lessons@dripcourse.example&gt;</dd>" in html
    assert "<dt>To</dt><dd>Dr. Sample Reader &lt;reader@example.org&gt;</dd>" in html
    assert '<dd id="subject">Day 3: Small boundaries on a real rota</dd>' in html
    assert "<dt>Preheader</dt>" in html
    assert "Good morning, Dr. Reader." in html  # the plain-text part
    # The salutation is the send time's, whatever the hour staff look; the page says so.
    assert '<dd id="salutation">&ldquo;Good morning&rdquo; as shown, sent at 07:00;' in html
    frame = client.get("/course/white-coat/3/html")
    assert frame.status_code == 200 and frame.mimetype == "text/html"
    assert "Write your reflection" in frame.get_data(as_text=True)


def test_as_email_shows_a_real_subscriber_with_sample_links_only(
    client: FlaskClient, studio_rt: Runtime
) -> None:
    """ "Preview as" rendered working journal, reflect, pause and unsubscribe links for the
    person: whoever could reach the studio could open their reflections."""
    course = studio_rt.catalog.course("white-coat")
    with db.transaction(studio_rt.sessions) as session:
        cohort = enrollment.create_cohort(session, "c", course, "now", NOW)
        signup = check_signup("amara@example.org", "Okafor, Amara", "Asia/Kolkata")
        enrollment.enroll(session, cohort, course, signup, NOW)

    html = page(client, "/course/white-coat/2?as=Amara@example.org")
    assert "<dt>To</dt><dd>Okafor, Amara &lt;amara@example.org&gt;</dd>" in html
    assert "Asia/Kolkata" in html
    assert "Good morning, Amara." in html
    found = re.findall(r"https://course\.example\.org/([rjpuls])/([\w.\-]+)", html)
    assert {kind for kind, _ in found} == {"r", "j", "p", "u", "l", "s"}
    web = create_app(studio_rt, {"TESTING": True}).test_client()
    for kind, token in found:
        assert web.get(f"/{kind}/{token}").status_code == 404, kind  # a sample link: nobody's
        with pytest.raises(BadToken):
            studio_rt.links.load(next(p for p, k in PATHS.items() if k == kind), token)


def test_an_unknown_as_email_shows_the_sample_reader_and_says_so(client: FlaskClient) -> None:
    html = page(client, "/course/white-coat/2?as=nobody@example.org")
    assert "no subscriber with the address nobody@example.org" in html
    assert "Dr. Sample Reader" in html


def test_an_edit_on_disk_shows_on_the_next_request(client: FlaskClient, emails: Path) -> None:
    before = client.get("/_fingerprint").json
    html = page(client, "/course/white-coat/1")
    assert "Whether you are reading this" in html
    # The open page polls the fingerprint it was made from and reloads when it changes.
    assert f'var seen = "{before["fingerprint"]}";' in html and 'fetch("/_fingerprint"' in html
    day1 = emails / "white-coat" / "day-01.md"
    day1.write_text(day1.read_text().replace("Whether you are", "Wherever you are"))
    assert client.get("/_fingerprint").json != before
    html = page(client, "/course/white-coat/1")
    assert "Wherever you are reading this" in html
    assert "Whether you are reading this" not in html


def test_a_broken_lesson_shows_its_error_in_place(client: FlaskClient, emails: Path) -> None:
    page(client, "/course/white-coat/3")
    day3 = emails / "white-coat" / "day-03.md"
    day3.write_text(day3.read_text().replace("{{ greeting }}", "{{ email }}"))
    html = page(client, "/course/white-coat/3")
    assert "This lesson does not render" in html
    assert f"{day3}:11: unknown variable &#39;email&#39;" in html
    assert "<iframe" not in html
    frame = client.get("/course/white-coat/3/html")
    assert frame.status_code == 422 and b"day-03.md:11" in frame.data
    assert "day-03.md:11" in page(client, "/")
    assert "Good morning" in page(client, "/course/white-coat/4")  # the others still show


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("127.0.0.1:8001", 200),
        ("localhost:8001", 200),
        ("[::1]:8001", 200),  # what a browser sends for --host ::1; refused before
        ("[::1]", 200),
        ("attacker.example", 400),
        ("attacker.example:8001", 400),
        ("[::2]:8001", 400),
        ("127.0.0.1.attacker.example", 400),
    ],
)
def test_the_studio_answers_only_to_local_host_names(
    client: FlaskClient, host: str, status: int
) -> None:
    assert client.get("/", headers={"Host": host}).status_code == status


@pytest.mark.parametrize(("host", "allowed"), [("127.0.0.1", True), ("0.0.0.0", False)])
def test_the_studio_listens_on_loopback_unless_told(host: str, allowed: bool) -> None:
    if allowed:
        check_host(host, allow_remote=False)
    else:
        with pytest.raises(ConfigError, match="--allow-remote"):
            check_host(host, allow_remote=False)
        check_host(host, allow_remote=True)


def test_preview_serve_refuses_a_public_interface_in_one_line(studio_rt: Runtime) -> None:
    result = CliRunner().invoke(
        cli, ["preview", "--serve", "--host", "0.0.0.0"], env=settings_env(studio_rt.settings)
    )
    assert result.exit_code == 1
    assert result.output.startswith("Error: --host 0.0.0.0: the studio")


# A lesson address with no lesson behind it, and what the 404 page must say.
MISSING = {
    "a day past the course": ("/course/white-coat/999", "There is no day 999"),
    "day zero": ("/course/white-coat/0", "There is no day 0"),
    "a negative day": ("/course/white-coat/-1", "There is no day -1"),
    "not a number": ("/course/white-coat/three", "There is no day three"),
    "markup": ("/course/white-coat/%3Cb%3Ethree", "There is no day &lt;b&gt;three in"),
    "a number past any integer": ("/course/white-coat/" + "9" * 40, "There is no day 999"),
    "the frame of a missing day": ("/course/white-coat/999/html", "There is no day 999"),
}
DAYS_OF_WHITE_COAT = "The White Coat Reset has days 1 to 7"


@pytest.mark.parametrize(("url", "says"), MISSING.values(), ids=MISSING.keys())
def test_a_day_the_course_does_not_have_is_a_404_naming_the_days_it_has(
    client: FlaskClient, url: str, says: str
) -> None:
    response = client.get(url)
    html = response.get_data(as_text=True)
    assert response.status_code == 404
    assert says in html and DAYS_OF_WHITE_COAT in html
    for day in range(1, 8):
        assert f'href="/course/white-coat/{day}"' in html
    assert 'fetch("/_fingerprint"' in html  # reloads when the lesson file is saved


@pytest.mark.parametrize(
    "url",
    [
        "/course/nope/1",
        "/course/nope/1/html",
        "/course/_layout/1",  # a folder under emails/, but not a course
        "/course/../1",
        "/course/%2e%2e/1",
        "/course/..%2F..%2Fetc%2Fpasswd/1",
        "/course/white-coat",
        "/nothing-here",
    ],
)
def test_an_address_with_no_course_behind_it_is_a_404_listing_the_courses(
    client: FlaskClient, url: str
) -> None:
    response = client.get(url)
    html = response.get_data(as_text=True)
    assert response.status_code == 404
    assert "There is no course" in html or "There is no page" in html
    assert 'href="/course/white-coat/1">The White Coat Reset</a>' in html
    assert "days 1 to 7" in html and "root:" not in html


def test_while_course_toml_is_broken_any_day_shows_its_error_in_place(
    client: FlaskClient, emails: Path
) -> None:
    """Which days there are is not known then; the page says what to fix, as before."""
    (emails / "white-coat" / "course.toml").write_text("title = \n")
    for day in (1, 999):
        html = page(client, f"/course/white-coat/{day}")
        assert "This lesson does not render" in html and "course.toml:1: not valid TOML" in html
    assert client.get("/course/white-coat/three").status_code == 404
