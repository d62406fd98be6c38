"""``trade-stream bench alerts``: what evaluating one live trade costs with many armed price alerts.

In process, pure: ``Book.on_trade`` (core/alerts.py), the call the alert tap makes for each trade, with N armed
alerts spread evenly over S symbols (by default the issue's 10,000 over 500): per symbol, crossing levels above
and below its price and percent_change thresholds either side of its previous close, spaced as people set them
(a few percent away). Trades follow a random walk of each symbol, one symbol after another; an alert that fires
is armed again at once, outside the timed call, a few percent from the price on its side (as a person sets the
next one), so the book stays at N. Reported: the median and p99 of the wall
time of one call, the alerts fired per trade, and with ``--compare`` the same trades against a plain scan of
every alert of the traded symbol, which is what the index saves.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from dataclasses import replace
from typing import Any

from trade_stream.bench import report
from trade_stream.core.alerts import ARMED, Alert, Book

CONDITIONS = ("crosses_above", "crosses_below", "percent_change")


def build(alerts: int, symbols: int, seed: int) -> tuple[Book, dict[str, float], random.Random]:
    rng = random.Random(seed)
    book, prices = Book(), dict[str, float]()
    names = [f"S{i:04d}" for i in range(symbols)]
    for i in range(alerts):
        symbol = names[i % symbols]
        price = prices.setdefault(symbol, round(rng.uniform(10, 500), 2))
        condition = CONDITIONS[i % len(CONDITIONS)]
        away = rng.uniform(0.002, 0.05)
        if condition == "percent_change":
            value = round(rng.choice((-1, 1)) * away * 100, 2) or 1.0
        else:
            value = round(price * (1 + away if rng.random() < 0.5 else 1 - away), 2)
        book.add(Alert(id=f"a{i}", user=f"u{i % 1000}", symbol=symbol, condition=condition, value=value))
    for symbol, price in prices.items():
        book.reference(symbol, price, price)
    return book, prices, rng


def level(alert: Alert, price: float, prev_close: float, away: float) -> float:
    """A new number for ``alert``'s condition, ``away`` (a fraction) from ``price`` on its side."""
    if alert.condition == "crosses_above":
        return round(price * (1 + away), 2)
    if alert.condition == "crosses_below":
        return round(price * (1 - away), 2)
    change = (price / prev_close - 1) * 100
    if alert.value < 0:
        return round(min(change, 0.0) - away * 100, 2)
    return round(max(change, 0.0) + away * 100, 2)


def scan(book: Book, symbol: str, last: float, price: float) -> int:
    """What evaluation costs without the index: every alert of the symbol compared with the trade."""
    hits = 0
    prev = book.symbols[symbol].prev_close or price
    for a in book.alerts.values():
        if a.symbol != symbol:
            continue
        if a.condition == "crosses_above":
            hits += last < a.value <= price
        elif a.condition == "crosses_below":
            hits += price <= a.value < last
        else:
            level = prev * (1 + a.value / 100)
            hits += price <= level if a.value < 0 else price >= level
    return hits


def run(alerts: int, symbols: int, trades: int, compare: bool, seed: int = 7) -> dict[str, Any]:
    book, prices, rng = build(alerts, symbols, seed)
    by_symbol: dict[str, list[Alert]] = {}
    for a in book.alerts.values():
        by_symbol.setdefault(a.symbol, []).append(a)
    names = sorted(prices)
    times, fired = [], 0
    plain: list[int] = []
    for n in range(trades):
        symbol = names[n % len(names)]
        last = prices[symbol]
        price = prices[symbol] = round(max(0.01, last * (1 + rng.gauss(0, 0.002))), 2)
        if compare:
            start = time.perf_counter_ns()
            scan(book, symbol, last, price)
            plain.append(time.perf_counter_ns() - start)
        start = time.perf_counter_ns()
        hits = book.on_trade(symbol, price, 100, None)
        times.append(time.perf_counter_ns() - start)
        fired += len(hits)
        for f in hits:  # armed again, untimed, as a person sets a new one: a few percent from the price
            value = level(f.alert, price, book.symbols[symbol].prev_close or price, rng.uniform(0.002, 0.05))
            book.add(replace(f.alert, value=value, state=ARMED, trade=None, message=None, triggered_at=None))
    assert len(book) == alerts
    out: dict[str, Any] = {"alerts": alerts, "symbols": symbols, "trades": trades, **stats(times),
           "fired_per_trade": round(fired / trades, 4)}
    if compare:
        out["scan"] = stats(plain)
    return out


def stats(times: list[int]) -> dict[str, float]:
    times = sorted(times)
    return {"median_us": round(statistics.median(times) / 1000, 2),
            "p99_us": round(times[min(len(times) - 1, int(len(times) * 0.99))] / 1000, 2)}


def text_report(header: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = [f"trade-stream bench alerts: {header['trades']} trades per case, in-process Book.on_trade",
             "machine: {cpu_model}, {nproc} cores, Python {python}".format(**header["machine"]), "",
             f"{'alerts':>7} {'symbols':>8} {'median µs':>10} {'p99 µs':>9} {'fired/trade':>12} "
             f"{'scan median µs':>15} {'scan p99 µs':>12}"]
    for r in rows:
        scan_row = r.get("scan") or {}
        lines.append(f"{r['alerts']:>7} {r['symbols']:>8} {r['median_us']:>10.2f} {r['p99_us']:>9.2f} "
                     f"{r['fired_per_trade']:>12.4f} {scan_row.get('median_us', float('nan')):>15.2f} "
                     f"{scan_row.get('p99_us', float('nan')):>12.2f}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="trade-stream bench alerts", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--alerts", default="10000", help="comma list of armed alert counts (default 10000)")
    p.add_argument("--symbols", type=int, default=500, help="symbols the alerts spread over (default 500)")
    p.add_argument("--trades", type=int, default=20_000, help="trades per case (default 20000)")
    p.add_argument("--compare", action="store_true", help="also time a plain scan of the symbol's alerts")
    p.add_argument("--json", action="store_true", help="print JSON results instead of the table")
    args = p.parse_args(argv)
    try:
        sizes = [int(n) for n in args.alerts.split(",") if n.strip()]
    except ValueError:
        p.error("--alerts must be a comma list of whole numbers")
    if not sizes or min(sizes) < args.symbols or args.symbols < 1 or args.trades < 1:
        p.error("--alerts needs counts of at least --symbols, --symbols and --trades at least 1")
    rows = [run(n, args.symbols, args.trades, args.compare) for n in sizes]
    header = {"scenario": "alerts", "trades": args.trades, "machine": report.machine()}
    print(json.dumps({**header, "runs": rows}, indent=2) if args.json else text_report(header, rows))
    return 0
