"""Price alerts on the page in headless Chromium: an alert set from a watchlist row's bell is listed, drawn on the
chart as a price line, fires on a live trade across it (the bell counts the notification, the row shows it
triggered), and is removed from the list."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from tests.browser.helpers import BROWSER_LOOP, CHROMIUM
from tests.browser.test_page import page_url
from tests.support.relay import TOKEN, relay_config, running, wait_until

pytestmark = [
    pytest.mark.browser,
    BROWSER_LOOP,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (/usr/bin/chromium or chromium on PATH)"),
]
UI = 10_000


@pytest.mark.timeout(60)
async def test_an_alert_set_from_a_watchlist_row_triggers_on_a_live_trade(sim, tmp_path, watch):
    page = watch.page
    async with running(relay_config(sim, tmp_path)) as app:
        await wait_until(lambda: app.relay.sources.default.upstream.connected and app.tradings["default"].connected,
                         10, "both streams up")
        sim.inject_trade("AAPL", 229.0, 100)
        await page.goto(page_url(app.port, app.port, query="symbols=AAPL", fragment=f"token={TOKEN}"))
        await expect(page.locator("#token-state")).to_have_attribute("data-state", "authenticated", timeout=UI)
        row = page.locator('.wl-row[data-symbol="AAPL"]')
        await expect(row.locator(".last")).to_have_text("229.00", timeout=UI)

        await row.locator(".set-alert").click()
        await expect(page.locator("#alert-symbol")).to_have_value("AAPL")
        await expect(page.locator("#alert-condition")).to_have_value("crosses_above")
        await page.locator("#alert-number").fill("230")
        await page.locator("#alert-form button[type=submit]").click()
        listed = page.locator('#alerts-list .alert-row[data-symbol="AAPL"]')
        await expect(listed).to_have_attribute("data-state", "armed", timeout=UI)
        await expect(listed.locator(".alert-text")).to_have_text("AAPL crosses above $230.00")
        await expect(page.locator("#alerts-empty")).to_be_hidden()
        await expect(page.locator("#chart")).to_have_attribute("data-alert-lines", "230", timeout=UI)
        await wait_until(lambda: app.alerts.book.symbols.get("AAPL") is not None
                         and app.alerts.book.symbols["AAPL"].last == 229.0, 10, "the alert's reference")

        sim.inject_trade("AAPL", 230.25, 10)
        await expect(listed).to_have_attribute("data-state", "triggered", timeout=UI)
        await expect(listed.locator(".alert-fired")).to_have_text("AAPL crossed above $230.00 at $230.25")
        await expect(page.locator("#notify-count")).to_have_text("1", timeout=UI)
        await expect(page.locator("#chart")).to_have_attribute("data-alert-lines", "")
        await page.locator("#notify-bell").click()
        await expect(page.locator("#notify-list .notify-row").first).to_contain_text(
            "AAPL crossed above $230.00 at $230.25")

        await listed.locator(".remove-alert").click()
        await expect(page.locator("#alerts-list .alert-row")).to_have_count(0, timeout=UI)
        await expect(page.locator("#alerts-empty")).to_be_visible()
        assert app.alerts.alerts == {}
        await watch.finish()
