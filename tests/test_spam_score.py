"""SpamAssassin, on its local rules alone, finds nothing to hold against any lesson.

It runs with ``-L`` (no network tests: no DNS blocklists, no Razor), so what it scores is the
message itself: headers, HTML and text. The only rules allowed to fire are the ones that score
nothing (``NO_RECEIVED`` and ``NO_RELAYS``: the message has not yet passed a relay,
``HTML_MESSAGE``: it has an HTML part). Without SpamAssassin the test is skipped on a laptop
and fails in CI, which installs it (.ci/run).
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dripcourse.courses.course_folder import load_course
from dripcourse.courses.message import build_message, message_id, reply_addresses
from dripcourse.courses.render import Renderer
from dripcourse.courses.wire import wire_bytes
from tests.conftest import EMAILS, service_missing
from tests.test_render import ALL_LESSONS, KEY, LINKS, NOW, reader, render

pytestmark = pytest.mark.slow

_RULE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s+([A-Z0-9_]+)\s", re.M)


@pytest.fixture(scope="module")
def spamassassin() -> str:
    found = shutil.which("spamassassin")
    if found is None:
        service_missing("SpamAssassin", "spamassassin is not installed")
    assert found is not None
    return found


def scored_rules(spamassassin: str, message: bytes) -> dict[str, float]:
    """The rules SpamAssassin's local tests fire on ``message``, with their points."""
    done = subprocess.run(
        [spamassassin, "-L", "-t"], input=message, capture_output=True, timeout=120, check=True
    )
    report = done.stdout.decode("utf-8", "replace")
    details = report.split("Content analysis details:", 1)
    assert len(details) == 2, report[:2000]
    table = details[1].split("\n\n", 2)[1]  # after the title line and the column header
    return {name: float(points) for points, name in _RULE.findall(table)}


@pytest.mark.parametrize("reply_domain", ["", "reply.dripcourse.example"])
@pytest.mark.parametrize(("slug", "day"), ALL_LESSONS)
def test_spamassassin_scores_no_point_for_any_lesson(
    spamassassin: str, slug: str, day: int, reply_domain: str
) -> None:
    renderer = Renderer(EMAILS, reply_by_email=bool(reply_domain))
    who = reader(day=day)
    if reply_domain:
        who = dataclasses.replace(who, **reply_addresses(LINKS, reply_domain, 42, day, KEY))
    rules = scored_rules(spamassassin, render(renderer, slug, day, who))
    assert "HTML_MESSAGE" in rules, rules  # the report was read: the HTML part is always there
    assert {name: points for name, points in rules.items() if points != 0} == {}


def test_the_check_sees_a_rule_that_scores(spamassassin: str, tmp_path: Path) -> None:
    """The same reading catches a message that does score: a preheader hidden by colouring it
    like the page, as every lesson's was before."""
    emails = tmp_path / "emails"
    shutil.copytree(EMAILS, emails)
    css = emails / "_layout" / "style.css"
    css.write_text(
        css.read_text(encoding="utf-8").replace(".preheader {", ".preheader { color: #f3f1ec;"),
        encoding="utf-8",
    )
    slug, day = ALL_LESSONS[0]
    course = load_course(emails, slug)
    message = wire_bytes(
        build_message(
            Renderer(emails).lesson(course, day),
            reader(day=day),
            now=NOW,
            msg_id=message_id("course.example.org", 7, "secret"),
        )
    )
    assert scored_rules(spamassassin, message).get("HTML_FONT_LOW_CONTRAST", 0) > 0


def test_a_reply_domain_outside_the_senders_domain_costs_a_point(spamassassin: str) -> None:
    """Why docs/inbound.md asks for a reply_domain under the sender's own domain: the bounce
    address is the envelope sender, and one in another domain than From scores (and fails
    DMARC's SPF alignment)."""
    slug, day = ALL_LESSONS[0]
    who = dataclasses.replace(
        reader(day=day), **reply_addresses(LINKS, "reply.example.org", 42, day, KEY)
    )
    rules = scored_rules(
        spamassassin, render(Renderer(EMAILS, reply_by_email=True), slug, day, who)
    )
    assert rules.get("HEADER_FROM_DIFFERENT_DOMAINS", 0) > 0
