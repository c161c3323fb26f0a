"""A lesson's message signs only the links its lesson shows, and its bytes stay the same."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dripcourse import links
from dripcourse.links import Links
from dripcourse.runtime import Runtime
from dripcourse.sending.take import Job, Ready, message
from tests.conftest import make_settings, utc
from tests.test_checkins import CHECKINS, with_checkins
from tests.test_wire import same_boundary

NOW = utc(2026, 11, 25, 8, 0)
KEY = "abcdefghij23"


@pytest.fixture
def rt(tmp_path: Path, sqlite_url: str) -> Iterator[Runtime]:
    """The sample course with check-ins, and its support line only in the last lesson."""
    emails = with_checkins(tmp_path, CHECKINS)
    toml = emails / "white-coat" / "course.toml"
    text = toml.read_text()
    assert "support_in_footer = true" in text
    toml.write_text(text.replace("support_in_footer = true", "support_in_footer = false"))
    runtime = Runtime(make_settings(tmp_path, database_url=sqlite_url, emails_dir=str(emails)))
    yield runtime
    runtime.close()


def ready(rt: Runtime, day: int) -> Ready:
    course = rt.catalog.course("white-coat")
    job = Job(11, 42, day, 1, "Europe/London", None, None, NOW)
    rendered = rt.catalog.renderer.lesson(course, day)
    return Ready(job, "amara@example.org", "Amara Okafor", "", course, rendered, KEY)


EVERY_DAY = {links.REFLECT, links.JOURNAL, links.PAUSE, links.UNSUBSCRIBE, links.LESSON}


@pytest.mark.parametrize(
    ("day", "signed"),
    [
        (1, EVERY_DAY | {links.CHECKIN}),  # the first lesson asks the check-in questions
        (3, EVERY_DAY),
        (7, EVERY_DAY | {links.CHECKIN, links.SUPPORT}),  # the last shows where to turn
    ],
)
def test_a_message_signs_only_the_links_its_lesson_shows_and_unsubscribe(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, day: int, signed: set[str]
) -> None:
    purposes: list[str] = []
    sign = Links._signed  # noqa: SLF001

    def counted(self: Links, purpose: str, *args: object) -> str:
        purposes.append(purpose)
        return sign(self, purpose, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Links, "_signed", counted)
    message(rt, ready(rt, day), NOW)
    assert sorted(purposes) == sorted(signed)


@pytest.mark.parametrize("day", [1, 3, 7])
def test_the_links_a_lesson_does_not_show_unsigned_change_no_byte_of_it(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, day: int
) -> None:
    monkeypatch.setattr(time, "time", lambda: NOW.timestamp())
    sent, msg_id = message(rt, ready(rt, day), NOW)
    every = Links.for_lesson

    def signing_all(self: Links, *args: object, shown: object = None) -> dict[str, str]:
        return every(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Links, "for_lesson", signing_all)
    reference, reference_id = message(rt, ready(rt, day), NOW)
    assert msg_id == reference_id
    assert same_boundary(reference.data, sent.data) == reference.data
