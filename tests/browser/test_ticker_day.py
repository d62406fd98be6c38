"""The page's day statistics across the start of a session, in Chromium, on the page's own Ticker module.

Before a session's first trade, Alpaca's snapshot still carries the last session's daily bar. The first trade of
a later New York day starts that day from nothing but the previous close; a snapshot of an earlier day than the
trades seen never adds its volume to theirs; within one day the statistics only grow.
"""

from __future__ import annotations

import pytest

from tests.browser.helpers import BROWSER_LOOP, static_server

pytestmark = [pytest.mark.browser, BROWSER_LOOP, pytest.mark.timeout(60)]

YESTERDAY = {"open": 224.0, "high": 227.5, "low": 223.1, "close": 225.0, "volume": 4_840_000, "vwap": 225.1,
             "timestamp": "2026-11-30T05:00:00Z"}
TODAY_0700 = "2026-12-01T12:00:00Z"  # 07:00 New York: pre-market
TODAY_0701 = "2026-12-01T12:01:00Z"

SCRIPT = """async ([steps]) => {
  const { Ticker } = await import('/js/ticker.js');
  const t = new Ticker('AAPL');
  const seen = [];
  for (const [kind, arg] of steps) {
    if (kind === 'snapshot') t.snapshot(arg);
    else t.trades(arg);
    seen.push({ volume: t.volume, open: t.open, high: t.high, low: t.low, vwap: t.vwap, reference: t.reference,
                prevClose: t.prevClose, last: t.last });
  }
  return seen;
}"""


def snapshot(daily, prev_close=221.0, price=225.0):
    return ["snapshot", {"latest_trade": {"price": price, "timestamp": "2026-11-30T20:59:59Z"},
                         "prev_close": prev_close, "daily": daily, "latest_quote": None}]


def trade(price, size, at):
    return ["trades", [{"price": price, "size": size, "timestamp": at}]]


async def run(watch, steps):
    with static_server() as port:
        await watch.page.goto(f"http://127.0.0.1:{port}/no-such-page")
        return await watch.page.evaluate(SCRIPT, [steps])


async def test_a_pre_market_trade_after_the_last_sessions_snapshot_starts_a_new_day(watch):
    seen = await run(watch, [snapshot(YESTERDAY), trade(226.0, 100, TODAY_0700), trade(226.5, 50, TODAY_0701)])
    assert seen[0]["volume"] == 4_840_000 and seen[0]["reference"] == 221.0  # the last session, before today
    day = seen[1]
    assert day["volume"] == 100 and day["open"] == 226.0 and day["high"] == day["low"] == 226.0
    assert day["vwap"] == 226.0
    assert day["reference"] == day["prevClose"] == 225.0  # change is against the last session's close
    assert seen[2]["volume"] == 150 and seen[2]["high"] == 226.5 and seen[2]["low"] == 226.0


async def test_a_last_session_snapshot_arriving_after_todays_trades_adds_nothing(watch):
    seen = await run(watch, [trade(226.0, 100, TODAY_0700), snapshot(YESTERDAY)])
    after = seen[1]
    assert after["volume"] == 100 and after["high"] == after["low"] == 226.0
    assert after["reference"] == after["prevClose"] == 225.0  # the stale bar's close, not the day before's
    assert after["last"] == 226.0


async def test_within_one_day_the_statistics_never_shrink(watch):
    today = {**YESTERDAY, "timestamp": "2026-12-01T05:00:00Z", "volume": 1_000_000, "high": 230.0, "low": 224.0}
    seen = await run(watch, [trade(226.0, 100, TODAY_0700), snapshot(today), trade(231.0, 10, TODAY_0701)])
    assert seen[1]["volume"] == 1_000_000 and seen[1]["high"] == 230.0  # the day's bar covers the early trades
    assert seen[2]["volume"] == 1_000_010 and seen[2]["high"] == 231.0 and seen[2]["low"] == 224.0
    assert seen[2]["reference"] == 221.0
