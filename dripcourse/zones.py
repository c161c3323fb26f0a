"""Which time-zone names an operator may give: canonical IANA place names, with suggestions.

zoneinfo also accepts abbreviations and old aliases (``EST``, ``US/Eastern``, ``GMT+5``). Some
of them are fixed offsets that ignore daylight saving: ``EST`` stays UTC-5 all summer, so a
New York doctor would get the 07:00 lesson at 08:00. So input is held to the names of places
listed in the tz database's own ``zone.tab`` (plus ``UTC``), and a near miss gets a suggestion.
The same table says which country each zone is in (``country_of``), which picks a reader's
places to turn in a dark week; ``iso3166.tab`` gives the country codes and names.
"""

from __future__ import annotations

import difflib
import functools
import importlib.resources
import re

from dripcourse.errors import InputError

# Abbreviations people type, and the place each most often means. Several mean more than one.
ABBREVIATIONS: dict[str, tuple[str, ...]] = {
    "EST": ("America/New_York",),
    "EDT": ("America/New_York",),
    "ET": ("America/New_York",),
    "EASTERN": ("America/New_York",),
    "CST": ("America/Chicago", "Asia/Shanghai"),
    "CDT": ("America/Chicago",),
    "CT": ("America/Chicago",),
    "CENTRAL": ("America/Chicago",),
    "MST": ("America/Denver", "America/Phoenix"),
    "MDT": ("America/Denver",),
    "MT": ("America/Denver",),
    "PST": ("America/Los_Angeles",),
    "PDT": ("America/Los_Angeles",),
    "PT": ("America/Los_Angeles",),
    "PACIFIC": ("America/Los_Angeles",),
    "AKST": ("America/Anchorage",),
    "HST": ("Pacific/Honolulu",),
    "GMT": ("Europe/London", "UTC"),
    "BST": ("Europe/London",),
    "WET": ("Europe/Lisbon",),
    "CET": ("Europe/Paris", "Europe/Berlin"),
    "CEST": ("Europe/Paris", "Europe/Berlin"),
    "MET": ("Europe/Paris", "Europe/Berlin"),
    "EET": ("Europe/Athens", "Africa/Cairo"),
    "IST": ("Asia/Kolkata", "Europe/Dublin", "Asia/Jerusalem"),
    "JST": ("Asia/Tokyo",),
    "KST": ("Asia/Seoul",),
    "SGT": ("Asia/Singapore",),
    "HKT": ("Asia/Hong_Kong",),
    "AEST": ("Australia/Sydney", "Australia/Brisbane"),
    "AEDT": ("Australia/Sydney",),
    "ACST": ("Australia/Adelaide", "Australia/Darwin"),
    "AWST": ("Australia/Perth",),
    "NZST": ("Pacific/Auckland",),
    "NZDT": ("Pacific/Auckland",),
    "SAST": ("Africa/Johannesburg",),
    "WAT": ("Africa/Lagos",),
    "EAT": ("Africa/Nairobi",),
    "PKT": ("Asia/Karachi",),
    "BRT": ("America/Sao_Paulo",),
}
UTC_NAMES = {"UTC", "ETC/UTC", "Z", "ZULU", "UNIVERSAL", "UCT"}
OFFSET = re.compile(r"^(?:UTC|GMT|ETC/GMT)?\s*[+\-−]\s*\d{1,2}(?::?\d{2})?$", re.IGNORECASE)
EXAMPLE = "use a place name such as America/New_York or Europe/London"


def _tz_file(name: str) -> str:
    return importlib.resources.files("tzdata").joinpath("zoneinfo", name).read_text("utf-8")


@functools.cache
def canonical_zones() -> frozenset[str]:
    """The zones the tz database lists for people to choose from (zone.tab), and UTC."""
    names = {"UTC"}
    for line in _tz_file("zone.tab").splitlines():
        if line and not line.startswith("#"):
            names.add(line.split("\t")[2])
    return frozenset(names)


@functools.cache
def _aliases() -> dict[str, str]:
    """Old names and links (``US/Eastern``, ``Asia/Calcutta``) to the zone they stand for."""
    links = {}
    for line in _tz_file("tzdata.zi").splitlines():
        if line.startswith("L "):
            _, target, alias = line.split()
            links[alias] = target
    return links


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name).lower()


@functools.cache
def _by_key() -> dict[str, str]:
    return {_key(name): name for name in canonical_zones()}


def _suggest(name: str) -> str:
    upper = name.upper()
    if upper in UTC_NAMES:
        return " (did you mean UTC?)"
    if upper in ABBREVIATIONS:
        places = ABBREVIATIONS[upper]
        if len(places) > 1:
            return f" is ambiguous ({', '.join(places[:-1])} or {places[-1]}?)"
        return f" is an abbreviation, not a place (did you mean {places[0]}?)"
    if OFFSET.match(name):
        return (
            " is a fixed offset, which ignores daylight saving (use the place, e.g. Asia/Kolkata)"
        )
    target = _aliases().get(name)
    if target in canonical_zones():
        return f" is an old alias (did you mean {target}?)"
    same = _by_key().get(_key(name))
    if same is not None:
        return f" (did you mean {same}?)"
    close = difflib.get_close_matches(name, sorted(canonical_zones()), n=1, cutoff=0.8)
    if close:
        return f" (did you mean {close[0]}?)"
    return f" ({EXAMPLE})"


@functools.cache
def check_zone(name: str) -> str:
    """Return the canonical IANA zone ``name`` stands for, or raise an InputError that says
    what is wrong with it and, when it can, which name was meant."""
    name = name.strip()
    if name in canonical_zones():
        return name
    if not name:
        raise InputError("no time zone given")
    why = _suggest(name)
    if why.startswith(" ("):
        raise InputError(f"unknown time zone {name!r}{why}")
    raise InputError(f"{name!r}{why}")


@functools.cache
def _zone_countries() -> dict[str, str]:
    """Each zone of zone.tab and the country (ISO 3166 code) it is listed under."""
    countries = {}
    for line in _tz_file("zone.tab").splitlines():
        if line and not line.startswith("#"):
            code, _where, zone = line.split("\t")[:3]
            countries[zone] = code
    return countries


def country_of(zone: str) -> str | None:
    """The country the tz database lists ``zone`` under (``Europe/London``: ``GB``).

    None for a zone of no country (UTC) or one not in zone.tab: this is read from the tz
    database's own table, never guessed.
    """
    return _zone_countries().get(zone)


@functools.cache
def countries() -> dict[str, str]:
    """Every ISO 3166 country code the tz database knows, with its name (iso3166.tab)."""
    names = {}
    for line in _tz_file("iso3166.tab").splitlines():
        if line and not line.startswith("#"):
            code, name = line.split("\t")[:2]
            names[code] = name
    return names


def check_country(code: str) -> str:
    """``code`` as a two-letter ISO 3166 country code in capitals, or InputError."""
    found = code.strip().upper()
    if found not in countries():
        raise InputError(
            f"unknown country {code.strip()!r}: give a two-letter ISO 3166 code such as GB, "
            "US or AU"
        )
    return found
