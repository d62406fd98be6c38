"""More of Alpaca's streams through the one hub: crypto (browsers, order books, alpaca-py's CryptoDataStream) and
other stock feeds, each its own upstream connection opened on demand, shown apart in status, metrics and health."""

from __future__ import annotations

import asyncio
import urllib.request
from typing import Any

import orjson
import pytest
from alpaca.data.models import Orderbook, Trade

from tests.support.relay import KEY, TOKEN, Browser, relay_config, running, wait_until
from tests.support.sdk import crypto_stream, stock_stream

pytestmark = pytest.mark.timeout(30)
CRYPTO = "/v1beta3/crypto/us"


def http_json(port: int, path: str) -> Any:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def http_text(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.read().decode()


async def status(app: Any) -> dict[str, Any]:
    return (await asyncio.to_thread(http_json, app.port, "/api/stream/status"))[1]


async def test_browser_gets_crypto_trades_quotes_and_an_order_book_snapshot_then_updates(sim, tmp_path):
    sim.set_rate(20)
    async with running(relay_config(sim, tmp_path)) as app:
        async with Browser.connect(app.port) as first:
            await first.send({"action": "subscribe", "symbols": ["btc/usd"],
                              "channels": ["trades", "quotes", "orderbooks"]})
            ok = await first.expect("subscribed")
            assert ok == {"type": "subscribed", "symbol": "BTC/USD", "channels": ["trades", "quotes", "orderbooks"]}
            book = await first.expect("orderbook")  # Alpaca's full book first, as the top 10 levels
            trade = await first.expect("trade")
            assert trade["symbol"] == "BTC/USD" and trade["data"]["price"] > 1000 and trade["data"]["size"] > 0
            quote = await first.expect("quote")
            assert quote["data"]["bid_price"] < quote["data"]["ask_price"]
            data = book["data"]
            assert data["reset"] is True and len(data["bids"]) == len(data["asks"]) == 10
            assert [p for p, _ in data["bids"]] == sorted((p for p, _ in data["bids"]), reverse=True)
            assert data["bids"][0][0] < data["asks"][0][0]
            update = await first.expect(lambda m: m.get("type") == "orderbook" and not m["data"]["reset"])
            assert update["data"]["bids"] or update["data"]["asks"]
            assert all(len(level) == 2 for level in update["data"]["bids"] + update["data"]["asks"])
            assert sim.sessions(CRYPTO) == 1 and sim.sessions("/v2/iex") == 1  # two slots, one each
            async with Browser.connect(app.port) as second:  # joins a book the relay keeps: a snapshot at once
                await second.send({"action": "subscribe", "symbol": "BTC/USD", "channels": ["orderbooks"]})
                await second.expect("subscribed")
                snap = await second.expect("orderbook")
                assert snap["data"]["reset"] is True and len(snap["data"]["bids"]) == 10
            assert sim.sessions(CRYPTO) == 1
            await first.send({"action": "subscribe", "symbol": "AAPL", "channels": ["orderbooks"]})
            err = await first.expect("error")
            assert err["code"] == "invalid_channel" and err["symbol"] == "AAPL"


async def test_crypto_upstream_opens_with_the_first_holder_and_closes_after_the_linger(sim, tmp_path):
    async with running(relay_config(sim, tmp_path, linger=0.3)) as app:
        await wait_until(lambda: app.relay.sources.default.upstream.connected, what="stock upstream")
        assert sim.connections(CRYPTO) == 0
        view = (await status(app))["upstreams"]
        assert list(view) == ["stocks:iex"] and view["stocks:iex"]["state"] == "connected"
        async with Browser.connect(app.port) as browser:
            await browser.send({"action": "subscribe", "symbols": ["ETH/USD", "AAPL"], "channels": ["trades"]})
            await browser.expect("subscribed")
            await wait_until(lambda: sim.subscriptions(CRYPTO)["trades"] == ["ETH/USD"], what="crypto held")
            assert sim.subscriptions("/v2/iex")["trades"] == ["AAPL"]
            sim.push_stamped([sim.market.crypto_trade("ETH/USD", 3210.5, 0.25)], CRYPTO)
            trade = await browser.expect("trade")
            assert trade["symbol"] == "ETH/USD" and trade["data"]["price"] == 3210.5
            view = (await status(app))["upstreams"]
            assert view["crypto:us"]["state"] == "connected" and view["crypto:us"]["symbols"] == ["ETH/USD"]
            assert view["crypto:us"]["open"] and view["crypto:us"]["messages_in"] >= 1
            assert view["stocks:iex"]["symbols"] == ["AAPL"]
            await browser.send({"action": "unsubscribe", "symbol": "ETH/USD"})
            await browser.expect("unsubscribed")
            await wait_until(lambda: sim.connections(CRYPTO) == 0, what="crypto closed after the linger")
            assert sim.subscriptions("/v2/iex")["trades"] == ["AAPL"]
            view = (await status(app))["upstreams"]["crypto:us"]
            assert not view["open"] and view["state"] == "disconnected"
            code, health = await asyncio.to_thread(http_json, app.port, "/healthz")
            assert code == 200 and "market_data:crypto:us" not in health["upstreams"]  # not wanted: not judged
            await browser.send({"action": "subscribe", "symbol": "ETH/USD"})  # and opens again
            await wait_until(lambda: sim.sessions(CRYPTO) == 1, what="crypto reopened")


async def test_a_sip_client_on_an_iex_relay_is_served_when_the_plan_allows(sim, tmp_path):
    async with running(relay_config(sim, tmp_path, linger=0.2)) as app:
        await wait_until(lambda: app.relay.sources.default.upstream.connected, what="stock upstream")
        url = f"ws://127.0.0.1:{app.port}/v2/sip"
        async with stock_stream(url, "bot", TOKEN, "MSFT") as (_, got):
            await wait_until(lambda: sim.subscriptions("/v2/sip")["trades"] == ["MSFT"], what="sip held")
            assert sim.subscriptions("/v2/iex")["trades"] == []  # a sip key is not an iex key
            sim.inject_trade("MSFT", 421.5, path="/v2/iex")  # the relay's own feed: not this client's
            sim.inject_trade("MSFT", 422.25, path="/v2/sip")
            trade = await asyncio.wait_for(got.get(), 5)
            assert isinstance(trade, Trade) and trade.price == 422.25
            text = await asyncio.to_thread(http_text, app.port, "/metrics")
            assert 'trade_stream_source_connected{source="stocks:sip"} 1.0' in text
            assert 'trade_stream_source_subscriptions{channel="trades",source="stocks:sip"} 1.0' in text
            assert 'trade_stream_source_connected{source="stocks:iex"} 1.0' in text
        await wait_until(lambda: sim.connections("/v2/sip") == 0, what="sip closed once its client left")


async def test_alpaca_py_crypto_stream_through_the_relay_and_an_upstream_drop(sim, tmp_path):
    async with running(relay_config(sim, tmp_path)) as app:
        url = f"ws://127.0.0.1:{app.port}{CRYPTO}"
        async with crypto_stream(url, "bot", TOKEN, "BTC/USD") as (_, got):
            book = await asyncio.wait_for(got.get(), 5)  # the full book Alpaca sends after the subscribe
            assert isinstance(book, Orderbook) and book.reset and book.bids and book.asks
            sim.push_stamped([sim.market.crypto_trade("BTC/USD", 65001.5, 0.01)], CRYPTO)
            trade = await asyncio.wait_for(got.get(), 5)
            assert isinstance(trade, Trade) and trade.price == 65001.5 and trade.symbol == "BTC/USD"
            sim.cut_all()
            await wait_until(lambda: sim.subscriptions(CRYPTO)["trades"] == ["BTC/USD"]
                             and app.relay.sources.source("crypto:us").upstream.status.reconnects == 1,
                             what="crypto resubscribed after the drop")
            sim.push_stamped([sim.market.crypto_trade("BTC/USD", 65010.0, 0.02)], CRYPTO)
            while True:  # the resubscribe brought a fresh full book first
                item = await asyncio.wait_for(got.get(), 5)
                if isinstance(item, Trade):
                    break
            assert item.price == 65010.0
        assert sim.sessions(CRYPTO) <= 1


async def test_a_crypto_compat_client_joining_a_held_book_gets_the_full_book(sim, tmp_path):
    sim.set_rate(10)
    async with running(relay_config(sim, tmp_path)) as app, Browser.connect(app.port) as browser:
        await browser.send({"action": "subscribe", "symbol": "SOL/USD", "channels": ["orderbooks"]})
        await browser.expect(lambda m: m.get("type") == "orderbook")
        url = f"ws://127.0.0.1:{app.port}{CRYPTO}"
        async with crypto_stream(url, "bot", TOKEN, "SOL/USD") as (_, got):
            book = await asyncio.wait_for(got.get(), 5)
            assert isinstance(book, Orderbook) and book.reset and len(book.bids) >= 10
        assert sim.sessions(CRYPTO) == 1 and KEY
