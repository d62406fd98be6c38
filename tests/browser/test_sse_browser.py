"""A real EventSource in headless Chromium, on a page from another origin, receives trades from the SSE side-port,
survives a daemon-side drop and resumes with Last-Event-ID without gaps or duplicates."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import pytest

from tests.browser.helpers import BROWSER_LOOP, PageWatch, free_port, static_server
from tests.support.relay import KEY, SECRET, relay_config, running, wait_until
from trade_stream.simulator import SimConfig, Simulator

CHROMIUM_PATH = Path("/usr/bin/chromium")
CHROMIUM = shutil.which("chromium") or (str(CHROMIUM_PATH) if CHROMIUM_PATH.exists() else None)
pytestmark = [pytest.mark.browser, BROWSER_LOOP, pytest.mark.timeout(60),
              pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")]

PAGE = """<!doctype html><meta charset="utf-8"><title>sse</title><body><script>
window.events = []; window.opens = 0; window.errors = 0;
const es = new EventSource(new URLSearchParams(location.search).get("src"));
es.onopen = () => { window.opens += 1; };
es.onerror = () => { window.errors += 1; };
es.addEventListener("trade", (e) => {
  const ev = {id: Number(e.lastEventId), price: JSON.parse(e.data).data.price};
  window.events.push(ev);
  document.body.insertAdjacentHTML("beforeend", `<div>id ${ev.id}: AAPL ${ev.price}</div>`);
});
</script></body>"""


async def test_event_source_resumes_with_last_event_id_without_gaps(tmp_path, browser):
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(PAGE)
    (site / "favicon.ico").write_bytes(b"")
    sim_cfg = SimConfig(host="127.0.0.1", port=0, accounts={KEY: SECRET}, rate_per_symbol=0.0)
    async with Simulator(sim_cfg) as sim, running(relay_config(sim, tmp_path, sse_port=free_port())) as app:
        await wait_until(lambda: app.relay.sources.default.upstream.connected)
        src = f"http://127.0.0.1:{app.sse.port}/api/stream/trades?symbols=AAPL"
        with static_server(site) as web_port:
            page = await browser.new_page()  # in a context of its own, closed by the fixture
            watch = PageWatch(page, "sse_event_source_resume")
            await page.goto(f"http://127.0.0.1:{web_port}/index.html?src={src}")
            await page.wait_for_function("window.opens === 1", timeout=10_000)
            await wait_until(lambda: sim.subscriptions("/v2/iex")["trades"] == ["AAPL"])
            prices = [100.0 + i for i in range(10)]
            for price in prices[:4]:
                sim.inject_trade("AAPL", price=price)
            await page.wait_for_function("window.events.length === 4", timeout=10_000)

            # The daemon drops the stream mid-body, as a network fault would. Chromium logs its own
            # network line for that; nothing else may appear on the console.
            watch._allowed.append(re.compile(r"^console\.error: Failed to load resource: "
                                             r"net::ERR_INCOMPLETE_CHUNKED_ENCODING$"))
            for client in list(app.sse.clients):
                client.transport.abort()
            await page.wait_for_function("window.errors >= 1", timeout=10_000)
            for price in prices[4:7]:  # while the browser waits out retry: 5000
                sim.inject_trade("AAPL", price=price)
            await page.wait_for_function("window.opens === 2", timeout=15_000)
            for price in prices[7:]:
                sim.inject_trade("AAPL", price=price)
            await page.wait_for_function("window.events.length >= 10", timeout=10_000)
            await asyncio.sleep(0.3)
            events = await page.evaluate("window.events")
            assert [e["price"] for e in events] == prices
            ids = [e["id"] for e in events]
            assert ids == list(range(ids[0], ids[0] + 10))
            await watch.finish()
