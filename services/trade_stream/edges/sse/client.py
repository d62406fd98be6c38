"""One open event stream on the side-port: the hub holder a market stream registers, and the writer every kind
of stream writes through.

It writes chunked (optionally gzipped) events with the same buffer cap and abort as the WebSocket side: a client
whose kernel buffer is over the cap is cut off rather than buffered in the relay. ``throttle_ms`` coalesces to at
most one event per key per window, always the latest.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections import Counter

from trade_stream.core.fanout import Codec, Peer
from trade_stream.core.hub import Key
from trade_stream.core.stats import Stats
from trade_stream.edges.sse.wire import chunk

log = logging.getLogger("trade_stream.edges.sse")


class SseClient(Peer):
    """One open event stream. Hub holder (codec + send), writer of chunked, optionally gzipped, events."""

    def __init__(self, writer: asyncio.StreamWriter, ip: str, cap: int, stats: Stats, codec: Codec,
                 gzip: bool, throttle: float) -> None:
        self._init_peer(writer.transport, ip, cap, stats)
        self.writer = writer
        self.codec = codec
        self.z = zlib.compressobj(6, zlib.DEFLATED, 16 + 12, 5) if gzip else None
        self.throttle = throttle
        self.last_write = time.monotonic()
        self._last_sent: dict[Key, float] = {}
        self._pending: dict[Key, bytes] = {}
        self._flush_handle: asyncio.TimerHandle | None = None
        self.closed = False
        self.kind = ""  # which stream (trades, prices, orders, …), for /api/stream/metrics
        self.tally: Counter[str] | None = None  # the server's events-sent counter per stream

    def send(self, bodies: list[tuple[Key, bytes]], count: int = 1) -> bool:
        if self.throttle:
            bodies = self._coalesce(bodies)
            if not bodies:
                return True
        return self.write(b"".join(ev for _, ev in bodies), len(bodies))

    def write(self, data: bytes, count: int = 0) -> bool:
        if self.closed or self.transport.is_closing():
            return False
        if self.z is not None:
            data = self.z.compress(data) + self.z.flush(zlib.Z_SYNC_FLUSH)
        if self.transport.get_write_buffer_size() > self.cap:
            self.cut_off()
            return False
        framed = chunk(data)
        self.transport.write(framed)
        self.written += len(framed)
        self.last_write = time.monotonic()
        self.stats.deliveries += count
        self.stats.bytes_out += len(data)
        if count and self.tally is not None:
            self.tally[self.kind] += count
        return True

    def cut_off(self, reason: str = "slow") -> None:
        if self.closed:
            return
        self.closed = True
        self.stats.slow_client_cutoffs += 1
        log.warning("slow_client_cut_off kind=sse ip=%s reason=%s buffered=%d cap=%d", self.ip, reason,
                    self.transport.get_write_buffer_size(), self.cap)
        self.transport.abort()

    def _coalesce(self, bodies: list[tuple[Key, bytes]]) -> list[tuple[Key, bytes]]:
        """At most one event per key per window, always the latest."""
        now = time.monotonic()
        out = []
        for key, ev in bodies:
            if now - self._last_sent.get(key, 0.0) >= self.throttle and key not in self._pending:
                self._last_sent[key] = now
                out.append((key, ev))
            else:
                self._pending[key] = ev
        if self._pending and self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(self.throttle, self._flush)
        return out

    def _flush(self) -> None:
        self._flush_handle = None
        pending, self._pending = self._pending, {}
        now = time.monotonic()
        for key in pending:
            self._last_sent[key] = now
        if pending:
            self.write(b"".join(pending.values()), len(pending))

    def finish(self) -> None:
        self.closed = True
        if self._flush_handle is not None:
            self._flush_handle.cancel()

    def end(self) -> None:
        """Clean end of stream on shutdown: finish gzip, the last chunk, close. EventSource will reconnect."""
        if self.closed or self.transport.is_closing():
            return
        tail = self.z.flush(zlib.Z_FINISH) if self.z is not None else b""
        self.transport.write((chunk(tail) if tail else b"") + b"0\r\n\r\n")
        self.finish()
        self.transport.close()

