"""The page in public_html/ driven by headless Chromium against the real relay and the Alpaca simulator.

Everything runs in-process on the test's event loop (real loopback sockets): the simulator, the daemon, and
Playwright's async API. Each test saves tests/artifacts/<test-name>.png and fails on any console error or
uncaught page error.
"""

from __future__ import annotations

import re

import pytest
from playwright.async_api import expect

from tests.browser.helpers import BROWSER_LOOP, CHROMIUM, eastern_time, free_port, static_server
from tests.support.relay import FAST, TOKEN, Browser, relay_config, running, wait_until
from trade_stream.config import Config

pytestmark = [
    pytest.mark.browser,
    BROWSER_LOOP,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (/usr/bin/chromium or chromium on PATH): "
                       "the browser tests need it; Playwright's own browser download is not used"),
]

DATA = "/v2/iex"
UI = 10_000  # ms for UI expectations: generous, the machine is shared


# --- fixtures ------------------------------------------------------------------------------------------------


def ws_url(port: int) -> str:
    return f"ws://127.0.0.1:{port}/"


def page_url(http_port: int, ws_port: int, query: str = "", fragment: str = "") -> str:
    url = f"http://127.0.0.1:{http_port}/?ws={ws_url(ws_port)}"
    if query:
        url += "&" + query
    return url + (f"#{fragment}" if fragment else "")


async def upstream_ready(app) -> None:
    await wait_until(lambda: app.relay.sources.default.upstream.connected, 10, "relay's market-data upstream connected")


def upstream_actions(sim) -> list[dict]:
    """Subscribe/unsubscribe messages the relay sent to the simulator's market-data stream, in order."""
    return [r.message for r in sim.received if r.path == DATA and r.message.get("action") != "auth"]


def has_class(name: str) -> re.Pattern[str]:
    return re.compile(rf"(^|\s){name}(\s|$)")


def panel(page, symbol: str):
    """The symbol's watchlist row."""
    return page.locator(f'tr.wl-row[data-symbol="{symbol}"]')


def tape(page):
    """The selected symbol's trades (the detail view's tape)."""
    return page.locator("#tape tr.trade")


# --- tests ---------------------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_trades_from_the_address_symbols(sim, tmp_path, watch):
    """?symbols=AAPL subscribes; trades show price, size, ET time with ms, direction colour; tape keeps 100."""
    page = watch.page
    async with running(relay_config(sim, tmp_path)) as app:
        await upstream_ready(app)
        await page.goto(page_url(app.port, app.port, "symbols=AAPL"))
        await expect(page.locator("#conn-state")).to_have_attribute("data-state", "live", timeout=UI)
        await expect(page.locator("#ws-url")).to_have_text(ws_url(app.port))
        await expect(page.locator("#demo-badge")).to_be_hidden()
        await expect(page.locator("#upstream-state")).to_have_attribute("data-state", "connected", timeout=UI)
        aapl = panel(page, "AAPL")
        await expect(aapl).to_have_attribute("data-status", "subscribed", timeout=UI)
        assert ("trades", "AAPL") in app.relay.hub.wanted()
        await wait_until(lambda: "AAPL" in sim.subscriptions(DATA)["trades"], 10, "AAPL subscribed upstream")

        rows = tape(page)
        first = sim.inject_trade("AAPL", price=101.25, size=300)
        await expect(rows).to_have_count(1, timeout=UI)
        top = rows.first
        await expect(top.locator(".price")).to_have_text("101.25")
        await expect(top.locator(".size")).to_have_text("300")
        await expect(top.locator(".time")).to_have_text(eastern_time(first["t"]))
        await expect(top.locator(".time")).to_have_text(re.compile(r"^\d\d:\d\d:\d\d\.\d{3}$"))
        await expect(top.locator(".exchange")).to_have_text(first["x"])
        await expect(aapl.locator(".last")).to_have_text("101.25")

        # one at a time, so each direction is judged against the previous trade on its own render
        for n, (price, size, direction) in enumerate(((102.0, 50, "up"), (101.5, 75, "down"), (101.5, 20, "flat"))):
            sent = sim.inject_trade("AAPL", price=price, size=size)
            await expect(rows).to_have_count(n + 2, timeout=UI)
            top = rows.first
            await expect(top).to_have_class(has_class(direction))
            await expect(top.locator(".price")).to_have_text(f"{price:.2f}")
            await expect(top.locator(".size")).to_have_text(str(size))
            await expect(top.locator(".time")).to_have_text(eastern_time(sent["t"]))
        await expect(rows.nth(1)).to_have_class(has_class("down"))
        await expect(rows.nth(2)).to_have_class(has_class("up"))
        await expect(rows.nth(3)).to_have_class(has_class("flat"))  # the first trade has nothing to compare with
        await expect(aapl.locator(".last")).to_have_text("101.50")

        prices = [round(200 + i * 0.01, 2) for i in range(150)]
        for p in prices:
            sim.inject_trade("AAPL", price=p, size=1)
        await expect(rows.first.locator(".price")).to_have_text(f"{prices[-1]:.2f}", timeout=UI)
        await expect(rows).to_have_count(100, timeout=UI)
        shown = await rows.evaluate_all("rows => rows.map(r => Number(r.dataset.price))")
        assert shown == list(reversed(prices[-100:])), "the tape holds the newest 100, newest first"
        await watch.finish()


@pytest.mark.timeout(60)
async def test_typed_symbol_close_unsubscribes_and_daemon_restart(sim, tmp_path, watch):
    """Enter opens a panel and subscribes; its close button unsubscribes (hub, then upstream after the linger); a daemon
    restart on the same port shows reconnecting, then live, and trades flow to the panel again."""
    page = watch.page
    port = free_port()
    cfg = relay_config(sim, tmp_path, port=port)
    async with running(cfg) as app:
        await upstream_ready(app)
        await page.goto(page_url(app.port, app.port))
        await expect(page.locator("#conn-state")).to_have_attribute("data-state", "live", timeout=UI)
        await expect(page.locator("tr.wl-row")).to_have_count(0)

        for symbol in ("msft", "TSLA"):
            await page.locator("#symbol-input").fill(symbol)
            await page.locator("#symbol-input").press("Enter")
            await expect(panel(page, symbol.upper())).to_have_attribute("data-status", "subscribed", timeout=UI)
        await expect(page.locator("#symbol-input")).to_have_value("")
        assert {("trades", "MSFT"), ("trades", "TSLA")} <= app.relay.hub.wanted()
        await wait_until(lambda: {"MSFT", "TSLA"} <= set(sim.subscriptions(DATA)["trades"]), 10,
                         "both subscribed upstream")

        await panel(page, "MSFT").locator(".remove").click()
        await expect(panel(page, "MSFT")).to_have_count(0, timeout=UI)
        await wait_until(lambda: ("trades", "MSFT") not in app.relay.hub.holders, 10, "hub released MSFT")
        await wait_until(lambda: ("trades", "MSFT") not in app.relay.hub.wanted(), 10, "MSFT linger over")
        await wait_until(lambda: any(a.get("action") == "unsubscribe" and a.get("trades") == ["MSFT"]
                                     for a in upstream_actions(sim)), 10, "unsubscribe MSFT sent upstream")
        assert sim.subscriptions(DATA)["trades"] == ["TSLA"]
        assert ("trades", "TSLA") in app.relay.hub.holders

    # the daemon is down: Chromium logs its own line for each refused reconnect attempt
    watch.allow_ws_failures(ws_url(port))
    conn = page.locator("#conn-state")
    await expect(conn).to_have_attribute("data-state", "reconnecting", timeout=UI)
    await expect(conn).to_have_text(re.compile(r"^reconnecting in \d+s$"))
    await expect(panel(page, "TSLA")).to_have_attribute("data-status", "offline", timeout=UI)
    # stay down through one refused attempt, so the page has to keep retrying rather than get lucky
    await wait_until(watch.allowed_seen, 10, "a refused reconnect attempt")
    await expect(conn).to_have_attribute("data-state", "reconnecting")

    async with running(cfg) as app2:
        assert app2.port == port
        await upstream_ready(app2)
        await expect(conn).to_have_attribute("data-state", "live", timeout=UI)
        tsla = panel(page, "TSLA")
        await expect(tsla).to_have_attribute("data-status", "subscribed", timeout=UI)
        assert ("trades", "TSLA") in app2.relay.hub.holders
        assert ("trades", "MSFT") not in app2.relay.hub.wanted()
        await wait_until(lambda: "TSLA" in sim.subscriptions(DATA)["trades"], 10, "TSLA resubscribed upstream")
        sent = sim.inject_trade("TSLA", price=251.75, size=40)
        rows = tape(page)
        await expect(rows).to_have_count(1, timeout=UI)
        await expect(rows.first.locator(".price")).to_have_text("251.75")
        await expect(rows.first.locator(".time")).to_have_text(eastern_time(sent["t"]))
        await watch.finish()


@pytest.mark.timeout(60)
async def test_page_served_by_a_separate_static_server(sim, tmp_path, watch):
    """public_html served like Apache would (another port, another origin) connects to the daemon and works."""
    page = watch.page
    async with running(relay_config(sim, tmp_path)) as app:
        await upstream_ready(app)
        with static_server() as http_port:
            assert http_port != app.port
            await page.goto(page_url(http_port, app.port, "symbols=NVDA"))
            assert await page.evaluate("location.origin") == f"http://127.0.0.1:{http_port}"
            await expect(page.locator("#conn-state")).to_have_attribute("data-state", "live", timeout=UI)
            nvda = panel(page, "NVDA")
            await expect(nvda).to_have_attribute("data-status", "subscribed", timeout=UI)
            await wait_until(lambda: "NVDA" in sim.subscriptions(DATA)["trades"], 10, "NVDA subscribed upstream")
            sim.inject_trade("NVDA", price=135.5, size=10)
            await expect(tape(page)).to_have_count(1, timeout=UI)
            await expect(tape(page).locator(".price")).to_have_text("135.50")
            await expect(nvda.locator(".last")).to_have_text("135.50")
            await watch.finish()


async def _orders_flow(sim, app, page) -> None:
    """The page is authenticated: an order and its fill show up, and so does the position."""
    await expect(page.locator("#token-state")).to_have_attribute("data-state", "authenticated", timeout=UI)
    # the positions table is shown by the orders_snapshot, i.e. once the page is subscribed to orders
    await expect(page.locator("#positions-table")).to_be_visible(timeout=UI)
    await expect(page.locator("#orders-empty")).to_have_text("No orders yet.")
    order = sim.submit_order("AAPL", "buy", 10)
    sim.fill_order(order["id"], price=100.5)
    fill = page.locator("li.order-row[data-event=fill]")
    await expect(fill).to_have_count(1, timeout=UI)
    await expect(fill).to_have_attribute("data-order-id", order["id"])
    await expect(fill.locator(".what")).to_have_text("BUY 10 AAPL")
    await expect(fill.locator(".detail")).to_have_text("10 @ 100.50")
    # Laid out as one row: the summary on one line, and the fill detail not styled as the chart's panel.
    what, detail = await fill.locator(".what").bounding_box(), await fill.locator(".detail").bounding_box()
    assert what["height"] < 24 and detail["height"] < 24, (what, detail)
    await expect(page.locator("li.order-row[data-event=new]")).to_have_count(1)
    await expect(page.locator("li.order-row").first).to_have_attribute("data-event", "fill")
    await expect(page.locator("#orders-empty")).to_be_hidden()
    position = page.locator('#positions-table tr.position[data-symbol="AAPL"]')
    await expect(position).to_have_count(1, timeout=UI)
    await expect(position.locator(".qty")).to_have_text("10")
    await expect(position.locator(".avg-entry")).to_have_text("100.50")


async def _orders_app_ready(app) -> None:
    await wait_until(lambda: app.relay.sources.default.upstream.connected and app.tradings["default"].connected, 10,
                     "both upstreams up")


@pytest.mark.timeout(60)
async def test_orders_with_token_in_the_fragment(sim, tmp_path, watch):
    """#token=… in the address: the page authenticates, shows the fill and the position, hides the token."""
    page = watch.page
    async with running(relay_config(sim, tmp_path)) as app:
        await _orders_app_ready(app)
        await page.goto(page_url(app.port, app.port, fragment=f"token={TOKEN}"))
        await _orders_flow(sim, app, page)
        assert "token" not in await page.evaluate("location.hash"), "the token is taken out of the address"
        # the resume point names the journal, so a recreated journal's ids are not mistaken for it
        stored = await page.evaluate("[sessionStorage.getItem('tradeStream.orderJournalEpoch'),"
                                     " sessionStorage.getItem('tradeStream.lastOrderEventId')]")
        assert stored == [f'"{app.accounts.orders["default"].epoch}"', "2"]
        await watch.finish()


@pytest.mark.timeout(60)
async def test_positions_show_what_fills_realized_and_keep_a_closed_row(sim, tmp_path, watch):
    """A reducing fill shows its realized P&L on the row, a closing one leaves a "closed" row with the sum (and the
    footer's), both in the P&L column's width; the figures outlive a daemon restart's fresh snapshot."""
    page = watch.page
    port = free_port()
    cfg = relay_config(sim, tmp_path, port=port)
    row = page.locator('#positions-table tr.position[data-symbol="AAPL"]')
    async with running(cfg) as app:
        await _orders_app_ready(app)
        await page.goto(page_url(app.port, app.port, fragment=f"token={TOKEN}"))
        await expect(page.locator("#positions-table")).to_be_visible(timeout=UI)
        sim.fill_order(sim.submit_order("AAPL", "buy", 10)["id"], price=100)
        await expect(row.locator(".qty")).to_have_text("10", timeout=UI)
        await expect(row.locator(".realized")).to_have_count(0)  # an opening fill realizes nothing
        await expect(page.locator("#portfolio-realized")).to_be_hidden()
        sim.fill_order(sim.submit_order("AAPL", "sell", 4)["id"], price=110.25)
        await expect(row.locator(".qty")).to_have_text("6", timeout=UI)
        await expect(row.locator(".realized")).to_have_text("Rlzd +41.00")
        await expect(row.locator(".realized")).to_have_class(has_class("up"))
        await expect(row.locator(".avg-entry")).to_have_text("100.00")
        sim.fill_order(sim.submit_order("AAPL", "sell", 6)["id"], price=95.5)
        await expect(row).to_have_class(has_class("closed"), timeout=UI)
        await expect(row.locator(".qty")).to_have_text("0")
        await expect(row.locator(".realized")).to_have_text("Rlzd +14.00")  # +41 then -27
        await expect(page.locator("#portfolio-realized")).to_have_text("realized +14.00")
        assert await page.evaluate("() => { const t = document.querySelector('#positions-table'); "
                                   "return t.scrollWidth <= t.parentElement.clientWidth + 1; }")
        box, qty = await row.locator(".realized").bounding_box(), await row.locator(".qty").bounding_box()
        assert box["x"] > qty["x"] + qty["width"], "the figure sits in the P&L column, not under the others"

    watch.allow_ws_failures(ws_url(port))
    await expect(page.locator("#conn-state")).to_have_attribute("data-state", "reconnecting", timeout=UI)
    async with running(cfg) as app:
        await _orders_app_ready(app)
        await expect(page.locator("#conn-state")).to_have_attribute("data-state", "live", timeout=UI)
        await expect(page.locator("#token-state")).to_have_attribute("data-state", "authenticated", timeout=UI)
        sim.fill_order(sim.submit_order("MSFT", "buy", 1)["id"], price=50)  # after the new snapshot
        await expect(page.locator('#positions-table tr.position[data-symbol="MSFT"]')).to_have_count(1, timeout=UI)
        await expect(row).to_have_class(has_class("closed"))
        await expect(row.locator(".realized")).to_have_text("Rlzd +14.00")
        await watch.finish()


@pytest.mark.timeout(60)
async def test_orders_with_typed_token(sim, tmp_path, watch):
    """A token typed into #token-input works the same way."""
    page = watch.page
    async with running(relay_config(sim, tmp_path)) as app:
        await _orders_app_ready(app)
        await page.goto(page_url(app.port, app.port))
        await expect(page.locator("#conn-state")).to_have_attribute("data-state", "live", timeout=UI)
        await page.locator("#token-input").fill(TOKEN)
        await page.locator("#token-form button[type=submit]").click()
        await expect(page.locator("#token-input")).to_have_value("")
        await _orders_flow(sim, app, page)
        await watch.finish()


@pytest.mark.timeout(60)
async def test_a_page_whose_place_a_newer_connection_took_says_so_and_waits_for_the_user(sim, tmp_path, watch):
    """One private connection per user: a newer one closes the page's with the connection_limit warning. The page
    says so and reconnects for market data, but does not send its token again by itself (two pages doing that
    would take each other's place for ever); the token entered again takes the place back."""
    page = watch.page
    async with running(relay_config(sim, tmp_path, max_connections_per_user=1)) as app:
        await _orders_app_ready(app)
        await page.goto(page_url(app.port, app.port, fragment=f"token={TOKEN}"))
        await expect(page.locator("#token-state")).to_have_attribute("data-state", "authenticated", timeout=UI)
        first = set(app.relay.clients)
        async with Browser.connect(app.port) as other:
            await other.send({"action": "auth", "token": TOKEN})
            await other.expect("authenticated")
            await expect(page.locator("#token-state")).to_have_attribute("data-state", "displaced", timeout=UI)
            await expect(page.locator("#orders-empty")).to_contain_text("took this page's place")
            await wait_until(lambda: len(app.relay.clients) == 2 and not first & set(app.relay.clients), 15,
                             "the page reconnected")
            await expect(page.locator("#conn-state")).to_have_attribute("data-state", "live", timeout=UI)
            await other.drain(0.5)
            assert not other.of_type("warning"), "the page sent its token again by itself"
            assert app.identity.sessions.counts() == [1]
            await watch.screenshot()
            await page.locator("#token-input").fill(TOKEN)
            await page.locator("#token-form button[type=submit]").click()
            await expect(page.locator("#token-state")).to_have_attribute("data-state", "authenticated", timeout=UI)
            assert (await other.expect("warning"))["code"] == "connection_limit"
        await watch.finish()


@pytest.mark.timeout(60)
async def test_orders_without_token_explain_why_empty(sim, tmp_path, watch):
    """No token: #orders-empty says a token is needed, and an order's fill does not reach the page."""
    page = watch.page
    async with running(relay_config(sim, tmp_path)) as app:
        await _orders_app_ready(app)
        await page.goto(page_url(app.port, app.port, "symbols=AAPL"))
        await expect(page.locator("#conn-state")).to_have_attribute("data-state", "live", timeout=UI)
        await expect(panel(page, "AAPL")).to_have_attribute("data-status", "subscribed", timeout=UI)
        empty = page.locator("#orders-empty")
        await expect(empty).to_be_visible()
        await expect(empty).to_contain_text("token")
        await expect(page.locator("#token-state")).to_have_attribute("data-state", "none")
        order = sim.submit_order("AAPL", "buy", 10)
        sim.fill_order(order["id"], price=100.5)
        await wait_until(lambda: app.stats.order_events >= 2, 10, "the relay got the order events")
        # a barrier instead of a sleep: this trade travels the same socket after anything sent for the fill
        await wait_until(lambda: "AAPL" in sim.subscriptions(DATA)["trades"], 10, "AAPL subscribed upstream")
        sim.inject_trade("AAPL", price=100.5, size=1)
        await expect(tape(page)).to_have_count(1, timeout=UI)
        await expect(page.locator("li.order-row")).to_have_count(0)
        await expect(page.locator("#positions-table")).to_be_hidden()
        await expect(empty).to_be_visible()
        await expect(empty).to_contain_text("token")
        await watch.finish()


@pytest.mark.timeout(60)
async def test_demo_badge_in_demo_mode(tmp_path, watch):
    """A --demo daemon (its own built-in simulator) says demo:true in the welcome: the badge shows."""
    page = watch.page
    cfg = Config(demo=True, host="127.0.0.1", port=0, linger=0.3, ping_interval=0, token=TOKEN,
                 state_dir=str(tmp_path), timings=FAST, demo_session="open")  # a tape at any real hour
    async with running(cfg) as app:
        assert app.simulator is not None
        await upstream_ready(app)
        await page.goto(page_url(app.port, app.port, "symbols=AAPL"))
        await expect(page.locator("#conn-state")).to_have_attribute("data-state", "live", timeout=UI)
        await expect(page.locator("#demo-badge")).to_be_visible(timeout=UI)
        await expect(page.locator("#demo-badge")).to_have_text("DEMO")
        # the built-in simulator generates trades on its own
        await expect(tape(page).first).to_be_visible(timeout=UI)
        await watch.finish()


@pytest.mark.timeout(60)
async def test_demo_opens_with_crypto_pairs_that_show_live_prices_and_quotes(tmp_path, watch):
    """Demo mode at any hour: the fresh page opens BTC/USD and ETH/USD among its symbols; their rows show the last
    price and bid x ask from Alpaca's crypto stream (the simulator's, around the clock)."""
    page = watch.page
    cfg = Config(demo=True, host="127.0.0.1", port=0, linger=0.3, ping_interval=0, token=TOKEN,
                 state_dir=str(tmp_path), timings=FAST)
    async with running(cfg) as app:
        await upstream_ready(app)
        await page.goto(page_url(app.port, app.port))
        row = panel(page, "BTC/USD")
        await expect(row).to_be_visible(timeout=UI)
        await expect(panel(page, "ETH/USD")).to_be_visible(timeout=UI)
        await expect(row.locator(".last")).to_have_text(re.compile(r"\d"), timeout=UI)
        await expect(row.locator(".quote")).to_have_text(re.compile(r"\d.*\u00d7.*\d"), timeout=UI)
        assert app.simulator.sessions("/v1beta3/crypto/us") == 1
        await watch.finish()


@pytest.mark.timeout(60)
async def test_demo_badge_hidden_otherwise(sim, tmp_path, watch):
    """A normal daemon (welcome demo:false): no DEMO badge."""
    page = watch.page
    async with running(relay_config(sim, tmp_path)) as app:
        await upstream_ready(app)
        await page.goto(page_url(app.port, app.port))
        await expect(page.locator("#conn-state")).to_have_attribute("data-state", "live", timeout=UI)
        await expect(page.locator("#demo-badge")).to_be_hidden()
        await watch.finish()


@pytest.mark.timeout(60)
async def test_snapshot_shows_a_price_before_any_trade_and_change_from_the_previous_close(sim, tmp_path, watch):
    """A new panel gets Alpaca's snapshot: the latest price at once, the change against the previous close."""
    page = watch.page
    sim.inject_trade("MSFT", price=421.25, size=3)
    async with running(relay_config(sim, tmp_path)) as app:
        await upstream_ready(app)
        await page.goto(page_url(app.port, app.port, "symbols=MSFT"))
        msft = panel(page, "MSFT")
        await expect(msft.locator(".last")).to_have_text("421.25", timeout=UI)
        await expect(tape(page)).to_have_count(0)
        await expect(msft.locator(".change")).to_have_attribute("title", re.compile("previous close"))
        sim.inject_trade("MSFT", price=422.0, size=1)
        await expect(msft.locator(".last")).to_have_text("422.00", timeout=UI)
        await expect(tape(page).first).to_have_class(re.compile(r"\bflat\b"))
        await watch.finish()


@pytest.mark.timeout(60)
async def test_detail_shows_the_selected_symbols_latest_headline(sim, tmp_path, watch):
    """The selected stock's headlines come on the news channel: one quiet line in the detail view, replaced by the
    next one; another symbol's news does not show, and selecting it moves the news subscription along."""
    page = watch.page
    async with running(relay_config(sim, tmp_path)) as app:
        await upstream_ready(app)
        await page.goto(page_url(app.port, app.port, "symbols=AAPL,MSFT"))
        await expect(panel(page, "AAPL")).to_have_attribute("data-status", "subscribed", timeout=UI)
        await page.locator("#detail").wait_for(state="visible", timeout=UI)
        selected = await page.locator("#detail").get_attribute("data-symbol")
        other = "MSFT" if selected == "AAPL" else "AAPL"
        news = page.locator("#detail-news")
        await expect(news).to_be_hidden()
        await wait_until(lambda: sim.subscriptions("/v1beta1/news")["news"] == [selected], 10, "news held")
        sim.inject_news([other], "Not about the selected one")
        sim.inject_news([selected, "TSLA"], "First headline")
        await expect(news).to_have_text("First headline", timeout=UI)
        await expect(news.locator("a")).to_have_attribute("href", re.compile(r"^https://example\.invalid/news/"))
        sim.inject_news([selected], "Second headline")
        await expect(news).to_have_text("Second headline", timeout=UI)
        await panel(page, other).click()
        await expect(page.locator("#detail")).to_have_attribute("data-symbol", other, timeout=UI)
        await wait_until(lambda: sim.subscriptions("/v1beta1/news")["news"] == [other], 10, "news moved")
        await expect(news).to_be_hidden()
        await expect(panel(page, selected)).to_have_attribute("data-status", "subscribed")  # not forced off
        await watch.finish()


@pytest.mark.timeout(60)
async def test_orders_and_positions_show_their_account_with_one_section_per_account(tmp_path, watch):
    """TRADE_STREAM_TOKEN sees both accounts: each order row names its account, positions come in one section
    per account (each with its heading), and the footer is the user's total over both."""
    from tests.integration.test_accounts import KEYS, accounts_file
    from trade_stream.simulator import SimConfig, Simulator

    page = watch.page
    async with Simulator(SimConfig(host="127.0.0.1", port=0, accounts=dict(KEYS.values()),
                                   rate_per_symbol=0.0)) as sim:
        cfg = relay_config(sim, tmp_path / "state", accounts=accounts_file(sim, tmp_path),
                           api_key=KEYS["paper"][0], secret_key=KEYS["paper"][1])
        async with running(cfg) as app:
            await wait_until(lambda: app.relay.sources.default.upstream.connected
                                     and all(t.connected for t in app.tradings.values()),
                             10, "every stream up")
            await page.goto(page_url(app.port, app.port, fragment=f"token={TOKEN}"))
            await expect(page.locator("#token-state")).to_have_attribute("data-state", "authenticated", timeout=UI)
            await expect(page.locator("#positions-table tbody.account-section")).to_have_count(2, timeout=UI)
            for name, price in (("paper", 10), ("live", 20)):
                sim.fill_order(sim.submit_order("AAPL", "buy", 2, key=KEYS[name][0])["id"], price=price)
            for name, price in (("paper", "10.00"), ("live", "20.00")):
                fill = page.locator(f'li.order-row[data-event=fill][data-account="{name}"]')
                await expect(fill).to_have_count(1, timeout=UI)
                await expect(fill.locator(".account")).to_have_text(name)
                section = page.locator(f'#positions-table tbody[data-account="{name}"]')
                await expect(section.locator("tr.account-head .account-name")).to_have_text(name)
                await expect(section.locator('tr.position[data-symbol="AAPL"] .avg-entry')).to_have_text(price)
            await expect(page.locator("#portfolio-value")).to_contain_text("60.00", timeout=UI)
            await watch.finish()
