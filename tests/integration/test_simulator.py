"""The Alpaca simulator over real loopback sockets, checked with raw WebSocket clients and alpaca-py itself."""

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import msgpack
import orjson
import pytest
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.models import Trade
from alpaca.data.requests import StockLatestTradeRequest, StockSnapshotRequest, StockTradesRequest
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import QueryOrderStatus
from alpaca.trading.models import TradeUpdate
from alpaca.trading.requests import GetOrdersRequest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus

from tests.support.sdk import stock_stream, trading_stream
from trade_stream.simulator import SimConfig, Simulator
from trade_stream.simulator.clock import Clock
from trade_stream.simulator.market import parse_ts

pytestmark = pytest.mark.timeout(20)

KEY, SECRET = "KEY", "SECRET"
OTHER, OTHER_SECRET = "OTHER", "OTHER_SECRET"
IEX = "/v2/iex"
EMPTY_SUBS = {"T": "subscription", "trades": [], "quotes": [], "bars": [], "updatedBars": [], "dailyBars": [],
              "statuses": [], "lulds": [], "corrections": [], "cancelErrors": [], "imbalances": []}


def config(**overrides: Any) -> SimConfig:
    base: dict[str, Any] = {
        "accounts": {KEY: SECRET, OTHER: OTHER_SECRET}, "rate_per_symbol": 0.0, "auth_timeout": 1.0,
        "seed": 1, "ping_interval": None, "tick_interval": 0.02,
        "clock": Clock.in_session(),  # the generator's stock trades need a regular session, at any real hour
    }
    return SimConfig(**{**base, **overrides})


@pytest.fixture
async def sim():
    async with Simulator(config()) as s:
        yield s


async def recv(ws: ClientConnection, timeout: float = 2.0) -> Any:
    data = await asyncio.wait_for(ws.recv(), timeout)
    return msgpack.unpackb(data) if isinstance(data, bytes) and data[:1] not in (b"[", b"{") else orjson.loads(data)


async def send(ws: ClientConnection, msg: Any) -> None:
    await ws.send(orjson.dumps(msg).decode())


async def request(ws: ClientConnection, msg: Any) -> Any:
    await send(ws, msg)
    return await recv(ws)


async def eventually(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def open_data(sim: Simulator, path: str = IEX, key: str | None = KEY, secret: str = SECRET,
                    **kwargs: Any) -> ClientConnection:
    """Connect, check the greeting, and (if key) authenticate by message."""
    ws = await connect(sim.ws_url + path, **kwargs)
    assert await recv(ws) == [{"T": "success", "msg": "connected"}]
    if key is not None:
        assert await request(ws, {"action": "auth", "key": key, "secret": secret}) == [
            {"T": "success", "msg": "authenticated"}]
    return ws


async def no_message(ws: ClientConnection, wait: float = 0.15) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ws.recv(), wait)


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


async def sim_get(sim: Simulator, path: str) -> Any:
    status, body = await asyncio.to_thread(http_get, sim.http_url + path)
    assert status == 200, body
    return body


# -- market data: handshake and auth ----------------------------------------------------------------


async def test_greeting_then_message_auth(sim):
    ws = await open_data(sim)
    assert sim.sessions(IEX) == 1 and sim.connections(IEX) == 1
    assert sim.received_on(IEX) == [{"action": "auth", "key": KEY, "secret": SECRET}]
    await ws.close()


async def test_header_auth_sends_authenticated_after_connected(sim):
    headers = {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}
    async with connect(sim.ws_url + IEX, additional_headers=headers) as ws:
        assert await recv(ws) == [{"T": "success", "msg": "connected"}]
        assert await recv(ws) == [{"T": "success", "msg": "authenticated"}]
        assert await request(ws, {"action": "subscribe", "trades": ["AAPL"]}) == [
            {**EMPTY_SUBS, "trades": ["AAPL"], "corrections": ["AAPL"], "cancelErrors": ["AAPL"]}]


@pytest.mark.parametrize("raw", [
    "not json",
    '{"action":"dance"}',
    '["auth"]',
    '{"action":"auth","key":1,"secret":2}',
])
async def test_invalid_syntax_before_auth_is_400(sim, raw):
    ws = await open_data(sim, key=None)
    await ws.send(raw)
    assert await recv(ws) == [{"T": "error", "code": 400, "msg": "invalid syntax"}]
    assert await request(ws, {"action": "auth", "key": KEY, "secret": SECRET}) == [
        {"T": "success", "msg": "authenticated"}]


@pytest.mark.parametrize("sub", [
    {"trades": "AAPL"},
    {"trades": ["aapl"]},
    {"trades": ["AA PL"]},
    {"quotes": [None]},
    {"corrections": ["AAPL"]},
    {"cancelErrors": ["AAPL"]},
])
async def test_bad_subscribe_is_400_and_changes_nothing(sim, sub):
    ws = await open_data(sim)
    await request(ws, {"action": "subscribe", "bars": ["SPY"]})
    assert await request(ws, {"action": "subscribe", "trades": ["MSFT"], **sub}) == [
        {"T": "error", "code": 400, "msg": "invalid syntax"}]
    assert sim.subscriptions(IEX)["bars"] == ["SPY"] and sim.subscriptions(IEX)["trades"] == []


async def test_subscribe_before_auth_is_401(sim):
    ws = await open_data(sim, key=None)
    assert await request(ws, {"action": "subscribe", "trades": ["AAPL"]}) == [
        {"T": "error", "code": 401, "msg": "not authenticated"}]
    assert await request(ws, {"action": "unsubscribe", "trades": ["AAPL"]}) == [
        {"T": "error", "code": 401, "msg": "not authenticated"}]


async def test_bad_credentials_402_then_retry_on_same_socket(sim):
    ws = await open_data(sim, key=None)
    assert await request(ws, {"action": "auth", "key": KEY, "secret": "wrong"}) == [
        {"T": "error", "code": 402, "msg": "auth failed"}]
    assert await request(ws, {"action": "auth", "key": KEY, "secret": SECRET}) == [
        {"T": "success", "msg": "authenticated"}]


async def test_second_auth_is_403(sim):
    ws = await open_data(sim)
    assert await request(ws, {"action": "auth", "key": KEY, "secret": SECRET}) == [
        {"T": "error", "code": 403, "msg": "already authenticated"}]
    assert sim.sessions(IEX) == 1


async def test_auth_timeout_404_then_close():
    async with Simulator(config(auth_timeout=0.3)) as sim:
        ws = await open_data(sim, key=None)
        t0 = time.monotonic()
        assert await recv(ws) == [{"T": "error", "code": 404, "msg": "auth timeout"}]
        assert 0.2 < time.monotonic() - t0 < 1.5
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 2)


async def test_symbol_limit_405_rejects_whole_request(sim):
    sim.set_plan(KEY, symbol_limit=3)
    ws = await open_data(sim)
    ok = await request(ws, {"action": "subscribe", "trades": ["AAPL", "MSFT"], "quotes": ["AAPL", "TSLA"]})
    assert ok[0]["trades"] == ["AAPL", "MSFT"] and ok[0]["quotes"] == ["AAPL", "TSLA"]
    assert await request(ws, {"action": "subscribe", "bars": ["AAPL"], "quotes": ["NVDA"]}) == [
        {"T": "error", "code": 405, "msg": "symbol limit exceeded"}]
    assert await request(ws, {"action": "subscribe", "trades": ["*"]}) == [
        {"T": "error", "code": 405, "msg": "symbol limit exceeded"}]
    subs = sim.subscriptions(IEX)
    assert subs["trades"] == ["AAPL", "MSFT"] and subs["quotes"] == ["AAPL", "TSLA"] and subs["bars"] == []
    same = await request(ws, {"action": "subscribe", "bars": ["AAPL", "TSLA"]})
    assert same[0]["bars"] == ["AAPL", "TSLA"]


async def test_connection_limit_406_then_retry_after_first_session_closes(sim):
    first = await open_data(sim)
    second = await open_data(sim, key=None)
    auth = {"action": "auth", "key": KEY, "secret": SECRET}
    assert await request(second, auth) == [{"T": "error", "code": 406, "msg": "connection limit exceeded"}]
    assert sim.sessions(IEX) == 1 and sim.connections(IEX) == 2
    other_feed = await open_data(sim, "/v2/sip")  # the limit is per endpoint
    other_key = await open_data(sim, key=OTHER, secret=OTHER_SECRET)
    await first.close()
    await eventually(lambda: sim.sessions(IEX, key=KEY) == 0)
    assert await request(second, auth) == [{"T": "success", "msg": "authenticated"}]
    await other_feed.close()
    await other_key.close()


async def test_feed_outside_plan_409(sim):
    sim.set_plan(KEY, feeds={"iex", "test"})
    ws = await open_data(sim, "/v2/sip", key=None)
    assert await request(ws, {"action": "auth", "key": KEY, "secret": SECRET}) == [
        {"T": "error", "code": 409, "msg": "insufficient subscription"}]
    assert sim.sessions("/v2/sip") == 0
    await open_data(sim, "/v2/test")


@pytest.mark.parametrize("channel", ["news", "orderbooks", "trade"])
async def test_unknown_channel_410(sim, channel):
    ws = await open_data(sim)
    assert await request(ws, {"action": "subscribe", channel: ["AAPL"]}) == [
        {"T": "error", "code": 410, "msg": "invalid subscribe action for this feed"}]


async def test_fail_next_auth_injects_codes(sim):
    sim.fail_next_auth(406, times=2)
    await open_trading(sim)  # without a path, only market-data auths fail
    ws = await open_data(sim, key=None)
    auth = {"action": "auth", "key": KEY, "secret": SECRET}
    for _ in range(2):
        assert await request(ws, auth) == [{"T": "error", "code": 406, "msg": "connection limit exceeded"}]
    assert await request(ws, auth) == [{"T": "success", "msg": "authenticated"}]


async def test_clear_auth_failures_over_the_control_api(sim):
    """Queued auth failures can be dropped (all, or one path's) through /_sim/clear_auth_failures."""
    await sim_get(sim, "/_sim/fail_auth?code=402&times=100")
    await sim_get(sim, "/_sim/fail_auth?code=401&times=3&path=/stream")
    assert (await sim_get(sim, f"/_sim/clear_auth_failures?path={IEX}")) == {"cleared": 100}
    assert (await sim_get(sim, "/_sim/state"))["pending_auth_failures"] == 3
    assert (await sim_get(sim, "/_sim/clear_auth_failures")) == {"cleared": 3}
    ws = await open_data(sim, key=None)
    auth = {"action": "auth", "key": KEY, "secret": SECRET}
    assert await request(ws, auth) == [{"T": "success", "msg": "authenticated"}]


# -- market data: subscriptions and data --------------------------------------------------------------


async def test_subscribe_unsubscribe_additive_full_set_replies(sim):
    ws = await open_data(sim)
    reply = await request(ws, {"action": "subscribe", "trades": ["AAPL"], "quotes": ["AMD", "CLDR"]})
    assert json.dumps(reply[0]).startswith('{"T": "subscription", "trades": ["AAPL"], "quotes": ["AMD", "CLDR"], '
                                           '"bars": [], "updatedBars": [], "dailyBars": [], "statuses": [], '
                                           '"lulds": [], "corrections": ["AAPL"], "cancelErrors": ["AAPL"]')
    reply = await request(ws, {"action": "subscribe", "trades": ["MSFT"], "bars": ["*"], "dailyBars": ["VOO"],
                               "statuses": ["*"], "lulds": ["AAPL"], "updatedBars": ["SPY"]})
    assert reply == [{**EMPTY_SUBS, "trades": ["AAPL", "MSFT"], "quotes": ["AMD", "CLDR"], "bars": ["*"],
                      "updatedBars": ["SPY"], "dailyBars": ["VOO"], "statuses": ["*"], "lulds": ["AAPL"],
                      "corrections": ["AAPL", "MSFT"], "cancelErrors": ["AAPL", "MSFT"]}]
    reply = await request(ws, {"action": "unsubscribe", "trades": ["AAPL", "NOTSUBBED"], "bars": ["*"],
                               "quotes": ["AMD"]})
    assert reply[0]["trades"] == ["MSFT"] and reply[0]["corrections"] == ["MSFT"]
    assert reply[0]["bars"] == [] and reply[0]["quotes"] == ["CLDR"]
    assert await request(ws, {"action": "subscribe", "trades": [], "news": None}) == reply  # nothing to add
    assert await request(ws, {"action": "subscribe"}) == [{"T": "error", "code": 400, "msg": "invalid syntax"}]
    assert sim.received_on(IEX)[-1] == {"action": "subscribe"}


async def test_injected_data_routes_by_subscription_and_wildcard(sim):
    a = await open_data(sim)
    b = await open_data(sim, key=OTHER, secret=OTHER_SECRET)
    await request(a, {"action": "subscribe", "trades": ["AAPL"], "quotes": ["AAPL"]})
    await request(b, {"action": "subscribe", "trades": ["*"]})
    trade = sim.inject_trade("AAPL", 231.57, 100)
    assert await recv(a) == [trade] and await recv(b) == [trade]
    assert trade["x"] == "V" and trade["c"][0] == "@" and trade["z"] == "C" and trade["p"] == 231.57
    other = sim.inject_trade("ZZZZ", 5.0, 1)
    assert await recv(b) == [other]
    quote = sim.inject_quote("AAPL", 231.5, 231.6)
    assert await recv(a) == [quote] and quote["bp"] < quote["ap"]
    correction = {"T": "c", "S": "AAPL", "x": "V", "oi": 1, "op": 1.0, "os": 1, "oc": ["@"], "ci": 2,
                  "cp": 1.1, "cs": 1, "cc": ["@"], "t": "2026-11-21T15:04:05.123456789Z", "z": "C"}
    sim.inject_raw(IEX, [correction])
    assert await recv(a) == [correction] and await recv(b) == [correction]
    await no_message(a)


async def test_bars_reach_bar_subscribers(sim):
    ws = await open_data(sim)
    await request(ws, {"action": "subscribe", "bars": ["AAPL"], "dailyBars": ["AAPL"]})
    sim.inject_trade("AAPL", 230.0, 10)
    bar = sim.inject_bar("AAPL")
    assert await recv(ws) == [bar]
    assert bar["T"] == "b" and bar["t"].endswith(":00Z")
    daily = sim.inject_bar("AAPL", kind="d", o=1.0, h=2.0, l=0.5, c=1.5, v=1000)
    assert (await recv(ws))[0]["o"] == 1.0 == daily["o"]


async def test_auto_data_is_batched_and_only_for_subscribed_symbols(sim):
    ws = await open_data(sim)
    await request(ws, {"action": "subscribe", "trades": ["AAPL", "MSFT"], "quotes": ["AAPL"]})
    sim.set_rate(400)
    frames = [await recv(ws) for _ in range(5)]
    sim.set_rate(0)
    assert all(len(f) > 1 for f in frames)
    msgs = [m for f in frames for m in f]
    assert {(m["T"], m["S"]) for m in msgs} == {("t", "AAPL"), ("t", "MSFT"), ("q", "AAPL")}
    for m in msgs:
        assert m["x" if m["T"] == "t" else "bx"] == "V"
        assert m["T"] == "t" or m["bp"] < m["ap"]
    assert 0 <= sim.clock() - parse_ts(msgs[-1]["t"]) < 2_000_000_000  # t is the (simulated) send time


async def test_test_feed_streams_fakepaca():
    async with Simulator(config(rate_per_symbol=100.0)) as sim:
        ws = await open_data(sim, "/v2/test")
        await request(ws, {"action": "subscribe", "quotes": ["FAKEPACA"], "trades": ["*"]})
        got = {(m["T"], m["S"]) for m in await recv(ws) + await recv(ws)}
        assert got <= {("q", "FAKEPACA"), ("t", "FAKEPACA")} and got


async def test_msgpack_session(sim):
    ws = await connect(sim.ws_url + IEX, additional_headers={"Content-Type": "application/msgpack"})
    first = await ws.recv()
    assert isinstance(first, bytes) and msgpack.unpackb(first) == [{"T": "success", "msg": "connected"}]
    await ws.send(msgpack.packb({"action": "auth", "key": KEY, "secret": SECRET}))
    assert msgpack.unpackb(await ws.recv()) == [{"T": "success", "msg": "authenticated"}]
    await ws.send(msgpack.packb({"trades": ["AAPL"], "action": "subscribe"}))
    assert msgpack.unpackb(await ws.recv())[0]["trades"] == ["AAPL"]
    sim.inject_trade("AAPL", 231.0, 5)
    sim.inject_trade("AAPL", 231.01, 7)
    raw = await ws.recv()
    assert isinstance(raw, bytes)
    [trade] = msgpack.unpackb(raw)
    assert next(iter(trade)) == "T" and trade["p"] == 231.0
    assert isinstance(trade["t"], msgpack.Timestamp)
    assert abs(trade["t"].to_unix_nano() - sim.clock()) < 2_000_000_000
    assert sim.received_on(IEX)[1] == {"trades": ["AAPL"], "action": "subscribe"}


# -- faults and observation ---------------------------------------------------------------------------


async def test_cut_all_aborts_without_close_frame(sim):
    ws = await open_data(sim)
    trading = await connect(sim.ws_url + "/stream")
    sim.cut_all()
    for conn in (ws, trading):
        with pytest.raises(ConnectionClosedError):
            await asyncio.wait_for(conn.recv(), 2)
        assert conn.protocol.close_rcvd is None
    await eventually(lambda: sim.connections() == 0)
    assert sim.connection_count_total == 2


async def test_reject_handshakes_429(sim):
    sim.reject_handshakes(429, times=2)
    for _ in range(2):
        with pytest.raises(InvalidStatus) as err:
            await connect(sim.ws_url + IEX)
        assert err.value.response.status_code == 429
    await open_data(sim)


async def test_mute_stops_data_but_answers_pings(sim):
    ws = await open_data(sim)
    await request(ws, {"action": "subscribe", "trades": ["AAPL"]})
    sim.set_mute(True)
    sim.inject_trade("AAPL", 1.0, 1)
    await no_message(ws)
    pong = await ws.ping()
    await asyncio.wait_for(pong, 2)
    fresh = await open_data(sim, key=OTHER, secret=OTHER_SECRET)
    await request(fresh, {"action": "subscribe", "trades": ["AAPL"]})
    trade = sim.inject_trade("AAPL", 2.0, 1)
    assert await recv(fresh) == [trade]
    await no_message(ws)
    sim.set_mute(False)
    trade = sim.inject_trade("AAPL", 3.0, 1)
    assert await recv(ws) == [trade]


async def test_received_log_and_read_delay(sim):
    ws = await open_data(sim)
    sim.clear_received()
    sim.set_read_delay(0.2)
    t0 = time.monotonic()
    await request(ws, {"action": "subscribe", "trades": ["AAPL"]})
    assert time.monotonic() - t0 >= 0.18  # uvloop timers have 1 ms resolution
    sim.set_read_delay(0)
    await request(ws, {"action": "unsubscribe", "trades": ["AAPL"]})
    records = sim.received
    assert [r.message for r in records] == [{"action": "subscribe", "trades": ["AAPL"]},
                                            {"action": "unsubscribe", "trades": ["AAPL"]}]
    assert records[0].path == IEX and records[0].conn_id == records[1].conn_id
    assert records[0].time <= records[1].time


async def test_slow_client_gets_407_and_is_dropped():
    async with Simulator(config(slow_client_buffer=64 * 1024)) as sim:
        ws = await open_data(sim, compression=None)
        await request(ws, {"action": "subscribe", "trades": ["*"]})
        ws.transport.pause_reading()
        pad = "x" * 4000
        for _ in range(500):
            for _ in range(100):
                sim.inject_trade("AAPL", 1.0, 1, pad=pad)
            await asyncio.sleep(0)
            if sim.connections() == 0:
                break
        await eventually(lambda: sim.connections() == 0)
        ws.transport.resume_reading()


# -- trading stream -----------------------------------------------------------------------------------


async def open_trading(sim: Simulator, legacy: bool = True, **kwargs: Any) -> ClientConnection:
    ws = await connect(sim.ws_url + "/stream", **kwargs)
    auth = ({"action": "authenticate", "data": {"key_id": KEY, "secret_key": SECRET}} if legacy
            else {"action": "auth", "key": KEY, "secret": SECRET})
    assert await request(ws, auth) == {"stream": "authorization",
                                       "data": {"status": "authorized", "action": "authenticate"}}
    assert await request(ws, {"action": "listen", "data": {"streams": ["trade_updates"]}}) == {
        "stream": "listening", "data": {"streams": ["trade_updates"]}}
    return ws


async def test_trading_auth_forms_and_listen(sim):
    ws = await connect(sim.ws_url + "/stream")
    assert await request(ws, {"action": "listen", "data": {"streams": ["trade_updates"]}}) == {
        "stream": "authorization", "data": {"status": "unauthorized", "action": "listen"}}
    assert await request(ws, {"action": "auth", "key": KEY, "secret": "nope"}) == {
        "stream": "authorization", "data": {"status": "unauthorized", "action": "authenticate"}}
    first = await open_trading(sim, legacy=False)
    await first.close()  # one trade_updates session per account
    await eventually(lambda: sim.sessions("/stream") == 0)
    ws2 = await open_trading(sim, legacy=True)
    assert await request(ws2, {"action": "listen", "data": {"streams": []}}) == {
        "stream": "listening", "data": {"streams": []}}
    sim.submit_order("AAPL", "buy", 1)
    await no_message(ws2)
    sim.fail_next_auth(times=1, path="/stream")
    ws3 = await connect(sim.ws_url + "/stream")
    reply = await request(ws3, {"action": "auth", "key": KEY, "secret": SECRET})
    assert reply["data"]["status"] == "unauthorized"


async def test_trading_frames_are_binary_json(sim):
    ws = await open_trading(sim)
    sim.submit_order("AAPL", "buy", 1)
    raw = await ws.recv()
    assert isinstance(raw, bytes) and json.loads(raw)["stream"] == "trade_updates"


async def test_order_lifecycle_events_and_positions(sim):
    ws = await open_trading(sim)
    order = sim.submit_order("AAPL", "buy", 10, "limit", 230.5)
    new = (await recv(ws))["data"]
    assert new["event"] == "new" and new["order"] == order and order["status"] == "new"
    TradeUpdate(**new)
    sim.fill_order(order["id"], 4, 230.0)
    partial = (await recv(ws))["data"]
    assert partial["event"] == "partial_fill" and partial["qty"] == "4" and partial["price"] == "230"
    assert partial["position_qty"] == "4" and partial["order"]["filled_qty"] == "4"
    assert partial["order"]["status"] == "partially_filled"
    sim.fill_order(order["id"], price=231.0)
    fill = (await recv(ws))["data"]
    assert fill["event"] == "fill" and fill["qty"] == "6" and fill["position_qty"] == "10"
    assert fill["execution_id"] != partial["execution_id"]
    assert fill["order"]["filled_avg_price"] == "230.6" and fill["order"]["status"] == "filled"
    update = TradeUpdate(**fill)
    assert update.position_qty == 10 and update.order.filled_at is not None

    sell = sim.submit_order("AAPL", "sell", 15)
    assert sell["position_intent"] == "sell_to_close"
    await recv(ws)
    sim.fill_order(sell["id"], price=240)
    flip = (await recv(ws))["data"]
    assert flip["position_qty"] == "-5"

    for action, event, stamp in [(sim.cancel_order, "canceled", "canceled_at"),
                                 (sim.reject_order, "rejected", "failed_at"),
                                 (sim.expire_order, "expired", "expired_at")]:
        o = sim.submit_order("MSFT", "buy", 1, "limit", 1)
        await recv(ws)
        action(o["id"])
        msg = (await recv(ws))["data"]
        assert msg["event"] == event and msg["order"]["status"] == event and msg["order"][stamp]
        with pytest.raises(ValueError):
            sim.fill_order(o["id"])

    o = sim.submit_order("MSFT", "buy", 5, "limit", 400)
    await recv(ws)
    new_order = sim.replace_order(o["id"], qty=3, limit_price=401)
    replaced, renewed = (await recv(ws))["data"], (await recv(ws))["data"]
    assert replaced["event"] == "replaced" and replaced["order"]["replaced_by"] == new_order["id"]
    assert renewed["event"] == "new" and renewed["order"]["replaces"] == o["id"]
    assert new_order["qty"] == "3" and new_order["limit_price"] == "401"

    sim.emit_order_event(new_order["id"], "some_future_event", note="x")
    odd = (await recv(ws))["data"]
    assert odd["event"] == "some_future_event" and odd["note"] == "x"
    assert TradeUpdate(**odd).event == "some_future_event"


async def test_orders_without_listener_are_kept_for_rest(sim):
    order = sim.submit_order("TSLA", "buy", 2)
    sim.fill_order(order["id"], price=250)
    ws = await open_trading(sim)
    await no_message(ws)
    client = TradingClient(KEY, SECRET, paper=True, url_override=sim.http_url)
    orders = await asyncio.to_thread(client.get_orders, GetOrdersRequest(status=QueryOrderStatus.CLOSED))
    assert [str(o.id) for o in orders] == [order["id"]]


async def test_trading_msgpack(sim):
    ws = await connect(sim.ws_url + "/stream", additional_headers={"Content-Type": "application/msgpack"})
    await ws.send(msgpack.packb({"action": "auth", "key": KEY, "secret": SECRET}))
    assert msgpack.unpackb(await ws.recv())["data"]["status"] == "authorized"


# -- REST ---------------------------------------------------------------------------------------------


async def test_rest_parsed_by_alpaca_py_trading_client(sim):
    buy = sim.submit_order("AAPL", "buy", 10, "limit", 230)
    sim.fill_order(buy["id"], 10)
    sim.submit_order("MSFT", "buy", 1, "limit", 100)
    client = TradingClient(KEY, SECRET, paper=True, url_override=sim.http_url)
    account = await asyncio.to_thread(client.get_account)
    assert float(account.cash) == 100_000 - 2300 and account.status == "ACTIVE"
    all_orders = await asyncio.to_thread(client.get_orders, GetOrdersRequest(status=QueryOrderStatus.ALL))
    assert [o.symbol for o in all_orders] == ["MSFT", "AAPL"]
    open_orders = await asyncio.to_thread(client.get_orders)
    assert [o.symbol for o in open_orders] == ["MSFT"]
    one = await asyncio.to_thread(client.get_order_by_id, buy["id"])
    assert one.filled_avg_price == "230" or float(one.filled_avg_price) == 230.0
    [position] = await asyncio.to_thread(client.get_all_positions)
    assert position.symbol == "AAPL" and position.qty == "10" and float(position.avg_entry_price) == 230.0
    assert position.side == "long" and position.exchange == "NASDAQ"
    other = TradingClient(OTHER, OTHER_SECRET, paper=True, url_override=sim.http_url)
    assert await asyncio.to_thread(other.get_orders, GetOrdersRequest(status=QueryOrderStatus.ALL)) == []


async def test_rest_parsed_by_alpaca_py_data_client(sim):
    sim.inject_trade("AAPL", 231.25, 100)
    client = StockHistoricalDataClient(KEY, SECRET, url_override=sim.http_url)
    snaps = await asyncio.to_thread(client.get_stock_snapshot, StockSnapshotRequest(symbol_or_symbols=["AAPL",
                                                                                                         "MSFT"]))
    assert snaps["AAPL"].latest_trade.price == 231.25
    assert snaps["MSFT"].latest_quote.bid_price < snaps["MSFT"].latest_quote.ask_price
    assert snaps["AAPL"].minute_bar.close == 231.25 and snaps["AAPL"].previous_daily_bar is not None
    latest = await asyncio.to_thread(client.get_stock_latest_trade,
                                     StockLatestTradeRequest(symbol_or_symbols="AAPL"))
    assert latest["AAPL"].price == 231.25
    for i in range(5):
        sim.inject_trade("TSLA", 250 + i, 1)
    trades = await asyncio.to_thread(client.get_stock_trades,
                                     StockTradesRequest(symbol_or_symbols=["TSLA", "AAPL"], limit=4))
    assert [t.price for t in trades.data["AAPL"]] == [231.25]
    assert [t.price for t in trades.data["TSLA"]] == [250, 251, 252]


async def test_rest_shapes_and_auth(sim):
    base = sim.http_url
    status, body = await asyncio.to_thread(http_get, base + "/v2/account")
    assert (status, body) == (401, {"code": 40110000, "message": "request is not authorized"})
    status, body = await asyncio.to_thread(http_get, base + "/v2/account",
                                           {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": "x"})
    assert status == 403
    hdr = {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}
    for i in range(3):
        sim.inject_trade("AAPL", 200 + i, 1)
    status, page = await asyncio.to_thread(http_get, base + "/v2/stocks/trades?symbols=AAPL&limit=2", hdr)
    assert status == 200 and len(page["trades"]["AAPL"]) == 2 and page["next_page_token"]
    assert set(page["trades"]["AAPL"][0]) == {"t", "x", "p", "s", "c", "i", "z"}
    status, rest = await asyncio.to_thread(
        http_get, base + f"/v2/stocks/trades?symbols=AAPL&limit=2&page_token={page['next_page_token']}", hdr)
    assert [t["p"] for t in rest["trades"]["AAPL"]] == [202] and rest["next_page_token"] is None
    status, snaps = await asyncio.to_thread(http_get, base + "/v2/stocks/snapshots?symbols=AAPL", hdr)
    assert set(snaps["AAPL"]) == {"latestTrade", "latestQuote", "minuteBar", "dailyBar", "prevDailyBar"}
    status, body = await asyncio.to_thread(http_get, base + "/v2/orders/nope", hdr)
    assert status == 404


# -- HTTP control ------------------------------------------------------------------------------------


async def test_http_control_endpoints(sim):
    ws = await open_data(sim)
    await request(ws, {"action": "subscribe", "trades": ["AAPL"]})
    trade = await sim_get(sim, "/_sim/trade?symbol=AAPL&price=1.5&size=10")
    assert trade["p"] == 1.5 and trade["s"] == 10 and await recv(ws) == [trade]
    trading = await open_trading(sim)
    order = await sim_get(sim, "/_sim/order?symbol=AAPL&side=buy&qty=10")
    assert (await recv(trading))["data"]["order"]["id"] == order["id"]
    filled = await sim_get(sim, f"/_sim/fill?order_id={order['id']}&qty=4&price=2")
    assert filled["status"] == "partially_filled"
    assert (await recv(trading))["data"]["event"] == "partial_fill"
    assert (await sim_get(sim, f"/_sim/cancel?order_id={order['id']}"))["status"] == "canceled"
    state = await sim_get(sim, "/_sim/state")
    assert state["connections"] == {IEX: 1, "/stream": 1} and state["sessions"][IEX] == 1
    assert state["subscriptions"][IEX]["trades"] == ["AAPL"]
    received = await sim_get(sim, f"/_sim/received?path={IEX}")
    assert [r["message"] for r in received][-1] == {"action": "subscribe", "trades": ["AAPL"]}
    await sim_get(sim, "/_sim/clear_received")
    assert sim.received == []
    await sim_get(sim, "/_sim/mute?on=1")
    sim.inject_trade("AAPL")
    await no_message(ws)
    await sim_get(sim, "/_sim/mute?on=0")
    await sim_get(sim, "/_sim/rate?per_symbol=3")
    assert sim.rate_per_symbol == 3
    await sim_get(sim, "/_sim/rate?per_symbol=0")
    await sim_get(sim, "/_sim/fail_auth?code=409&times=1")
    second = await open_data(sim, key=None)
    assert (await request(second, {"action": "auth", "key": OTHER, "secret": OTHER_SECRET}))[0]["code"] == 409
    await sim_get(sim, "/_sim/reject_handshakes?status=503&times=1")
    with pytest.raises(InvalidStatus) as err:
        await connect(sim.ws_url + IEX)
    assert err.value.response.status_code == 503
    await sim_get(sim, "/_sim/cut")
    with pytest.raises(ConnectionClosedError):  # trades generated while the rate was 3/s may still be queued
        while True:
            await asyncio.wait_for(ws.recv(), 2)
    status, body = await asyncio.to_thread(http_get, sim.http_url + "/_sim/fill?order_id=nope")
    assert status == 400 and "not found" in body["error"]


# -- alpaca-py's own streams --------------------------------------------------------------------------


async def test_alpaca_py_stock_stream_receives_trades_and_holds_the_slot(sim):
    async with stock_stream(sim.ws_url + IEX, KEY, SECRET, "AAPL") as (_, got):
        await eventually(lambda: sim.subscriptions(IEX)["trades"] == ["AAPL"])
        assert sim.received_on(IEX)[0] == {"action": "auth", "key": KEY, "secret": SECRET}
        sim.inject_trade("AAPL", 231.57, 100)
        trade = await asyncio.wait_for(got.get(), 5)
        assert isinstance(trade, Trade) and trade.symbol == "AAPL" and trade.price == 231.57
        assert trade.size == 100 and trade.exchange == "V"
        intruder = await open_data(sim, key=None)
        assert await request(intruder, {"action": "auth", "key": KEY, "secret": SECRET}) == [
            {"T": "error", "code": 406, "msg": "connection limit exceeded"}]


async def test_alpaca_py_trading_stream_receives_fill(sim):
    async with trading_stream(sim.ws_url + "/stream", KEY, SECRET) as got:
        await eventually(lambda: any(c.streams for c in sim._conns.values()))
        order = sim.submit_order("NVDA", "buy", 3, "limit", 135)
        sim.fill_order(order["id"])
        new, fill = await asyncio.wait_for(got.get(), 5), await asyncio.wait_for(got.get(), 5)
        assert isinstance(fill, TradeUpdate) and new.event == "new" and fill.event == "fill"
        assert str(fill.order.id) == order["id"] and fill.qty == 3 and fill.price == 135
        assert fill.position_qty == 3 and fill.execution_id is not None


async def test_throughput_one_client():
    """The generator sustains a high message rate to one client (the benchmark's use)."""
    async with Simulator(config(rate_per_symbol=1000.0, quote_ratio=1.0, tick_interval=0.02)) as sim:
        ws = await open_data(sim, compression=None)
        await request(ws, {"action": "subscribe", "trades": ["*"], "quotes": ["*"]})
        count = 0
        while count < 10_000:  # at 1,000 per symbol a second this takes about a second; no rate is asserted here
            count += len(await recv(ws))


async def test_unknown_stream_path_is_404_at_handshake(sim):
    with pytest.raises(InvalidStatus) as err:
        await connect(sim.ws_url + "/v2/nasdaq")
    assert err.value.response.status_code == 404


async def test_inject_raw_on_trading_stream_and_more_http_controls(sim):
    trading = await open_trading(sim)
    sim.inject_raw("/stream", [{"stream": "trade_updates", "data": {"event": "odd"}}, {"stream": "x"}])
    assert await recv(trading) == {"stream": "trade_updates", "data": {"event": "odd"}}
    assert await recv(trading) == {"stream": "x"}
    data = await open_data(sim)
    await request(data, {"action": "subscribe", "quotes": ["AAPL"], "updatedBars": ["AAPL"]})
    quote = await sim_get(sim, "/_sim/quote?symbol=AAPL&bid=10.01&ask=10.03&bs=300")
    assert (quote["bp"], quote["ap"], quote["bs"]) == (10.01, 10.03, 300) and await recv(data) == [quote]
    bar = await sim_get(sim, "/_sim/bar?symbol=AAPL&kind=u&o=1&h=2&l=1&c=2&v=10")
    assert bar["T"] == "u" and await recv(data) == [bar]
    order = await sim_get(sim, "/_sim/order?symbol=AAPL&side=sell&qty=2&type=limit&limit_price=300")
    new = await sim_get(sim, f"/_sim/replace?order_id={order['id']}&qty=1")
    assert new["replaces"] == order["id"] and new["limit_price"] == "300"
    await sim_get(sim, f"/_sim/event?order_id={new['id']}&event=pending_cancel")
    events = [(await recv(trading))["data"]["event"] for _ in range(4)]
    assert events == ["new", "replaced", "new", "pending_cancel"]
    plan = await sim_get(sim, f"/_sim/plan?key={OTHER}&feeds=iex&symbol_limit=1")
    assert plan == {"feeds": ["iex"], "symbol_limit": 1, "max_connections": 1, "wildcard": False}
    other = await open_data(sim, key=OTHER, secret=OTHER_SECRET)
    assert (await request(other, {"action": "subscribe", "trades": ["A", "B"]}))[0]["code"] == 405
    await sim_get(sim, "/_sim/read_delay?seconds=0.05")
    assert sim.state()["read_delay"] == 0.05


async def test_a_late_tick_catches_up_a_bounded_time_not_the_whole_delay():
    """A loop blocked for 2 s (a busy machine) is followed by at most a quarter second of trades, not 2 s of them
    in one burst that would make the next tick later still."""
    async with Simulator(config(rate_per_symbol=1000.0, tick_interval=0.02)) as sim:
        ws = await open_data(sim, compression=None)
        await request(ws, {"action": "subscribe", "trades": ["AAPL"]})
        await recv(ws)  # ticking
        await asyncio.sleep(0.1)
        while True:  # drain what is queued, up to a quiet moment between ticks
            try:
                await asyncio.wait_for(ws.recv(), 0.005)
            except TimeoutError:
                break
        time.sleep(2.0)  # noqa: ASYNC251 - blocking the loop the simulator runs on is the point
        burst = await recv(ws)
        assert 0 < len(burst) <= 400, len(burst)  # 0.25 s at 1,000/s, with room for the rate's randomness
