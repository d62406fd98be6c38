"""Alpaca's option streams (v1beta1/indicative, v1beta1/opra; msgpack only) through the one hub: browsers
subscribing OCC contract symbols, alpaca-py's OptionDataStream on the compatible endpoint, Alpaca's option
errors (412 for JSON, 413 for quotes of ``*``) from the relay and the simulator alike."""

from __future__ import annotations

import asyncio

import msgpack
import orjson
import pytest
from alpaca.data.models.quotes import Quote
from alpaca.data.models.trades import Trade
from websockets.asyncio.client import connect

from tests.support.relay import KEY, SECRET, TOKEN, Browser, relay_config, running, wait_until
from tests.support.sdk import option_stream
from trade_stream.core.protocol import ClientError, check_symbol
from trade_stream.upstream.market_data import _from_msgpack

pytestmark = pytest.mark.timeout(30)
INDICATIVE, OPRA = "/v1beta1/indicative", "/v1beta1/opra"
CALL, PUT = "AAPL261218C00230000", "SPY261218P00550000"
E412 = [{"T": "error", "code": 412, "msg": "option messages are only available in MsgPack format"}]
E413 = [{"T": "error", "code": 413, "msg": "star subscription is not allowed for option quotes"}]


def test_occ_symbols_are_their_own_rule_and_timestamps_come_back_as_rfc3339():
    assert check_symbol("aapl261218c00230000") == CALL
    assert check_symbol("BRKB261218P00450000") == "BRKB261218P00450000"
    for bad in ("AAPL261318C00230000", "AAPL261218X00230000", "AAPL261218C0023000", "1AAPL261218C00230000"):
        assert isinstance(check_symbol(bad), ClientError), bad
    frame = msgpack.packb([{"T": "t", "S": CALL, "t": msgpack.Timestamp(1704292200, 120000000), "p": 1.5}])
    assert _from_msgpack(frame) == [{"T": "t", "S": CALL, "t": "2024-01-03T14:30:00.12Z", "p": 1.5}]


async def test_browsers_get_option_trades_and_quotes_over_a_msgpack_upstream_through_a_drop(sim, tmp_path):
    async with running(relay_config(sim, tmp_path)) as app:
        async with Browser.connect(app.port) as b:
            await b.send({"action": "subscribe", "symbols": [CALL.lower()], "channels": ["trades", "quotes"]})
            assert await b.expect("subscribed") == {"type": "subscribed", "symbol": CALL,
                                                     "channels": ["trades", "quotes"]}
            await wait_until(lambda: sim.subscriptions(INDICATIVE) == {"trades": [CALL], "quotes": [CALL]},
                             what="contract held on the option stream")
            conn = next(c for c in sim._conns.values() if c.path == INDICATIVE)
            assert conn.use_msgpack  # the relay speaks msgpack there, as Alpaca requires
            assert sim.subscriptions("/v2/iex") == {ch: [] for ch in sim.subscriptions("/v2/iex")}
            sim.inject_trade(CALL, 4.25, 3, path=INDICATIVE)
            trade = await b.expect("trade")
            assert trade["symbol"] == CALL and trade["data"]["price"] == 4.25 and trade["data"]["size"] == 3
            assert trade["data"]["timestamp"].endswith("Z")
            sim.inject_quote(CALL, 4.2, 4.3, path=INDICATIVE)
            quote = await b.expect("quote")
            assert (quote["data"]["bid_price"], quote["data"]["ask_price"]) == (4.2, 4.3)
            src = app.relay.sources.source("options:indicative")
            sim.cut_all()
            await wait_until(lambda: src.upstream.status.reconnects == 1
                             and sim.subscriptions(INDICATIVE)["trades"] == [CALL], what="resubscribed")
            sim.inject_trade(CALL, 4.5, 1, path=INDICATIVE)
            assert (await b.expect(lambda m: m.get("type") == "trade" and m["data"]["price"] == 4.5))
            for bad in ({"symbols": [CALL], "channels": ["bars"]}, {"symbols": [CALL], "channels": ["orderbooks"]},
                        {"channel": "news", "symbols": [CALL]}):
                await b.send({"action": "subscribe", **bad})
                assert (await b.expect("error"))["code"] in ("invalid_channel", "invalid_symbol")
            status = orjson.loads(await asyncio.to_thread(_get, app.port, "/api/stream/status"))
            assert status["upstreams"]["options:indicative"]["path"] == INDICATIVE


def _get(port: int, path: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.read()


async def test_alpaca_py_option_stream_through_the_relay_an_upstream_drop_and_option_errors(sim, tmp_path):
    async with running(relay_config(sim, tmp_path)) as app:
        async with option_stream(f"ws://127.0.0.1:{app.port}{INDICATIVE}", "bot", TOKEN, CALL) as (_, got):
            await wait_until(lambda: sim.subscriptions(INDICATIVE) == {"trades": [CALL], "quotes": [CALL]})
            sim.inject_trade(CALL, 3.1, 2, path=INDICATIVE)
            trade = await asyncio.wait_for(got.get(), 5)
            assert isinstance(trade, Trade) and trade.price == 3.1 and trade.symbol == CALL
            assert trade.timestamp.year >= 2025
            sim.cut_all()
            await wait_until(lambda: app.relay.sources.source("options:indicative").upstream.status.reconnects == 1
                             and sim.subscriptions(INDICATIVE)["quotes"] == [CALL], what="resubscribed")
            sim.inject_quote(CALL, 3.0, 3.2, path=INDICATIVE)
            quote = await asyncio.wait_for(got.get(), 5)
            assert isinstance(quote, Quote) and quote.ask_price == 3.2
        base = f"ws://127.0.0.1:{app.port}"
        for url in (base + INDICATIVE, sim.ws_url + INDICATIVE):  # the relay and the simulator answer alike
            async with connect(url) as ws:  # JSON: Alpaca's 412
                assert orjson.loads(await ws.recv()) == [{"T": "success", "msg": "connected"}]
                secret = TOKEN if url.startswith(base) else "secret"
                await ws.send(orjson.dumps({"action": "auth", "key": "key", "secret": secret}).decode())
                assert orjson.loads(await ws.recv()) == E412
        sim.set_plan(KEY, max_connections=2)  # the relay holds the account's one option session
        for url, key, secret in ((base + OPRA, "bot", TOKEN), (sim.ws_url + OPRA, KEY, SECRET)):
            async with connect(url, additional_headers={"Content-Type": "application/msgpack"}) as ws:
                assert msgpack.unpackb(await ws.recv()) == [{"T": "success", "msg": "connected"}]
                await ws.send(msgpack.packb({"action": "auth", "key": key, "secret": secret}))
                assert msgpack.unpackb(await ws.recv()) == [{"T": "success", "msg": "authenticated"}]
                await ws.send(msgpack.packb({"action": "subscribe", "quotes": ["*"]}))
                assert msgpack.unpackb(await ws.recv()) == E413
                await ws.send(msgpack.packb({"action": "subscribe", "bars": [PUT]}))
                assert msgpack.unpackb(await ws.recv())[0]["code"] == 410
                await ws.send(msgpack.packb({"action": "subscribe", "trades": ["AAPL"]}))
                assert msgpack.unpackb(await ws.recv())[0]["code"] == 400  # a stock is not a contract
                await ws.send(msgpack.packb({"action": "subscribe", "trades": [PUT], "quotes": [PUT],
                                             "orderbooks": None, "news": []}))  # the Go SDK's shape
                assert msgpack.unpackb(await ws.recv()) == [{"T": "subscription", "trades": [PUT], "quotes": [PUT]}]
