"""The cohort circle: shared only by choice, seen only by the cohort, taken back at will."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from flask.testing import FlaskClient
from sqlalchemy import func, select, text

from dripcourse import links
from dripcourse.db import transaction
from dripcourse.models import CircleNote, CirclePost
from dripcourse.reader import reflections
from dripcourse.runtime import Runtime
from tests import circle_support
from tests.circle_support import (
    NOW,
    act,
    circle_form_token,
    lesson_page,
    post_id,
    share,
)
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
)

# -- the choice ------------------------------------------------------------------------

# The fixtures clock, client and people (tests/circle_support.py).
clock_fixture = circle_support.clock_fixture
client_fixture = circle_support.client_fixture
people_fixture = circle_support.people_fixture


def test_the_share_box_is_off_by_default_and_says_who_will_see_it(
    rt: Runtime, client: FlaskClient, people: dict[str, int]
) -> None:
    page = client.get(path(rt, links.REFLECT, people["ana"], 1)).get_data(as_text=True)
    box = re.search(r'<input type="checkbox" id="share"[^>]*>', page)
    assert box and "checked" not in box.group(0)
    assert "Share with my cohort" in page
    assert "the 1 other member of your cohort" in page
    assert "withdraw it at any time" in page
    assert "as Ana R. (first name and initial)" in page
    assert "anonymously, as &ldquo;A colleague&rdquo;" in page


def test_a_reflection_saved_without_the_box_is_not_shared(
    rt: Runtime, client: FlaskClient, people: dict[str, int]
) -> None:
    post_form(
        client, path(rt, links.REFLECT, people["ana"], 1), reflection="Mine alone.", circle="1"
    )
    assert "Mine alone." not in lesson_page(client, rt, people["ben"], 1)
    with transaction(rt.sessions) as session:
        assert session.scalar(select(CirclePost)) is None


def test_a_shared_reflection_shows_under_the_lesson_to_its_cohort_only(
    rt: Runtime, client: FlaskClient, people: dict[str, int]
) -> None:
    assert share(client, rt, people["ana"], 1, "I came back to medicine.").status_code == 303
    ben = lesson_page(client, rt, people["ben"], 1)
    assert "I came back to medicine." in ben
    assert "Ana R." in ben and "ana.ruiz@example.org" not in ben and "@" not in ben
    assert (
        "When did you last finish a shift" in ben.split('id="circle"')[1]
    )  # the day's question above it
    cleo = lesson_page(client, rt, people["cleo"], 1)
    assert "I came back to medicine." not in cleo
    # The same cohort, another day: not there either.
    assert "I came back to medicine." not in lesson_page(client, rt, people["ben"], 2)


def test_shared_reflections_show_oldest_first(
    rt: Runtime, client: FlaskClient, clock: Clock, people: dict[str, int]
) -> None:
    share(client, rt, people["ben"], 1, "Ben first.")
    clock.now += dt.timedelta(minutes=5)
    share(client, rt, people["ana"], 1, "Ana second.")
    page = lesson_page(client, rt, people["cleo"], 1)  # another cohort: neither
    assert "Ben first." not in page
    page = lesson_page(client, rt, people["ana"], 1)
    assert page.index("Ben first.") < page.index("Ana second.")


def test_an_anonymous_share_names_no_one_and_links_nothing(
    rt: Runtime, client: FlaskClient, people: dict[str, int]
) -> None:
    share(client, rt, people["ana"], 1, "Day one, anonymously.", shown_as="anonymous")
    share(client, rt, people["ana"], 2, "Day two, anonymously.", shown_as="anonymous")
    for day in (1, 2):
        page = lesson_page(client, rt, people["ben"], day)
        shared = page.split('id="circle"')[1]
        assert "A colleague" in shared and "Ana" not in shared
    # Nothing on the two pages is the same for both posts but their shared words.
    one = lesson_page(client, rt, people["ben"], 1).split('id="circle"')[1]
    two = lesson_page(client, rt, people["ben"], 2).split('id="circle"')[1]
    assert post_id(rt, people["ana"], 1) != post_id(rt, people["ana"], 2)
    assert "Ruiz" not in one + two


def test_choosing_anonymous_makes_earlier_shares_anonymous_but_not_the_reverse(
    rt: Runtime, client: FlaskClient, people: dict[str, int]
) -> None:
    share(client, rt, people["ana"], 1, "Named at first.")
    share(client, rt, people["ana"], 2, "Then anonymous.", shown_as="anonymous")
    assert "Ana R." not in lesson_page(client, rt, people["ben"], 1).split('id="circle"')[1]
    share(client, rt, people["ana"], 3, "Named again.")
    assert "A colleague" in lesson_page(client, rt, people["ben"], 2).split('id="circle"')[1]
    assert "Ana R." in lesson_page(client, rt, people["ben"], 3).split('id="circle"')[1]


def test_a_small_cohort_is_warned_that_anonymity_is_weak(
    rt: Runtime, client: FlaskClient, people: dict[str, int], tmp_path: Path
) -> None:
    page = client.get(path(rt, links.REFLECT, people["ana"], 1)).get_data(as_text=True)
    assert "Your cohort is small (2 members)" in page
    from tests.conftest import make_settings

    roomy = Runtime(
        make_settings(tmp_path, database_url=rt.settings.database_url, circle_small_cohort=2)
    )
    try:
        other = make_app(roomy, Clock(NOW)).test_client()
        page = other.get(path(roomy, links.REFLECT, people["ana"], 1)).get_data(as_text=True)
        assert "Your cohort is small" not in page
    finally:
        roomy.close()


# -- taking it back --------------------------------------------------------------------


def test_unticking_the_box_withdraws_at_once_with_the_notes(
    rt: Runtime, client: FlaskClient, people: dict[str, int]
) -> None:
    share(client, rt, people["ana"], 1, "To withdraw.")
    act(
        client,
        rt,
        people["ben"],
        1,
        action="note",
        post=str(post_id(rt, people["ana"], 1)),
        text="Thank you.",
    )
    post_form(
        client,
        path(rt, links.REFLECT, people["ana"], 1),
        reflection="To withdraw.",
        circle="1",
        shown_as="name",
    )
    assert "To withdraw." not in lesson_page(client, rt, people["ben"], 1)
    with transaction(rt.sessions) as session:
        assert session.scalar(select(CircleNote)) is None
    assert "To withdraw." in client.get(path(rt, links.JOURNAL, people["ana"])).get_data(
        as_text=True
    )


def test_the_withdraw_button_under_the_lesson_withdraws(
    rt: Runtime, client: FlaskClient, people: dict[str, int]
) -> None:
    share(client, rt, people["ana"], 1, "Withdrawn by button.")
    response = act(client, rt, people["ana"], 1, action="withdraw")
    assert response.status_code == 303 and "said=withdrawn" in response.location
    assert "Withdrawn by button." not in lesson_page(client, rt, people["ben"], 1)


def test_editing_a_shared_reflection_says_so_and_shows_the_new_text(
    rt: Runtime, client: FlaskClient, clock: Clock, people: dict[str, int]
) -> None:
    share(client, rt, people["ana"], 1, "First words.")
    page = client.get(path(rt, links.REFLECT, people["ana"], 1)).get_data(as_text=True)
    assert "saving shows your cohort the new text" in page
    clock.now += dt.timedelta(hours=1)
    share(client, rt, people["ana"], 1, "First words.")  # saved again as it was
    assert "(edited)" not in lesson_page(client, rt, people["ben"], 1)
    share(client, rt, people["ana"], 1, "Second words.")
    ben = lesson_page(client, rt, people["ben"], 1)
    assert "Second words." in ben and "First words." not in ben and "(edited)" in ben


def test_a_reply_by_email_is_not_shared_until_confirmed_on_the_page(
    rt: Runtime, client: FlaskClient, people: dict[str, int]
) -> None:
    share(client, rt, people["ana"], 1, "Shared on the page.")
    with transaction(rt.sessions) as session:
        enrollment = session.get(type(load(rt, people["ana"])), people["ana"])
        reflections.append_from_email(
            session,
            enrollment,
            1,
            "q",
            "Added by email, private.",
            cipher=rt.reflection_cipher,
            max_chars=20000,
            now=NOW,
            local_day=NOW.date(),
        )
        # A first reply by email to another day is not shared either.
        reflections.append_from_email(
            session,
            enrollment,
            2,
            "q",
            "Day two by email.",
            cipher=rt.reflection_cipher,
            max_chars=20000,
            now=NOW,
            local_day=NOW.date(),
        )
    assert "Added by email" not in lesson_page(client, rt, people["ben"], 1)
    assert "Day two by email" not in lesson_page(client, rt, people["ben"], 2)
    page = client.get(path(rt, links.REFLECT, people["ana"], 1)).get_data(as_text=True)
    assert "What you added by email is not shared" in page


# -- erasing ---------------------------------------------------------------------------


def test_forget_and_delete_remove_everything_shared_and_written(
    rt: Runtime, client: FlaskClient, people: dict[str, int]
) -> None:
    share(client, rt, people["ana"], 1, "Ana's shared words.")
    share(client, rt, people["ben"], 1, "Ben's shared words.")
    act(
        client,
        rt,
        people["ben"],
        1,
        action="note",
        post=str(post_id(rt, people["ana"], 1)),
        text="Ben's note.",
    )
    act(
        client,
        rt,
        people["ana"],
        1,
        action="note",
        post=str(post_id(rt, people["ben"], 1)),
        text="Ana's note.",
    )
    # Ben deletes his reflections: his shared one and his note go.
    journal = path(rt, links.JOURNAL, people["ben"])
    page = client.get(journal + "/delete/reflections").get_data(as_text=True)
    assert "every note you left under what others shared, is deleted with them" in page
    client.post(journal + "/delete/reflections", data={"form_token": form_token(page)})
    ana = lesson_page(client, rt, people["ana"], 1)
    assert "Ben&#39;s" not in ana and "Ben's" not in ana
    # Ana is forgotten: nothing of the circle is left.
    assert run_cli(rt.settings, "forget", "ana.ruiz@example.org", "--yes").exit_code == 0
    with transaction(rt.sessions) as session:
        for table in ("circle_posts", "circle_notes", "circle_members", "circle_reports"):
            assert session.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 0, table


def test_unsubscribing_keeps_what_was_shared_and_says_so(
    rt: Runtime, client: FlaskClient, people: dict[str, int]
) -> None:
    share(client, rt, people["ana"], 1, "Kept after leaving.")
    url = path(rt, links.UNSUBSCRIBE, people["ana"])
    page = client.get(url).get_data(as_text=True)
    assert "stays in its circle after you unsubscribe" in page
    client.post(url, data={"form_token": form_token(page)})
    assert "Kept after leaving." in lesson_page(client, rt, people["ben"], 1)


# -- security --------------------------------------------------------------------------


def test_shared_text_and_notes_are_sealed_at_rest(
    rt: Runtime, client: FlaskClient, people: dict[str, int]
) -> None:
    share(client, rt, people["ana"], 1, "Sealed words here.")
    with transaction(rt.sessions) as session:
        sealed = session.execute(text("SELECT sealed_body FROM circle_posts")).scalar()
    assert "Sealed" not in sealed and rt.reflection_cipher.open(sealed) == "Sealed words here."


def test_circle_posts_need_the_readers_own_form_token(
    rt: Runtime, client: FlaskClient, people: dict[str, int]
) -> None:
    share(client, rt, people["ana"], 1, "Guarded.")
    post = str(post_id(rt, people["ana"], 1))
    ben_url = path(rt, links.LESSON, people["ben"], 1)
    share(client, rt, people["cleo"], 1, "Cleo's own.")
    cleo_page = lesson_page(client, rt, people["cleo"], 1)
    # No token, another reader's token, a post from another site: refused, nothing written.
    assert (
        client.post(
            ben_url + "/circle", data={"action": "note", "post": post, "text": "x"}
        ).status_code
        == 403
    )
    stolen = circle_form_token(cleo_page)
    assert (
        client.post(
            ben_url + "/circle",
            data={"form_token": stolen, "action": "note", "post": post, "text": "x"},
        ).status_code
        == 403
    )
    ben_page = lesson_page(client, rt, people["ben"], 1)
    cross = client.post(
        ben_url + "/circle",
        headers={"Sec-Fetch-Site": "cross-site"},
        data={
            "form_token": circle_form_token(ben_page),
            "action": "note",
            "post": post,
            "text": "x",
        },
    )
    assert cross.status_code == 403
    # Cleo's own token cannot reach a post of another cohort.
    gone = act(client, rt, people["cleo"], 1, action="note", post=post, text="x")
    assert "said=gone" in gone.location
    with transaction(rt.sessions) as session:
        assert session.scalar(select(CircleNote)) is None


def test_a_lesson_token_reads_only_its_own_day(
    rt: Runtime, client: FlaskClient, people: dict[str, int]
) -> None:
    """Ben's Day 2 form token cannot note Day 1's post, nor a day he has not received."""
    share(client, rt, people["ana"], 1, "Day one only.")
    post = str(post_id(rt, people["ana"], 1))
    assert (
        "said=gone"
        in act(client, rt, people["ben"], 2, action="note", post=post, text="x").location
    )
    with transaction(rt.sessions) as session:
        assert session.scalar(select(CircleNote)) is None
    future = path(rt, links.LESSON, people["ben"], 5)
    assert client.get(future).status_code == 404


def test_circle_pages_are_noindex_and_private(
    rt: Runtime, client: FlaskClient, people: dict[str, int]
) -> None:
    share(client, rt, people["ana"], 1, "Private page.")
    response = client.get(path(rt, links.LESSON, people["ben"], 1))
    assert '<meta name="robots" content="noindex, nofollow">' in response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"


def test_after_unsubscribing_the_author_can_still_withdraw_but_not_share_anew(
    rt: Runtime, client: FlaskClient, people: dict[str, int]
) -> None:
    share(client, rt, people["ana"], 1, "Shared before leaving.")
    url = path(rt, links.UNSUBSCRIBE, people["ana"])
    client.post(url, data={"form_token": form_token(client.get(url).get_data(as_text=True))})
    assert "Share with my cohort" not in client.get(
        path(rt, links.REFLECT, people["ana"], 2)
    ).get_data(as_text=True)
    share(client, rt, people["ana"], 2, "Not shared after leaving.")
    assert "Not shared after leaving." not in lesson_page(client, rt, people["ben"], 2)
    post_form(
        client,
        path(rt, links.REFLECT, people["ana"], 1),
        reflection="Shared before leaving.",
        circle="1",
    )
    assert "Shared before leaving." not in lesson_page(client, rt, people["ben"], 1)


def test_the_circle_works_alike_on_sqlite_and_postgresql(database_url: str, tmp_path: Path) -> None:
    """Share, read, note, count in the next lesson's take, forget: on both databases."""
    from tests.conftest import make_settings
    from tests.test_web_support import tick

    rt = Runtime(make_settings(tmp_path, database_url=database_url))
    try:
        people = {name: enroll(rt, f"{name}@example.org") for name in ("ana", "ben", "cleo")}
        tick(rt, DAY_1_UTC)
        client = make_app(rt, Clock(DAY_1_UTC + DAY / 2)).test_client()
        for name in ("ana", "cleo"):
            share(client, rt, people[name], 1, f"{name.title()} shares.")
        assert "Ana shares." in lesson_page(client, rt, people["ben"], 1)
        post = str(post_id(rt, people["ana"], 1))
        assert (
            "said=noted"
            in act(
                client, rt, people["ben"], 1, action="note", post=post, text="Noted on both."
            ).location
        )
        tick(rt, DAY_1_UTC + DAY)
        outbox = Path(rt.settings.mail_url.removeprefix("file://"))
        (ben_day_2,) = [p for p in outbox.glob("*day02*.eml") if "-ben@" in p.name]
        assert b"2 colleagues in your cohort" in ben_day_2.read_bytes().replace(b"=\r\n", b"")
        assert run_cli(rt.settings, "forget", "ana@example.org", "--yes").exit_code == 0
        with transaction(rt.sessions) as session:
            assert session.scalar(select(func.count()).select_from(CirclePost)) == 1  # Cleo's
            assert session.scalar(select(func.count()).select_from(CircleNote)) == 0
    finally:
        rt.close()


def test_the_privacy_page_says_what_the_circle_shares_with_whom(client: FlaskClient) -> None:
    page = client.get("/privacy").get_data(as_text=True)
    section = (
        page.partition("Your cohort&#39;s circle")[2] or page.partition("Your cohort's circle")[2]
    )
    for said in (
        "unless you choose so, for that very reflection",
        "a reply by email is never shared by itself",
        "members of your cohort who have received that day",
        "never your email address",
        "written in the operator log",
        "Unsubscribing keeps what you shared until you delete it",
    ):
        assert said in section.replace("&#39;", "'"), said
    assert "Nobody else, but what you choose to share with your cohort" in page
