"""Shared pieces of the browser tests: Chromium launch options, a console/page-error watch, small servers."""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import ConsoleMessage, Error, Page

REPO = Path(__file__).resolve().parents[2]
PUBLIC_HTML = REPO / "public_html"
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
EASTERN = ZoneInfo("America/New_York")
# Debian's Chromium: Playwright's own browser download is not used (no internet here).
CHROMIUM = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")
OTHER_HOST = "trading.example.test"  # resolved to 127.0.0.1 by Chromium: an origin that is not localhost
# In the pytestmark of every module that drives Chromium: the shared browser lives on the session's event loop
# (tests/browser/conftest.py).
BROWSER_LOOP = pytest.mark.asyncio(loop_scope="session")


class PageWatch:
    """Collects console errors and uncaught page errors; a test ends with ``finish()``, which saves the
    screenshot and asserts nothing went wrong on the page."""

    def __init__(self, page: Page, name: str) -> None:
        self.page = page
        self.name = name
        self.errors: list[str] = []
        self.finished = False
        self._allowed: list[re.Pattern[str]] = []
        page.on("console", self._on_console)
        page.on("pageerror", self._on_pageerror)

    def _on_console(self, msg: ConsoleMessage) -> None:
        if msg.type == "error":
            self.errors.append(f"console.error: {msg.text}")

    def _on_pageerror(self, error: Error) -> None:
        self.errors.append(f"pageerror: {error}")

    def allow_ws_failures(self, ws_url: str) -> None:
        """Chromium's own line for a refused WebSocket handshake, unavoidable while the daemon is down."""
        self._allowed.append(re.compile(rf"^console\.error: WebSocket connection to '{re.escape(ws_url)}' failed"))
        # the page then asks the daemon's /api/page-info (and /api/clock) why: refused too while it is down
        self._allowed.append(re.compile(r"^console\.error: Failed to load resource: net::ERR_CONNECTION_REFUSED"))

    def allowed_seen(self) -> list[str]:
        return [e for e in self.errors if any(p.match(e) for p in self._allowed)]

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.match(e) for p in self._allowed)]

    async def screenshot(self) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{self.name}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        return path

    async def finish(self) -> None:
        self.finished = True
        await self.screenshot()
        assert self.unexpected() == [], "errors on the page"


def free_port() -> int:
    """A port free right now (for a daemon that must come back on the same port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def eastern_time(rfc3339: str) -> str:
    """What the page shows for an Alpaca timestamp: HH:MM:SS.mmm in New York, fraction cut (not rounded)."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z", rfc3339)
    assert m, f"unexpected timestamp {rfc3339!r}"
    whole = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).astimezone(EASTERN)
    millis = (m.group(2) or "").ljust(3, "0")[:3]
    return f"{whole:%H:%M:%S}.{millis}"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def static_server(directory: Path = PUBLIC_HTML) -> Iterator[int]:
    """Serve ``directory`` over HTTP from a thread, as Apache would serve public_html; yields the port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(directory)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="static-public_html", daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
