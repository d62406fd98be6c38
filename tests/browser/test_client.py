"""The browser client library (public_html/js/client/) in Chromium against the real daemon and simulator.

A bare test page imports the client from public_html (served as Apache would) and records what its handlers
get in ``window.seen``; Chromium's own WebSocket frame events show what went over the wire. Connections are cut
by a TCP proxy between Chromium and the daemon, so the daemon (and its journal) stays up while the client is
away; a restart goes through the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from playwright.async_api import Page, WebSocket, expect

from tests.browser.helpers import BROWSER_LOOP, CHROMIUM, PUBLIC_HTML, free_port, static_server
from tests.support.docs import blocks
from tests.support.redis_server import Proxy
from tests.support.relay import TOKEN, relay_config, running, wait_until

pytestmark = [
    pytest.mark.browser,
    BROWSER_LOOP,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (/usr/bin/chromium or chromium on PATH)"),
]

DATA = "/v2/iex"
README = "README.md"
UI = 10.0  # seconds for what the page must reach: generous, the machine is shared

HARNESS = """<!doctype html><meta charset="utf-8"><title>client test</title><link rel="icon" href="data:,">
<script type="module">
  import * as client from '/js/client/index.js';
  window.client = client;
  window.seen = [];
  window.states = [];
  window.ready = true;
</script>"""


@contextlib.asynccontextmanager
async def proxied(port: int) -> AsyncIterator[Proxy]:
    """A cuttable TCP proxy before ``port``: the daemon behind it keeps running through an outage."""
    proxy = Proxy(port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


class Frames:
    """The JSON messages Chromium sent and received on the page's WebSockets (batches unpacked)."""

    def __init__(self, page: Page) -> None:
        self.sockets = 0
        self.sent: list[dict[str, Any]] = []
        self.received: list[dict[str, Any]] = []
        page.on("websocket", self._on_socket)

    def _on_socket(self, ws: WebSocket) -> None:
        self.sockets += 1
        ws.on("framesent", lambda payload: self.sent.extend(_messages(payload)))
        ws.on("framereceived", lambda payload: self.received.extend(_messages(payload)))

    def sent_actions(self, action: str, **match: Any) -> list[dict[str, Any]]:
        return [m for m in self.sent if m.get("action") == action and all(m.get(k) == v for k, v in match.items())]


def _messages(payload: str | bytes) -> list[dict[str, Any]]:
    try:
        parsed = json.loads(payload)
    except ValueError:
        return []
    return [m for m in (parsed if isinstance(parsed, list) else [parsed]) if isinstance(m, dict)]


def site(root: Path, files: dict[str, str]) -> Path:
    """A directory with public_html's js/ (a symlink) and ``files`` beside it."""
    root.mkdir(exist_ok=True)
    (root / "js").symlink_to(PUBLIC_HTML / "js")
    for name, text in files.items():
        (root / name).write_text(text)
    return root


@contextlib.asynccontextmanager
async def harness(page: Page, root: Path) -> AsyncIterator[Frames]:
    """The bare page, served with public_html's js/ from a static server of ``root``, the client imported;
    yields its frame log. (A page Playwright fulfils itself has no address, so Chromium's local-network check
    would refuse its sockets to loopback.)"""
    frames = Frames(page)
    with static_server(site(root, {"client-test.html": HARNESS})) as http_port:
        await page.goto(f"http://127.0.0.1:{http_port}/client-test.html")
        await page.wait_for_function("window.ready === true", timeout=UI * 1000)
        yield frames


async def seen(page: Page) -> list[dict[str, Any]]:
    return await page.evaluate("window.seen")


async def wait_seen(page: Page, predicate: str, what: str) -> None:
    """Waits until ``predicate`` (JS over ``seen``) holds in the page."""
    await page.wait_for_function(f"(seen => {predicate})(window.seen)", timeout=UI * 1000, polling=50)


async def upstream_ready(app) -> None:
    await wait_until(lambda: app.relay.sources.default.upstream.connected, 10, "market-data upstream connected")


async def orders_ready(app) -> None:
    await wait_until(lambda: app.relay.sources.default.upstream.connected and app.tradings["default"].connected,
                     10, "both upstreams up")


def journal_last_id(app) -> int:
    return app.accounts.orders["default"].journal.last_id() or 0


def doc_block(doc: str, block_id: str) -> str:
    """The text of the fenced block of ``doc`` marked ``block_id`` (any language)."""
    [text] = [b.text for b in blocks(doc) if b.id == block_id]
    return text


# --- pure parts --------------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_backoff_full_jitter_and_bounded_recent_ids(tmp_path, watch):
    """Reconnect delays fill the whole window under a doubling ceiling (capped at 30 s, never under the floor);
    the ids kept for dropping repeats stay at their capacity, forgetting the oldest first."""
    page = watch.page
    async with harness(page, tmp_path / "www"):
        result = await page.evaluate("""async () => {
          const b = await import('/js/client/backoff.js');
          const { RecentIds } = await import('/js/client/recent.js');
          const ceilings = [0, 1, 2, 3, 4, 5, 10, 50].map((n) => b.backoffCeiling(n));
          const lowest = [0, 3, 50].map((n) => b.backoffDelay(n, () => 0));
          const highest = [0, 3, 50].map((n) => b.backoffDelay(n, () => 0.999999));
          const middle = b.backoffDelay(4, () => 0.5);
          const recent = new RecentIds(3);
          const firsts = ['a', 'b', 'a', 'c', 'd'].map((k) => recent.add(k));
          return { ceilings, lowest, highest, middle, firsts, size: recent.size, aAgain: recent.add('a'),
                   dAgain: recent.add('d'), floor: b.FLOOR_MS };
        }""")
    assert result["ceilings"] == [2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]
    assert result["lowest"] == [result["floor"]] * 3
    assert result["highest"] == [2000, 16000, 30000]
    assert result["middle"] == 15000
    assert result["firsts"] == [True, True, False, True, True]
    assert result["size"] == 3
    assert result["aAgain"] is True, "the oldest key was evicted when the fourth came"
    assert result["dAgain"] is False
    await watch.finish()


# --- market data ------------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_one_socket_for_every_subscriber_and_refcounted_unsubscribe(sim, tmp_path, watch):
    """Two subscribers of AAPL through TradeStream.shared(): one socket, one subscribe, each gets every trade
    once; the first leaving sends nothing, the last leaving unsubscribes and the relay releases AAPL."""
    page = watch.page
    async with running(relay_config(sim, tmp_path)) as app, harness(page, tmp_path / "www") as frames:
        await upstream_ready(app)
        await page.evaluate("""(url) => {
          const { TradeStream } = window.client;
          const first = TradeStream.shared({ url });
          window.offA = first.subscribe(['AAPL'], { channels: ['trades'],
            onMessage: (m) => m.type === 'trade' && seen.push({ who: 'a', price: m.data.price }) });
          window.offB = TradeStream.shared().subscribe(['AAPL'], { channels: ['trades'],
            onMessage: (m) => m.type === 'trade' && seen.push({ who: 'b', price: m.data.price }) });
          window.same = TradeStream.shared() === first;
        }""", f"ws://127.0.0.1:{app.port}/")
        assert await page.evaluate("window.same") is True
        await wait_until(lambda: ("trades", "AAPL") in app.relay.hub.holders, UI, "AAPL held by the relay")
        await wait_until(lambda: "AAPL" in sim.subscriptions(DATA)["trades"], UI, "AAPL subscribed upstream")
        sim.inject_trade("AAPL", price=101.5, size=1)
        await wait_seen(page, "seen.length === 2", "the trade at both subscribers")
        assert sorted(s["who"] for s in await seen(page)) == ["a", "b"]
        assert frames.sockets == 1
        assert len(frames.sent_actions("subscribe", symbols=["AAPL"])) == 1

        await page.evaluate("window.offA()")
        sim.inject_trade("AAPL", price=102.0, size=1)
        await wait_seen(page, "seen.length === 3", "the second trade at the remaining subscriber")
        assert (await seen(page))[-1] == {"who": "b", "price": 102.0}
        assert frames.sent_actions("unsubscribe") == []
        assert ("trades", "AAPL") in app.relay.hub.holders

        await page.evaluate("window.offB()")
        await wait_until(lambda: ("trades", "AAPL") not in app.relay.hub.holders, UI, "relay released AAPL")
        assert frames.sent_actions("unsubscribe") == [
            {"action": "unsubscribe", "symbols": ["AAPL"], "channels": ["trades"]}]
        assert frames.sockets == 1
        await watch.finish()


@pytest.mark.timeout(90)
async def test_reconnects_after_the_daemon_restarts_and_subscribes_again(sim, tmp_path, watch):
    """The daemon stops: the client reports not connected (with why) and keeps retrying; back on the same port,
    it is connected again, subscribes what is held once more and trades reach the same handler."""
    page = watch.page
    port = free_port()
    cfg = relay_config(sim, tmp_path, port=port)
    watch.allow_ws_failures(f"ws://127.0.0.1:{port}/")
    async with harness(page, tmp_path / "www") as frames:
        async with running(cfg) as app:
            await upstream_ready(app)
            await page.evaluate("""(url) => {
              const stream = window.client.TradeStream.shared({ url });
              stream.on('state', (s) => states.push({ connected: s.connected, state: s.state, error: s.error }));
              stream.subscribe(['MSFT'], { channels: ['trades'],
                onMessage: (m) => m.type === 'trade' && seen.push(m.data.price) });
            }""", f"ws://127.0.0.1:{port}/")
            await wait_until(lambda: "MSFT" in sim.subscriptions(DATA)["trades"], UI, "MSFT subscribed upstream")
            sim.inject_trade("MSFT", price=420.5, size=1)
            await wait_seen(page, "seen.length === 1", "the first trade")

        await page.wait_for_function("states.some((s) => s.state === 'reconnecting' && !s.connected && s.error)",
                                     timeout=UI * 1000)
        await wait_until(watch.allowed_seen, UI, "a refused reconnect attempt while the daemon is down")
        async with running(cfg) as app2:
            await upstream_ready(app2)
            await page.wait_for_function("window.client.TradeStream.shared().connected", timeout=40_000)
            await wait_until(lambda: "MSFT" in sim.subscriptions(DATA)["trades"], UI, "MSFT subscribed again")
            await wait_until(lambda: ("trades", "MSFT") in app2.relay.hub.holders, UI, "held by the new daemon")
            sim.inject_trade("MSFT", price=421.0, size=1)
            await wait_seen(page, "seen.length === 2", "a trade after the restart")
        assert await seen(page) == [420.5, 421.0]
        assert len(frames.sent_actions("subscribe", symbols=["MSFT"])) == 2, "once per connection"
        assert frames.sockets >= 2
        states = await page.evaluate("states")
        assert [s["connected"] for s in states if s["state"] == "live"] == [True, True]
        await watch.finish()


@pytest.mark.timeout(60)
async def test_a_refused_symbol_reaches_its_subscriber_and_is_not_asked_again_after_a_reconnect(sim, tmp_path, watch):
    """The relay refuses a symbol: its subscriber's onStatus says rejected with the relay's reason (the page's
    error listeners get nothing), and after a reconnect only the symbols still wanted are subscribed again."""
    page = watch.page
    async with running(relay_config(sim, tmp_path)) as app, proxied(app.port) as proxy, \
            harness(page, tmp_path / "www") as frames:
        await upstream_ready(app)
        watch.allow_ws_failures(f"ws://127.0.0.1:{proxy.port}/")
        await page.evaluate("""(url) => {
          const stream = new window.client.TradeStream({ url });
          window.stream = stream;
          window.stray = [];
          stream.on('error', (e) => stray.push(e));
          const onStatus = (symbol, status, detail) => seen.push({ symbol, status, detail });
          stream.subscribe(['BAD SYMBOL!', 'NVDA'], { channels: ['trades'], onStatus });
        }""", f"ws://127.0.0.1:{proxy.port}/")
        await wait_seen(page, "seen.some((m) => m.status === 'rejected')", "the refusal")
        await wait_seen(page, "seen.some((m) => m.symbol === 'NVDA' && m.status === 'subscribed')", "NVDA held")
        rejected = next(m for m in await seen(page) if m["status"] == "rejected")
        assert rejected["symbol"] == "BAD SYMBOL!" and rejected["detail"]
        assert await page.evaluate("stray") == []

        proxy.cut()
        await page.wait_for_function("!window.stream.connected", timeout=UI * 1000)
        proxy.heal()
        await page.wait_for_function("window.stream.connected", timeout=40_000)
        await wait_until(lambda: len(frames.sent_actions("subscribe", symbols=["NVDA"])) == 2, UI, "NVDA again")
        await wait_seen(page, "seen.filter((m) => m.symbol === 'NVDA' && m.status === 'subscribed').length === 2",
                        "NVDA confirmed on the new connection")
        assert len(frames.sent_actions("subscribe", symbols=["BAD SYMBOL!"])) == 1
        await watch.finish()


# --- orders ------------------------------------------------------------------------------------------------

ORDERS_PAGE = """([url, token, fixedSince]) => {
  const { TradeStream, OrderCursor } = window.client;
  // fixedSince: a resume point that never moves on, so every reconnect replays from there
  const orderCursor = fixedSince === null ? new OrderCursor()
    : { get: () => fixedSince, record: () => {}, clear: () => {} };
  const stream = new TradeStream({ url, token, orderCursor });
  window.stream = stream;
  stream.orders((m) => {
    if (m.type === 'order_update') seen.push({ id: m.id, event: m.event });
    if (m.type === 'orders_snapshot') seen.push({ snapshot: m.epoch });
  });
}"""


def updates(messages: list[dict[str, Any]]) -> list[int]:
    return [m["id"] for m in messages if "id" in m]


async def fill(sim, qty: int, price: float) -> None:
    sim.fill_order(sim.submit_order("AAPL", "buy", qty)["id"], price=price)


@pytest.mark.timeout(90)
async def test_orders_resume_by_id_with_no_gap_and_no_duplicate(sim, tmp_path, watch):
    """Events journaled while the client is cut off come back on reconnect, resumed after the last id it saw
    ("<epoch>-<id>"), then live ones follow: every id exactly once, in order, none missing."""
    page = watch.page
    async with running(relay_config(sim, tmp_path)) as app, proxied(app.port) as proxy, \
            harness(page, tmp_path / "www") as frames:
        await orders_ready(app)
        watch.allow_ws_failures(f"ws://127.0.0.1:{proxy.port}/")
        await page.evaluate(ORDERS_PAGE, [f"ws://127.0.0.1:{proxy.port}/", TOKEN, None])
        await wait_seen(page, "seen.some((m) => m.snapshot)", "the orders snapshot")
        await fill(sim, 1, 100.0)
        await wait_seen(page, "seen.filter((m) => m.id).length === 2", "new and fill")
        epoch = app.accounts.orders["default"].epoch

        proxy.cut()
        await page.wait_for_function("!window.stream.connected", timeout=UI * 1000)
        await fill(sim, 2, 101.0)  # journaled while the client is away
        await wait_until(lambda: journal_last_id(app) == 4, UI, "the missed events journaled")
        proxy.heal()
        await page.wait_for_function("window.stream.connected", timeout=40_000)
        await wait_seen(page, "seen.filter((m) => m.id).length === 4", "the missed events replayed")
        await fill(sim, 3, 102.0)
        await wait_seen(page, "seen.filter((m) => m.id).length === 6", "live events after the replay")

        assert updates(await seen(page)) == [1, 2, 3, 4, 5, 6]
        resumes = frames.sent_actions("subscribe", channel="orders")
        assert [m.get("since") for m in resumes] == [None, f"{epoch}-2"]
        assert proxy.accepted == 2
        await watch.finish()


@pytest.mark.timeout(90)
async def test_a_replay_overlapping_what_was_delivered_reaches_the_handlers_once(sim, tmp_path, watch):
    """A resume point behind what the client already delivered (here: one that never moves) makes the relay
    replay events the client has seen: they arrive on the wire a second time and are dropped by id."""
    page = watch.page
    async with running(relay_config(sim, tmp_path)) as app, proxied(app.port) as proxy, \
            harness(page, tmp_path / "www") as frames:
        await orders_ready(app)
        watch.allow_ws_failures(f"ws://127.0.0.1:{proxy.port}/")
        epoch = app.accounts.orders["default"].epoch
        await page.evaluate(ORDERS_PAGE, [f"ws://127.0.0.1:{proxy.port}/", TOKEN, f"{epoch}-0"])
        await wait_seen(page, "seen.some((m) => m.snapshot)", "the orders snapshot")
        await fill(sim, 1, 100.0)
        await wait_seen(page, "seen.filter((m) => m.id).length === 2", "new and fill")

        proxy.cut()
        await page.wait_for_function("!window.stream.connected", timeout=UI * 1000)
        await fill(sim, 2, 101.0)
        await wait_until(lambda: journal_last_id(app) == 4, UI, "the missed events journaled")
        proxy.heal()
        await page.wait_for_function("window.stream.connected", timeout=40_000)
        await wait_seen(page, "seen.filter((m) => m.id).length === 4", "the missed events")
        await fill(sim, 3, 102.0)
        await wait_seen(page, "seen.filter((m) => m.id).length === 6", "live events")

        on_wire = [m["id"] for m in frames.received if m.get("type") == "order_update"]
        assert on_wire.count(1) == 2 and on_wire.count(2) == 2, f"the replay repeated 1 and 2: {on_wire}"
        assert updates(await seen(page)) == [1, 2, 3, 4, 5, 6]
        await watch.finish()


# --- README's example ----------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_readme_example_page_shows_live_prices(sim, tmp_path, watch):
    """README's example is public_html/examples/prices.html as it is; served by the daemon, it shows LIVE, the
    snapshot's price, then trades and quotes as they come."""
    example = PUBLIC_HTML / "examples" / "prices.html"
    assert doc_block(README, "client-example-page") == example.read_text()
    page = watch.page
    sim.inject_trade("AAPL", price=186.75, size=3)  # the snapshot's latest trade
    async with running(relay_config(sim, tmp_path)) as app:
        await upstream_ready(app)
        await page.goto(f"http://127.0.0.1:{app.port}/examples/prices.html")
        await expect(page.locator("#status")).to_have_text("LIVE", timeout=UI * 1000)
        aapl, msft = page.locator('tr[data-symbol="AAPL"]'), page.locator('tr[data-symbol="MSFT"]')
        await expect(aapl.locator(".price")).to_have_text("186.75", timeout=UI * 1000)
        await wait_until(lambda: {"AAPL", "MSFT"} <= set(sim.subscriptions(DATA)["quotes"]), UI, "quotes held")
        sim.inject_trade("MSFT", price=415.5, size=1)
        await expect(msft.locator(".price")).to_have_text("415.50", timeout=UI * 1000)
        sim.inject_quote("MSFT", bid=415.4, ask=415.6)
        await expect(msft.locator(".bid")).to_have_text("415.40", timeout=UI * 1000)
        await expect(msft.locator(".ask")).to_have_text("415.60")
        await watch.finish()


# --- token refresh -----------------------------------------------------------------------------------------

JWT_SECRET = "jwt-secret-for-client-tests-0123456789"

TOKEN_PAGE = """([url, refreshAhead]) => {
  const stream = new window.client.TradeStream({ url, refreshAhead, getToken: () => window.mintToken() });
  window.stream = stream;
  stream.orders((m) => m.type === 'order_update' && seen.push({ id: m.id, event: m.event }));
}"""


class Minter:
    """JWTs for the page's getToken: the first lives `first_lifetime` seconds, the later ones five minutes."""

    def __init__(self, first_lifetime: float) -> None:
        self.first_lifetime = first_lifetime
        self.expiries: list[float] = []

    def __call__(self) -> str:
        lifetime = self.first_lifetime if not self.expiries else 300.0
        self.expiries.append(time.time() + lifetime)
        return jwt.encode({"sub": "carol", "accounts": ["default"], "exp": self.expiries[-1]}, JWT_SECRET,
                          algorithm="HS256")


@pytest.mark.timeout(90)
async def test_an_expired_jwt_is_replaced_through_get_token_and_orders_resume(sim, tmp_path, watch):
    """Without refreshing ahead, the relay ends the orders stream with token_expired: the client asks getToken
    for a fresh JWT, authenticates again and resubscribes after the last id it saw, so nothing is lost."""
    page = watch.page
    minter = Minter(first_lifetime=3.0)
    async with running(relay_config(sim, tmp_path, jwt_secret=JWT_SECRET)) as app, \
            harness(page, tmp_path / "www") as frames:
        await orders_ready(app)
        await page.expose_function("mintToken", minter)
        await page.evaluate(TOKEN_PAGE, [f"ws://127.0.0.1:{app.port}/", 0])
        await wait_until(lambda: frames.sent_actions("subscribe", channel="orders"), UI, "orders subscribed")
        await fill(sim, 1, 100.0)
        await wait_seen(page, "seen.length === 2", "new and fill")
        await wait_until(lambda: any(m.get("code") == "token_expired" for m in frames.received), UI,
                         "the relay's token_expired")
        await wait_until(lambda: len(frames.sent_actions("subscribe", channel="orders")) == 2, UI,
                         "orders subscribed again")
        await fill(sim, 2, 101.0)
        await wait_seen(page, "seen.length === 4", "the events after the refresh")
        assert updates(await seen(page)) == [1, 2, 3, 4]
        assert len(minter.expiries) == 2
        assert len(frames.sent_actions("auth")) == 2
        epoch = app.accounts.orders["default"].epoch
        assert frames.sent_actions("subscribe", channel="orders")[1]["since"] == f"{epoch}-2"
        assert await page.evaluate("window.stream.auth.state") == "authenticated"
        await watch.finish()


@pytest.mark.timeout(90)
async def test_a_jwt_is_refreshed_before_it_expires_and_the_orders_stream_stays(sim, tmp_path, watch):
    """With a JWT shorter than twice the refresh lead, getToken is asked halfway to its exp; the fresh token
    keeps the orders stream open: no token_expired, no second subscribe, and events keep coming after the first
    token's exp has passed."""
    page = watch.page
    minter = Minter(first_lifetime=10.0)
    async with running(relay_config(sim, tmp_path, jwt_secret=JWT_SECRET)) as app, \
            harness(page, tmp_path / "www") as frames:
        await orders_ready(app)
        await page.expose_function("mintToken", minter)
        await page.evaluate(TOKEN_PAGE, [f"ws://127.0.0.1:{app.port}/", 60_000])
        await wait_until(lambda: frames.sent_actions("subscribe", channel="orders"), UI, "orders subscribed")
        await wait_until(lambda: len(minter.expiries) == 2, 30, "getToken asked again before the exp")
        first_exp = minter.expiries[0]
        await wait_until(lambda: time.time() > first_exp + 1, 30, "the first token's exp passed")
        await fill(sim, 1, 100.0)
        await wait_seen(page, "seen.length === 2", "events after the first token's exp")
        assert not any(m.get("code") == "token_expired" for m in frames.received)
        assert len(frames.sent_actions("subscribe", channel="orders")) == 1
        assert len(frames.sent_actions("auth")) == 2
        assert updates(await seen(page)) == [1, 2]
        await watch.finish()


@pytest.mark.timeout(90)
async def test_a_session_cookie_authenticates_and_an_expired_one_is_presented_again(sim, tmp_path, watch):
    """cookie: true sends no token: the relay authenticates the handshake from the web app's session cookie and
    the orders stream opens. When the cookie's JWT expires, the client reconnects, so the cookie the app has
    refreshed meanwhile is presented, and the orders stream resumes after the last id it saw."""
    page = watch.page
    minter = Minter(first_lifetime=4.0)
    cfg = relay_config(sim, tmp_path, jwt_secret=JWT_SECRET, auth_cookie="ts_session")
    async with running(cfg) as app, harness(page, tmp_path / "www") as frames:
        await orders_ready(app)
        relay = f"http://127.0.0.1:{app.port}"
        await page.context.add_cookies([{"name": "ts_session", "value": minter(), "url": relay}])
        await page.evaluate("""(url) => {
          const stream = new window.client.TradeStream({ url, cookie: true });
          window.stream = stream;
          stream.orders((m) => m.type === 'order_update' && seen.push({ id: m.id, event: m.event }));
        }""", f"ws://127.0.0.1:{app.port}/")
        await wait_until(lambda: frames.sent_actions("subscribe", channel="orders"), UI, "orders subscribed")
        await fill(sim, 1, 100.0)
        await wait_seen(page, "seen.length === 2", "new and fill")
        await page.context.add_cookies([{"name": "ts_session", "value": minter(), "url": relay}])  # refreshed
        await wait_until(lambda: any(m.get("code") == "token_expired" for m in frames.received), UI,
                         "the first cookie's token_expired")
        await wait_until(lambda: len(frames.sent_actions("subscribe", channel="orders")) == 2, 40,
                         "orders subscribed again on a new connection")
        await fill(sim, 2, 101.0)
        await wait_seen(page, "seen.length === 4", "events on the new connection")
        epoch = app.accounts.orders["default"].epoch
        assert frames.sent_actions("subscribe", channel="orders")[1]["since"] == f"{epoch}-2"
        assert updates(await seen(page)) == [1, 2, 3, 4]
        assert frames.sent_actions("auth") == []
        assert frames.sockets == 2
        assert [m.get("via") for m in frames.received if m.get("type") == "authenticated"] == ["cookie", "cookie"]
        await watch.finish()


# --- app channels ------------------------------------------------------------------------------------------

PUBLISH_KEY = "publish-key-for-client-tests"

CHANNEL_PAGE = """([url, token]) => {
  const { TradeStream } = window.client;
  const stream = new TradeStream({ url, token });
  window.stream = stream;
  const record = (who) => (m) => seen.push({ who, type: m.type, id: m.id ?? null, code: m.code ?? null,
                                             channel: m.channel ?? null, n: m.data?.n ?? null });
  window.offA = stream.channel('strategies:abc', record('a'));
  window.offB = stream.channel('strategies:abc', record('b'));
  if (token === null) stream.channel('alerts', record('anonymous'));
}"""


def publish(port: int, n: int) -> str:
    body = orjson.dumps({"channel": "strategies:abc", "event": "strategy:update", "data": {"n": n}})
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/publish", data=body, method="POST",
                                 headers={"Authorization": f"Bearer {PUBLISH_KEY}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return orjson.loads(resp.read())["id"]


def events_of(messages: list[dict[str, Any]], who: str) -> list[int]:
    return [m["n"] for m in messages if m["who"] == who and m["type"] == "event"]


@pytest.mark.timeout(90)
async def test_a_channel_is_held_once_and_resumes_after_a_cut_with_no_gap_and_no_duplicate(sim, tmp_path, watch):
    """Two handlers of strategies:abc: one subscribe. Events published while the client is cut off come back on
    reconnect from `since` = the last id delivered, then live ones follow: each event once, in order, at both
    handlers; the first leaving sends nothing, the last one unsubscribes."""
    page = watch.page
    cfg = relay_config(sim, tmp_path, publish_key=PUBLISH_KEY)
    async with running(cfg) as app, proxied(app.port) as proxy, harness(page, tmp_path / "www") as frames:
        await upstream_ready(app)
        watch.allow_ws_failures(f"ws://127.0.0.1:{proxy.port}/")
        await page.evaluate(CHANNEL_PAGE, [f"ws://127.0.0.1:{proxy.port}/", TOKEN])
        await wait_seen(page, "seen.some((m) => m.type === 'subscribed')", "the channel subscribed")
        ids = [await asyncio.to_thread(publish, app.port, n) for n in (1, 2)]
        await wait_seen(page, "seen.filter((m) => m.type === 'event').length === 4", "two events at two handlers")

        proxy.cut()
        await page.wait_for_function("!window.stream.connected", timeout=UI * 1000)
        for n in (3, 4):
            await asyncio.to_thread(publish, app.port, n)  # while the client is away
        proxy.heal()
        await page.wait_for_function("window.stream.connected", timeout=40_000)
        await wait_seen(page, "seen.filter((m) => m.type === 'event').length === 8", "the missed events")
        await asyncio.to_thread(publish, app.port, 5)
        await wait_seen(page, "seen.filter((m) => m.type === 'event').length === 10", "a live event")

        messages = await seen(page)
        assert events_of(messages, "a") == events_of(messages, "b") == [1, 2, 3, 4, 5]
        subscribes = frames.sent_actions("subscribe", channel="strategies:abc")
        assert [m.get("since") for m in subscribes] == [None, ids[1]]

        await page.evaluate("window.offA()")
        assert frames.sent_actions("unsubscribe", channel="strategies:abc") == []
        await page.evaluate("window.offB()")
        await wait_until(lambda: frames.sent_actions("unsubscribe", channel="strategies:abc"), UI, "unsubscribe")
        await watch.finish()


@pytest.mark.timeout(60)
async def test_a_channel_refused_to_an_anonymous_client_reaches_its_handler(sim, tmp_path, watch):
    """Without a login, a channel that is not public is refused with unauthorized: the refusal names the
    channel only in its message, and reaches that channel's handlers (not the page's error listeners)."""
    page = watch.page
    cfg = relay_config(sim, tmp_path, publish_key=PUBLISH_KEY, public_channels=("strategies:*",))
    async with running(cfg) as app, harness(page, tmp_path / "www"):
        await upstream_ready(app)
        await page.evaluate("window.stray = []")
        await page.evaluate(CHANNEL_PAGE, [f"ws://127.0.0.1:{app.port}/", None])
        await page.evaluate("window.stream.on('error', (e) => stray.push(e))")
        await wait_seen(page, "seen.some((m) => m.who === 'anonymous' && m.type === 'error')", "the refusal")
        await wait_seen(page, "seen.some((m) => m.who === 'a' && m.type === 'subscribed')", "the public one")
        refusal = next(m for m in await seen(page) if m["who"] == "anonymous")
        assert refusal["code"] == "unauthorized" and refusal["channel"] == "alerts"
        await asyncio.to_thread(publish, app.port, 1)
        await wait_seen(page, "seen.filter((m) => m.type === 'event').length === 2", "the public channel's event")
        assert await page.evaluate("stray") == []
        await watch.finish()
