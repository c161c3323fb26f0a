"""Checks for text that people type and that ends up in a mail header: names and addresses.

Each check returns the value as it will be stored, or raises ValueError with a message that
says what to fix, all of it at once (the caller adds the place: file, line, field). A control
or format character in a name can split the To header on the wire, make every send of that
lesson fail, or be refused by PostgreSQL (NUL): so they are refused on the way in, not
handled later. Addresses are checked by email-validator (syntax only: no DNS) rather than by hand.
"""

from __future__ import annotations

import unicodedata

import email_validator

MAX_NAME_CHARS = 100
# Unicode categories with no place in a name or header: controls (tab, line feed, form feed,
# NUL ...), format characters (zero-width, bidirectional overrides), lone surrogates and the
# line and paragraph separators. Ordinary and other visible spaces are fine.
REFUSED_CATEGORIES = {
    "Cc": "control character",
    "Cf": "format character",
    "Cs": "surrogate",
    "Zl": "line separator",
    "Zp": "paragraph separator",
}
# Characters that mean something inside an address header.
_NAME_SPECIALS = '<>"'
# How many bad characters one message names before it only counts the rest.
MAX_NAMED = 3


def check_header_text(value: str) -> str:
    """``value`` unchanged, or ValueError naming every character that may not be in it."""
    found = []
    for position, char in enumerate(value, start=1):
        kind = REFUSED_CATEGORIES.get(unicodedata.category(char))
        if kind is not None:
            found.append(f"{_describe(char)}, a {kind}, at character {position}")
    if found:
        raise ValueError(f"{_listing(found)}; remove {'it' if len(found) == 1 else 'them'}")
    return value


def check_name(value: str | None) -> str:
    """A person's name as it will be stored (outer spaces removed); may be empty.

    Every problem is named in one message, so the name is fixed once, not once per problem.
    """
    problems = []
    try:
        check_header_text(value or "")
    except ValueError as exc:
        problems.append(str(exc))
    name = (value or "").strip(" ")
    if len(name) > MAX_NAME_CHARS:
        problems.append(f"{len(name)} characters; at most {MAX_NAME_CHARS}")
    specials = [
        f"{char!r} at character {position}"
        for position, char in enumerate(name, start=1)
        if char in _NAME_SPECIALS
    ]
    if specials:
        problems.append(f'{_listing(specials)}; names may not hold <, > or "')
    if problems:
        raise ValueError("; ".join(problems))
    return name


def check_address(value: str) -> str:
    """An email address, normalised to one spelling per mailbox; ValueError says what is wrong.

    Outer spaces are ignored. The domain is checked for syntax only (no DNS look-up) and an
    internationalised domain is stored in its ASCII form. Mailboxes are treated as
    case-insensitive, as nearly every provider does, so one person stays one subscriber.
    """
    address = value.strip(" ")
    if not address:
        raise ValueError("an email address is required")
    try:
        valid = email_validator.validate_email(
            address, check_deliverability=False, allow_smtputf8=False
        )
    except email_validator.EmailNotValidError as exc:
        raise ValueError(f"{address!r} is not an email address ({exc})") from None
    return (valid.ascii_email or valid.normalized).lower()


def _listing(items: list[str]) -> str:
    """ "a", "a, and b", "a, b, and c", then "a, b, c, and 4 more"."""
    if len(items) == 1:
        return items[0]
    if len(items) > MAX_NAMED:
        return f"{', '.join(items[:MAX_NAMED])}, and {len(items) - MAX_NAMED} more"
    return f"{', '.join(items[:-1])}, and {items[-1]}"


def _describe(char: str) -> str:
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X}" + (f" ({name})" if name else "")


def without_controls(text: str) -> str:
    """Text from outside (a bounce's diagnostic, a relay's reply) safe to store and print.

    C0 and C1 control characters (escape sequences that retitle or rewrite an operator's
    terminal among them) and DEL are removed; a tab or line break becomes a space.
    """
    out = []
    for char in text:
        code = ord(char)
        if char in "\t\n\r":
            out.append(" ")
        elif code < 0x20 or 0x7F <= code <= 0x9F:
            continue
        else:
            out.append(char)
    return "".join(out)
