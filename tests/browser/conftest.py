"""Fixtures shared by the browser tests: one Chromium for the whole run, a fresh context per test with its error
watch, and the simulator on the same event loop.

Starting Playwright's driver and Chromium costs about two seconds, more than many a browser test itself; a test's
isolation comes from its own browser context (cookies, storage, cache and service workers are per context), not
from its own Chromium. Playwright is bound to the event loop it was started on, so the browser tests run on the
session's loop (``BROWSER_LOOP`` in their ``pytestmark``), and the async fixtures they use run there too."""

import pytest_asyncio
from playwright.async_api import Browser, Playwright, async_playwright

from tests.browser.helpers import CHROMIUM, CHROMIUM_ARGS, OTHER_HOST, PageWatch
from tests.support.relay import sim_config
from trade_stream.simulator import Simulator


class SharedChromium:
    """Playwright and the Chromium it launched, shared by every browser test; launched again if it died, so one
    crash fails one test, not the rest."""

    def __init__(self, pw: Playwright) -> None:
        self.pw = pw
        self.browser: Browser | None = None

    async def get(self) -> Browser:
        if self.browser is None or not self.browser.is_connected():
            args = [*CHROMIUM_ARGS, f"--host-resolver-rules=MAP {OTHER_HOST} 127.0.0.1"]
            self.browser = await self.pw.chromium.launch(executable_path=CHROMIUM, args=args)
        return self.browser


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def _chromium():
    async with async_playwright() as pw:
        shared = SharedChromium(pw)
        try:
            yield shared
        finally:
            if shared.browser is not None:
                await shared.browser.close()


@pytest_asyncio.fixture(loop_scope="session")
async def browser(_chromium):
    """The shared Chromium; a context a test left open (it failed before closing it) is closed after it."""
    b = await _chromium.get()
    try:
        yield b
    finally:
        for context in b.contexts:
            await context.close()


@pytest_asyncio.fixture(loop_scope="session")
async def watch(browser, request):
    """A fresh page (own context, so no localStorage/sessionStorage carries over) with its error watch."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    page = await context.new_page()
    w = PageWatch(page, request.node.name)
    try:
        yield w
    finally:
        if not w.finished:  # the test failed before the end: keep what the page looked like
            try:
                await w.screenshot()
            except Exception:
                pass
        await context.close()


@pytest_asyncio.fixture(loop_scope="session")
async def sim():
    """tests/conftest.py's simulator, on the browser tests' loop."""
    async with Simulator(sim_config()) as s:
        yield s
