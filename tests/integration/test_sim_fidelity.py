"""The simulator is as strict and as rich as Alpaca: trading-stream shapes and limits, the Go SDK's subscribe,
msgpack time fields, daily-bar times, and the message types Alpaca sends without being asked."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import msgpack
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.integration.test_simulator import (
    IEX,
    KEY,
    OTHER,
    OTHER_SECRET,
    SECRET,
    config,
    open_data,
    open_trading,
    recv,
    request,
)
from trade_stream.simulator import Simulator, protocol
from trade_stream.simulator.market import Market, parse_ts
from trade_stream.simulator.units import MINUTE_NS, NS

pytestmark = pytest.mark.timeout(20)
ULID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
GO_SDK_CHANNELS = ("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "imbalances", "lulds",
                   "orderbooks", "news", "pricing")


@pytest.fixture
async def sim():
    async with Simulator(config()) as s:
        yield s


async def open_msgpack(sim: Simulator) -> ClientConnection:
    ws = await connect(sim.ws_url + IEX, additional_headers={"Content-Type": "application/msgpack"})
    assert msgpack.unpackb(await ws.recv()) == [{"T": "success", "msg": "connected"}]
    await ws.send(msgpack.packb({"action": "auth", "key": KEY, "secret": SECRET}))
    assert msgpack.unpackb(await ws.recv()) == [{"T": "success", "msg": "authenticated"}]
    return ws


async def mp_request(ws: ClientConnection, msg: object) -> object:
    await ws.send(msgpack.packb(msg))
    return msgpack.unpackb(await asyncio.wait_for(ws.recv(), 2))


# --- 2 and 9: the Go SDK's subscribe; strict where Alpaca is strict --------------------------------------------


async def test_go_sdk_subscribe_nil_keys_accepted_and_strictness(sim):
    ws = await open_msgpack(sim)
    go = {"action": "subscribe", **dict.fromkeys(GO_SDK_CHANNELS), "trades": ["AAPL"], "lulds": ["MSFT"]}
    reply = await mp_request(ws, go)
    assert reply[0]["T"] == "subscription" and reply[0]["trades"] == ["AAPL"] and reply[0]["lulds"] == ["MSFT"]
    assert await mp_request(ws, {"action": "subscribe", "news": ["AAPL"]}) == [protocol.error(410)]
    assert await mp_request(ws, {"action": "subscribe"}) == [protocol.error(400)]
    await ws.send('{"action":"subscribe","trades":["TSLA"]}')  # JSON text on a msgpack session
    assert msgpack.unpackb(await ws.recv()) == [protocol.error(400)]
    assert sim.subscriptions(IEX)["trades"] == ["AAPL"]


# --- 4, 6 and the auth timeout on the trading stream ------------------------------------------------------------


async def test_trading_stream_error_shape(sim):
    ws = await connect(sim.ws_url + "/stream")
    assert await request(ws, {"action": "dance"}) == {"action": "error", "data": {"error_message": "invalid syntax"}}


async def test_second_trading_session_of_an_account_is_refused_until_the_first_leaves(sim):
    first = await open_trading(sim)
    second = await connect(sim.ws_url + "/stream")
    auth = {"action": "auth", "key": KEY, "secret": SECRET}
    assert await request(second, auth) == {"stream": "authorization",
                                           "data": {"status": "unauthorized", "action": "authenticate"}}
    other = await connect(sim.ws_url + "/stream")  # another account is not affected
    assert (await request(other, {"action": "auth", "key": OTHER, "secret": OTHER_SECRET}))["data"]["status"] == \
        "authorized"
    await first.close()
    deadline = time.monotonic() + 3
    while sim.sessions("/stream", key=KEY):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    assert (await request(second, auth))["data"]["status"] == "authorized"  # a retry on the same socket works


async def test_auth_timeouts_close_both_streams_with_one_code():
    async with Simulator(config(auth_timeout=0.3)) as sim:
        data = await open_data(sim, key=None)
        trading = await connect(sim.ws_url + "/stream")
        assert await recv(data) == [protocol.error(404)]
        for ws in (data, trading):
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 3)
            assert ws.close_code == protocol.AUTH_TIMEOUT_CLOSE


# --- 5: trade_updates carry at and event_id; orders carry cancel_requested_at -----------------------------------


async def test_trade_updates_carry_at_event_id_and_cancel_requested_at(sim):
    ws = await open_trading(sim)
    order = sim.submit_order("AAPL", "buy", 2, "limit", 1.0)
    sim.cancel_order(order["id"])
    new, canceled = (await recv(ws))["data"], (await recv(ws))["data"]
    for event in (new, canceled):
        assert ULID.fullmatch(event["event_id"]) and parse_ts(event["at"]) > 0
    assert new["event_id"] < canceled["event_id"]  # ULIDs sort by time
    assert new["order"]["cancel_requested_at"] is None
    assert canceled["order"]["cancel_requested_at"] is not None and canceled["order"]["canceled_at"] is not None


# --- 7: msgpack time fields --------------------------------------------------------------------------------------


async def test_msgpack_sends_r_as_a_timestamp(sim):
    ws = await open_msgpack(sim)
    await mp_request(ws, {"action": "subscribe", "trades": ["AAPL"]})
    sent = sim.inject_trade("AAPL", 5.0, r="2024-01-03T14:30:00.5Z")
    [got] = msgpack.unpackb(await asyncio.wait_for(ws.recv(), 2))
    assert got["r"] == msgpack.Timestamp(1704292200, 500_000_000)
    assert got["t"].to_unix_nano() == parse_ts(sent["t"])


# --- 10: daily bars start at midnight New York time ---------------------------------------------------------------


async def test_injected_daily_bar_starts_at_midnight_new_york(sim):
    ws = await open_data(sim)
    await request(ws, {"action": "subscribe", "dailyBars": ["AAPL"]})
    bar = sim.inject_bar("AAPL", kind="d")
    [got] = await recv(ws)
    assert got == bar
    start = datetime.fromtimestamp(parse_ts(bar["t"]) / 1e9, ZoneInfo("America/New_York"))
    assert (start.hour, start.minute, start.second) == (0, 0, 0) and start.date() == sim.clock.now().date()


# --- 10: what Alpaca sends unasked ---------------------------------------------------------------------------------


async def collect(ws: ClientConnection, kinds: set[str], timeout: float = 8.0) -> dict[str, dict]:
    """The first message of each type in ``kinds``."""
    got: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    while set(got) != kinds:
        assert time.monotonic() < deadline, f"only {sorted(got)} of {sorted(kinds)}"
        for m in await recv(ws, deadline - time.monotonic()):
            if m["T"] in kinds:
                got.setdefault(m["T"], m)
    return got


async def test_generator_sends_statuses_lulds_corrections_and_cancels():
    cfg = config(rate_per_symbol=50.0, correction_rate=0.05, cancel_error_rate=0.05, halt_rate=0.5,
                 halt_seconds=0.2, luld_interval=0.5)
    async with Simulator(cfg) as sim:
        ws = await open_data(sim)
        await request(ws, {"action": "subscribe", "trades": ["AAPL"], "statuses": ["AAPL"], "lulds": ["AAPL"]})
        got = await collect(ws, {"s", "l", "c", "x"})
    s, lu, c, x = got["s"], got["l"], got["c"], got["x"]
    assert s["S"] == "AAPL" and s["sc"] and "sm" in s and "rc" in s and "rm" in s and s["z"] == "C"
    assert lu["u"] > lu["d"] > 0 and lu["i"] and lu["z"] == "C"
    assert {"oi", "op", "os", "oc", "ci", "cp", "cs", "cc", "x", "t", "z"} <= set(c)
    assert x["a"] in ("C", "E") and {"i", "x", "p", "s", "t", "z"} <= set(x)


def test_a_late_trade_updates_the_closed_bar_and_an_updated_bar_follows_the_half_minute():
    market = Market(seed=3)
    minute = 1_704_292_200 * NS  # 2024-01-03T14:30:00Z
    market.trade("AAPL", price=10.0, size=100, ns=minute + 5 * NS)
    market.trade("AAPL", price=11.0, size=100, ns=minute + MINUTE_NS + NS)  # closes the 14:30 bar
    assert market.updated_bars(["AAPL"], minute + MINUTE_NS + 31 * NS) == []  # nothing late yet
    late = market.late_trade("AAPL", "iex", minute + MINUTE_NS + 2 * NS)
    assert late is not None and minute < late[1] < minute + MINUTE_NS
    assert market.updated_bars(["AAPL"], minute + MINUTE_NS + 29 * NS) == []  # before the half-minute mark
    [(bar, start)] = market.updated_bars(["AAPL"], minute + MINUTE_NS + 30 * NS)
    assert start == minute and bar["T"] == "u" and bar["t"] == "2024-01-03T14:30:00Z" and bar["n"] == 2
    assert bar["v"] == 100 + late[0]["s"]
    assert market.updated_bars(["AAPL"], minute + MINUTE_NS + 40 * NS) == []  # sent once
