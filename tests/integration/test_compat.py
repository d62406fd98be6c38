"""The Alpaca-compatible endpoint: unmodified alpaca-py clients share the relay's one upstream connection."""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import orjson
import pytest
from alpaca.data.models import Trade
from alpaca.trading.models import TradeUpdate
from websockets.asyncio.client import connect

from tests.support.relay import TOKEN, Browser, relay_config, running, wait_until
from tests.support.sdk import stock_stream, trading_stream

pytestmark = pytest.mark.timeout(40)
IEX = "/v2/iex"


@pytest.fixture
async def app(sim, tmp_path):
    async with running(relay_config(sim, tmp_path, linger=0)) as a:
        await wait_until(lambda: a.relay.sources.default.upstream.connected and a.tradings["default"].connected)
        yield a


def upstream_actions(sim) -> list[dict]:
    return [r.message for r in sim.received if r.path == IEX and r.message.get("action") != "auth"]


def sdk_stream(port: int, key: str, *symbols: str):
    """An unmodified alpaca-py StockDataStream pointed at the relay, with the token as its secret."""
    return stock_stream(f"ws://127.0.0.1:{port}{IEX}", key, TOKEN, *symbols)


async def next_trade(q: asyncio.Queue[Any], symbol: str) -> Trade:
    while True:
        trade = await asyncio.wait_for(q.get(), 5)
        if trade.symbol == symbol:
            return trade


async def test_two_sdk_clients_and_a_browser_share_one_upstream_connection(sim, app):
    async with sdk_stream(app.port, "bot-1", "AAPL", "MSFT") as (s1, q1), \
            sdk_stream(app.port, "bot-2", "AAPL", "TSLA") as (_s2, q2), \
            Browser.connect(app.port) as browser:
        await browser.send({"action": "subscribe", "symbols": ["AAPL", "NVDA"]})
        await browser.expect("subscribed")
        await wait_until(lambda: sim.subscriptions(IEX)["trades"] == ["AAPL", "MSFT", "NVDA", "TSLA"],
                         what="union upstream")
        assert sim.sessions(IEX) == 1  # the simulator allows one session per key: the relay's
        assert len({r.conn_id for r in sim.received if r.path == IEX}) == 1

        sent = sim.inject_trade("AAPL", price=231.57, size=100)
        t1, t2 = await next_trade(q1, "AAPL"), await next_trade(q2, "AAPL")
        for t in (t1, t2):
            assert isinstance(t, Trade) and t.price == 231.57 and t.size == 100 and t.id == sent["i"]
        assert (await browser.expect("trade"))["data"]["price"] == 231.57
        sim.inject_trade("MSFT", price=420.0)
        sim.inject_trade("TSLA", price=250.0)
        assert (await next_trade(q1, "MSFT")).price == 420.0
        assert (await next_trade(q2, "TSLA")).price == 250.0

        # One SDK client unsubscribing affects only itself; upstream follows the union.
        sim.clear_received()
        await asyncio.to_thread(s1.unsubscribe_trades, "MSFT", "AAPL")
        await wait_until(lambda: upstream_actions(sim), what="upstream unsubscribe")
        await asyncio.sleep(0.2)
        assert upstream_actions(sim) == [{"action": "unsubscribe", "trades": ["MSFT"]}]
        sim.inject_trade("AAPL", price=232.0)
        assert (await next_trade(q2, "AAPL")).price == 232.0
        assert (await browser.expect("trade"))["data"]["price"] == 232.0

    # Everyone gone: upstream lets go of everything, still on the same single connection.
    await wait_until(lambda: sim.subscriptions(IEX)["trades"] == [], what="all released")
    assert len({r.conn_id for r in sim.received if r.path == IEX}) == 1


async def test_sdk_client_disconnecting_leaves_the_other_intact(sim, app):
    async with sdk_stream(app.port, "bot-1", "AAPL") as (_, q1):
        async with sdk_stream(app.port, "bot-2", "AAPL", "AMD") as (_, _q2):
            await wait_until(lambda: sim.subscriptions(IEX)["trades"] == ["AAPL", "AMD"])
            sim.clear_received()
        await wait_until(lambda: upstream_actions(sim), what="AMD released")
        assert upstream_actions(sim) == [{"action": "unsubscribe", "trades": ["AMD"]}]
        sim.inject_trade("AAPL", price=5.0)
        assert (await next_trade(q1, "AAPL")).price == 5.0


async def test_trading_stream_sdk_receives_a_fill_through_the_relay(sim, app):
    async with trading_stream(f"ws://127.0.0.1:{app.port}/stream", "bot", TOKEN) as got:
        await wait_until(lambda: any(getattr(s, "listening", False) for s in _trading_sessions(app)),
                         what="SDK listening")
        order = sim.submit_order("NVDA", "buy", 3, type="limit", limit_price=135)
        sim.fill_order(order["id"], price=134.5)
        new, fill = await asyncio.wait_for(got.get(), 5), await asyncio.wait_for(got.get(), 5)
        assert isinstance(fill, TradeUpdate) and new.event == "new" and fill.event == "fill"
        assert str(fill.order.id) == order["id"] and fill.price == 134.5 and fill.qty == 3


def _trading_sessions(app) -> list[Any]:
    return [listener.__self__ for listener in app.accounts.orders["default"].listeners if hasattr(listener, "__self__")]


async def raw(port: int, msgpack_mode: bool = False, headers: dict[str, str] | None = None):
    extra = {"Content-Type": "application/msgpack"} if msgpack_mode else {}
    return connect(f"ws://127.0.0.1:{port}{IEX}", additional_headers={**extra, **(headers or {})},
                   ping_interval=None, close_timeout=0.5)


def dec(frame: str | bytes) -> Any:
    return msgpack.unpackb(frame) if isinstance(frame, bytes) else orjson.loads(frame)


async def test_json_and_msgpack_clients_errors_and_formats(sim, app):
    async with await raw(app.port) as j, await raw(app.port, msgpack_mode=True) as m:
        assert dec(await j.recv()) == [{"T": "success", "msg": "connected"}]
        assert dec(await m.recv()) == [{"T": "success", "msg": "connected"}]
        await j.send('{"action":"subscribe","trades":["AAPL"]}')
        assert dec(await j.recv()) == [{"T": "error", "code": 401, "msg": "not authenticated"}]
        await j.send(orjson.dumps({"action": "auth", "key": "anything", "secret": "wrong"}).decode())
        assert dec(await j.recv()) == [{"T": "error", "code": 402, "msg": "auth failed"}]
        await j.send(orjson.dumps({"action": "auth", "key": "anything", "secret": TOKEN}).decode())
        assert dec(await j.recv()) == [{"T": "success", "msg": "authenticated"}]
        await j.send("{not json")
        assert dec(await j.recv()) == [{"T": "error", "code": 400, "msg": "invalid syntax"}]
        await j.send('{"action":"subscribe","news":["AAPL"]}')
        assert dec(await j.recv())[0]["code"] == 410
        await j.send('{"action":"subscribe","trades":["AAPL"],"quotes":["MSFT"]}')  # the session lived
        reply = dec(await j.recv())[0]
        assert reply["T"] == "subscription" and reply["trades"] == ["AAPL"] and reply["quotes"] == ["MSFT"]
        assert reply["corrections"] == ["AAPL"] and reply["cancelErrors"] == ["AAPL"] and reply["bars"] == []
        await j.send('{"action":"subscribe","trades":["TSLA"]}')  # additive: the reply is this client's full set
        assert dec(await j.recv())[0]["trades"] == ["AAPL", "TSLA"]

        await m.send(msgpack.packb({"action": "auth", "key": "k", "secret": TOKEN}))
        assert dec(await m.recv()) == [{"T": "success", "msg": "authenticated"}]
        await m.send(msgpack.packb({"action": "subscribe", "trades": ["AAPL"]}))
        assert dec(await m.recv())[0]["trades"] == ["AAPL"]

        await wait_until(lambda: sorted(sim.subscriptions(IEX)["trades"]) == ["AAPL", "TSLA"])
        sent = sim.inject_trade("AAPL", price=1.25, size=3)
        jt, mt = dec(await j.recv())[0], dec(await m.recv())[0]
        assert jt == sent  # Alpaca's message, unchanged, full-precision timestamp string
        assert isinstance(mt["t"], msgpack.Timestamp)
        assert mt["t"].to_unix_nano() == _unix_nano(sent["t"])
        assert {k: v for k, v in mt.items() if k != "t"} == {k: v for k, v in sent.items() if k != "t"}


def _unix_nano(rfc3339: str) -> int:
    from datetime import UTC, datetime

    whole, _, frac = rfc3339[:-1].partition(".")
    seconds = int(datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp())
    return seconds * 1_000_000_000 + int((frac + "000000000")[:9])


async def test_header_auth_and_405_when_the_shared_upstream_is_full(sim, tmp_path):
    async with running(relay_config(sim, tmp_path, max_symbols=2)) as app:
        await wait_until(lambda: app.relay.sources.default.upstream.connected)
        headers = {"APCA-API-KEY-ID": "bot", "APCA-API-SECRET-KEY": TOKEN}
        async with await raw(app.port, headers=headers) as ws:
            assert dec(await ws.recv()) == [{"T": "success", "msg": "connected"}]
            assert dec(await ws.recv()) == [{"T": "success", "msg": "authenticated"}]
            await ws.send('{"action":"subscribe","trades":["AAPL","MSFT"]}')
            assert dec(await ws.recv())[0]["trades"] == ["AAPL", "MSFT"]
            await ws.send('{"action":"subscribe","trades":["TSLA"]}')
            assert dec(await ws.recv()) == [{"T": "error", "code": 405, "msg": "symbol limit exceeded"}]
            await ws.send('{"action":"unsubscribe","trades":["MSFT"]}')
            assert dec(await ws.recv())[0]["trades"] == ["AAPL"]


async def test_wildcard_subscription_receives_every_symbol(sim, app):
    async with await raw(app.port, headers={"APCA-API-KEY-ID": "bot", "APCA-API-SECRET-KEY": TOKEN}) as ws, \
            Browser.connect(app.port) as browser:
        await ws.recv()
        await ws.recv()
        await ws.send('{"action":"subscribe","trades":["*"]}')
        assert dec(await ws.recv())[0]["trades"] == ["*"]
        await browser.send({"action": "subscribe", "symbol": "ZZZ"})
        await browser.expect("subscribed")
        await wait_until(lambda: sim.subscriptions(IEX)["trades"] == ["*", "ZZZ"], what="wildcard upstream")
        for symbol in ("QQQ", "ZZZ"):
            sent = sim.inject_trade(symbol, price=3.5)
            assert dec(await ws.recv()) == [sent]
        assert (await browser.expect("trade"))["symbol"] == "ZZZ"
        await browser.drain(0.2)
        assert [m["symbol"] for m in browser.of_type("trade")] == ["ZZZ"]  # the browser holds no wildcard


async def test_trade_updates_fields_the_relay_does_not_know_reach_sdk_clients(sim, app):
    async with connect(f"ws://127.0.0.1:{app.port}/stream", ping_interval=None, close_timeout=0.5) as ws:
        await ws.send(orjson.dumps({"action": "auth", "key": "bot", "secret": TOKEN}).decode())
        assert orjson.loads(await ws.recv())["data"]["status"] == "authorized"
        await ws.send(orjson.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}).decode())
        assert orjson.loads(await ws.recv())["stream"] == "listening"
        order = sim.submit_order("AAPL", "buy", 1)
        sim.emit_order_event(order["id"], "fill", qty="1", price="10", venue_flags=["x", "y"],
                             position_qtys={"AAPL": "1"}, future_field={"nested": 1})
        got = []
        while len(got) < 2:
            frame = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            if frame.get("stream") == "trade_updates":
                got.append(frame["data"])
    new, fill = got
    assert new["event"] == "new" and fill["event"] == "fill"
    assert fill["venue_flags"] == ["x", "y"] and fill["future_field"] == {"nested": 1}
    assert fill["position_qtys"] == {"AAPL": "1"} and fill["order"]["id"] == order["id"]
    assert not {"order_id", "symbol", "side", "status"} & (set(new) | set(fill))  # the relay's conveniences stay out
