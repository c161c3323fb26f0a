"""Links signs its tokens with the key derived once per purpose, into the serializer's bytes.

A lesson carries seven signed links; deriving the signer's key for each was part of our CPU
per message. The tokens must stay the ones ``load_token`` (itsdangerous) reads and the ones
earlier releases sent.
"""

from __future__ import annotations

import datetime as dt
import time

import pytest
from itsdangerous import URLSafeTimedSerializer

from dripcourse import links

LINKS = links.Links(secret_key="s" * 40, base_url="https://course.example.org")
WHEN = dt.datetime(2027, 3, 10, 7, 30, 12, tzinfo=dt.UTC)
PURPOSES = [*links.PATHS, links.DELIVERY]
IDS = [(1,), (7, 3), (2_147_483_647, 30), (123_456, 12)]
KEYS = [
    "abc123def456",
    "z" * 40,
    links.SAMPLE_KEY,
    "Mixed9",
    "ümlaut",
    "a-b",
]  # "z" * 40 compresses


@pytest.mark.parametrize("purpose", PURPOSES)
@pytest.mark.parametrize("ids", IDS)
@pytest.mark.parametrize("key", KEYS)
def test_a_token_is_the_serializers_own_bytes_for_a_given_issue_time(
    purpose: str, ids: tuple[int, ...], key: str
) -> None:
    made = LINKS.token(purpose, *ids, key=key, issued_at=WHEN)
    expected = LINKS._serializer(purpose, WHEN).dumps([*ids, key])  # noqa: SLF001
    assert made == expected
    if purpose in links.MAX_AGE_DAYS:
        return  # it expires against the real clock; its bytes are what matter here
    token = LINKS.load_token(purpose, made)
    assert (token.ids, token.key, token.issued_at) == (list(ids), key, WHEN)


def test_a_token_made_now_is_the_serializers_own_bytes_at_the_same_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(time, "time", lambda: WHEN.timestamp() + 0.75)
    made = LINKS.token(links.REFLECT, 5, 2, key="abc123def456")
    assert made == LINKS._serializer(links.REFLECT).dumps([5, 2, "abc123def456"])  # noqa: SLF001
    assert LINKS.load_token(links.REFLECT, made).issued_at == WHEN


def test_a_token_signed_under_another_secret_or_purpose_is_refused() -> None:
    made = LINKS.token(links.UNSUBSCRIBE, 5, key="abc123def456")
    other = links.Links(secret_key="t" * 40, base_url=LINKS.base_url)
    with pytest.raises(links.BadToken):
        other.load_token(links.UNSUBSCRIBE, made)
    with pytest.raises(links.BadToken):
        LINKS.load_token(links.JOURNAL, made)


# The links of a lesson that name its day as well as the enrollment.
DAY_LINKS = (links.REFLECT, links.LESSON, links.CHECKIN)


def _plain_itsdangerous(purpose: str) -> URLSafeTimedSerializer:
    """How a token is made with nothing of ours: the library's serializer and signer alone."""
    return URLSafeTimedSerializer(LINKS.secret_key, salt=f"dripcourse.{purpose}")


@pytest.mark.parametrize("purpose", PURPOSES)
@pytest.mark.parametrize("ids", IDS)
@pytest.mark.parametrize("key", KEYS)
def test_a_token_is_what_plain_itsdangerous_makes_on_the_same_clock(
    monkeypatch: pytest.MonkeyPatch, purpose: str, ids: tuple[int, ...], key: str
) -> None:
    monkeypatch.setattr(time, "time", lambda: WHEN.timestamp() + 0.25)
    made = LINKS.token(purpose, *ids, key=key)
    plain = _plain_itsdangerous(purpose).dumps([*ids, key])
    assert made == plain
    token = LINKS.load_token(purpose, plain)
    assert (token.ids, token.key, token.issued_at) == (list(ids), key, WHEN)


@pytest.mark.parametrize("key", KEYS)
def test_a_lessons_links_are_what_plain_itsdangerous_makes_on_the_same_clock(
    monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    monkeypatch.setattr(time, "time", lambda: WHEN.timestamp())
    made = LINKS.for_lesson(123_456, 12, key)
    for purpose in links.PATHS.keys() - {links.CONFIRM}:
        ids = (
            (123_456, 12) if purpose in (links.REFLECT, links.LESSON, links.CHECKIN) else (123_456,)
        )
        token = _plain_itsdangerous(purpose).dumps([*ids, key])
        assert made[purpose] == f"{LINKS.base_url}/{links.PATHS[purpose]}/{token}"
    assert made["privacy"] == f"{LINKS.base_url}/privacy"


def test_a_lesson_signs_only_the_links_it_shows_and_always_unsubscribe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(time, "time", lambda: WHEN.timestamp())
    every = LINKS.for_lesson(7, 3, "abc123def456")
    shown = LINKS.for_lesson(7, 3, "abc123def456", shown={links.REFLECT, links.JOURNAL})
    signed = {links.REFLECT, links.JOURNAL, links.UNSUBSCRIBE, "privacy"}
    assert {name: link for name, link in shown.items() if link} == {
        name: every[name] for name in signed
    }
    assert shown.keys() == every.keys()


def test_tokens_backdated_to_different_times_each_carry_their_own() -> None:
    later = WHEN + dt.timedelta(days=2, seconds=5)
    for when in (WHEN, later, WHEN):
        made = LINKS.token(links.JOURNAL, 9, key="abc123def456", issued_at=when)
        assert LINKS.load_token(links.JOURNAL, made).issued_at == when
