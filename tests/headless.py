"""Headless Chromium for page-layout tests, driven over the DevTools protocol.

No tests here. ``Browser`` starts Chromium with a throwaway profile, opens a page at a phone's
width, and reports how wide the laid-out page is, with a screenshot to look at.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import websocket

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "headless_shell")


def find_chromium() -> str | None:
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass(frozen=True)
class Layout:
    viewport_width: int
    scroll_width: int  # the document's full width: more than the viewport means sideways scroll
    screenshot: Path


class Browser:
    def __init__(self, executable: str) -> None:
        self._profile = tempfile.mkdtemp(prefix="dripcourse-chromium-")
        self._proc = subprocess.Popen(
            [
                executable,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                f"--user-data-dir={self._profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._port = self._wait_for_port()
        self._ids = itertools.count(1)

    def _wait_for_port(self) -> int:
        port_file = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if port_file.is_file() and port_file.read_text().strip():
                return int(port_file.read_text().splitlines()[0])
            if self._proc.poll() is not None:
                raise RuntimeError("Chromium exited at start")
            time.sleep(0.1)  # waiting for another process to start, not for our clock
        raise RuntimeError("Chromium did not open its DevTools port")

    def layout(self, url: str, width: int, screenshot: Path) -> Layout:
        """Open ``url`` in a viewport ``width`` CSS pixels wide, as a phone would."""
        ws = self._open(url, width)
        try:
            sizes = self._call(
                ws,
                "Runtime.evaluate",
                expression=(
                    "JSON.stringify([document.documentElement.clientWidth, "
                    "document.documentElement.scrollWidth])"
                ),
                returnByValue=True,
            )
            viewport, scroll = json.loads(sizes["result"]["value"])
            shot = self._call(
                ws, "Page.captureScreenshot", format="png", captureBeyondViewport=True
            )
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        finally:
            ws.close()
        return Layout(viewport_width=viewport, scroll_width=scroll, screenshot=screenshot)

    def evaluate(self, url: str, width: int, expression: str) -> object:
        """What ``expression`` (JavaScript giving a JSON text) finds on ``url`` laid out
        ``width`` CSS pixels wide, read back as Python values."""
        ws = self._open(url, width)
        try:
            found = self._call(ws, "Runtime.evaluate", expression=expression, returnByValue=True)
        finally:
            ws.close()
        if "exceptionDetails" in found:
            raise RuntimeError(f"{expression} failed on {url}: {found['exceptionDetails']}")
        return json.loads(found["result"]["value"])

    def accessibility(self, url: str, width: int, axe_source: str) -> list[dict]:
        """The violations axe-core finds on ``url`` at ``width`` CSS pixels (WCAG 2.x A and AA
        rules and axe's best practices), each with its impact, help text and elements.

        The page's Content-Security-Policy forbids any script, so it is bypassed for this tab
        only: axe reads the page as laid out, it changes nothing in it.
        """
        ws = self._open(url, width, bypass_csp=True)
        try:
            self._call(ws, "Runtime.evaluate", expression=axe_source)
            found = self._call(
                ws,
                "Runtime.evaluate",
                expression=(
                    "axe.run(document, {runOnly: {type: 'tag', values: "
                    "['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})"
                    ".then(r => JSON.stringify(r.violations.map(v => ({id: v.id, "
                    "impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.html)}))))"
                ),
                awaitPromise=True,
                returnByValue=True,
            )
        finally:
            ws.close()
        if "exceptionDetails" in found:
            raise RuntimeError(f"axe-core failed on {url}: {found['exceptionDetails']}")
        return json.loads(found["result"]["value"])

    def _open(self, url: str, width: int, *, bypass_csp: bool = False) -> websocket.WebSocket:
        """A new tab ``width`` CSS pixels wide, as a phone would be, with ``url`` loaded."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self._port}/json/new?about:blank", method="PUT"
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            target = json.load(response)
        ws = websocket.create_connection(target["webSocketDebuggerUrl"], timeout=60)
        try:
            self._call(
                ws,
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=800,
                deviceScaleFactor=1,
                mobile=True,
            )
            self._call(ws, "Page.enable")
            if bypass_csp:
                self._call(ws, "Page.setBypassCSP", enabled=True)
            self._call(ws, "Page.navigate", url=url)
            self._wait_for(ws, "Page.loadEventFired")
        except BaseException:
            ws.close()
            raise
        return ws

    def _call(self, ws: websocket.WebSocket, method: str, **params: object) -> dict:
        message_id = next(self._ids)
        ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            reply = json.loads(ws.recv())
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def _wait_for(self, ws: websocket.WebSocket, event: str) -> None:
        while json.loads(ws.recv()).get("method") != event:
            pass

    def close(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        shutil.rmtree(self._profile, ignore_errors=True)
