"""Intraday bars and the market clock for the page, from Alpaca's REST through alpaca-py, cached and bounded.

The page's chart backfills one-minute bars when a symbol is opened (``GET /api/bars``) and shows whether the
market is open (``GET /api/clock``). Many tabs opening the same symbol within a few seconds share one REST call:
Alpaca's Basic plan allows 200 calls a minute for the whole account, and every tab of every user goes through
this one daemon.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from alpaca.common.enums import Sort
from alpaca.data.enums import DataFeed
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.requests import CryptoBarsRequest, StockBarsRequest
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit
from alpaca.trading.client import TradingClient

from trade_stream.config import Config
from trade_stream.core.protocol import SYMBOL_RE
from trade_stream.edges.http.request import Request
from trade_stream.edges.http.responses import Response, error, json
from trade_stream.upstream.crypto_rest import crypto_client

log = logging.getLogger("trade_stream.history")
FEEDS = {"iex": DataFeed.IEX, "sip": DataFeed.SIP, "delayed_sip": DataFeed.DELAYED_SIP}
TIMEFRAMES = {"1Min": TimeFrame(1, TimeFrameUnit.Minute), "5Min": TimeFrame(5, TimeFrameUnit.Minute),
              "15Min": TimeFrame(15, TimeFrameUnit.Minute), "1Hour": TimeFrame(1, TimeFrameUnit.Hour),
              "1Day": TimeFrame(1, TimeFrameUnit.Day)}
MAX_BARS = 1000  # a trading day of minute bars, pre- and post-market included, is under 1000
MAX_LOOKBACK = timedelta(days=7)
BARS_TTL = 15.0  # seconds a backfill is reused; live bars and trades carry the chart after that
CLOCK_TTL = 30.0
MAX_CACHED = 500
REST_TIMEOUT = 10.0


class History:
    def __init__(self, cfg: Config) -> None:
        self.feed = FEEDS.get(cfg.data_feed)
        self.data = StockHistoricalDataClient(cfg.api_key, cfg.secret_key, raw_data=True, url_override=cfg.data_url)
        self.crypto, self.crypto_feed = crypto_client(cfg)  # pairs (BTC/USD) have their own bars endpoint
        self.trading = TradingClient(cfg.api_key, cfg.secret_key, raw_data=True, url_override=cfg.base_url)
        self._bars: dict[tuple[str, str, str, str], tuple[float, asyncio.Future[Any]]] = {}
        self._clock: tuple[float, asyncio.Future[Any]] | None = None

    # --- routes (declared in app.py; each returns an awaitable Response) ---------------------------------

    async def bars_route(self, request: Request, headers: dict[str, str]) -> Response:
        query = request.query
        symbol = query.get("symbol", "").strip().upper()
        timeframe = query.get("timeframe", "1Min")
        if not SYMBOL_RE.fullmatch(symbol):
            return error(400, "symbol must be 1-15 of A-Z 0-9 . / -", headers)
        if timeframe not in TIMEFRAMES:
            return error(400, f"timeframe must be one of {', '.join(TIMEFRAMES)}", headers)
        try:
            end = _parse_time(query["end"]) if query.get("end") else datetime.now(UTC)
            start = _parse_time(query["start"]) if query.get("start") else end - timedelta(hours=24)
        except ValueError:
            return error(400, "start and end must be RFC 3339 times such as 2025-01-02T14:30:00Z", headers)
        if start > end:
            return error(400, "start must not be after end", headers)
        # the window is bounded by its own length, not by today's date: a page whose market clock is in the
        # past (a replay, a pinned demo session) still gets the bars of its day
        start = max(start, end - MAX_LOOKBACK).replace(second=0, microsecond=0)
        # a bar is stamped with its minute's start, so the minute in progress stays in; a window is cached per minute
        end = end.replace(second=0, microsecond=0)
        if self.feed is None and "/" not in symbol:  # the test feed has no REST counterpart
            return json(200, {"symbol": symbol, "timeframe": timeframe, "bars": []}, headers)
        try:
            bars = await self._cached_bars(symbol, timeframe, start, end)
        except Exception as exc:
            log.warning("bars_failed symbol=%s error=%r", symbol, exc)
            return error(502, f"Alpaca's bars REST failed: {type(exc).__name__}", headers)
        return json(200, {"symbol": symbol, "timeframe": timeframe, "bars": bars}, headers)

    async def clock_route(self, request: Request, headers: dict[str, str]) -> Response:
        try:
            clock = await self._cached_clock()
        except Exception as exc:
            log.warning("clock_failed error=%r", exc)
            return error(502, f"Alpaca's clock REST failed: {type(exc).__name__}", headers)
        return json(200, clock, headers)

    # --- cache: one call in flight per key, reused for a TTL ----------------------------------------------

    async def _cached_bars(self, symbol: str, timeframe: str, start: datetime,
                           end: datetime) -> list[dict[str, Any]]:
        key = (symbol, timeframe, start.isoformat(), end.isoformat())
        now = time.monotonic()
        hit = self._bars.get(key)
        if hit is None or now - hit[0] > BARS_TTL or (hit[1].done() and hit[1].exception() is not None):
            if len(self._bars) >= MAX_CACHED:
                self._bars = {k: v for k, v in self._bars.items() if now - v[0] <= BARS_TTL}
                while len(self._bars) >= MAX_CACHED:
                    self._bars.pop(next(iter(self._bars)))
            hit = (now, asyncio.ensure_future(self._fetch_bars(symbol, timeframe, start, end)))
            self._bars[key] = hit
        return await asyncio.shield(hit[1])

    async def _fetch_bars(self, symbol: str, timeframe: str, start: datetime,
                          end: datetime) -> list[dict[str, Any]]:
        """The latest MAX_BARS bars in [start, end], oldest first. Alpaca pages oldest first, so a window longer
        than MAX_BARS bars (a backfill reaching over a weekend to the last session) is asked for newest first
        and turned round; ascending, the limit would keep the window's oldest bars and drop today."""
        if "/" in symbol:  # a crypto pair: the crypto bars endpoint at the configured location
            pair = CryptoBarsRequest(symbol_or_symbols=symbol, timeframe=TIMEFRAMES[timeframe], start=start,
                                     end=end, limit=MAX_BARS, sort=Sort.DESC)
            raw = await asyncio.wait_for(asyncio.to_thread(self.crypto.get_crypto_bars, pair, self.crypto_feed),
                                         REST_TIMEOUT)
        else:
            request = StockBarsRequest(symbol_or_symbols=symbol, timeframe=TIMEFRAMES[timeframe], start=start,
                                       end=end, limit=MAX_BARS, sort=Sort.DESC, feed=self.feed)
            raw = await asyncio.wait_for(asyncio.to_thread(self.data.get_stock_bars, request), REST_TIMEOUT)
        return list(reversed((raw or {}).get(symbol, [])))  # type: ignore[union-attr]  # raw_data: a dict, not a BarSet

    async def clock(self, max_age: float = CLOCK_TTL) -> dict[str, Any]:
        """Alpaca's market clock (``timestamp``, ``is_open``, ``next_open``, ``next_close``), at most ``max_age``
        seconds old (price alerts' ``stale`` condition asks it on its own schedule)."""
        return await self._cached_clock(max_age)

    async def _cached_clock(self, max_age: float = CLOCK_TTL) -> dict[str, Any]:
        now = time.monotonic()
        if self._clock is None or now - self._clock[0] > max_age or (
                self._clock[1].done() and self._clock[1].exception() is not None):
            self._clock = (now, asyncio.ensure_future(
                asyncio.wait_for(asyncio.to_thread(self.trading.get_clock), REST_TIMEOUT)))
        return dict(await asyncio.shield(self._clock[1]))


def _parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)
