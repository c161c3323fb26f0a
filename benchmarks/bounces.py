"""The bounce classifier measured on real bounces: right family and right recipient, by family.

Run with `.venv/bin/python benchmarks/bounces.py` (add `--misses` to list each miss). It
reads tests/bounce_mail/manifest.json (the expected family and recipients per file, from the
source project's own expectations) and classifies every bounce fixture with
`dripcourse.inbound.bounces.classify_bytes`. Complaints are read by
`dripcourse.inbound.complaints`. The results are kept in benchmarks/RESULTS.md.

Two figures are given: against the reference's labels as they are, and with the few labels
that the file's own words overrule (tests/bounce_mail/adjudicated.json: each entry quotes the
words in the file that settle it, and tests/test_bounces.py checks that they are there).
"""

from __future__ import annotations

import collections
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dripcourse.inbound.bounces import EFFECTS, classify_bytes  # noqa: E402

EFFECT_OF = {_name.name.lower(): str(_effect) for _name, _effect in EFFECTS.items()}
EFFECT_OF |= {"too_large": EFFECT_OF["too_large"], "policy": "warn", "our_sender": "warn"}
EFFECT_OF["disabled"] = EFFECT_OF["mailbox_disabled"]

FIXTURES = ROOT / "tests" / "bounce_mail"


def adjudicated() -> tuple[dict[str, str], dict[str, list[str]]]:
    """The families and recipients the files' own words settle, by file name."""
    data = json.loads((FIXTURES / "adjudicated.json").read_text())
    families = {row["file"]: row["family"] for row in data["labels"]}
    recipients = {row["file"]: row["recipients"] for row in data["recipients"]}
    return families, recipients


def main() -> None:
    manifest = json.loads((FIXTURES / "manifest.json").read_text())
    settled_family, settled_recipients = adjudicated()
    settled_right = 0
    per_family: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0, 0])
    per_mta: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    misses = []
    unseen = []  # bounces that would not be recognised on another address
    slowest = 0.0
    for row in manifest["files"]:
        if row["family"] in ("complaint", "delivered"):
            continue
        raw = (FIXTURES / "sisimai" / row["file"]).read_bytes()
        start = time.perf_counter()
        got = classify_bytes(raw, to_bounce_address=True)
        slowest = max(slowest, time.perf_counter() - start)
        if classify_bytes(raw) is None:
            unseen.append(row["file"])
        family = str(got.family).replace(" ", "_") if got else "not a bounce"
        family = _short(family)
        right_family = family == row["family"]
        right_address = bool(got) and got.recipient in [r.lower() for r in row["recipients"]]
        settled_ok = (
            family == settled_family.get(row["file"], row["family"])
            and bool(got)
            and got.recipient in settled_recipients.get(row["file"], row["recipients"])
        )
        settled_right += settled_ok
        counts = per_family[row["family"]]
        counts[0] += 1
        counts[1] += right_family
        counts[2] += right_family and right_address
        got_effect = str(got.effect) if got else "none"
        counts[3] += got_effect == _expected_effect(row, raw) and right_address
        mta = re.sub(r"-\d+\.eml$", "", row["file"])
        per_mta[mta][0] += 1
        per_mta[mta][1] += right_family and right_address
        if not (right_family and right_address):
            if settled_ok:
                misses.append(f"{row['file']}: settled by the file's own words (adjudicated.json)")
                continue
            misses.append(
                f"{row['file']}: expected {row['family']} {row['recipients']}, got {family} "
                f"{got.recipient if got else ''} {got.status if got else ''}"
            )
    total = sum(c[0] for c in per_family.values())
    both = sum(c[2] for c in per_family.values())
    print(
        "| family | files | right family | right family and recipient "
        "| right effect and recipient |"
    )
    print("|---|---|---|---|---|")
    for family, (n, fam, ok, eff) in sorted(per_family.items()):
        print(f"| {family} | {n} | {fam} | {ok} ({100 * ok / n:.0f} %) | {eff} |")
    right = sum(c[1] for c in per_family.values())
    effect = sum(c[3] for c in per_family.values())
    print(
        f"| **all** | {total} | {right} | **{both} ({100 * both / total:.1f} %)** "
        f"| {effect} ({100 * effect / total:.1f} %) |"
    )
    print(
        f"\nwith the {len(settled_family) + len(settled_recipients)} labels the files' own words"
        f" settle (tests/bounce_mail/adjudicated.json): {settled_right} of {total}"
        f" ({100 * settled_right / total:.1f} %) right family and recipient"
    )
    print(f"\n{len(per_mta)} mail server families; slowest message {1000 * slowest:.1f} ms")
    print(f"not recognised as bounces without the bounce address: {len(unseen)} {unseen}")
    worst = sorted(per_mta.items(), key=lambda item: item[1][1] / item[1][0])[:8]
    print("weakest: " + ", ".join(f"{m} {ok}/{n}" for m, (n, ok) in worst))
    if "--misses" in sys.argv:
        print("\n".join(misses))


def _expected_effect(row: dict, raw: bytes) -> str:
    """What the rules do with the expected family; a delay notice only notes. A notice is
    a delay when the file itself says so (Sisimai reports every expiry as delayed)."""
    if row["family"] == "expired" and DELAY_NOTICE.search(raw.decode("latin-1")):
        return "note"
    return EFFECT_OF[row["family"]]


DELAY_NOTICE = re.compile(
    r"^Action: *delayed|^Subject:.*(delay|warning)|THIS IS A WARNING MESSAGE ONLY"
    r"|will be retried for|will continue to try|still trying",
    re.IGNORECASE | re.MULTILINE,
)


def _short(family: str) -> str:
    return {
        "message_too_large": "too_large",
        "content_or_policy_block": "policy",
        "our_sender_or_authentication": "our_sender",
        "mailbox_disabled": "disabled",
    }.get(family, family)


if __name__ == "__main__":
    main()
