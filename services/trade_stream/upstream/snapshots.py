"""Initial state for a newly opened symbol: Alpaca's REST snapshot (latest trade, previous close), fetched with
alpaca-py, batched and cached. Stocks ask the stock snapshots, crypto pairs (BTC/USD) the crypto snapshots at the
configured location. A panel then shows a price at once (even with the market closed) and its change
against the previous close, instead of waiting for the next trade.

Requests from many clients within a few milliseconds become one REST call (Alpaca's Basic plan allows 200 calls a
minute), and a snapshot is reused for a few seconds.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

from alpaca.data.enums import DataFeed
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.requests import CryptoSnapshotRequest, StockSnapshotRequest

from trade_stream.config import Config
from trade_stream.core.protocol import snapshot_message
from trade_stream.upstream.crypto_rest import crypto_client

log = logging.getLogger("trade_stream.core.snapshots")  # the name operators' log filters match
FEEDS = {"iex": DataFeed.IEX, "sip": DataFeed.SIP, "delayed_sip": DataFeed.DELAYED_SIP}  # REST has no "test"
PER_CALL = 100
REST_TIMEOUT = 10.0
MAX_CACHED = 5000


class Snapshots:
    def __init__(self, cfg: Config, ttl: float = 5.0, window: float = 0.02) -> None:
        self.feed = FEEDS.get(cfg.data_feed)
        self.ttl = ttl
        self.window = window
        self.client = StockHistoricalDataClient(cfg.api_key, cfg.secret_key, raw_data=True,
                                                url_override=cfg.data_url)
        self.crypto, self.crypto_feed = crypto_client(cfg)
        self._cache: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._wanted: set[str] = set()
        self._batch: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def get(self, symbols: list[str]) -> list[dict[str, Any]]:
        """Snapshot messages for ``symbols`` (those Alpaca knows), from the cache or one batched REST call per kind."""
        if self.feed is None:  # the test feed has no stock REST; pairs still have theirs
            symbols = [s for s in symbols if "/" in s]
        now = time.monotonic()
        missing = [s for s in symbols if now - self._cache.get(s, (-math.inf, None))[0] > self.ttl]
        if missing:
            self._wanted.update(missing)
            if self._batch is None:
                loop = asyncio.get_running_loop()
                self._batch = loop.create_future()
                self._timer = loop.call_later(self.window, self._fire)
            await asyncio.shield(self._batch)
        return [msg for s in symbols if (msg := self._cache.get(s, (0.0, None))[1]) is not None]

    def close(self) -> None:
        """At shutdown: the batch timer will not fire and a fetch under way stops; whoever still waits on the
        batch gets CancelledError (its connection is being closed anyway), and the batch future is not left
        pending for the loop to complain about."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in list(self._tasks):
            task.cancel()
        batch, self._batch = self._batch, None
        if batch is not None and not batch.done():
            batch.cancel()
        self._wanted.clear()

    def _fire(self) -> None:
        self._timer = None
        task = asyncio.ensure_future(self._fetch())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fetch(self) -> None:
        batch, self._batch = self._batch, None
        symbols, self._wanted = sorted(self._wanted), set()
        try:
            if len(self._cache) > MAX_CACHED:
                self._cache.clear()
            pairs = [s for s in symbols if "/" in s]
            stocks = [s for s in symbols if "/" not in s]
            for kind_symbols, call in ((stocks, self._stock_call), (pairs, self._crypto_call)):
                for start in range(0, len(kind_symbols), PER_CALL):
                    chunk = kind_symbols[start:start + PER_CALL]
                    raw = await asyncio.wait_for(asyncio.to_thread(call, chunk), REST_TIMEOUT)
                    now = time.monotonic()
                    for symbol in chunk:
                        self._cache[symbol] = (now, snapshot_message(symbol, (raw or {}).get(symbol)))
        except Exception as exc:  # no snapshot is no disaster: live trades still come
            log.warning("snapshot_failed symbols=%d error=%r", len(symbols), exc)
        finally:
            if batch is not None and not batch.done():
                batch.set_result(None)

    def _stock_call(self, chunk: list[str]) -> Any:
        return self.client.get_stock_snapshot(StockSnapshotRequest(symbol_or_symbols=chunk, feed=self.feed))

    def _crypto_call(self, chunk: list[str]) -> Any:
        return self.crypto.get_crypto_snapshot(CryptoSnapshotRequest(symbol_or_symbols=chunk), feed=self.crypto_feed)
