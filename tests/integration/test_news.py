"""Alpaca's news stream (v1beta1/news) through the one hub: browsers with {"channel": "news"}, alpaca-py's
NewsDataStream on the compatible endpoint, and the simulator's news, each through an upstream drop."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from alpaca.data.models.news import News

from tests.support.relay import KEY, TOKEN, Browser, relay_config, running, wait_until
from tests.support.sdk import news_stream

pytestmark = pytest.mark.timeout(30)
NEWS = "/v1beta1/news"
FIELDS = {"id", "headline", "summary", "author", "source", "url", "symbols", "created_at", "updated_at"}


async def test_browsers_get_news_for_their_symbols_or_star_through_an_upstream_drop(sim, tmp_path):
    async with running(relay_config(sim, tmp_path)) as app:
        async with Browser.connect(app.port) as aapl, Browser.connect(app.port) as star, \
                Browser.connect(app.port) as tsla:
            await aapl.send({"action": "subscribe", "channel": "news", "symbols": ["aapl"]})
            assert await aapl.expect("subscribed") == {"type": "subscribed", "symbol": "AAPL", "channels": ["news"]}
            await star.send({"action": "subscribe", "channel": "news", "symbols": ["*"]})
            await star.expect("subscribed")
            await tsla.send({"action": "subscribe", "channel": "news", "symbol": "TSLA"})
            await tsla.expect("subscribed")
            await wait_until(lambda: sim.subscriptions(NEWS)["news"] == ["*", "AAPL", "TSLA"], what="news held")
            assert sim.sessions(NEWS) == 1 and sim.sessions("/v2/iex") == 1  # its own connection
            sent = sim.inject_news(["AAPL", "MSFT"], "Apple and Microsoft sign a deal")
            for browser in (aapl, star):
                msg = await browser.expect("news")
                assert set(msg["data"]) == FIELDS and msg["data"]["headline"] == "Apple and Microsoft sign a deal"
                assert msg["data"]["symbols"] == ["AAPL", "MSFT"] and msg["data"]["id"] == sent["id"]
                assert msg["data"]["created_at"] == sent["created_at"]
            sim.cut_all()
            await wait_until(lambda: app.relay.sources.source("news").upstream.status.reconnects == 1
                             and sim.subscriptions(NEWS)["news"] == ["*", "AAPL", "TSLA"], what="news resubscribed")
            sim.inject_news(["TSLA"], "Tesla recalls nothing")
            assert (await tsla.expect("news"))["data"]["headline"] == "Tesla recalls nothing"
            assert (await star.expect("news"))["data"]["headline"] == "Tesla recalls nothing"
            assert not aapl.of_type("news")[1:]  # one AAPL article only; TSLA's did not reach it
            await aapl.send({"action": "unsubscribe", "channel": "news", "symbols": ["AAPL"]})
            await aapl.expect("unsubscribed")
            for bad, code in (({"channel": "news", "symbols": ["BTC/USD"]}, "invalid_symbol"),
                              ({"channel": "news", "symbols": ["AAPL"], "channels": ["trades"]}, "invalid_channel"),
                              ({"channel": "weather", "symbols": ["AAPL"]}, "invalid_channel")):
                await aapl.send({"action": "subscribe", **bad})
                assert (await aapl.expect("error"))["code"] == code


async def test_alpaca_py_news_stream_through_the_relay_an_upstream_drop_and_a_refusal(sim, tmp_path):
    async with running(relay_config(sim, tmp_path)) as app:
        url = f"ws://127.0.0.1:{app.port}{NEWS}"
        async with news_stream(url, "bot", TOKEN, "AAPL") as (_, got):
            await wait_until(lambda: sim.subscriptions(NEWS)["news"] == ["AAPL"], what="news held")
            sim.inject_news(["AAPL"], "First")
            item = await asyncio.wait_for(got.get(), 5)
            assert isinstance(item, News) and item.headline == "First" and item.symbols == ["AAPL"]
            assert item.created_at.year >= 2025
            sim.cut_all()
            await wait_until(lambda: app.relay.sources.source("news").upstream.status.reconnects == 1
                             and sim.subscriptions(NEWS)["news"] == ["AAPL"], what="resubscribed after the drop")
            sim.inject_news(["AAPL"], "Second")
            assert (await asyncio.wait_for(got.get(), 5)).headline == "Second"
        # the simulator refuses what Alpaca refuses: trades on the news stream are 410
        async with Browser.connect(app.port, NEWS) as raw:
            assert orjson.loads(await raw.ws.recv()) == [{"T": "success", "msg": "connected"}]
            await raw.send({"action": "auth", "key": "bot", "secret": TOKEN})
            assert orjson.loads(await raw.ws.recv()) == [{"T": "success", "msg": "authenticated"}]
            await raw.send({"action": "subscribe", "trades": ["AAPL"]})
            refused = [{"T": "error", "code": 410, "msg": "invalid subscribe action for this feed"}]
            assert orjson.loads(await raw.ws.recv()) == refused
            await raw.send({"action": "subscribe", "news": ["*"], "trades": None, "orderbooks": []})  # Go's shape
            assert orjson.loads(await raw.ws.recv()) == [{"T": "subscription", "news": ["*"]}]
            await raw.send({"action": "unsubscribe", "news": ["*"]})
            assert orjson.loads(await raw.ws.recv()) == [{"T": "subscription", "news": []}]
            sim.set_plan(KEY, symbol_limit=2)  # the relay's account on a small plan: Alpaca's 405 reaches the client
            await raw.send({"action": "subscribe", "news": ["AAPL", "MSFT", "TSLA"]})
            assert orjson.loads(await raw.ws.recv()) == [{"T": "error", "code": 405, "msg": "symbol limit exceeded"}]
            await raw.send({"action": "subscribe", "news": ["AAPL"]})
            assert orjson.loads(await raw.ws.recv()) == [{"T": "subscription", "news": ["AAPL"]}]


async def test_the_simulator_streams_news_by_itself_and_over_the_control_api(sim, tmp_path):
    import urllib.request

    sim.config.news_interval = 0.2
    sim.set_rate(1)  # the generator runs (rate 0 means only injected data)
    async with running(relay_config(sim, tmp_path)) as app:
        async with Browser.connect(app.port) as browser:
            await browser.send({"action": "subscribe", "channel": "news", "symbols": ["NVDA"]})
            await browser.expect("subscribed")
            msg = await browser.expect("news")  # generated, about the subscribed symbol
            assert msg["data"]["symbols"] == ["NVDA"] and msg["data"]["headline"]
            sim.config.news_interval = 0
            url = f"{sim.http_url}/_sim/news?symbols=NVDA&headline=Chips"
            status = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).status)
            assert status == 200
            assert (await browser.expect(lambda m: m.get("type") == "news" and m["data"]["headline"] == "Chips"))
