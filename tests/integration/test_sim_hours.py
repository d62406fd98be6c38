"""The simulator keeps US market hours at its (pinned) clock: what the stock feeds send before the open, overnight
and on a holiday, crypto around the clock, the day a weekend shows, the same day after a restart, and made-up
tickers unknown as at Alpaca. Every test pins the clock, so it passes at any real hour."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import urllib.request
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.integration.test_simulator import open_data, recv, request
from tests.support.clocks import HOLIDAY, OPEN, OVERNIGHT, PRE, WEEKEND
from tests.support.relay import KEY, SECRET
from trade_stream.simulator import SimConfig, Simulator
from trade_stream.simulator.clock import Clock
from trade_stream.simulator.config import KNOWN_SYMBOLS
from trade_stream.simulator.market import NEW_YORK, parse_ts
from trade_stream.simulator.units import NS

pytestmark = pytest.mark.timeout(30)
HEADERS = {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}
CRYPTO = "/v1beta3/crypto/us"


def _get(url: str) -> Any:
    with urllib.request.urlopen(urllib.request.Request(url, headers=HEADERS), timeout=5) as r:
        return json.loads(r.read())


async def get(url: str) -> Any:
    return await asyncio.to_thread(_get, url)  # the simulator runs on this loop


def sim_at(instant: datetime, **overrides: Any) -> Simulator:
    base: dict[str, Any] = {"accounts": {KEY: SECRET}, "rate_per_symbol": 100.0, "tick_interval": 0.02,
                            "ping_interval": None, "clock": Clock.starting_at(instant)}
    return Simulator(SimConfig(**{**base, **overrides}))


async def collect(sim: Simulator, stock_symbols: list[str], crypto_trades: int, stock_trades: int = 0,
                  ) -> tuple[list[dict], list[dict]]:
    """Subscribe stocks on iex and BTC/USD on crypto; read until ``crypto_trades`` crypto trades (and
    ``stock_trades`` stock ones) came; returns (stock messages, crypto trades)."""
    stocks, crypto = await open_data(sim), await open_data(sim, CRYPTO)
    await request(stocks, {"action": "subscribe", "trades": stock_symbols, "quotes": stock_symbols})
    await request(crypto, {"action": "subscribe", "trades": ["BTC/USD"]})
    got_stocks: list[dict] = []
    got_crypto: list[dict] = []
    enough = asyncio.Event()

    async def read(ws: Any, into: list[dict]) -> None:
        while True:
            try:
                into.extend(await recv(ws, 1.0))
            except TimeoutError:
                continue
            if len(got_crypto) >= crypto_trades and sum(m["T"] == "t" for m in got_stocks) >= stock_trades:
                enough.set()

    readers = [asyncio.create_task(read(stocks, got_stocks)), asyncio.create_task(read(crypto, got_crypto))]
    try:
        await enough.wait()
    finally:
        for task in readers:
            task.cancel()
        await stocks.close()
        await crypto.close()
    return got_stocks, got_crypto


@pytest.mark.parametrize("instant", [OVERNIGHT, HOLIDAY, WEEKEND], ids=["overnight", "holiday", "weekend"])
async def test_stock_feeds_are_silent_when_the_market_is_closed_and_crypto_trades(instant):
    async with sim_at(instant) as sim:
        stocks, crypto = await collect(sim, ["AAPL", "SPY"], crypto_trades=100)
        assert stocks == [] and len(crypto) >= 100
        clock = await get(f"{sim.http_url}/v2/clock")
        assert clock["is_open"] is False and parse_ts(clock["next_open"].replace("-05:00", "Z")) > sim.clock()


async def test_before_the_open_stocks_trade_sparsely_as_extended_hours_trades():
    async with sim_at(PRE) as sim:
        stocks, crypto = await collect(sim, ["AAPL"], crypto_trades=0, stock_trades=20)
        trades = [m for m in stocks if m["T"] == "t"]
        assert all("T" in t["c"] and t["s"] <= 200 for t in trades)  # Form T, small sizes
        assert len(crypto) > len(trades)  # a tenth of the regular rate: crypto outpaces them
        assert all(datetime.fromtimestamp(parse_ts(t["t"]) / NS, NEW_YORK).hour == 7 for t in trades)


async def test_in_the_session_a_live_trade_continues_the_synthesized_day():
    async with sim_at(OPEN, rate_per_symbol=0.0, intraday_history=True) as sim:
        before = (await get(f"{sim.http_url}/v2/stocks/snapshots?symbols=AAPL"))["AAPL"]["dailyBar"]
        sim.inject_trade("AAPL", price=before["h"] + 1, size=500)
        after = (await get(f"{sim.http_url}/v2/stocks/snapshots?symbols=AAPL"))["AAPL"]["dailyBar"]
        assert after["v"] == before["v"] + 500 and after["h"] == before["h"] + 1 and after["t"] == before["t"]
        assert after["l"] == before["l"] and after["o"] == before["o"] and after["n"] == before["n"] + 1


async def test_a_weekend_shows_the_last_session_and_a_restart_shows_the_same_day():
    """No seed: the day is seeded by its date. Saturday after Thanksgiving shows Friday, which closed at 13:00."""
    days = []
    for _ in range(2):
        async with sim_at(WEEKEND, rate_per_symbol=0.0, intraday_history=True) as sim:
            query = urllib.parse.urlencode({"symbols": "SPY", "timeframe": "1Min", "start": "2026-11-27",
                                            "limit": 10_000})
            bars = (await get(f"{sim.http_url}/v2/stocks/bars?{query}"))["bars"]["SPY"]
            days.append((bars, (await get(f"{sim.http_url}/v2/stocks/snapshots?symbols=SPY"))["SPY"]))
    (bars, snap), (again, snap_again) = days
    first, last = (datetime.fromtimestamp(parse_ts(b["t"]) / NS, NEW_YORK) for b in (bars[0], bars[-1]))
    assert (first.date().isoformat(), first.hour, first.minute) == ("2026-11-27", 9, 30)
    assert (last.hour, last.minute, len(bars)) == (12, 59, 210)
    assert again == bars and snap_again["dailyBar"] == snap["dailyBar"] and snap["dailyBar"]["t"].startswith(
        "2026-11-27")


async def test_a_made_up_ticker_is_unknown_as_at_alpaca():
    """With the demo's universe: the subscription is accepted and sends nothing, snapshots and latest trades leave
    it out, its bars are empty; a listed symbol in the same request has its day."""
    async with sim_at(OPEN, intraday_history=True, universe=KNOWN_SYMBOLS) as sim:
        stocks, _ = await collect(sim, ["AAPL", "ZZZZQ"], crypto_trades=0, stock_trades=30)
        assert {m["S"] for m in stocks} == {"AAPL"}
        assert list(await get(f"{sim.http_url}/v2/stocks/snapshots?symbols=AAPL,ZZZZQ")) == ["AAPL"]
        assert list((await get(f"{sim.http_url}/v2/stocks/trades/latest?symbols=ZZZZQ"))["trades"]) == []
        query = urllib.parse.urlencode({"symbols": "AAPL,ZZZZQ", "timeframe": "1Min", "start": "2026-11-24"})
        assert list((await get(f"{sim.http_url}/v2/stocks/bars?{query}"))["bars"]) == ["AAPL"]


async def test_bars_are_picked_by_their_minute_as_at_alpaca():
    """``end`` inside a minute keeps that minute's bar whole: Alpaca filters bars by their timestamp (the window's
    start), not the trades in them. Trades at 10:30:00 and 10:30:40; end=10:30:20 returns the bar of both, and
    start=10:30:20 none (the bar starts before it)."""
    clock = Clock.frozen_at(OPEN)
    async with sim_at(OPEN, rate_per_symbol=0.0, clock=clock) as sim:
        sim.inject_trade("IBM", price=100.0, size=100)
        clock.set(OPEN + timedelta(seconds=40))
        sim.inject_trade("IBM", price=101.0, size=100)
        query = urllib.parse.urlencode({"symbols": "IBM", "timeframe": "1Min", "start": "2026-11-24T15:00:00Z",
                                        "end": "2026-11-24T15:30:20Z"})
        [bar] = (await get(f"{sim.http_url}/v2/stocks/bars?{query}"))["bars"]["IBM"]
        assert (bar["t"], bar["o"], bar["c"], bar["v"], bar["n"]) == ("2026-11-24T15:30:00Z", 100.0, 101.0, 200, 2)
        query = urllib.parse.urlencode({"symbols": "IBM", "timeframe": "1Min", "start": "2026-11-24T15:30:20Z"})
        assert (await get(f"{sim.http_url}/v2/stocks/bars?{query}"))["bars"] == {}
