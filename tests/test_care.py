"""Where to turn in a dark week: which list a reader sees, the words that show it first, and
that nothing about either is written, logged or counted anywhere."""

from __future__ import annotations

import csv
import datetime as dt
import logging
import re
from pathlib import Path

import pytest
import tzdata
from sqlalchemy import select
from sqlalchemy.engine import Engine

from dripcourse import zones
from dripcourse.courses.course_folder import load_course
from dripcourse.models import Base, Subscriber
from dripcourse.reader import care
from tests.conftest import EMAILS, ROOT

COURSE = load_course(EMAILS, "white-coat")


def reader(zone: str, country: str = "") -> Subscriber:
    return Subscriber(email="a@example.org", name="A", timezone=zone, country=country)


# -- which list -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "country", "first"),
    [
        ("America/Chicago", "US", "988 Suicide & Crisis Lifeline"),
        ("America/New_York", "US", "988 Suicide & Crisis Lifeline"),
        ("Europe/London", "GB", "Samaritans"),
        ("Europe/Stockholm", "SE", "Självmordslinjen (Mind)"),
        ("Asia/Kolkata", "IN", "Tele MANAS"),
        ("Australia/Sydney", "AU", "Lifeline"),
        ("Australia/Adelaide", "AU", "Lifeline"),
        ("Pacific/Auckland", "NZ", "1737, Need to talk?"),
        ("Asia/Tokyo", None, "Emergency services"),  # a country the course has no list for
        ("UTC", None, "Emergency services"),  # a zone of no country
    ],
)
def test_the_list_is_the_one_of_the_time_zones_country(
    zone: str, country: str | None, first: str
) -> None:
    shown = care.places_for(COURSE, reader(zone))
    assert shown.country == country
    assert shown.chosen_by == "zone"
    assert shown.places[0].name == first
    if country is None:
        assert shown.places == COURSE.support.default


def test_zones_map_to_countries_as_the_tz_database_says() -> None:
    table = (Path(tzdata.__file__).parent / "zoneinfo" / "zone.tab").read_text(encoding="utf-8")
    rows = [line.split("\t") for line in table.splitlines() if line and line[0] != "#"]
    assert len(rows) > 300
    assert all(zones.country_of(row[2]) == row[0] for row in rows)
    assert zones.country_of("UTC") is None
    assert zones.country_of("Not/AZone") is None


def test_a_country_set_for_the_reader_wins_over_the_zone() -> None:
    shown = care.places_for(COURSE, reader("Asia/Tokyo", country="GB"))
    assert (shown.country, shown.chosen_by) == ("GB", "set")
    assert shown.places[0].name == "Samaritans"
    elsewhere = care.places_for(COURSE, reader("Europe/London", country="JP"))
    assert (elsewhere.country, elsewhere.places) == (None, COURSE.support.default)


def test_the_sample_course_lists_every_country_of_its_sample_cohort() -> None:
    with (ROOT / "config" / "sample-cohort.csv").open(encoding="utf-8") as fh:
        cohort_zones = {row["timezone"] for row in csv.DictReader(fh)}
    for zone in cohort_zones:
        assert COURSE.support.lists_country(zones.country_of(zone)), zone


def test_every_sample_entry_has_a_source_and_a_way_to_reach_it() -> None:
    everything = [*COURSE.support.default]
    for _code, places in COURSE.support.countries:
        everything += places
    assert len(everything) > 20
    for place in everything:
        assert place.source_name and place.source_url.startswith("https://"), place.name
        assert place.phone or place.text or place.web, place.name
    text = (EMAILS / "white-coat" / "support.toml").read_text(encoding="utf-8")
    assert "REVIEWED BY THE PROGRAMME'S CLINICAL LEAD" in text


def test_a_phone_number_is_dialled_as_written_without_its_spaces() -> None:
    samaritans = COURSE.support.places_for("GB")[0]
    assert (samaritans.phone, samaritans.dial, samaritans.site) == (
        "116 123",
        "116123",
        "samaritans.org",
    )


# -- the words that show it first -----------------------------------------------------------

# The lists as reviewed: a change to despair_phrases.toml fails here until it is looked at.
PHRASES = {
    "en": (
        "suicid*",
        "kill myself",
        "killing myself",
        "end my life",
        "end it all",
        "ending it all",
        "take my own life",
        "want to die",
        "wish I was dead",
        "wish I were dead",
        "better off dead",
        "better off without me",
        "no reason to live",
        "don't want to live",
        "don't want to be here anymore",
        "not worth living",
        "self-harm*",
        "hurt myself",
        "hurting myself",
        "cutting myself",
        "can't go on",
        "cannot go on",
        "no way out",
        "hopeless",
    ),
    "sv": (
        "självmord*",
        "ta livet av mig",
        "ta mitt liv",
        "vill dö",
        "vill inte leva",
        "orkar inte leva",
        "orkar inte mer",
        "skada mig själv",
        "skadar mig själv",
        "hopplöst",
        "ingen utväg",
    ),
}
DESPAIR = {
    "en": [
        "Honestly some nights I think about suicide on the drive home.",
        "I have had suicidal thoughts since the inquest.",
        "I've wondered whether to kill myself.",
        "I keep imagining killing myself after a night like that.",
        "I want to end my life.",
        "Sometimes I just want to end it all.",
        "Ending it all has crossed my mind.",
        "I thought about how I'd take my own life.",
        "I want to die, most days.",
        "I wish I was dead.",
        "I wish I were dead some mornings.",
        "They'd be better off dead, I mean I would.",
        "My family would be better off without me.",
        "There's no reason to live like this.",
        "I don\u2019t want to live like this any more.",
        "I don't want to be here anymore.",
        "This life is not worth living.",
        "I started to self-harm again.",
        "I have been self harming.",
        "I want to hurt myself when the pager goes.",
        "I keep hurting myself.",
        "I have been cutting myself.",
        "I CAN'T GO ON like this.",
        "I cant go on.",
        "I cannot go on.",
        "There's no way out of this rota or this life.",
        "Everything feels hopeless.",
    ],
    "sv": [
        "Jag har tänkt på självmord efter passen.",
        "Ibland vill jag ta livet av mig.",
        "Jag har funderat på att ta mitt liv.",
        "Jag vill dö.",
        "Jag vill inte leva så här.",
        "Jag orkar inte leva längre.",
        "Jag orkar inte mer.",
        "Jag vill skada mig själv.",
        "Jag skadar mig själv ibland.",
        "Allt känns hopplöst.",
        "Jag ser ingen utväg.",
    ],
}
CALM = {
    "en": [
        "A long week, but the team was kind and I slept well on Saturday.",
        "I'd kill for a proper lunch break.",
        "I could die laughing at the rota this week.",
        "The overdose in bay 4 pulled through.",
        "I want to dine out with my partner on Friday.",
        "The new self-rostering system is a small hope.",
        "We can go on holiday in May, at last.",
    ],
    "sv": [
        "En lång vecka, men teamet var snällt och jag sov gott i lördags.",
        "Jag vill dela mer med mina kollegor.",
        "Jag orkar inte laga mat efter nattpass, så vi beställer.",
        "Livet på avdelningen blev lugnare i fredags.",
    ],
}


def test_the_phrase_lists_are_the_reviewed_ones() -> None:
    assert care.phrases() == PHRASES


def test_the_course_language_and_english_have_a_list() -> None:
    assert set(care.phrases()) >= {"en", "sv"}  # English is the course's; Swedish its cohort's


@pytest.mark.parametrize(
    ("lang", "sentence"), [(lang, s) for lang, listed in DESPAIR.items() for s in listed]
)
def test_words_of_despair_are_found(lang: str, sentence: str) -> None:
    assert care.sounds_like_despair(sentence)


def test_every_phrase_is_found_by_one_of_its_sentences() -> None:
    for lang, listed in PHRASES.items():
        for phrase in listed:
            pattern = re.compile(care.phrase_pattern(phrase))
            assert any(pattern.search(care.plain(s)) for s in DESPAIR[lang]), (
                f"{lang}: no sentence for {phrase!r}"
            )


@pytest.mark.parametrize(
    ("lang", "sentence"), [(lang, s) for lang, listed in CALM.items() for s in listed]
)
def test_ordinary_sentences_are_not(lang: str, sentence: str) -> None:
    assert not care.sounds_like_despair(sentence)


def test_a_reflection_saved_today_in_despair_is_found_on_the_readers_own_calendar() -> None:
    # 23:30 UTC on 4 March is already 5 March in Auckland.
    saved = dt.datetime(2025, 3, 4, 23, 30, tzinfo=dt.UTC)
    written = [(saved, "I want to die.")]
    now_there = dt.datetime(2025, 3, 5, 9, tzinfo=dt.UTC)
    assert care.written_today_in_despair(written, "Pacific/Auckland", now_there)
    assert not care.written_today_in_despair(written, "UTC", now_there)  # yesterday in UTC
    assert not care.written_today_in_despair(
        [(saved, "A good day.")], "Pacific/Auckland", now_there
    )


# -- helpers for the page tests (test_care_pages.py) ----------------------------------------


def every_row(engine: Engine) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table, to compare before and after."""
    with engine.connect() as conn:
        return {
            table.name: sorted((tuple(row) for row in conn.execute(select(table))), key=repr)
            for table in Base.metadata.sorted_tables
        }


def log_mentions(records: list[logging.LogRecord], *words: str) -> list[str]:
    """The log lines that mention any of ``words``, case aside."""
    lines = [record.getMessage() for record in records]
    return [line for line in lines if any(w.lower() in line.lower() for w in words)]
