"""Fixtures shared by the browser tests: one Chromium per test, and a fresh page with its error watch."""

import pytest
from playwright.async_api import async_playwright

from tests.browser.helpers import CHROMIUM, CHROMIUM_ARGS, OTHER_HOST, PageWatch


@pytest.fixture
async def browser():
    async with async_playwright() as pw:
        args = [*CHROMIUM_ARGS, f"--host-resolver-rules=MAP {OTHER_HOST} 127.0.0.1"]
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
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
