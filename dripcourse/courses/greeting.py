"""How a lesson addresses a person: a greeting set for them, or one derived from their name.

A name as people type it ("Dr. Amara Okafor", "Okafor, Amara", "amara") is parsed by nameparser,
which knows titles, suffixes, "Last, First" and particles ("van der Berg"); the rules below only
decide which parts a greeting uses. A greeting someone set by hand always wins.

What a name gives (its greeting and given name) is worked out when the name is written, not
for each lesson sent: parsing a name costs more than the rest of personalising a message, and
with many readers no cache holds them all. ``from_name`` is kept on the subscriber's row by a
listener on ``Subscriber.name`` below (and by the import's bulk INSERT, which bypasses it);
the send path parses only a row where it is NULL (written before it was kept, or by SQL that
bypassed us). So a change to the rules below in a later release must ship a migration that
sets ``subscribers.derived_greeting`` and ``derived_given_name`` to NULL, or readers keep the
greeting the old rules gave.
"""

from __future__ import annotations

import datetime as dt
import functools
import re

from nameparser import HumanName
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from dripcourse.errors import InputError, NotFound
from dripcourse.models import Subscriber

# Titles written the usual way in a greeting; any other title nameparser knows is kept as typed.
_TITLES = {
    "dr": "Dr.",
    "doctor": "Dr.",
    "prof": "Prof.",
    "professor": "Prof.",
    "mr": "Mr.",
    "mrs": "Mrs.",
    "ms": "Ms.",
    "miss": "Miss",
    "mx": "Mx.",
}
# Titles that go with the given name: "Sir Tomas Lindqvist" is Sir Tomas.
_GIVEN_NAME_TITLES = {"sir", "dame"}
# Religious titles go with the whole name after them: "Sister Mary Ellen" is Sister Mary Ellen
# (a religious name has no family name to pick out), never "Sister Ellen".
_WHOLE_NAME_TITLES = {"sister", "sr", "brother", "br", "father", "fr", "mother", "rev"}
_INITIAL = re.compile(r"^\w\.?$")
MAX_GREETING_CHARS = 100

# How a lesson opens (``{{ salutation }}``), chosen in course.toml's ``salutation``:
# "time-of-day" greets by the reader's local hour when the lesson is sent, "neutral" always
# says "Hello". A lesson can go out at any hour (a cohort started "now", a resume, the window's
# last hours), and "Good morning" at 01:37 reads as if nobody looked.
SALUTATION_MODES = ("time-of-day", "neutral")
DEFAULT_SALUTATION_MODE = "time-of-day"
NEUTRAL_SALUTATION = "Hello"
MORNING_SALUTATION = "Good morning"
# Local hours from which each opening holds, until the next; at night (22:00 to 05:00) the
# neutral one: "Good evening" at 02:00 is as wrong as "Good morning".
_BY_HOUR = ((5, MORNING_SALUTATION), (12, "Good afternoon"), (18, "Good evening"))
_NIGHT_FROM = 22


@functools.lru_cache(maxsize=4096)  # pure, and asked again for every lesson sent
def _parts(name: str) -> tuple[str, str, str, str]:
    """``name`` parsed once for both uses below: its title, first, middle and last parts."""
    parsed = HumanName(" ".join(name.split()))
    parsed.capitalize(force=False)  # "amara okafor" -> "Amara Okafor"; "McDonald" is kept
    return parsed.title, parsed.first.strip(), parsed.middle, parsed.last.strip()


def derive_greeting(name: str, fallback: str) -> str:
    """The greeting for someone who gave ``name``, or ``fallback`` when it holds no name.

    - a title and a family name: the title and the family name ("Dr. Amara Okafor" -> "Dr. Okafor");
    - "Last, First": the given name ("Okafor, Amara" -> "Amara");
    - otherwise the given name ("Amara Okafor" -> "Amara"), unless it is only an initial, when
      the whole name is used ("A. Okafor");
    - nothing usable (empty, only a title or punctuation): ``fallback``.
    """
    return greeting_from_name(name) or fallback


@functools.lru_cache(maxsize=4096)  # pure; the preview, the checks and the import ask again
def greeting_from_name(name: str) -> str:
    """The greeting ``name`` gives (see ``derive_greeting``), or "" when it gives none."""
    raw_title, first, middle, last = _parts(name)
    title = _title(raw_title)
    if title and title.lower() in _GIVEN_NAME_TITLES and first:
        return f"{title} {first}"
    if title and title.rstrip(".").lower() in _WHOLE_NAME_TITLES and (first or last):
        return " ".join(p for p in (title, first, middle, last) if p)
    if title and (last or first):
        return f"{title} {last or first}"
    if first and not _INITIAL.match(first):
        return first
    whole = " ".join(p for p in (first, middle, last) if p).strip()
    if any(ch.isalnum() for ch in whole):
        return whole
    return ""


def from_name(name: str) -> tuple[str, str]:
    """What ``name`` gives, as kept on the subscriber's row: its greeting without the course's
    fallback ("" when it gives none) and its given name ("" when it has none)."""
    return greeting_from_name(name), given_name(name)


@event.listens_for(Subscriber.name, "set")
def _keep_what_the_name_gives(target: Subscriber, value: str | None, _old, _initiator) -> None:  # type: ignore[no-untyped-def]
    # Every ORM write of a name (a signup, an enroll --update, an edit) passes here, so none
    # can forget it; the model's own listener, which runs first, has set them NULL.
    target.derived_greeting, target.derived_given_name = from_name(value or "")


def unusual(name: str, greeting: str, fallback: str) -> str | None:
    """Why an operator should look at the greeting derived from ``name`` before anyone is
    mailed, or None when it has the usual shape ("Dr. Okafor", "Amara")."""
    raw_title = _parts(name)[0]
    title = raw_title.split()[0] if raw_title else ""
    known = title.rstrip(".").lower() in _TITLES.keys() | _GIVEN_NAME_TITLES
    words = [w for w in greeting.split() if w != _title(raw_title)]
    if greeting == fallback:
        return "the name gives no greeting: the course's fallback"
    if any(_INITIAL.match(w) or w.count(".") > 1 for w in words):
        return "it holds initials"
    if title and not known:
        return f"the title {title!r} is kept as typed"
    if any(ch.isdigit() for ch in greeting):
        return "it holds a digit"
    return None


def salutation(mode: str, local: dt.datetime | dt.time) -> str:
    """How a lesson sent at ``local`` (the reader's wall clock) opens, in course mode ``mode``.

    Time of day: "Good morning" from 05:00, "Good afternoon" from 12:00, "Good evening" from
    18:00, and "Hello" from 22:00 to 05:00. Neutral: always "Hello".
    """
    if mode == "neutral":
        return NEUTRAL_SALUTATION
    hour = local.hour
    if hour >= _NIGHT_FROM:
        return NEUTRAL_SALUTATION
    found = NEUTRAL_SALUTATION
    for start, words in _BY_HOUR:
        if hour >= start:
            found = words
    return found


def given_name(name: str) -> str:
    """The given name in ``name`` ("Dr. Amara Okafor" and "Okafor, Amara" -> "Amara"), or "".

    What ``{{ first_name }}`` shows; lessons should prefer the greeting.
    """
    first = _parts(name)[1]
    return "" if _INITIAL.match(first) else first


def greeting_for(name: str, greeting: str | None, fallback: str) -> str:
    """The greeting a lesson uses: the one set for the person, else one derived from the name."""
    return (greeting or "").strip() or derive_greeting(name, fallback)


def check_greeting(text: str) -> str:
    """A greeting as given by an operator or a CSV, tidied; InputError says what is wrong."""
    if _has_control(text):
        raise InputError(f"greeting: {text!r} may not hold line breaks, tabs or control characters")
    clean = " ".join(text.split())
    if len(clean) > MAX_GREETING_CHARS:
        raise InputError(f"greeting: {len(clean)} characters; at most {MAX_GREETING_CHARS}")
    if any(c in clean for c in '<>"'):
        raise InputError(f"greeting: {clean!r} may not hold <, > or quotes")
    return clean


def set_greeting(session: Session, email: str, text: str) -> Subscriber:
    """Set how lessons address the subscriber with ``email``; "" goes back to the derived one."""
    greeting = check_greeting(text)
    address = email.strip().lower()
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email == address))
    if subscriber is None:
        raise NotFound(f"no subscriber with the address {address!r}")
    subscriber.greeting = greeting
    return subscriber


def _has_control(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def _title(raw: str) -> str:
    words = raw.split()
    if not words:
        return ""
    # nameparser joins several titles ("Prof. Dr."); the first is the one people are called by.
    first = words[0]
    return _TITLES.get(first.rstrip(".").lower(), first)
