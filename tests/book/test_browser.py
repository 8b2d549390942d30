"""Open the built smoke book in headless Chromium, offline, and check what a reader sees.

The browser is driven through the DevTools protocol over a pipe (``--remote-debugging-pipe``:
JSON messages separated by NUL bytes on file descriptors 3 and 4), so no Python browser
library is needed. Skipped when Chromium is not installed, except under ``CI=true``.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.book.conftest import REPO

pytestmark = pytest.mark.slow

CHAPTER_PAGES = sorted(f"chapters/{p.stem}.html" for p in (REPO / "chapters").glob("*.ipynb"))

# Runs in the page once it loaded: waits for MathJax, then reports images, math and leftovers.
INSPECT_PAGE = r"""
(async () => {
  const deadline = Date.now() + 30000;
  while (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) {
    if (Date.now() > deadline) return {error: "MathJax did not start"};
    await new Promise(r => setTimeout(r, 100));
  }
  await MathJax.startup.promise;
  const article = document.querySelector("article") || document.body;
  const text = article.cloneNode(true);
  text.querySelectorAll("pre, mjx-container, script").forEach(e => e.remove());
  return {
    figures: [...article.querySelectorAll("figure img, .cell_output img")].map(
      i => ({src: i.getAttribute("src"), loaded: i.complete && i.naturalWidth > 0})),
    typeset: article.querySelectorAll("mjx-container").length,
    untypeset: article.querySelectorAll(".math:not(:has(mjx-container))").length,
    raw: ["\\(", "\\)", "\\[", "$$"].filter(s => text.textContent.includes(s)),
  };
})()
"""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


def _high_fd(fd: int) -> int:
    """Duplicate ``fd`` above 10 (so that moving it to 3 or 4 in the child is safe)."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


class Browser:
    """Minimal DevTools-protocol client of a headless Chromium over a pipe."""

    def __init__(self, exe: str, profile_dir: Path) -> None:
        to_read, self._write = os.pipe()  # Chromium reads commands from fd 3
        self._read, from_write = os.pipe()  # and writes replies and events to fd 4
        to_read, from_write = _high_fd(to_read), _high_fd(from_write)

        def move_fds() -> None:
            os.dup2(to_read, 3)
            os.dup2(from_write, 4)

        args = [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--remote-debugging-pipe",
            f"--user-data-dir={profile_dir}",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            args,
            pass_fds=(3, 4),
            preexec_fn=move_fds,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_read)
        os.close(from_write)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._read], [], [], remaining)[0]:
                raise TimeoutError("no answer from Chromium")
            chunk = os.read(self._read, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def send(
        self, method: str, params: dict | None = None, session: str | None = None, timeout=60.0
    ) -> dict[str, Any]:
        """Send a command and return its result (events received meanwhile are kept)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str, session: str, timeout: float = 60.0) -> dict[str, Any]:
        """Wait for an event of a session."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event.get("method") == method and event.get("sessionId") == session:
                    self.events.remove(event)
                    return event
            self.events.append(self._receive(deadline))

    def open(self, url: str) -> tuple[str, list[str]]:
        """Load a page in a new tab; returns the session and every URL it requested."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        self.send("Network.enable", session=session)
        self.send("Page.enable", session=session)
        self.send("Page.navigate", {"url": url}, session=session)
        self.wait_for("Page.loadEventFired", session)
        return session, []

    def requested_urls(self, session: str) -> list[str]:
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e.get("method") == "Network.requestWillBeSent" and e.get("sessionId") == session
        ]

    def evaluate(self, session: str, expression: str) -> Any:
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            session=session,
            timeout=60,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"]["value"]

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._write)
        os.close(self._read)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    exe = find_chromium()
    if exe is None:
        message = "Chromium is not installed (Debian: `apt-get install chromium`)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run the browser check (.ci/run installs it)")
        pytest.skip(f"{message}: browser check skipped")
    instance = Browser(exe, tmp_path_factory.mktemp("chromium-profile"))
    yield instance
    instance.close()


@pytest.mark.parametrize("page", ["intro.html", *CHAPTER_PAGES])
def test_page_renders_offline_with_figures_and_math(browser, smoke_book, page):
    session, _ = browser.open((smoke_book.html / page).as_uri())
    report = browser.evaluate(session, INSPECT_PAGE)
    assert "error" not in report, report
    requested = browser.requested_urls(session)
    remote = [u for u in requested if not u.startswith(("file:", "data:", "blob:", "about:"))]
    assert not remote, f"{page} requested network resources: {remote}"
    assert any(u.endswith("_static/mathjax/tex-chtml.js") for u in requested)
    assert report["typeset"] > 0, f"{page}: MathJax typeset no math"
    assert report["untypeset"] == 0 and report["raw"] == [], f"{page}: raw TeX left: {report}"
    if page.startswith("chapters/"):
        assert report["figures"], f"{page} shows no figure"
        broken = [f["src"] for f in report["figures"] if not f["loaded"]]
        assert not broken, f"{page}: figures did not load: {broken}"
