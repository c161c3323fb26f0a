"""Where a reader turns in a dark week: which list of places they see, and whether what they
just wrote asks for it first.

Both are worked out when a page is shown, from what is there at that moment, and never kept:
nothing here writes to the database, logs, counts or sends anything (invariant 18;
tests/test_care.py holds it to that). The words of despair are data, one short list per
language in ``despair_phrases.toml``, reviewed in the tests.
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib.resources
import re
import tomllib
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from dripcourse import schedule, zones
from dripcourse.courses.course import Course
from dripcourse.courses.support import Place
from dripcourse.models import Subscriber

PHRASES_FILE = "despair_phrases.toml"


@dataclass(frozen=True)
class PlacesToTurn:
    """The places one reader is shown, and how their list was chosen (said on the page)."""

    places: tuple[Place, ...]
    country: str | None  # the country whose list this is; None: the default list
    chosen_by: str  # "set" (an operator set their country) or "zone" (their time zone's)
    zone: str

    @property
    def country_name(self) -> str:
        return country_name(self.country)


def country_name(code: str | None) -> str:
    """The tz database's name for a country code ("" for none)."""
    return zones.countries().get(code or "", "")


def country_of(subscriber: Subscriber) -> tuple[str | None, str]:
    """The reader's country and how it is known: set on them, else their time zone's country
    in the tz database (None for a zone of no country, such as UTC). Never guessed."""
    if subscriber.country:
        return subscriber.country, "set"
    return zones.country_of(subscriber.timezone), "zone"


def places_for(course: Course, subscriber: Subscriber) -> PlacesToTurn:
    """The course's list for the reader's country, or its default list."""
    country, chosen_by = country_of(subscriber)
    listed = course.support.lists_country(country)
    return PlacesToTurn(
        places=course.support.places_for(country),
        country=country if listed else None,
        chosen_by=chosen_by,
        zone=subscriber.timezone,
    )


@functools.cache
def phrases() -> dict[str, tuple[str, ...]]:
    """Each language's words of despair, as kept in despair_phrases.toml."""
    text = importlib.resources.files(__package__).joinpath(PHRASES_FILE).read_text("utf-8")
    return {lang: tuple(table["phrases"]) for lang, table in tomllib.loads(text).items()}


def plain(text: str) -> str:
    """Lower case, no accents, one kind of apostrophe and single spaces: as phrases compare."""
    text = unicodedata.normalize("NFKD", text.casefold().replace("\u2019", "'"))
    text = "".join(c for c in text if not unicodedata.combining(c))
    return " ".join(text.split())


def phrase_pattern(phrase: str) -> str:
    """The regular expression for one listed phrase, matched against ``plain`` text: whole
    words, any run of spaces between them, "*" for any ending, "'" and "-" optional."""
    words = []
    for word in plain(phrase).split(" "):
        stem = word.endswith("*")
        word = re.escape(word.rstrip("*")).replace("'", "'?").replace(r"\-", r"[\s-]?")
        words.append(word + (r"\w*" if stem else r"\b"))
    return r"\b" + r"\s+".join(words)


@functools.cache
def _matcher() -> re.Pattern[str]:
    every = (p for listed in phrases().values() for p in listed)
    return re.compile("|".join(phrase_pattern(p) for p in every))


def sounds_like_despair(text: str) -> bool:
    """Whether ``text`` holds one of the listed words of despair or self-harm, in any of the
    listed languages. The answer is for the page being shown, and goes nowhere else."""
    return _matcher().search(plain(text)) is not None


def written_today_in_despair(
    reflections: Iterable[tuple[dt.datetime, str]], zone: str, now: dt.datetime
) -> bool:
    """Whether any reflection saved today, on the reader's own calendar, sounds like despair:
    the journal then shows the places to turn at its top (a reply by email has no other page
    to confirm it). ``reflections`` are (when saved, text)."""
    tz = schedule.zone(zone)
    today = now.astimezone(tz).date()
    return any(
        saved.astimezone(tz).date() == today and sounds_like_despair(text)
        for saved, text in reflections
    )
