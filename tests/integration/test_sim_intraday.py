"""The simulator's synthesized day so far (simulator/intraday.py): the bars REST holds a real-looking session of
minute bars ending at the current price, consistent with the snapshot's daily and previous daily bars, then the
live bars; the live stream is the same with or without it."""

from __future__ import annotations

import asyncio
import itertools
import json
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support.clocks import OPEN
from tests.support.relay import KEY, SECRET
from trade_stream.simulator import SimConfig, Simulator
from trade_stream.simulator.clock import Clock
from trade_stream.simulator.intraday import synthesize
from trade_stream.simulator.market import NEW_YORK, Market, parse_ts
from trade_stream.simulator.units import MINUTE_NS, NS

pytestmark = pytest.mark.timeout(20)
HEADERS = {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}


def get(url: str) -> Any:
    with urllib.request.urlopen(urllib.request.Request(url, headers=HEADERS), timeout=5) as r:
        return json.loads(r.read())


async def bars(sim: Simulator, path: str, symbol: str) -> list[dict]:
    start = datetime.fromtimestamp(sim.clock() / NS - 2 * 86_400, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    query = urllib.parse.urlencode({"symbols": symbol, "timeframe": "1Min", "start": start, "limit": 10_000})
    return (await asyncio.to_thread(get, f"{sim.http_url}{path}?{query}"))["bars"][symbol]


def check_day(rows: list[dict], daily: dict, prev: dict, price: float) -> None:
    times = [parse_ts(b["t"]) for b in rows]
    assert times == list(range(times[0], times[0] + len(rows) * MINUTE_NS, MINUTE_NS))  # every minute, in order
    assert rows[-1]["c"] == price  # the walk ends at the current price
    assert all(b["l"] <= min(b["o"], b["c"]) <= max(b["o"], b["c"]) <= b["h"] and b["v"] > 0 for b in rows)
    assert all(a["c"] == b["o"] for a, b in itertools.pairwise(rows))  # each bar opens at the last close
    assert len({b["c"] for b in rows}) > len(rows) // 4  # it moves
    today = [b for b in rows if b["t"] >= daily["t"]]
    assert daily["o"] == today[0]["o"] and daily["c"] == price
    assert daily["h"] == max(b["h"] for b in today) and daily["l"] == min(b["l"] for b in today)
    assert daily["v"] == pytest.approx(sum(b["v"] for b in today))
    assert prev["t"] < daily["t"] and prev["l"] <= prev["c"] <= prev["h"]


async def test_seeded_simulator_serves_a_day_of_minute_bars_then_the_live_ones():
    config = SimConfig(host="127.0.0.1", port=0, accounts={KEY: SECRET}, rate_per_symbol=0.0, seed=7,
                       intraday_history=True, clock=Clock.starting_at(OPEN))
    async with Simulator(config) as sim:
        aapl = await bars(sim, "/v2/stocks/bars", "AAPL")
        snap = (await asyncio.to_thread(get, f"{sim.http_url}/v2/stocks/snapshots?symbols=AAPL"))["AAPL"]
        first = datetime.fromtimestamp(parse_ts(aapl[0]["t"]) / NS, NEW_YORK)
        assert (first.hour, first.minute) == (9, 30) and first.weekday() < 5 and len(aapl) <= 390
        check_day(aapl, snap["dailyBar"], snap["prevDailyBar"], 230.0)
        last = parse_ts(aapl[-1]["t"])  # the day's last trade, in its last minute; no live trade was invented
        assert snap["latestTrade"]["p"] == 230.0 and last <= parse_ts(snap["latestTrade"]["t"]) < last + MINUTE_NS
        assert snap["prevDailyBar"]["c"] == aapl[0]["o"]  # the session opened from the previous close (a gap)

        btc = await bars(sim, "/v1beta3/crypto/us/bars", "BTC/USD")
        crypto = (await asyncio.to_thread(get, f"{sim.http_url}/v1beta3/crypto/us/snapshots?symbols=BTC/USD"))
        assert len(btc) == 390  # 6.5 hours: crypto trades around the clock
        assert parse_ts(btc[-1]["t"]) >= (sim.clock() // MINUTE_NS - 2) * MINUTE_NS
        check_day(btc, crypto["snapshots"]["BTC/USD"]["dailyBar"], crypto["snapshots"]["BTC/USD"]["prevDailyBar"],
                  65000.0)

        sim.inject_trade("AAPL", price=231.0, size=500)  # live bars follow the history
        after = await bars(sim, "/v2/stocks/bars", "AAPL")
        assert after[: len(aapl)] == aapl and after[-1]["c"] == 231.0 and after[-1]["v"] == 500
        daily = (await asyncio.to_thread(get, f"{sim.http_url}/v2/stocks/snapshots?symbols=AAPL"))["AAPL"]["dailyBar"]
        assert daily["c"] == 231.0 and daily["v"] == snap["dailyBar"]["v"] + 500 and daily["o"] == aapl[0]["o"]


def test_the_day_is_deterministic_and_leaves_the_live_stream_alone():
    now = 1_795_459_380 * NS  # a Monday, 13:43 New York time
    assert synthesize("AAPL", 230.0, now, 7, False) == synthesize("AAPL", 230.0, now, 7, False)
    assert synthesize("AAPL", 230.0, now, 7, False) != synthesize("AAPL", 230.0, now, 8, False)
    assert len(synthesize("AAPL", 230.0, now, 7, False).bars) == 253  # 9:30 to 13:42
    # Saturday after Thanksgiving: Friday's session, which closed early at 13:00
    assert len(synthesize("AAPL", 230.0, now + 5 * 86_400 * NS, 7, False).bars) == 210
    # the order symbols are met in does not change their day; the market's own generator is untouched
    a, b = Market(7, intraday=True), Market(7, intraday=True)
    a.state("MSFT"), a.state("AAPL"), b.state("AAPL")
    assert [x[1]["c"] for x in a.state("AAPL").intraday][:-1] == [x[1]["c"] for x in b.state("AAPL").intraday][:-1]
    plain = Market(7)
    for market in (a, plain):
        market.state("MSFT")
    assert [a.trade("MSFT", ns=now)[0] for _ in range(20)] == [plain.trade("MSFT", ns=now)[0] for _ in range(20)]
