"""HTTP on the WebSocket port: Alpaca's REST GET endpoints (the ``/_sim/`` control endpoints are server.py's).

websockets' ``process_request`` sees the request line and headers only, never a body, so this is GET-only:
orders are created through the control API (``/_sim/order`` or ``Simulator.submit_order``), not
``POST /v2/orders``.
"""

from __future__ import annotations

import base64
from datetime import date, datetime, timedelta
from http import HTTPStatus
from typing import Any, Protocol

import orjson
from websockets.datastructures import Headers
from websockets.http11 import Response

from . import calendar
from .clock import Clock
from .config import SimConfig
from .market import CRYPTO_SYMBOL_RE, SYMBOL_RE, Market, parse_ts
from .orders import OrderBook
from .units import NS, format_ts


class Backend(Protocol):
    """What Alpaca's REST reads of the simulator: its market, order book, clock and config, and the clock's
    forced open or closed state (``/_sim/clock?open=``). The control API (``/_sim/``) is the
    façade's own, in server.py."""

    @property
    def clock_open(self) -> bool | None: ...

    @property
    def market(self) -> Market: ...

    @property
    def book(self) -> OrderBook: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def config(self) -> SimConfig: ...


Result = tuple[int, Any]
Query = dict[str, str]

UNAUTHORIZED = {"code": 40110000, "message": "request is not authorized"}
CRYPTO_LOCATIONS = ("us", "us-1", "eu-1")


def respond(status: int, body: Any) -> Response:
    """A JSON response built by hand (``Headers.__setitem__`` appends, so no editing of respond())."""
    payload = orjson.dumps(body, default=str)
    headers = Headers([("Content-Type", "application/json; charset=utf-8"), ("Content-Length", str(len(payload))),
                       ("Cache-Control", "no-cache"), ("Connection", "close")])
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    return Response(status, reason, headers, payload)


def not_found(message: str = "endpoint not found") -> Result:
    return 404, {"code": 40410000, "message": message}


# -- Alpaca REST --------------------------------------------------------------------------------------


def route(sim: Backend, path: str, query: Query, headers: Headers) -> Result:
    key, secret = headers.get("APCA-API-KEY-ID"), headers.get("APCA-API-SECRET-KEY")
    parts = [p for p in path.split("/") if p]
    crypto = parts[:2] == ["v1beta3", "crypto"]
    if (key is None or secret is None) and not crypto:  # crypto market data needs no keys (alpaca-py sends none)
        return 401, UNAUTHORIZED
    if key is not None and sim.config.accounts.get(key) != secret:
        return 403, UNAUTHORIZED
    if crypto:
        try:
            return _crypto(sim, parts[2:], query)
        except ValueError as exc:
            return 400, {"code": 40010001, "message": str(exc)}
    if parts[:1] != ["v2"] or key is None:
        return not_found()
    try:
        return _route_v2(sim, key, parts[1:], query)
    except ValueError as exc:
        return 422, {"code": 42210000, "message": str(exc)}


def _route_v2(sim: Backend, key: str, parts: list[str], query: Query) -> Result:
    match parts:
        case ["account"]:
            return 200, sim.book.account_view(key)
        case ["clock"]:
            return 200, market_clock(sim.clock.now(), sim.clock_open)
        case ["calendar"]:
            return 200, market_calendar(sim.clock.now(), query)
        case ["orders"]:
            return 200, _orders(sim, key, query)
        case ["orders:by_client_order_id"]:
            wanted = query.get("client_order_id")
            for candidate in sim.book.account(key).orders.values():
                if candidate["client_order_id"] == wanted:
                    return 200, candidate
            return not_found(f"order not found for {wanted}")
        case ["orders", order_id]:
            order = sim.book.account(key).orders.get(order_id)
            return (200, order) if order else not_found(f"order not found for {order_id}")
        case ["positions"]:
            return 200, sim.book.positions(key)
        case ["positions", symbol]:
            found = [p for p in sim.book.positions(key) if p["symbol"] == symbol or p["asset_id"] == symbol]
            return (200, found[0]) if found else not_found("position does not exist")
        case ["stocks", *rest]:
            return _stocks(sim, rest, query)
    return not_found()


def _crypto(sim: Backend, parts: list[str], query: Query) -> Result:
    """Alpaca's crypto REST (``/v1beta3/crypto/{loc}/...``), as alpaca-py's CryptoHistoricalDataClient reads it:
    every answer keyed by a data key first (``{"snapshots": {pair: {...}}}``, ``{"bars": {pair: [...]},
    "next_page_token"}``), unlike the stock snapshots. Pairs only; the simulated market is one for every location."""
    if len(parts) < 2 or parts[0] not in CRYPTO_LOCATIONS:
        return not_found()
    market = sim.market
    match parts[1:]:
        case ["snapshots"]:
            return 200, {"snapshots": {s: market.snapshot(s) for s in _pairs(query) if market.known(s)}}
        case ["latest", "trades"]:
            return 200, {"trades": {s: market.latest_trade(s) for s in _pairs(query) if market.known(s)}}
        case ["latest", "quotes"]:
            return 200, {"quotes": {s: market.latest_quote(s) for s in _pairs(query) if market.known(s)}}
        case ["latest", "bars"]:
            return 200, {"bars": {s: market.snapshot(s)["minuteBar"] for s in _pairs(query) if market.known(s)}}
        case ["trades"]:
            return 200, _trades(sim, _pairs(query), query)
        case ["bars"]:
            return 200, _bars(sim, _pairs(query), query)
    return not_found()


def _pairs(query: Query) -> list[str]:
    symbols = [s for s in query.get("symbols", "").split(",") if s]
    if not symbols:
        raise ValueError("missing symbols")
    for s in symbols:
        if not CRYPTO_SYMBOL_RE.fullmatch(s):
            raise ValueError(f"invalid symbol: {s}")
    return symbols


def _orders(sim: Backend, key: str, query: Query) -> list[dict]:
    symbols = {s for s in query.get("symbols", "").split(",") if s}
    return sim.book.list_orders(
        key, status=query.get("status", "open"), limit=int(query.get("limit", "50")), after=query.get("after"),
        until=query.get("until"), direction=query.get("direction", "desc"), symbols=symbols,
        side=query.get("side"))


def _symbols(query: Query) -> list[str]:
    symbols = [s for s in query.get("symbols", "").split(",") if s]
    if not symbols:
        raise ValueError("missing symbols")
    for s in symbols:
        if not SYMBOL_RE.fullmatch(s):
            raise ValueError(f"invalid symbol: {s}")
    return symbols


def _stocks(sim: Backend, parts: list[str], query: Query) -> Result:
    market = sim.market
    match parts:
        case ["snapshots"]:
            return 200, {s: market.snapshot(s) for s in _symbols(query) if market.known(s)}
        case [symbol, "snapshot"]:
            if not market.known(symbol):
                return not_found(f"no snapshot found for {symbol}")
            return 200, {"symbol": symbol, **market.snapshot(symbol)}
        case ["trades", "latest"]:
            return 200, {"trades": {s: market.latest_trade(s) for s in _symbols(query) if market.known(s)}}
        case ["quotes", "latest"]:
            return 200, {"quotes": {s: market.latest_quote(s) for s in _symbols(query) if market.known(s)}}
        case ["bars", "latest"]:
            return 200, {"bars": {s: market.snapshot(s)["minuteBar"] for s in _symbols(query) if market.known(s)}}
        case ["trades"]:
            return 200, _trades(sim, _symbols(query), query)
        case ["bars"]:
            return 200, _bars(sim, _symbols(query), query)
        case [symbol, "bars"]:
            page = _bars(sim, [symbol], query)
            return 200, {"bars": page["bars"].get(symbol, []), "symbol": symbol,
                         "next_page_token": page["next_page_token"]}
        case [symbol, "trades"]:
            page = _trades(sim, [symbol], query)
            return 200, {"trades": page["trades"].get(symbol, []), "symbol": symbol,
                         "next_page_token": page["next_page_token"]}
    return not_found()


def _trades(sim: Backend, symbols: list[str], query: Query) -> dict:
    """Historical trades: inclusive start/end, ``limit`` across all symbols, sorted by symbol then time."""
    now = sim.clock()
    start = parse_ts(query["start"]) if query.get("start") else now - now % (86_400 * NS)
    end = parse_ts(query["end"]) if query.get("end") else now
    limit = min(10_000, max(1, int(query.get("limit") or 1000)))
    offset = int(base64.urlsafe_b64decode(query["page_token"]).decode()) if query.get("page_token") else 0
    rows: list[tuple[str, dict]] = []
    for symbol in sorted(set(symbols)):
        trades = sim.market.trades_between(symbol, start, end)
        if query.get("sort") == "desc":
            trades.reverse()
        rows.extend((symbol, t) for t in trades)
    page = rows[offset: offset + limit]
    out: dict[str, list[dict]] = {}
    for symbol, trade in page:
        out.setdefault(symbol, []).append(trade)
    more = offset + limit < len(rows)
    token = base64.urlsafe_b64encode(str(offset + limit).encode()).decode() if more else None
    return {"trades": out, "next_page_token": token}


BAR_MINUTES = {"Min": 1, "T": 1, "Hour": 60, "H": 60, "Day": 1440, "D": 1440}


def _timeframe_ns(text: str) -> int:
    """Alpaca's ``timeframe`` (1Min, 5Min, 1Hour, 1Day; also 1T, 1H, 1D) in nanoseconds."""
    for unit, minutes in BAR_MINUTES.items():
        if text.endswith(unit) and text[: -len(unit)].isdigit() and int(text[: -len(unit)]) > 0:
            return int(text[: -len(unit)]) * minutes * 60 * NS
    raise ValueError(f"invalid timeframe: {text}")


def _bars(sim: Backend, symbols: list[str], query: Query) -> dict:
    """Historical bars aggregated from the simulator's own trade history, as Alpaca's ``/v2/stocks/bars``:
    ``{"bars": {sym: [{t,o,h,l,c,v,n,vw}]}, "next_page_token"}``; ``t`` is the window start, windows without
    trades are left out, ``limit`` across all symbols, sorted by symbol then time. start and end are inclusive
    and pick bars by ``t``: a window that starts by ``end`` comes whole, with its trades after ``end``."""
    if "timeframe" not in query:
        raise ValueError("missing timeframe")
    width = _timeframe_ns(query["timeframe"])
    now = sim.clock()
    start = parse_ts(query["start"]) if query.get("start") else now - now % (86_400 * NS)
    end = parse_ts(query["end"]) if query.get("end") else now
    first = -(-start // width) * width  # the first window that starts at or after start
    last = end - end % width + width - 1  # the end of the last window that starts by end
    limit = min(10_000, max(1, int(query.get("limit") or 1000)))
    offset = int(base64.urlsafe_b64decode(query["page_token"]).decode()) if query.get("page_token") else 0
    rows: list[tuple[str, dict]] = []
    for symbol in sorted(set(symbols)):
        windows: dict[int, list[float]] = {}
        if sim.market.intraday and sim.market.known(symbol):
            sim.market.state(symbol)  # a symbol met here first gets its synthesized day too
        for ns, b in sim.market.history_bars(symbol, first, last):  # the day before we met it
            key = ns - ns % width
            w = windows.get(key)
            if w is None:
                windows[key] = [b["o"], b["h"], b["l"], b["c"], b["v"], b["n"], b["vw"] * b["v"]]
            else:
                w[1], w[2], w[3] = max(w[1], b["h"]), min(w[2], b["l"]), b["c"]
                w[4] += b["v"]
                w[5] += b["n"]
                w[6] += b["vw"] * b["v"]
        for trade in sim.market.trades_between(symbol, first, last):
            ns = parse_ts(trade["t"])
            key = ns - ns % width
            price, size = float(trade["p"]), trade["s"]  # shares (int), or a fraction of a coin
            w = windows.get(key)
            if w is None:
                windows[key] = [price, price, price, price, size, 1, price * size]
            else:
                w[1], w[2], w[3] = max(w[1], price), min(w[2], price), price
                w[4] += size
                w[5] += 1
                w[6] += price * size
        bars = [{"t": format_ts(k), "o": w[0], "h": w[1], "l": w[2], "c": w[3], "v": round(w[4], 8), "n": w[5],
                 "vw": round(w[6] / w[4], 6) if w[4] else w[3]} for k, w in sorted(windows.items())]
        if query.get("sort") == "desc":
            bars.reverse()
        rows.extend((symbol, b) for b in bars)
    page = rows[offset: offset + limit]
    out: dict[str, list[dict]] = {}
    for symbol, bar in page:
        out.setdefault(symbol, []).append(bar)
    more = offset + limit < len(rows)
    token = base64.urlsafe_b64encode(str(offset + limit).encode()).decode() if more else None
    return {"bars": out, "next_page_token": token}


def market_clock(now: datetime, forced_open: bool | None = None) -> dict:
    """Alpaca's ``/v2/clock`` at ``now`` (the simulator's clock): open in the regular session of the US equity
    calendar (calendar.py: holidays and early closes included), times in New York's offset as Alpaca sends them.
    ``forced_open`` (``/_sim/clock``) pins ``is_open`` for tests; the next open/close still follow the calendar."""
    now = now.astimezone(calendar.NEW_YORK)
    next_open, next_close = calendar.next_open_close(now)
    is_open = calendar.phase(now) == calendar.REGULAR if forced_open is None else forced_open
    return {"timestamp": now.isoformat(timespec="microseconds"), "is_open": is_open,
            "next_open": next_open.isoformat(), "next_close": next_close.isoformat()}


def market_calendar(now: datetime, query: Query) -> list[dict]:
    """Alpaca's ``/v2/calendar``: one entry per trading day from ``start`` to ``end`` (dates; by default the
    simulated day a month either side), regular ``open``/``close`` as HH:MM and the extended ``session_open``/
    ``session_close`` as HHMM, New York time, as alpaca-py's Calendar model parses them."""
    today = now.astimezone(calendar.NEW_YORK).date()
    start = date.fromisoformat(query["start"][:10]) if query.get("start") else today - timedelta(days=30)
    end = date.fromisoformat(query["end"][:10]) if query.get("end") else today + timedelta(days=30)
    if (end - start).days > 3660:
        raise ValueError("start and end are more than ten years apart")
    return [{"date": s.day.isoformat(), "open": s.open.strftime("%H:%M"), "close": s.close.strftime("%H:%M"),
             "session_open": s.pre_open.strftime("%H%M"), "session_close": s.post_close.strftime("%H%M"),
             "settlement_date": calendar.next_session(s.day).day.isoformat()}
            for s in calendar.sessions_between(start, end)]


