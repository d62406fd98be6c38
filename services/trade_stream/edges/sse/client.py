"""One open event stream on the side-port: the hub holder a market stream registers, and the writer every kind
of stream writes through.

It writes chunked (optionally gzipped) events through the same transport side as the WebSocket clients
(edges/transport.py): what one loop iteration (or the write delay) queues leaves as one chunk, compressed once, and
a client whose unsent backlog is over the cap is cut off rather than buffered in the relay. ``throttle_ms``
coalesces to at most one event per key per window, always the latest.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections import Counter
from typing import Any

from trade_stream.core.fanout import Codec, send_each
from trade_stream.core.hub import Key
from trade_stream.core.stats import Stats
from trade_stream.edges.sse.wire import chunk
from trade_stream.edges.transport import Peer, Writes


class SseClient(Peer):
    """One open event stream. Hub holder (codec + send), writer of chunked, optionally gzipped, events."""

    wrapped = True  # each write is one chunk (see encode)

    def __init__(self, writer: asyncio.StreamWriter, ip: str, cap: int, stats: Stats, writes: Writes, codec: Codec,
                 gzip: bool, throttle: float) -> None:
        self._init_peer(writer.transport, ip, cap, stats, writes)
        self.writer = writer
        self.codec = codec
        self.z = zlib.compressobj(6, zlib.DEFLATED, 16 + 12, 5) if gzip else None
        self.throttle = throttle
        self.last_write = time.monotonic()
        self._last_sent: dict[Key, float] = {}
        self._pending: dict[Key, bytes] = {}
        self._flush_handle: asyncio.TimerHandle | None = None
        self.kind = ""  # which stream (trades, prices, orders, …), for /api/stream/metrics
        self.tally: Counter[str] | None = None  # the server's events-sent counter per stream

    def send(self, bodies: list[tuple[Key, bytes]], count: int = 1) -> bool:  # type: ignore[override]
        if self.throttle:
            bodies = self._coalesce(bodies)
            if not bodies:
                return True
        return self.write(b"".join(ev for _, ev in bodies), len(bodies))

    def fan(self, data: Any, peers: list[Any], count: int = 1) -> None:
        """One ``send`` each: a stream's events are throttled and chunked per client, and its ghosts share its
        codec."""
        send_each(data, peers, count)

    def write(self, data: bytes, count: int = 0) -> bool:
        """Queue event bytes for this iteration's chunk (one per flush, compressed once when gzipped). The
        keepalive clock counts from the queueing, so a pump that just queued a keepalive sees a fresh write."""
        if self._queue is None:
            self.last_write = time.monotonic()
        return Peer.send(self, data, count)

    def encode(self, data: bytes) -> bytes:
        if self.z is not None:
            data = self.z.compress(data) + self.z.flush(zlib.Z_SYNC_FLUSH)
        return chunk(data)

    def wrote(self, count: int) -> None:
        if count and self.tally is not None:
            self.tally[self.kind] += count

    def describe(self) -> str:
        return f"kind=sse ip={self.ip}"

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
            self._flush_handle = asyncio.get_running_loop().call_later(self.throttle, self._flush_throttled)
        return out

    def _flush_throttled(self) -> None:
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
        """Clean end of stream on shutdown: what is queued, gzip's end, the last chunk, close. EventSource will
        reconnect."""
        self.flush()
        if self.closed or self.transport.is_closing():
            return
        tail = self.z.flush(zlib.Z_FINISH) if self.z is not None else b""
        self.transport.write((chunk(tail) if tail else b"") + b"0\r\n\r\n")
        self.finish()
        self.transport.close()

