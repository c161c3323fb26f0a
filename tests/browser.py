"""Headless Chromium (Debian's `chromium`) for the tests that must see a page as a browser does.

Pages are measured inside iframes of a given width: each iframe is its own viewport, as a
phone's screen is, so one browser run measures every lesson at 375 px and at 600 px. The
harness writes what it measured into the page, and ``--dump-dom`` hands it back.

Run as ``python -m tests.browser DIR`` to (re)make the screenshots of a sample lesson and of
the programme's report (tests/report_scenario.py) in DIR.
"""

from __future__ import annotations

import html
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",  # phones overlay their scrollbars; they take no width
)

_MEASURE = """
<script>
window.addEventListener("load", function () {
  var results = [];
  document.querySelectorAll("iframe").forEach(function (frame) {
    var doc = frame.contentDocument, root = doc.documentElement;
    var found = {name: frame.dataset.name, width: Number(frame.width),
                 scrollWidth: root.scrollWidth, clientWidth: root.clientWidth, button: null};
    var button = frame.dataset.button ? doc.querySelector(frame.dataset.button) : null;
    if (button) {
      var box = button.getBoundingClientRect(), style = doc.defaultView.getComputedStyle(button);
      found.button = {left: box.left, right: box.right, width: box.width, height: box.height,
                      shown: style.visibility !== "hidden" && style.display !== "none"};
    }
    results.push(found);
  });
  var out = document.createElement("pre");
  out.id = "measured";
  out.textContent = JSON.stringify(results);
  document.body.appendChild(out);
});
</script>
"""


@dataclass(frozen=True)
class Page:
    name: str
    html: str
    button: str = ""  # a CSS selector for the element that must be visible without zooming


@dataclass(frozen=True)
class Measured:
    name: str
    width: int
    scroll_width: int
    client_width: int
    button: dict[str, float] | None

    @property
    def scrolls_sideways(self) -> bool:
        return self.scroll_width > self.client_width

    @property
    def button_visible(self) -> bool:
        b = self.button
        return bool(
            b
            and b["shown"]
            and b["width"] > 0
            and b["height"] > 0
            and b["left"] >= 0
            and b["right"] <= self.client_width
        )


def available() -> bool:
    return Path(CHROMIUM).is_file()


def run(*args: str, timeout: float = 120) -> str:
    """Run Chromium headless with a throwaway profile; its stdout."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        done = subprocess.run(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"chromium exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def measure(pages: list[Page], widths: tuple[int, ...], workdir: Path) -> list[Measured]:
    """Each page at each width: its scroll width against its viewport, and its button's box."""
    frames = [
        f'<iframe data-name="{html.escape(p.name)}" data-button="{html.escape(p.button)}" '
        f'width="{w}" height="4000" srcdoc="{html.escape(p.html, quote=True)}"></iframe>'
        for p in pages
        for w in widths
    ]
    harness = workdir / "harness.html"
    harness.write_text(
        "<!DOCTYPE html><html><body>" + "".join(frames) + _MEASURE + "</body></html>",
        encoding="utf-8",
    )
    dom = run(
        "--run-all-compositor-stages-before-draw",
        "--virtual-time-budget=15000",
        "--dump-dom",
        harness.as_uri(),
    )
    start = dom.index('<pre id="measured">') + len('<pre id="measured">')
    data = json.loads(html.unescape(dom[start : dom.index("</pre>", start)]))
    return [
        Measured(d["name"], d["width"], d["scrollWidth"], d["clientWidth"], d["button"])
        for d in data
    ]


def screenshot(page_html: str, width: int, out: Path, height: int = 2600) -> None:
    """A PNG of the page at ``width`` CSS pixels."""
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp, "page.html")
        source.write_text(page_html, encoding="utf-8")
        run(f"--screenshot={out.resolve()}", f"--window-size={width},{height}", source.as_uri())


def _sample_lesson_html(day: int) -> str:
    from click.testing import CliRunner

    from dripcourse.cli import cli

    result = CliRunner().invoke(cli, ["preview", "white-coat", str(day)])
    assert result.exit_code == 0, result.output
    return result.stdout


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs")
    lesson = _sample_lesson_html(3)
    for width, height in ((375, 2500), (600, 1750)):
        screenshot(lesson, width, target / f"lesson-{width}px.png", height)
        print(f"wrote {target / f'lesson-{width}px.png'}")
    from tests import report_scenario

    with tempfile.TemporaryDirectory() as tmp:
        report_page = report_scenario.sample_page(Path(tmp))
    screenshot(report_page, 900, target / "report.png", 2900)
    print(f"wrote {target / 'report.png'}")
