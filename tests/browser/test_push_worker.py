"""The page's service worker in headless Chromium: served as JavaScript from the page's own directory, registered
by the page at that scope, a push message delivered to it through DevTools (``ServiceWorker.deliverPushMessage``,
what the vendor's push service would do; these machines cannot reach one) shown as a notification with its
title, body, tag and URL, and a click on it bringing the page forward with the list open."""

from __future__ import annotations

import asyncio
import urllib.request

import orjson
import pytest
from playwright.async_api import expect

from tests.browser.helpers import BROWSER_LOOP, CHROMIUM
from tests.browser.test_page import page_url
from tests.support.relay import TOKEN, relay_config, running
from trade_stream.records import vapid

pytestmark = [
    pytest.mark.browser,
    BROWSER_LOOP,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (/usr/bin/chromium or chromium on PATH)"),
]
UI = 10_000
KEYS = vapid.generate("mailto:ops@example.com")


def head(port: int, path: str) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return resp.status, resp.headers["Content-Type"]


async def registration_id(cdp, scope: str) -> str:
    """The worker's registration as DevTools names it (its events arrive once the domain is enabled)."""
    found: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def seen(event: dict) -> None:
        for reg in event["registrations"]:
            if reg["scopeURL"] == scope and not reg["isDeleted"] and not found.done():
                found.set_result(reg["registrationId"])

    cdp.on("ServiceWorker.workerRegistrationUpdated", seen)
    await cdp.send("ServiceWorker.enable")
    return await asyncio.wait_for(found, 10)


SHOWN = """navigator.serviceWorker.ready.then((r) => r.getNotifications()).then((list) =>
    list.map((n) => ({title: n.title, body: n.body, tag: n.tag, data: n.data})))"""


async def push(cdp, page, origin: str, registration: str, message: dict) -> list[dict]:
    """What the browser does with a message from its push service: a push event in the worker; then what the
    worker shows. Chromium now and then drops a message DevTools hands it while it starts the worker (about one
    run in five on a loaded machine), so a message not shown in 2 s is handed over again: it carries the same
    tag, so showing it twice still leaves one notification."""
    for _ in range(5):
        await cdp.send("ServiceWorker.deliverPushMessage", {"origin": origin + "/", "registrationId": registration,
                                                            "data": orjson.dumps(message).decode()})
        for _ in range(40):
            shown = await page.evaluate(SHOWN)
            if shown:
                return shown
            await asyncio.sleep(0.05)
    raise AssertionError(f"the worker never showed {message}")


async def shown_notifications(page, count: int) -> list[dict]:
    """The notifications the page's worker shows, once there are ``count`` of them."""
    shown: list[dict] = []
    for _ in range(200):
        shown = await page.evaluate(SHOWN)
        if len(shown) == count:
            return shown
        await asyncio.sleep(0.05)
    raise AssertionError(f"the worker shows {shown}, not {count} notifications")


@pytest.mark.timeout(60)
async def test_the_worker_registers_shows_a_push_and_a_click_focuses_the_page(sim, tmp_path, watch):
    page = watch.page
    cfg = relay_config(sim, tmp_path, vapid=KEYS, vapid_public_key=KEYS.public_key)
    async with running(cfg) as app:
        origin = f"http://127.0.0.1:{app.port}"
        assert await asyncio.to_thread(head, app.port, "/sw.js") == (200, "text/javascript; charset=utf-8")
        await page.context.grant_permissions(["notifications"], origin=origin)
        await page.goto(page_url(app.port, app.port, fragment=f"token={TOKEN}"))
        await expect(page.locator("html")).to_have_attribute("data-push-worker", "ready", timeout=UI)
        scope = await page.evaluate("navigator.serviceWorker.ready.then((r) => r.scope)")
        assert scope == origin + "/"
        await page.locator("#notify-bell").click()
        await expect(page.locator("#push-toggle")).to_be_visible()

        cdp = await page.context.new_cdp_session(page)
        reg = await registration_id(cdp, scope)
        message = {"title": "Order filled", "body": "Buy 10 AAPL filled at $99.50", "tag": "trade-stream-o-1",
                   "id": 7, "type": "order_filled", "trade_id": "o-1", "level": "info"}
        await page.locator("#notify-bell").click()  # closed again: the click below must open it
        shown = await push(cdp, page, origin, reg, message)
        assert shown == [{
            "title": "Order filled", "body": "Buy 10 AAPL filled at $99.50", "tag": "trade-stream-o-1",
            "data": {"url": origin + "/", "id": 7, "type": "order_filled", "trade_id": "o-1"}}]

        # A click: the notificationclick the browser dispatches for that notification. Chromium lets only a click
        # it dispatches itself focus or open a window, and nothing drives a real one in headless Chromium, so the
        # worker's focus and openWindow calls are recorded: what it asks them for is what is tested.
        workers = page.context.service_workers
        worker = workers[0] if workers else await page.context.wait_for_event("serviceworker", timeout=UI)
        focused = await worker.evaluate("""async () => {
            const asked = [];
            WindowClient.prototype.focus = async function () { asked.push(this.url); return this; };
            const [notification] = await self.registration.getNotifications();
            self.dispatchEvent(new NotificationEvent('notificationclick', { notification }));
            for (let i = 0; i < 100 && !asked.length; i += 1) await new Promise((r) => setTimeout(r, 50));
            return asked;
        }""")
        assert len(focused) == 1 and focused[0].startswith(origin + "/?ws=")  # the open tab, not a new one
        await expect(page.locator("#notify-panel")).to_be_visible(timeout=UI)  # told what was clicked
        assert await shown_notifications(page, 0) == []  # the clicked one is closed
        await watch.finish()

        # No tab of the page open: a click opens one at the notification's URL.
        assert len(await push(cdp, page, origin, reg, {**message, "tag": "trade-stream-o-2", "trade_id": "o-2"})) == 1
        await page.close()
        opened = await worker.evaluate("""async () => {
            const asked = [];
            self.clients.openWindow = async (url) => { asked.push(url); return null; };
            const [notification] = await self.registration.getNotifications();
            self.dispatchEvent(new NotificationEvent('notificationclick', { notification }));
            for (let i = 0; i < 100 && !asked.length; i += 1) await new Promise((r) => setTimeout(r, 50));
            return { asked, left: (await self.registration.getNotifications()).length };
        }""")
        assert opened == {"asked": [origin + "/"], "left": 0}
