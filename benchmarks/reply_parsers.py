"""Reply trimmers compared: which one leaves exactly what the person wrote.

Run with `.venv/bin/python benchmarks/reply_parsers.py` after
`.venv/bin/pip install email-reply-parser mail-parser-reply quotequail` (none of them is a
dependency; a trimmer whose package is missing is left out of the table). Add `--misses`
to list what each trimmer got wrong, `--slow` to time the trimmers on hostile replies.

Three sets, each scored separately (a point when the result equals the expected text):
- public: the replies from talon's and Crisp's test suites with the text those projects
  expect (tests/reply_mail/, tests/reply_cases.py);
- ours: the reply fixtures of tests/test_inbound.py;
- shapes: a reply in 22 languages in the five shapes of tests/reply_shapes.py, with the
  lesson answered known (our trimmer's ``lesson=``) and without.
The results are kept in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import email
import email.policy
import re
import sys
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dripcourse.inbound.reply_text import html_to_text, strip_reply  # noqa: E402
from tests.reply_cases import public_cases  # noqa: E402
from tests.reply_shapes import LANGUAGES, lesson_text, shapes  # noqa: E402
from tests.test_inbound import MAIL, REPLIES  # noqa: E402

Trimmer = Callable[[str, str], str]  # (text, lesson) -> kept


def body(name: str) -> str:
    raw = (MAIL / f"{name}.eml").read_bytes().replace(b"@@FROM@@", b"ana@example.org")
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    part = msg.get_body(preferencelist=("plain", "html"))
    assert isinstance(part, EmailMessage)
    text = part.get_content()
    return html_to_text(text) if part.get_content_subtype() == "html" else text


def trimmers() -> dict[str, Trimmer]:
    found: dict[str, Trimmer] = {}
    try:
        from email_reply_parser import EmailReplyParser as Plain

        found["email-reply-parser 0.5"] = lambda text, _lesson: Plain.parse_reply(text)
    except ImportError:
        pass
    try:
        from mailparser_reply import EmailReplyParser as Multi

        languages = ["en", "de", "es", "fr", "it", "nl", "pt"]

        def before(text: str, _lesson: str) -> str:
            # What dripcourse used until this measurement: the parser's body, then a
            # trailing block of ">" lines under a line ending with ":".
            replies = Multi(languages=languages).read(text).replies
            kept = (replies[0].body if replies else text).rstrip().split("\n")
            end = len(kept)
            while end and (kept[end - 1].lstrip().startswith(">") or not kept[end - 1].strip()):
                end -= 1
            if 0 < end < len(kept) and kept[end - 1].rstrip().endswith(":"):
                kept = kept[: end - 1]
            return "\n".join(kept).strip()

        found["mail-parser-reply 1.36 body + trailing quote (before)"] = before
        more = ["en", "de", "es", "fr", "it", "nl", "pt", "pl", "sv", "da", "cs", "ja", "ko", "zh"]

        def every(text: str, _lesson: str) -> str:
            replies = Multi(languages=more).read(text).replies
            return replies[0].body if replies else text

        found["mail-parser-reply 1.36, 14 languages"] = every
    except ImportError:
        pass
    try:
        from quotequail import quote

        found["quotequail 0.5"] = lambda text, _lesson: "".join(
            part for shown, part in quote(text) if shown
        )
    except ImportError:
        pass
    found["ours, headers only"] = lambda text, _lesson: strip_reply(text)
    found["ours, headers and the lesson known"] = lambda text, lesson: strip_reply(
        text, lesson=lesson
    )
    return found


def sets() -> dict[str, list[tuple[str, str, str, str]]]:
    """name -> [(case, text, lesson, expected)]"""
    lesson = lesson_text()
    return {
        "public (talon, Crisp)": [(c.name, c.text, "", c.expected) for c in public_cases()],
        "ours (tests/inbound_mail)": [(n, body(n), lesson, REPLIES[n]) for n in sorted(REPLIES)],
        "shapes (22 languages x 5)": [
            (f"{lang.code}/{shape}", text, lesson, lang.reply)
            for lang in LANGUAGES
            for shape, text in shapes(lang, lesson).items()
        ],
    }


def main() -> None:
    cases = sets()
    print("| trimmer | " + " | ".join(cases) + " |")
    print("|---|" + "---|" * len(cases))
    misses: list[str] = []
    for label, trim in trimmers().items():
        cells = []
        for set_name, rows in cases.items():
            missed = [n for n, text, lesson, want in rows if _trim(trim, text, lesson) != want]
            right = len(rows) - len(missed)
            cells.append(f"{right}/{len(rows)} ({100 * right / len(rows):.0f} %)")
            misses.append(f"{label} / {set_name}: {', '.join(missed)}")
        print(f"| {label} | " + " | ".join(cells) + " |")
    if "--misses" in sys.argv:
        print("\n" + "\n".join(misses))
    if "--slow" in sys.argv:
        hostile = {"16 KB of blank lines": "a" + "\n" * 16_000 + "b"}
        for label, trim in trimmers().items():
            for name, text in hostile.items():
                start = time.perf_counter()
                _trim(trim, text, "")
                print(f"{label}, {name}: {time.perf_counter() - start:.2f} s")


def _trim(trim: Trimmer, text: str, lesson: str) -> str:
    try:
        return re.sub(r"\n{3,}", "\n\n", trim(text, lesson).strip())
    except Exception as exc:  # noqa: BLE001 - a library's crash counts as a miss
        return f"<{type(exc).__name__}>"


if __name__ == "__main__":
    main()
