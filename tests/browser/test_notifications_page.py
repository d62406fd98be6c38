"""The page's trade notifications in headless Chromium: a fill raises a desktop notification, the bell counts what
is unread (also after a reload), and "mark all read" clears it in every open tab."""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import expect

from tests.browser.helpers import BROWSER_LOOP, CHROMIUM
from tests.browser.test_page import page_url
from tests.support.relay import TOKEN, free_port, relay_config, running, wait_until

pytestmark = [
    pytest.mark.browser,
    BROWSER_LOOP,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (/usr/bin/chromium or chromium on PATH)"),
]
UI = 10_000

# Records every `new Notification(…)`; permission questions go to the real API (granted by the test).
RECORD_NOTIFICATIONS = """
window.__notifications = [];
const Real = window.Notification;
class Recording {
  constructor(title, options) { window.__notifications.push({ title, body: options && options.body }); }
  static get permission() { return Real ? Real.permission : 'granted'; }
  static requestPermission() { return Real.requestPermission(); }
}
window.Notification = Recording;
"""


@pytest.mark.timeout(60)
async def test_fill_alerts_bell_counts_and_mark_all_read_clears_every_tab(sim, tmp_path, watch):
    first = watch.page
    context = first.context
    async with running(relay_config(sim, tmp_path)) as app:
        await wait_until(lambda: app.relay.sources.default.upstream.connected and app.tradings["default"].connected,
                         10, "both streams up")
        await context.grant_permissions(["notifications"], origin=f"http://127.0.0.1:{app.port}")
        await context.add_init_script(RECORD_NOTIFICATIONS)
        url = page_url(app.port, app.port, fragment=f"token={TOKEN}")
        second = await context.new_page()
        for page in (first, second):
            await page.goto(url)
            await expect(page.locator("#token-state")).to_have_attribute("data-state", "authenticated", timeout=UI)
        await wait_until(lambda: len(app.accounts.orders["default"].subscribers) == 2, 10,
                         "both tabs subscribed to orders")

        order = sim.submit_order("AAPL", "buy", 5)
        sim.fill_order(order["id"], price="187.5")
        for page in (first, second):
            await expect(page.locator("#notify-count")).to_have_text("2", timeout=UI)
        recorded = await first.evaluate("window.__notifications")
        assert recorded == [{"title": "trade-stream: Order filled", "body": "Buy 5 AAPL filled at $187.50"}]

        await second.reload()  # nothing is lost while a page is closed: the unread ones come back over REST
        await expect(second.locator("#notify-count")).to_have_text("2", timeout=UI)

        await first.locator("#notify-bell").click()
        await expect(first.locator("#notify-list .notify-row.unread")).to_have_count(2)
        await expect(first.locator("#notify-list .notify-row").first).to_contain_text("Buy 5 AAPL filled at $187.50")
        await first.locator("#notify-read-all").click()
        for page in (first, second):
            await expect(page.locator("#notify-count")).to_be_hidden(timeout=UI)
        await expect(first.locator("#notify-list .notify-row.unread")).to_have_count(0)
        await second.close()
        await watch.finish()


@pytest.mark.timeout(60)
async def test_an_unread_count_pushed_while_the_first_load_is_on_its_way_is_not_undone(sim, tmp_path, watch):
    """The page loads what is unread over REST when the orders channel is up; notifications pushed over the
    WebSocket before that answer arrives are newer than it. The answer is held back here until the pushes have
    been shown: the bell keeps their count."""
    page = watch.page
    async with running(relay_config(sim, tmp_path)) as app:
        await wait_until(lambda: app.relay.sources.default.upstream.connected and app.tradings["default"].connected, 10,
                         "both streams up")
        answered, release = asyncio.Event(), asyncio.Event()

        async def hold(route):
            response = await route.fetch()  # what the relay answers now: nothing unread yet
            answered.set()
            await release.wait()
            await route.fulfill(response=response)

        await page.route("**/api/notifications/trades?*", hold)
        await page.goto(page_url(app.port, app.port, fragment=f"token={TOKEN}"))
        await asyncio.wait_for(answered.wait(), UI / 1000)
        order = sim.submit_order("AAPL", "buy", 5)
        sim.fill_order(order["id"], price="187.5")
        await expect(page.locator("#notify-count")).to_have_text("2", timeout=UI)
        async with page.expect_response("**/api/notifications/trades?*"):
            release.set()
        await page.evaluate("new Promise((resolve) => setTimeout(resolve, 300))")  # the answer is read and shown
        await expect(page.locator("#notify-count")).to_have_text("2")
        await watch.finish()


@pytest.mark.timeout(60)
async def test_preferences_editor_saves_and_a_broker_account_status_reaches_the_bell_and_desktop(sim, tmp_path,
                                                                                                   watch):
    """In the panel, "Account status" is switched on for desktop alerts and saved; after a reload the editor
    shows what the daemon stored. A Broker account status change then shows in the bell as its sentence and
    raises a desktop alert, while a dividend (activities: bell only by default) shows in the bell alone."""
    from tests.integration.test_broker import broker_config, token
    from trade_stream.simulator.broker import BrokerSim

    page = watch.page
    bsim = await BrokerSim(accounts=1, seed=9, heartbeat=0.3).start()
    try:
        (account,) = list(bsim.accounts)
        alice = token("alice", [account])
        async with running(broker_config(sim, bsim, tmp_path, free_port())) as app:
            await wait_until(lambda: all(bsim.listening(s) == 1 for s in ("trades", "accounts", "activities")),
                             10, "the Broker streams up")
            await page.context.grant_permissions(["notifications"], origin=f"http://127.0.0.1:{app.port}")
            await page.context.add_init_script(RECORD_NOTIFICATIONS)
            url = page_url(app.port, app.port, fragment=f"token={alice}")
            await page.goto(url)
            await expect(page.locator("#token-state")).to_have_attribute("data-state", "authenticated", timeout=UI)
            await page.locator("#notify-bell").click()
            await page.locator("#notify-prefs summary").click()
            box = page.locator("#pref-account_status-desktop")
            await expect(box).not_to_be_checked(timeout=UI)  # the default: the bell only
            await expect(page.locator("#pref-fills-desktop")).to_be_checked()
            await box.check()
            await page.locator("#notify-prefs-save").click()
            await expect(page.locator("#notify-prefs-state")).to_have_text("Saved.", timeout=UI)
            assert app.parts.preferences.channels("alice", "account_status") == frozenset({"bell", "desktop",
                                                                                           "webhooks"})

            await page.reload()
            await expect(page.locator("#token-state")).to_have_attribute("data-state", "authenticated", timeout=UI)
            await wait_until(lambda: app.broker.clients, 10, "the page watching the Broker account")
            await page.locator("#notify-bell").click()
            await page.locator("#notify-prefs summary").click()
            await expect(page.locator("#pref-account_status-desktop")).to_be_checked(timeout=UI)

            bsim.set_status(account, "ACTIVE")
            sentence = f"Account {account[:8]}\u2026 is now ACTIVE"
            await expect(page.locator("#notify-list .notify-row").first).to_contain_text(sentence, timeout=UI)
            await expect(page.locator("#notify-list .notify-row").first).to_have_attribute("data-type",
                                                                                         "account_status")
            bsim.dividend(account, "AAPL", per_share="0.5", qty=4)
            await expect(page.locator("#notify-list .notify-row").first).to_contain_text("Dividend: $2.00 from AAPL",
                                                                                        timeout=UI)
            await expect(page.locator("#notify-count")).to_have_text("2")
            recorded = await page.evaluate("window.__notifications")
            assert recorded == [{"title": "trade-stream: Account status", "body": sentence}]
            await watch.finish()
    finally:
        await bsim.stop()
