"""The Alpaca-compatible endpoints say only what Alpaca would say: real SDK clients through an upstream drop,
the Go SDK's exact subscribe, Alpaca's exact texts and shapes, and Alpaca's answers on paths the relay does not
serve."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgpack
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.support.relay import KEY, TOKEN, relay_config, running, wait_until
from tests.support.sdk import stock_stream, trading_stream
from trade_stream.edges import compat

pytestmark = pytest.mark.timeout(30)
IEX = "/v2/iex"
HEADERS = {"APCA-API-KEY-ID": "bot", "APCA-API-SECRET-KEY": TOKEN}
GO_SDK_CHANNELS = ("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "imbalances", "lulds",
                   "orderbooks", "news", "pricing")


@pytest.fixture
async def app(sim, tmp_path):
    async with running(relay_config(sim, tmp_path, linger=0)) as a:
        await wait_until(lambda: a.relay.sources.default.upstream.connected and a.tradings["default"].connected)
        yield a


def connect_to(port: int, path: str = IEX, msgpack_mode: bool = False, headers: dict[str, str] | None = None):
    extra = {"Content-Type": "application/msgpack"} if msgpack_mode else {}
    return connect(f"ws://127.0.0.1:{port}{path}", additional_headers={**extra, **(headers or {})},
                   ping_interval=None, close_timeout=0.5)


def dec(frame: str | bytes) -> Any:
    """msgpack, or JSON (text, or the trading stream's binary JSON)."""
    if isinstance(frame, bytes):
        try:
            return msgpack.unpackb(frame)
        except Exception:
            pass
    return orjson.loads(frame)


async def frames_until(ws: Any, pred: Any, timeout: float = 5.0) -> list[Any]:
    """Every decoded frame up to and including the first that satisfies ``pred``."""
    seen: list[Any] = []
    while True:
        seen.append(dec(await asyncio.wait_for(ws.recv(), timeout)))
        if pred(seen[-1]):
            return seen


def alpaca_shaped(frame: Any) -> bool:
    return isinstance(frame, list) and all(isinstance(m, dict) and "T" in m for m in frame)


def has_trade(price: float) -> Any:
    return lambda f: isinstance(f, list) and any(m.get("T") == "t" and m.get("p") == price for m in f)


# --- 1. browser-protocol messages never reach Alpaca-compatible clients --------------------------------------


async def test_compatible_clients_get_only_alpaca_frames_through_an_upstream_drop(sim, app, caplog):
    caplog.set_level(logging.INFO)
    async with connect_to(app.port, headers=HEADERS) as j, \
            connect_to(app.port, msgpack_mode=True, headers=HEADERS) as m, \
            connect_to(app.port, "/stream") as t, \
            stock_stream(f"ws://127.0.0.1:{app.port}{IEX}", "bot-1", TOKEN, "AAPL") as (_s, got), \
            trading_stream(f"ws://127.0.0.1:{app.port}/stream", "bot-2", TOKEN) as updates:
        for ws in (j, m):
            await frames_until(ws, lambda f: f[0].get("msg") == "authenticated")
        await j.send('{"action":"subscribe","trades":["AAPL"]}')
        await m.send(msgpack.packb({"action": "subscribe", "trades": ["AAPL"]}))
        await t.send(orjson.dumps({"action": "auth", "key": "k", "secret": TOKEN}))
        await t.send(orjson.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
        await frames_until(t, lambda f: f.get("stream") == "listening")
        await wait_until(lambda: sim.subscriptions(IEX)["trades"] == ["AAPL"], what="upstream AAPL")
        await wait_until(lambda: len(app.accounts.orders["default"].listeners) >= 2,
                         what="both trading clients listening")

        before = app.relay.sources.default.upstream.status.reconnects
        sim.cut_all()  # a network fault on both upstream connections: the relay reconnects and resubscribes
        await wait_until(lambda: app.relay.sources.default.upstream.status.reconnects > before
                                 and app.relay.sources.default.upstream.connected
                         and app.tradings["default"].connected, what="relay reconnected")
        await wait_until(lambda: sim.subscriptions(IEX)["trades"] == ["AAPL"], what="resubscribed")
        sim.inject_trade("AAPL", price=77.5)
        order = sim.submit_order("AAPL", "buy", 1)

        for ws in (j, m):
            frames = await frames_until(ws, has_trade(77.5))
            assert all(alpaca_shaped(f) for f in frames), frames
        trading = await frames_until(t, lambda f: f.get("stream") == "trade_updates")
        assert all(isinstance(f, dict) and ("stream" in f or "action" in f) and "type" not in f for f in trading)
        update = trading[-1]["data"]  # relayed as the simulator sent it, Alpaca's newer fields included
        assert update["event_id"] and update["at"] and "cancel_requested_at" in update["order"]
        assert (await asyncio.wait_for(got.get(), 5)).price == 77.5
        assert str((await asyncio.wait_for(updates.get(), 5)).order.id) == order["id"]
    bad = [r.getMessage() for r in caplog.records if r.name.startswith("alpaca") and r.levelno >= logging.ERROR]
    assert not bad, bad


async def test_a_refusal_reaches_other_alpaca_holders_as_an_alpaca_error(sim, tmp_path):
    async with running(relay_config(sim, tmp_path, linger=0)) as app:
        await wait_until(lambda: app.relay.sources.default.upstream.connected)
        sim.set_plan("KEY", symbol_limit=1)
        sim.set_read_delay(0.3)  # both clients join AAPL+MSFT while the first request is still pending
        async with connect_to(app.port, headers=HEADERS) as a, connect_to(app.port, headers=HEADERS) as b:
            for ws in (a, b):
                await frames_until(ws, lambda f: f[0].get("msg") == "authenticated")
            await a.send('{"action":"subscribe","trades":["AAPL","MSFT"]}')
            await asyncio.sleep(0.05)
            await b.send('{"action":"subscribe","trades":["AAPL","MSFT"]}')
            for ws in (a, b):
                frames = await frames_until(ws, lambda f: isinstance(f, list) and f[0].get("code") == 405)
                assert all(alpaca_shaped(f) for f in frames), frames
                assert frames[-1] == [{"T": "error", "code": 405, "msg": "symbol limit exceeded"}]


# --- 2. the Go SDK's subscribe: every channel key, unset ones nil ---------------------------------------------


def go_sdk_subscribe(action: str = "subscribe", **channels: list[str]) -> bytes:
    """Byte for byte what alpaca-trade-api-go's getSubChangeMessage marshals (marketdata/stream/subscription.go):
    msgpack, every channel key present, unset ones nil."""
    return msgpack.packb({"action": action, **{ch: channels.get(ch) for ch in GO_SDK_CHANNELS}})


async def test_the_go_sdk_subscribe_message_is_accepted(sim, app):
    async with connect_to(app.port, msgpack_mode=True, headers=HEADERS) as ws:
        await frames_until(ws, lambda f: f[0].get("msg") == "authenticated")
        await ws.send(go_sdk_subscribe(trades=["AAPL"], quotes=["MSFT"]))
        reply = dec(await ws.recv())
        assert reply[0]["T"] == "subscription" and reply[0]["trades"] == ["AAPL"] and reply[0]["quotes"] == ["MSFT"]
        await ws.send(go_sdk_subscribe("unsubscribe", quotes=["MSFT"]))
        assert dec(await ws.recv())[0]["quotes"] == []
        await ws.send(msgpack.packb({"action": "subscribe", "trades": [], "news": [], "orderbooks": None}))
        assert dec(await ws.recv())[0]["trades"] == ["AAPL"]  # empty lists are fine: an additive no-op
        await ws.send(msgpack.packb({"action": "subscribe", "news": ["AAPL"]}))
        assert dec(await ws.recv()) == [{"T": "error", "code": 410, "msg": "invalid subscribe action for this feed"}]


# --- 3. Alpaca's texts, exactly ---------------------------------------------------------------------------------


async def test_a_feed_the_account_lacks_gets_alpacas_exact_409(sim, app):
    sim.set_plan(KEY, feeds=["iex"])  # the relay opens /v2/sip for the client; Alpaca refuses the account
    async with connect_to(app.port, "/v2/sip", msgpack_mode=True) as ws:
        assert dec(await ws.recv()) == [{"T": "success", "msg": "connected"}]
        await ws.send(msgpack.packb({"action": "auth", "key": "k", "secret": TOKEN}))
        assert dec(await ws.recv()) == [{"T": "error", "code": 409, "msg": "insufficient subscription"}]


async def test_a_406_of_the_relays_own_session_reaches_the_client_at_once_and_a_retry_on_the_socket_works(sim, app):
    sim.fail_next_auth(406, times=1000, path="/v2/sip")  # another session holds the relay's key at Alpaca
    async with connect_to(app.port, "/v2/sip") as ws:
        assert dec(await ws.recv()) == [{"T": "success", "msg": "connected"}]
        await ws.send(orjson.dumps({"action": "auth", "key": "k", "secret": TOKEN}).decode())
        assert dec(await asyncio.wait_for(ws.recv(), 2.5)) == \
            [{"T": "error", "code": 406, "msg": "connection limit exceeded"}]  # before open_timeout (3 s)
        sim.clear_auth_failures("/v2/sip")  # the other session is gone
        replies = []
        while len(replies) < 20:  # what the Go SDK does: auth again on the same socket after a 406
            await ws.send(orjson.dumps({"action": "auth", "key": "k", "secret": TOKEN}).decode())
            replies.append(dec(await asyncio.wait_for(ws.recv(), 5)))
            if replies[-1] == [{"T": "success", "msg": "authenticated"}]:
                break
            await asyncio.sleep(0.2)
        assert replies[-1] == [{"T": "success", "msg": "authenticated"}], replies
        assert all(r == [{"T": "error", "code": 406, "msg": "connection limit exceeded"}] for r in replies[:-1])


# --- 4. trading-stream errors have Alpaca's shape ---------------------------------------------------------------


async def test_trading_stream_errors_use_the_action_error_shape(sim, app):
    async with connect_to(app.port, "/stream") as ws:
        await ws.send("{not json")
        assert dec(await ws.recv()) == {"action": "error", "data": {"error_message": "invalid syntax"}}


# --- 7. msgpack timestamps -------------------------------------------------------------------------------------


def test_msgpack_codec_sends_every_alpaca_time_field_as_a_timestamp():
    body = compat.ALPACA_MSGPACK.body({"T": "t", "S": "AAPL", "t": "2024-01-03T14:30:00.123456789Z",
                                       "r": "2024-01-03T14:30:00.2Z", "p": 1.0})
    m = msgpack.unpackb(body)
    assert m["t"] == msgpack.Timestamp(1704292200, 123456789)
    assert m["r"] == msgpack.Timestamp(1704292200, 200000000)
    news = msgpack.unpackb(compat.ALPACA_MSGPACK.body({"T": "n", "created_at": "2024-01-03T14:30:00+00:00",
                                                       "updated_at": "2024-01-03T09:30:00-05:00",
                                                       "headline": "2024-01-03T14:30:00Z"}))
    assert news["created_at"] == news["updated_at"] == msgpack.Timestamp(1704292200, 0)
    assert news["headline"] == "2024-01-03T14:30:00Z"  # text that merely looks like a time stays text


# --- 8. paths the relay does not serve --------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1beta2/crypto", "/v1beta1/crypto"])
async def test_unserved_alpaca_paths_answer_as_alpaca_does_for_a_feed_the_plan_lacks(sim, app, path):
    async with connect_to(app.port, path) as ws:
        assert dec(await ws.recv()) == [{"T": "success", "msg": "connected"}]
        await ws.send(orjson.dumps({"action": "auth", "key": "k", "secret": TOKEN}).decode())
        assert dec(await ws.recv()) == [{"T": "error", "code": 409, "msg": "insufficient subscription"}]


# --- 9. strict where Alpaca is strict ---------------------------------------------------------------------------


async def test_a_msgpack_session_refuses_json_text_and_an_empty_subscribe(sim, app):
    async with connect_to(app.port, msgpack_mode=True, headers=HEADERS) as ws:
        await frames_until(ws, lambda f: f[0].get("msg") == "authenticated")
        await ws.send('{"action":"subscribe","trades":["AAPL"]}')
        assert dec(await ws.recv()) == [{"T": "error", "code": 400, "msg": "invalid syntax"}]
        await ws.send(msgpack.packb({"action": "subscribe"}))
        assert dec(await ws.recv()) == [{"T": "error", "code": 400, "msg": "invalid syntax"}]
        await ws.send(msgpack.packb({"action": "subscribe", "trades": ["AAPL"]}))
        assert dec(await ws.recv())[0]["trades"] == ["AAPL"]  # the session lived


async def test_auth_timeout_close_code_matches_the_simulator(sim, app, monkeypatch):
    from trade_stream.simulator import protocol as sim_protocol

    monkeypatch.setattr(compat, "AUTH_TIMEOUT", 0.3)
    async with connect_to(app.port) as ws:
        assert dec(await ws.recv()) == [{"T": "success", "msg": "connected"}]
        assert dec(await ws.recv()) == [{"T": "error", "code": 404, "msg": "auth timeout"}]
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 3)
        assert ws.close_code == sim_protocol.AUTH_TIMEOUT_CLOSE == compat.AUTH_TIMEOUT_CLOSE


# --- hardening: the trading stream closes a connection that never authenticates ---------------------------------


async def test_trading_stream_closes_without_auth(sim, app, monkeypatch):
    monkeypatch.setattr(compat, "AUTH_TIMEOUT", 0.3)
    async with connect_to(app.port, "/stream") as ws:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 3)
        assert ws.close_code == compat.AUTH_TIMEOUT_CLOSE
