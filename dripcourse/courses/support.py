"""A course's places to turn in a dark week: its support.toml, and its wording in course.toml.

The list is the programme's, kept beside the lessons (``support.toml``): for each country a few
places (name, phone, text, web address, hours), and a default for everywhere else. Each entry
names its source, the organisation's own page, so whoever reviews the list can check every
number against it. Reading it never stops at the first problem: like the rest of a course
folder, each problem is returned with its line, for ``check`` to list (course_folder.py and
course_toml.py turn them into findings). A missing list, or an entry without a source, is a
warning, not an error: the lessons still go out, and the pages fall back to saying "call your
local emergency number".
"""

from __future__ import annotations

import re
import tomllib
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from dripcourse import zones
from dripcourse.errors import InputError

SUPPORT_FILE = "support.toml"
# The course's own words (course.toml), with these defaults; docs/subscribers.md asks that the
# programme's clinical lead review them.
DEFAULT_LINE = "Having a hard week? Where to turn, any hour"
DEFAULT_INTRO = (
    "If things feel dark, you do not have to wait until it is an emergency, and you do not "
    "have to manage it alone. These are people you can reach, some of them at any hour."
)
DEFAULT_AFTER_WRITING = (
    "Thank you for writing that down. It sounds like a heavy time. If it feels like too much "
    "to carry alone, these people are there to talk to, some of them at any hour."
)
WORDING_KEYS = {
    "support_line": DEFAULT_LINE,
    "support_intro": DEFAULT_INTRO,
    "support_after_writing": DEFAULT_AFTER_WRITING,
}
COURSE_KEYS = {*WORDING_KEYS, "support_in_footer"}
PLACE_KEYS = {"name", "phone", "text", "web", "hours", "about", "source"}
_PHONE = re.compile(r"^\+?[0-9][0-9 ()\-]*$")
_WEB = re.compile(r"^https?://[^\s/]+\.[^\s]*$", re.IGNORECASE)
_HEADER = re.compile(r"^\s*\[\[\s*(default|country\s*\.\s*([A-Za-z]+))\s*\]\]")
SOURCE_FORM = 'source = { name = "the organisation", url = "https://its page" }'

# (line, severity, message): course_folder.py makes each a Finding in support.toml.
Problem = tuple[int, str, str]


@dataclass(frozen=True)
class Place:
    """One place to turn, as support.toml gives it."""

    name: str
    phone: str = ""
    text: str = ""
    web: str = ""
    hours: str = ""
    about: str = ""
    source_name: str = ""
    source_url: str = ""
    line: int = 1

    @property
    def dial(self) -> str:
        """The phone number as a ``tel:`` link wants it: digits, and a leading +."""
        return ("+" if self.phone.startswith("+") else "") + re.sub(r"\D", "", self.phone)

    @property
    def site(self) -> str:
        """The web address as a link's words: its host, without "www." (mind.se)."""
        return urllib.parse.urlsplit(self.web).netloc.removeprefix("www.")


@dataclass(frozen=True)
class Support:
    """What a course offers a reader in a dark week: its wording and its places by country."""

    line: str = DEFAULT_LINE
    intro: str = DEFAULT_INTRO
    after_writing: str = DEFAULT_AFTER_WRITING
    in_footer: bool = False  # the line in every lesson's footer, not only the last lesson's
    default: tuple[Place, ...] = ()
    countries: tuple[tuple[str, tuple[Place, ...]], ...] = ()

    def places_for(self, country: str | None) -> tuple[Place, ...]:
        """The list for ``country``, or the default list for a country without one."""
        return dict(self.countries).get(country or "", self.default)

    def lists_country(self, country: str | None) -> bool:
        return country is not None and country in dict(self.countries)


def read_wording(meta: dict[str, object]) -> tuple[dict[str, object], list[tuple[str, str]]]:
    """The support settings in course.toml's ``meta``, and (key, message) for each bad one."""
    found: dict[str, object] = {}
    bad: list[tuple[str, str]] = []
    for key, default in WORDING_KEYS.items():
        value = meta.get(key, default)
        if not isinstance(value, str) or not value.strip() or len(value) > 500:
            bad.append((key, f"{key} must be text of up to 500 characters"))
        else:
            found[key.removeprefix("support_")] = " ".join(value.split())
    in_footer = meta.get("support_in_footer", False)
    if not isinstance(in_footer, bool):
        bad.append(("support_in_footer", "support_in_footer must be true or false"))
    else:
        found["in_footer"] = in_footer
    return found, bad


def read_places(
    folder: Path,
) -> tuple[tuple[Place, ...], tuple[tuple[str, tuple[Place, ...]], ...], list[Problem]]:
    """The default list and each country's list in ``folder``'s support.toml, and its problems."""
    path = folder / SUPPORT_FILE
    if not path.is_file():
        return (), (), [(1, "warning", _MISSING)]
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        return (), (), [(1, "error", "not UTF-8 text")]
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"line (\d+)", str(exc))
        return (), (), [(int(found.group(1)) if found else 1, "error", f"not valid TOML: {exc}")]
    problems: list[Problem] = []
    lines = _entry_lines(text)
    for key in sorted(set(data) - {"default", "country"}):
        problems.append((1, "error", f"unknown key {key!r} (known: default, country)"))
    default = _places(data.get("default", []), "default", lines, problems)
    if "default" not in data:
        problems.append(
            (1, "warning", "no [[default]] list: readers outside the listed countries see none")
        )
    countries: list[tuple[str, tuple[Place, ...]]] = []
    by_country = data.get("country", {})
    if not isinstance(by_country, dict):
        problems.append((1, "error", "country must hold [[country.XX]] lists, XX a country code"))
        by_country = {}
    for code, entries in by_country.items():
        where = lines.get((f"country.{code}", 0), 1)
        try:
            checked = zones.check_country(code)
        except InputError as exc:
            problems.append((where, "error", f"[[country.{code}]]: {exc}"))
            continue
        if checked != code:
            problems.append((where, "error", f"[[country.{code}]]: write it {checked}"))
            continue
        countries.append((code, _places(entries, f"country.{code}", lines, problems)))
    return default, tuple(sorted(countries)), problems


_MISSING = (
    f"no list of places to turn ({SUPPORT_FILE}): readers are only told to call their local "
    "emergency number (docs/subscribers.md)"
)


def _entry_lines(text: str) -> dict[tuple[str, int], int]:
    """The line of each ``[[default]]`` and ``[[country.XX]]`` entry: (list, index) -> line."""
    seen: dict[str, int] = {}
    lines: dict[tuple[str, int], int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        match = _HEADER.match(line)
        if match:
            name = "default" if match.group(2) is None else f"country.{match.group(2)}"
            index = seen.get(name, 0)
            seen[name] = index + 1
            lines[(name, index)] = number
    return lines


def _places(
    entries: object, where: str, lines: dict[tuple[str, int], int], problems: list[Problem]
) -> tuple[Place, ...]:
    if not isinstance(entries, list):
        problems.append((1, "error", f"{where} must be a list of [[{where}]] entries"))
        return ()
    places = []
    for index, entry in enumerate(entries):
        line = lines.get((where, index), 1)
        place = _place(entry, f"[[{where}]]", line, problems)
        if place is not None:
            places.append(place)
    return tuple(places)


def _place(entry: object, where: str, line: int, problems: list[Problem]) -> Place | None:
    """One entry, or None when it cannot be shown; each problem is added at ``line``."""

    def problem(severity: str, message: str) -> None:
        problems.append((line, severity, f"{where} {label}: {message}"))

    if not isinstance(entry, dict):
        problems.append((line, "error", f"{where}: an entry is a table of name, phone, ..."))
        return None
    name = entry.get("name")
    label = repr(name) if isinstance(name, str) and name.strip() else "(no name)"
    before = len(problems)
    for key in sorted(set(entry) - PLACE_KEYS, key=str):
        problem("error", f"unknown key {key!r} (known: {', '.join(sorted(PLACE_KEYS))})")
    values = {}
    for key in PLACE_KEYS - {"source"}:
        value = entry.get(key, "")
        if not isinstance(value, str) or "\n" in value.strip() or len(value) > 300:
            problem("error", f"{key} must be one line of text")
            value = ""
        values[key] = " ".join(value.split())
    if not values["name"]:
        problem("error", "name is missing")
    if not (values["phone"] or values["text"] or values["web"]):
        problem("error", "give at least one way to reach it: phone, text or web")
    if values["phone"] and not _PHONE.match(values["phone"]):
        problem("error", f"phone {values['phone']!r}: digits, spaces, -, ( ) and a leading +")
    if values["web"] and not _WEB.match(values["web"]):
        problem("error", f"web {values['web']!r} is not an https:// or http:// address")
    errors = len(problems) > before
    source_name, source_url = _source(entry.get("source"))
    if not source_url:
        problem("warning", f"has no source ({SOURCE_FORM}); the reviewer checks it against it")
    if errors:
        return None
    return Place(**values, source_name=source_name, source_url=source_url, line=line)


def _source(source: object) -> tuple[str, str]:
    """The source's organisation and page address, or ("", "") when it gives no usable one."""
    if not isinstance(source, dict):
        return "", ""
    name, url = source.get("name"), source.get("url")
    if not isinstance(name, str) or not name.strip():
        return "", ""
    if not isinstance(url, str) or not _WEB.match(url.strip()):
        return "", ""
    return name.strip(), url.strip()
