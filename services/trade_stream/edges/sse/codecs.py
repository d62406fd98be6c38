"""Codecs of the side-port's market streams: each hub message becomes one SSE event, built once per codec.

``SseCodec`` serves /api/stream/trades (trades and quotes as the WebSocket side names them); ``PriceCodec``
serves /api/stream/prices (trade and quote merged into one ``price:update`` per symbol, coalesced under load).
Both record what they build in their ``Ring`` so a reconnecting client can be replayed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

from trade_stream.core.fanout import Codec
from trade_stream.core.hub import Key
from trade_stream.core.protocol import CHANNEL_OF, encode, market_message
from trade_stream.edges.sse.wire import Ring, event_bytes

PRICE_COALESCE_ABOVE = 1000  # price events per second overall; above it, the latest per symbol every …
PRICE_COALESCE_EVERY = 0.1  # … 100 ms
SSE_CHANNELS = ("trades", "quotes")


class SseCodec(Codec):
    """One SSE event per market message, built once: (key, event bytes). The key is the hub key the message came
    through (``prefix_of`` gives a symbol's source prefix, e.g. ``crypto:us:`` for BTC/USD), so the replay ring
    and the throttle tell sources apart exactly as the hub does."""

    def __init__(self, ring: Ring, prefix_of: Callable[[str], str] = lambda symbol: "") -> None:
        self.ring = ring
        self.prefix_of = prefix_of

    def body(self, m: dict[str, Any]) -> Any:
        channel = CHANNEL_OF.get(m.get("T", ""))
        if channel is None or channel not in SSE_CHANNELS:
            return None
        msg = market_message(m)
        if msg is None:
            return None
        symbol = cast(str, m.get("S"))  # market_message() has vouched for it
        key = (self.prefix_of(symbol) + channel, symbol)
        data = encode(msg)
        _, ev = self.ring.record(key, lambda eid: event_bytes(msg["type"], data, eid))
        return key, ev

    def frames(self, bodies: list[Any]) -> Any:
        return bodies

    def ring_keys(self, keys: Iterable[Key]) -> list[Key]:
        """The keys its ring records events under, for the hub keys a client holds."""
        return list(keys)

    def forget(self, keys: Iterable[Key]) -> None:
        """Nobody holds ``keys`` any more (the per-symbol state of a subclass goes)."""


class PriceCodec(SseCodec):
    """``price:update`` for /api/stream/prices: the last trade and the last quote of a symbol merged into one
    ``{symbol, price, bid, ask, timestamp}``, built once per upstream message and recorded in the prices ring.

    Above PRICE_COALESCE_ABOVE events a second overall, a browser cannot use every tick and the relay should not
    write them: the codec then keeps only the latest state per symbol (``pending``, one entry per held symbol at
    most) and ``deliver`` sends it every PRICE_COALESCE_EVERY seconds. ``state`` and ``pending`` hold only
    symbols some price stream (or its reconnect hold) holds: ``forget`` prunes them when the last one goes."""

    def __init__(self, ring: Ring, prefix_of: Callable[[str], str] = lambda symbol: "") -> None:
        super().__init__(ring, prefix_of)
        self.state: dict[str, dict[str, Any]] = {}
        self.pending: dict[str, Key] = {}
        self.deliver: Callable[[str, Key, bytes], None] = lambda symbol, key, ev: None
        self._window_start = 0.0
        self._window_count = 0
        self._coalescing = False
        self._flush_handle: asyncio.TimerHandle | None = None

    def body(self, m: dict[str, Any]) -> Any:
        channel = CHANNEL_OF.get(m.get("T", ""))
        if channel not in SSE_CHANNELS:
            return None
        symbol = m.get("S")
        if not isinstance(symbol, str):
            return None
        st = self.state.setdefault(symbol, {"symbol": symbol, "price": None, "bid": None, "ask": None,
                                            "timestamp": None})
        if channel == "trades":
            st["price"] = m.get("p")
        else:
            st["bid"], st["ask"] = m.get("bp"), m.get("ap")
        st["timestamp"] = m.get("t")
        key = (self.prefix_of(symbol) + "prices", symbol)
        if self._overloaded():
            self.pending[symbol] = key
            if self._flush_handle is None:
                self._flush_handle = asyncio.get_running_loop().call_later(PRICE_COALESCE_EVERY, self._flush)
            return None
        return self.record(key, st)

    def record(self, key: Key, st: dict[str, Any]) -> tuple[Key, bytes]:
        data = encode(st)
        _, ev = self.ring.record(key, lambda eid: event_bytes("price:update", data, eid))
        return key, ev

    def _overloaded(self) -> bool:
        """Over the limit in the last whole second, or already in this one."""
        now = time.monotonic()
        if now - self._window_start >= 1.0:
            self._coalescing = self._window_count > PRICE_COALESCE_ABOVE and now - self._window_start < 2.0
            self._window_start, self._window_count = now, 0
        self._window_count += 1
        return self._coalescing or self._window_count > PRICE_COALESCE_ABOVE

    def _flush(self) -> None:
        self._flush_handle = None
        pending, self.pending = self.pending, {}
        for symbol, key in pending.items():
            st = self.state.get(symbol)
            if st is not None:
                _, ev = self.record(key, st)
                self.deliver(symbol, key, ev)

    def ring_keys(self, keys: Iterable[Key]) -> list[Key]:
        """A symbol's trades and quotes are one price key (``prices``, or ``crypto:us:prices`` for a pair)."""
        return list(dict.fromkeys(((ch.rpartition(":")[0] + ":" if ":" in ch else "") + "prices", s)
                                  for ch, s in keys))

    def forget(self, keys: Iterable[Key]) -> None:
        for _, symbol in keys:
            self.state.pop(symbol, None)
            self.pending.pop(symbol, None)
