"""A plausible day so far for a symbol the simulator has just met: one-minute bars, its daily bar, the day before.

Without it the bars REST knows only what the simulator traded since it started, so the page's chart shows one or
two candles and the sparkline is flat. The day is a random walk of one-minute log returns that ends exactly at the
symbol's current price (the walk is built, then shifted), so the live stream carries on from the last bar without
a jump. It looks like a trading day: volatility and volume are U-shaped over the session (busy open and close,
quiet lunch), each bar opens at the previous close, and its high and low wick out a little. Stocks cover the
regular session (9:30 New York time up to now, or the whole last session before the open, overnight, at weekends
and on holidays; 13:00 is the close on an early-close day); crypto trades around the clock and gets the last 6.5
hours.

Deterministic: the walk uses its own generator seeded by (seed, symbol, the session's date), never the market's, so
the live trades a seeded simulator streams are the same with or without a history, a symbol's day does not depend
on the order symbols were met in, and a restart on the same day (seeded or not) shows the same day again.
Cheap: at most 390 bars per symbol, built once.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime

from .calendar import NEW_YORK, last_regular_session
from .units import MINUTE_NS, NS, format_ts, new_york_midnight, round_price

SESSION_MINUTES = 390
#: Per-minute volatility of the log price in the quiet middle of the day (about 1.5 % a day for stocks).
STOCK_SIGMA, CRYPTO_SIGMA = 0.0007, 0.0006
#: Dollar volume per minute in the quiet middle of the day.
STOCK_DOLLARS, CRYPTO_DOLLARS = 2_000_000.0, 150_000.0


@dataclass
class Day:
    """The synthesized history: minute bars (start ns, Alpaca bar fields) oldest first, the daily bar of the New
    York day the last bar is in (its window start and fields, None if no bar falls in it), the previous day's bar."""

    bars: list[tuple[int, dict]]
    daily_start: int
    daily: dict | None
    prev_daily: dict


def session_window(now_ns: int) -> tuple[int, int, int]:
    """The regular session the history covers: the latest one that has opened by now (calendar.py: weekends,
    holidays and early closes included), from its open up to now or its close; and its length in minutes."""
    s = last_regular_session(datetime.fromtimestamp(now_ns / NS, NEW_YORK))
    start, close = int(s.open.timestamp()) * NS, int(s.close.timestamp()) * NS
    return start, min(close, now_ns - now_ns % MINUTE_NS), (close - start) // MINUTE_NS


def synthesize(symbol: str, price: float, now_ns: int, seed: int | None, crypto: bool) -> Day:
    if crypto:
        end = now_ns - now_ns % MINUTE_NS
        start, length = end - SESSION_MINUTES * MINUTE_NS, SESSION_MINUTES
    else:
        start, end, length = session_window(now_ns)
    # seeded by the day too, so the same day comes back after a restart, and another day is another walk
    day_of = datetime.fromtimestamp(start / NS, NEW_YORK).date().isoformat()
    rng = random.Random(f"{seed}/{symbol}/{day_of}")
    count = max(0, (end - start) // MINUTE_NS)
    sigma, dollars = (CRYPTO_SIGMA, CRYPTO_DOLLARS) if crypto else (STOCK_SIGMA, STOCK_DOLLARS)
    sigma *= rng.uniform(0.7, 1.4)  # some names are livelier than others
    drift = rng.gauss(0.0, 0.006) / length  # a mild trend for the day (about 0.6 % either way)

    def busy(k: int) -> float:
        """1 in the quiet middle, up to 3 at the open and about 2 at the close (stocks); flat for crypto."""
        if crypto:
            return 1.0
        x = k / length
        return 1.0 + 2.0 * math.exp(-x * 12) + 1.0 * math.exp(-(1 - x) * 15)

    # the walk: log closes, then shifted so the last close is the current price
    logs, x = [], 0.0
    for k in range(count):
        x += drift + rng.gauss(0.0, sigma * busy(k))
        logs.append(x)
    shift = math.log(price) - (logs[-1] if logs else 0.0)
    gap = rng.gauss(0.0, 0.006 if not crypto else sigma)
    prev_close = round_price(math.exp(shift - gap))  # the open gaps away from the previous close
    bars: list[tuple[int, dict]] = []
    last = prev_close
    for k, value in enumerate(logs):
        o, c = last, round_price(math.exp(value + shift))
        wick = sigma * busy(k) * 0.6
        h = max(o, c, round_price(max(o, c) * math.exp(abs(rng.gauss(0.0, wick)))))
        low = min(o, c, round_price(min(o, c) * math.exp(-abs(rng.gauss(0.0, wick)))))
        volume_usd = dollars * busy(k) * rng.lognormvariate(0.0, 0.5)
        v: float = round(volume_usd / c, 8) if crypto else max(1, int(volume_usd / c))
        n = max(1, int(volume_usd / (c * rng.uniform(80, 160)))) if not crypto else max(1, int(volume_usd / 2000))
        ns = start + k * MINUTE_NS
        bars.append((ns, {"t": format_ts(ns), "o": o, "h": h, "l": low, "c": c, "v": v, "n": n,
                          "vw": round((h + low + 2 * c) / 4, 6)}))
        last = c
    daily_start = new_york_midnight(bars[-1][0] if bars else now_ns)
    today = [b for ns, b in bars if ns >= daily_start]
    daily = _aggregate(today, daily_start) if today else None
    before = [b for ns, b in bars if ns < daily_start]
    prev_c = before[-1]["c"] if before else prev_close
    prev_o = round_price(prev_c * math.exp(rng.gauss(0.0, 0.01)))
    prev_volume = (sum(b["v"] for b in today) if today else dollars * 390 / price) * rng.uniform(0.7, 1.3)
    prev_daily = {"t": format_ts(new_york_midnight(daily_start - NS)), "o": prev_o,
                  "h": round_price(max(prev_o, prev_c) * (1 + abs(rng.gauss(0.0, 0.006)))),
                  "l": round_price(min(prev_o, prev_c) * (1 - abs(rng.gauss(0.0, 0.006)))), "c": prev_c,
                  "v": round(prev_volume, 8) if crypto else int(prev_volume),
                  "n": max(1, int(prev_volume * prev_c / (2000 if crypto else 12_000))),
                  "vw": round((prev_o + prev_c) / 2, 6)}
    return Day(bars, daily_start, daily, prev_daily)


def _aggregate(bars: list[dict], start_ns: int) -> dict:
    volume = sum(b["v"] for b in bars)
    pv = sum(b["vw"] * b["v"] for b in bars)
    return {"t": format_ts(start_ns), "o": bars[0]["o"], "h": max(b["h"] for b in bars),
            "l": min(b["l"] for b in bars), "c": bars[-1]["c"], "v": round(volume, 8) if isinstance(volume, float)
            else volume, "n": sum(b["n"] for b in bars), "vw": round(pv / volume, 6) if volume else bars[-1]["c"]}
