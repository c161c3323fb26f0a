"""Replies from public collections, each with the text its source project expects to be kept.

tests/reply_mail/ holds them with their sources and licences (README.md there): the quotation
tests of talon (inline cases and whole messages from common clients) and the fixtures of
Crisp's email-reply-parser. Used by tests/test_reply_text.py and
benchmarks/reply_parsers.py.
"""

from __future__ import annotations

import email
import email.policy
import json
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

REPLY_MAIL = Path(__file__).parent / "reply_mail"


@dataclass(frozen=True)
class Case:
    name: str  # "source/name"
    text: str  # the reply's text part as a client sent it
    expected: str  # what the person wrote, as the source project expects it


def public_cases() -> list[Case]:
    cases = []
    for source in ("talon", "crisp"):
        data = json.loads((REPLY_MAIL / source / "cases.json").read_text(encoding="utf-8"))
        cases += [Case(f"{source}/{c['name']}", c["input"], c["expected"]) for c in data["cases"]]
    for path in sorted((REPLY_MAIL / "talon" / "standard_replies").glob("*.eml")):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        part = msg.get_body(preferencelist=("plain",))
        assert isinstance(part, EmailMessage)
        expected = path.with_name(f"{path.stem}_reply_text")
        kept = expected.read_text(encoding="utf-8").strip() if expected.exists() else "Hello"
        cases.append(Case(f"talon/{path.stem}", part.get_content(), kept))
    return cases
