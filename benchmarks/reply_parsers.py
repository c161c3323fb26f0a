"""Reply trimmers compared on our reply fixtures: which one leaves exactly what was written.

Run with `.venv/bin/python benchmarks/reply_parsers.py` after
`.venv/bin/pip install email-reply-parser quotequail` (the two not picked are not
dependencies). Each trimmer gets the decoded text part of every reply fixture in
tests/inbound_mail/ (HTML-only replies go through our own HTML-to-text step first) and
scores a point when its result equals what tests/test_inbound.py says must be saved.
The results, with why the pick was made, are in docs/inbound.md.
"""

from __future__ import annotations

import email
import email.policy
import sys
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dripcourse.inbound.reply_text import REPLY_LANGUAGES, html_to_text, strip_reply
from tests.test_inbound import MAIL, REPLIES


def body(name: str) -> str:
    raw = (MAIL / f"{name}.eml").read_bytes().replace(b"@@FROM@@", b"ana@example.org")
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    part = msg.get_body(preferencelist=("plain", "html"))
    assert isinstance(part, EmailMessage)
    text = part.get_content()
    return html_to_text(text) if part.get_content_subtype() == "html" else text


def trimmers() -> dict[str, Callable[[str], str]]:
    from email_reply_parser import EmailReplyParser as Plain
    from mailparser_reply import EmailReplyParser as Multi
    from quotequail import quote

    def multi(text: str) -> str:
        replies = Multi(languages=REPLY_LANGUAGES).read(text).replies
        return replies[0].body if replies else text

    return {
        "email-reply-parser 0.5": lambda text: Plain.parse_reply(text),
        "mail-parser-reply 1.36 (latest_reply)": lambda text: (
            Multi(languages=REPLY_LANGUAGES).parse_reply(text) or ""
        ),
        "mail-parser-reply 1.36 (body)": multi,
        "quotequail 0.5": lambda text: "".join(part for shown, part in quote(text) if shown),
        "ours: mail-parser-reply body + trailing quote": strip_reply,
    }


def main() -> None:
    bodies = {name: body(name) for name in sorted(REPLIES)}
    print("| trimmer | exact | missed |")
    print("|---|---|---|")
    for label, trim in trimmers().items():
        missed = [n for n, text in bodies.items() if trim(text).strip() != REPLIES[n]]
        print(f"| {label} | {len(bodies) - len(missed)}/{len(bodies)} | {', '.join(missed)} |")


if __name__ == "__main__":
    main()
