"""Reading a course's course.toml: its settings, or a Finding at the line of each bad key.

Every key is checked and every problem reported (not just the first), each at the line the
key is on, so ``dripcourse check`` lists them all in one run.
"""

from __future__ import annotations

import re
import tomllib
from email.headerregistry import Address
from email.utils import parseaddr
from pathlib import Path

from dripcourse.courses import support as support_file
from dripcourse.courses.checkins import read_checkins
from dripcourse.courses.course import DEFAULT_GREETING_FALLBACK, Finding, header_problem
from dripcourse.courses.greeting import DEFAULT_SALUTATION_MODE, SALUTATION_MODES
from dripcourse.schedule import Cadence, parse_send_time

KNOWN_COURSE_KEYS = {
    "title",
    "description",
    "sender",
    "send_time",
    "latest_send_time",
    "skip_weekends",
    "greeting_fallback",
    "reason",
    *support_file.COURSE_KEYS,
    "salutation",
    "checkin",
    "circle",
}


def read_course_toml(path: Path, findings: list[Finding]) -> dict[str, object] | None:
    """The settings of ``path`` as Course's keyword arguments, or None if any is wrong; each
    problem goes to ``findings``."""

    def error(key: str | None, message: str) -> None:
        findings.append(Finding(path, _toml_line(text, key), "error", message))

    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        findings.append(Finding(path, 1, "error", "not UTF-8 text"))
        return None
    try:
        meta = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"line (\d+)", str(exc))
        findings.append(
            Finding(path, int(found.group(1)) if found else 1, "error", f"not valid TOML: {exc}")
        )
        return None
    before = len(findings)
    for key in sorted(set(meta) - KNOWN_COURSE_KEYS):
        error(key, f"unknown key {key!r} (known: {', '.join(sorted(KNOWN_COURSE_KEYS))})")
    for key in ("title", "sender"):
        if not isinstance(meta.get(key), str) or not meta[key].strip():
            error(key if key in meta else None, f"{key} is missing or empty")
    sender = meta.get("sender")
    if isinstance(sender, str) and sender.strip():
        if header_problem(sender):
            error("sender", f"sender: {header_problem(sender)}")
        elif not _is_sender(sender):
            error("sender", f"sender {sender!r} is not an email address")
    send_time = latest = None
    try:
        send_time = parse_send_time(meta.get("send_time", "07:00"))
    except ValueError as exc:
        error("send_time", str(exc))
    try:
        latest = parse_send_time(meta.get("latest_send_time", "21:00"), "latest_send_time")
    except ValueError as exc:
        error("latest_send_time", str(exc))
    skip_weekends = meta.get("skip_weekends", False)
    if not isinstance(skip_weekends, bool):
        error("skip_weekends", "skip_weekends must be true or false")
    cadence = None
    if send_time is not None and latest is not None and isinstance(skip_weekends, bool):
        try:
            cadence = Cadence(
                send_time=send_time, latest_send_time=latest, skip_weekends=skip_weekends
            )
        except ValueError as exc:
            error("latest_send_time", str(exc))
    fallback = meta.get("greeting_fallback", DEFAULT_GREETING_FALLBACK)
    if not isinstance(fallback, str) or not fallback.strip() or "\n" in fallback:
        error("greeting_fallback", 'greeting_fallback must be one line of text, e.g. "colleague"')
    reason = meta.get("reason", "")
    if not isinstance(reason, str) or "\n" in reason.strip() or len(reason) > 300:
        error(
            "reason",
            'reason must be one sentence, e.g. "Your residency programme enrolled '
            'you in this course."',
        )
    wording, bad = support_file.read_wording(meta)
    for key, message in bad:
        error(key, message)
    mode = meta.get("salutation", DEFAULT_SALUTATION_MODE)
    if mode not in SALUTATION_MODES:
        error(
            "salutation",
            f"salutation must be {' or '.join(repr(m) for m in SALUTATION_MODES)}, got {mode!r}",
        )
    checkins = read_checkins(meta.get("checkin"), lambda message: error("checkin", message))
    circle = meta.get("circle", False)
    if not isinstance(circle, bool):
        error("circle", "circle must be true or false")
    if len(findings) > before or cadence is None:
        return None
    return {
        "title": str(meta["title"]).strip(),
        "sender": str(meta["sender"]).strip(),
        "cadence": cadence,
        "description": str(meta.get("description", "")),
        "greeting_fallback": str(fallback).strip(),
        "reason": str(reason).strip(),
        "support": wording,
        "salutation": mode,
        "checkins": checkins,
        "circle": circle,
    }


def _toml_line(text: str, key: str | None) -> int:
    if key is not None:
        for number, line in enumerate(text.splitlines(), start=1):
            # key = value, or a table of that name: [key] or [[key]]
            if re.match(rf"\s*({re.escape(key)}\s*=|\[\[?\s*{re.escape(key)}\s*\]\]?)", line):
                return number
    return 1


def _is_sender(sender: str) -> bool:
    _name, addr = parseaddr(sender)
    try:
        Address(addr_spec=addr)
    except (ValueError, IndexError):
        return False
    return "@" in addr
