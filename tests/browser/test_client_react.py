"""The React hooks (public_html/js/client/react.js) in Chromium: README's React example, tests/js/react/app.jsx,
bundled with esbuild against React 19 and against React 18 (installed side by side in tests/js as the aliases
react18 and react-dom18), renders useMarketStream(['AAPL','MSFT']) with live prices from the real daemon."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest
from playwright.async_api import expect

from tests.browser.helpers import BROWSER_LOOP, CHROMIUM, static_server
from tests.browser.test_client import PUBLISH_KEY, Frames, fill, orders_ready, publish
from tests.support.docs import blocks
from tests.support.relay import TOKEN, relay_config, running, wait_until

JS = Path(__file__).resolve().parents[1] / "js"
ESBUILD = JS / "node_modules" / ".bin" / "esbuild"
EXAMPLE = JS / "react"

pytestmark = [
    pytest.mark.browser,
    BROWSER_LOOP,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (/usr/bin/chromium or chromium on PATH)"),
    pytest.mark.skipif(not ESBUILD.exists() or not (JS / "node_modules" / "react18").is_dir(),
                       reason="React and esbuild not installed in tests/js (tests/run.sh runs npm install there)"),
]

DATA = "/v2/iex"
README = "README.md"
UI = 10_000  # ms
# The React each build uses: esbuild's aliases reach imports inside node_modules too, so react-dom18 gets react18.
REACTS = {"19": [], "18": ["--alias:react=react18", "--alias:react-dom=react-dom18"]}


@pytest.mark.timeout(30)
async def test_readme_shows_the_example_as_it_is():
    [text] = [b.text for b in blocks(README) if b.id == "client-example-react"]
    assert text == (EXAMPLE / "app.jsx").read_text()


def build(out: Path, major: str, app: str = "app", html: str = "index.html") -> Path:
    """tests/js/react/<app>.jsx bundled for React `major` into `out` beside its page (what a developer's build
    makes)."""
    out.mkdir()
    subprocess.run([str(ESBUILD), str(EXAMPLE / f"{app}.jsx"), "--bundle", "--format=esm",
                    f"--outfile={out / f'{app}.js'}", "--define:process.env.NODE_ENV=\"production\"",
                    "--log-level=warning", *REACTS[major]],
                   check=True, cwd=JS, timeout=60, capture_output=True)
    shutil.copy(EXAMPLE / html, out / html)
    return out


@pytest.mark.timeout(90)
@pytest.mark.parametrize("major", sorted(REACTS))
async def test_use_market_stream_renders_live_prices(major, sim, tmp_path, watch):
    """The page shows LIVE, the snapshot's last price before any new trade, then each trade's price and the
    quote's bid and ask, for both symbols, under the React version it was built with."""
    page = watch.page
    sim.inject_trade("MSFT", price=410.25, size=5)  # the snapshot's latest trade
    site = build(tmp_path / f"react{major}", major)
    async with running(relay_config(sim, tmp_path)) as app:
        await wait_until(lambda: app.relay.sources.default.upstream.connected, 10, "market-data upstream")
        with static_server(site) as http_port:
            await page.goto(f"http://127.0.0.1:{http_port}/index.html?ws=ws://127.0.0.1:{app.port}/")
            await expect(page.locator("#react-version")).to_contain_text(f"React {major}.", timeout=UI)
            await expect(page.locator("#status")).to_have_text("LIVE", timeout=UI)
            msft = page.locator('tr[data-symbol="MSFT"]')
            aapl = page.locator('tr[data-symbol="AAPL"]')
            await expect(msft.locator(".price")).to_have_text("410.25", timeout=UI)
            await wait_until(lambda: {"AAPL", "MSFT"} <= set(sim.subscriptions(DATA)["quotes"]), 10, "quotes held")
            sim.inject_trade("AAPL", price=187.5, size=10)
            await expect(aapl.locator(".price")).to_have_text("187.50", timeout=UI)
            sim.inject_trade("MSFT", price=411.0, size=1)
            await expect(msft.locator(".price")).to_have_text("411.00", timeout=UI)
            sim.inject_quote("AAPL", bid=187.4, ask=187.6)
            await expect(aapl.locator(".bid")).to_have_text("187.40", timeout=UI)
            await expect(aapl.locator(".ask")).to_have_text("187.60")
            await watch.finish()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("major", sorted(REACTS))
async def test_use_orders_and_use_positions_share_one_orders_subscription(major, sim, tmp_path, watch):
    """useOrders and usePositions in two components, and useMarketStream on the positions' symbols: one socket,
    one orders subscribe; a fill shows as the order's latest state and as the position, whose price is live."""
    page = watch.page
    frames = Frames(page)
    site = build(tmp_path / f"react{major}", major, "orders-app", "orders.html")
    async with running(relay_config(sim, tmp_path)) as app:
        await orders_ready(app)
        with static_server(site) as http_port:
            await page.goto(f"http://127.0.0.1:{http_port}/orders.html?ws=ws://127.0.0.1:{app.port}/&token={TOKEN}")
            await expect(page.locator("#orders")).to_have_attribute("data-authenticated", "true", timeout=UI)
            await wait_until(lambda: frames.sent_actions("subscribe", channel="orders"), 10, "orders subscribed")
            await fill(sim, 10, 100.5)
            order = page.locator("#orders .order")
            await expect(order).to_have_count(1, timeout=UI)
            await expect(order).to_have_attribute("data-status", "filled", timeout=UI)
            await expect(page.locator("#orders")).to_have_attribute("data-events", "2")
            position = page.locator('#positions tr[data-symbol="AAPL"]')
            await expect(position.locator(".qty")).to_have_text("10", timeout=UI)
            await wait_until(lambda: "AAPL" in sim.subscriptions(DATA)["trades"], 10, "the position's symbol held")
            sim.inject_trade("AAPL", price=101.25, size=1)
            await expect(position.locator(".last")).to_have_text("101.25", timeout=UI)
            assert len(frames.sent_actions("subscribe", channel="orders")) == 1
            assert frames.sockets == 1
            await watch.finish()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("major", sorted(REACTS))
async def test_use_channel_keeps_the_newest_events(major, sim, tmp_path, watch):
    """useChannel('strategies:abc', {limit: 3}): each published event renders, newest first, at most three kept,
    `last` the newest."""
    page = watch.page
    site = build(tmp_path / f"react{major}", major, "channel-app", "channel.html")
    async with running(relay_config(sim, tmp_path, publish_key=PUBLISH_KEY)) as app:
        await wait_until(lambda: app.relay.sources.default.upstream.connected, 10, "market-data upstream")
        with static_server(site) as http_port:
            await page.goto(f"http://127.0.0.1:{http_port}/channel.html?ws=ws://127.0.0.1:{app.port}/&token={TOKEN}")
            await wait_until(lambda: app.relay.channels.subs.get("strategies:abc"), 10, "the channel held")
            strategy = page.locator("#strategy")
            for n in range(1, 6):
                await asyncio.to_thread(publish, app.port, n)
                await expect(strategy).to_have_attribute("data-last", str(n), timeout=UI)
            await expect(strategy.locator(".event")).to_have_text(["5", "4", "3"])
            await expect(strategy).to_have_attribute("data-error", "")
            await watch.finish()
