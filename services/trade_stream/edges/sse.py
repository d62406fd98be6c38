"""Server-Sent Events side-port: the same feed as the WebSocket side, for clients that only listen.

h11 parses the request and writes the response head (sans-I/O, like websockets for WebSocket); the body is a
chunked stream we frame ourselves. Market data flows through the same hub and router as WebSocket clients: an
``SseClient`` is a hub holder whose codec turns each message into an SSE event once (id assigned, recorded in the
replay ring) and whose ``send`` writes with the same buffer cap and abort as the WebSocket side. Orders replay
from the durable journal. See stack notes §2-3 for the wire format and the gzip/flush rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import re
import time
import uuid
import zlib
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h11
import orjson

from trade_stream.config import Config
from trade_stream.core import event_ids
from trade_stream.core.accounts import Accounts, split_since
from trade_stream.core.fanout import Codec, Peer, watch_stalls
from trade_stream.core.hub import Key
from trade_stream.core.journal import Entry
from trade_stream.core.orders import AuthThrottled, Orders
from trade_stream.core.protocol import (
    CHANNEL_OF,
    MARKET_CHANNELS,
    ClientError,
    check_symbol,
    encode,
    market_message,
)
from trade_stream.core.relay import Relay
from trade_stream.core.snapshots import Snapshots
from trade_stream.core.stats import Stats
from trade_stream.edges.identity import User
from trade_stream.edges.limits import Admission
from trade_stream.edges.origins import OriginPolicy
from trade_stream.ops.supervisor import Supervise

log = logging.getLogger("trade_stream.edges.sse")

STREAM_PATHS = ("/api/stream/trades", "/api/stream/orders", "/api/stream/alerts", "/api/stream/positions",
                "/api/stream/prices", "/api/stream/trading")
PRIVATE_KINDS = {"/api/stream/orders": "orders", "/api/stream/positions": "positions",
                 "/api/stream/trading": "trading"}  # per-user streams over the accounts' journals and positions
FILL_EVENTS = ("fill", "partial_fill")
PRICE_COALESCE_ABOVE = 1000  # price events per second overall; above it, the latest per symbol every …
PRICE_COALESCE_EVERY = 0.1  # … 100 ms
ALERT_REPLAY_LIMIT = 1000  # notifications replayed after Last-Event-ID; further back is a reset
SSE_CHANNELS = ("trades", "quotes")
GHOST_HOLD = 60.0  # seconds a departed client's symbols keep being recorded, so it can resume without gaps
REQUEST_TIMEOUT = 10.0
CORRELATION_RE = re.compile(r"[A-Za-z0-9._:-]+")
CORRELATION_MAX = 100
CORS_HEADERS = [(b"Access-Control-Allow-Methods", b"GET, OPTIONS"),
                (b"Access-Control-Allow-Headers", b"Content-Type, Authorization, Last-Event-ID"),
                (b"Access-Control-Max-Age", b"600")]


def event_bytes(event: str, data: bytes, event_id: int | str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\n".encode() + b"data: " + data + b"\n\n"


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


@dataclass
class Ring:
    """Recent market events for Last-Event-ID replay, plus when each key started being recorded."""

    size: int
    events: deque[tuple[int, Key, bytes]] = field(default_factory=deque)
    recording_since: dict[Key, int] = field(default_factory=dict)
    ids: Iterable[int] = field(default_factory=lambda: itertools.count(1))
    last_id: int = 0

    def record(self, key: Key, build: Any) -> tuple[int, bytes]:
        self.last_id = event_id = next(self.ids)  # type: ignore[call-overload]
        ev = build(event_id)
        if self.size:
            self.events.append((event_id, key, ev))
            if len(self.events) > self.size:
                self.events.popleft()
        return event_id, ev

    def replay(self, after: int, keys: set[Key]) -> list[bytes] | None:
        """Events after ``after`` for ``keys``, or None when the ring cannot vouch for a complete replay."""
        if after < 0 or after > self.last_id:
            return None  # unparseable, from before a restart, or invented
        oldest = self.events[0][0] if self.events else self.last_id + 1
        if after + 1 < oldest and after < self.last_id:
            return None
        for key in keys:
            since = self.recording_since.get(key)
            if since is None or since > after + 1:
                return None
        return [ev for eid, key, ev in self.events if eid > after and key in keys]


class SseCodec(Codec):
    """One SSE event per market message, built once: (key, event bytes). The key is the hub key the message came
    through (``prefix_of`` gives a symbol's source prefix, e.g. ``crypto:us:`` for BTC/USD), so the replay ring
    and the throttle tell sources apart exactly as the hub does."""

    def __init__(self, ring: Ring, prefix_of: Callable[[str], str] = lambda symbol: "") -> None:
        self.ring = ring
        self.prefix_of = prefix_of

    def body(self, m: dict[str, Any]) -> Any:
        channel = CHANNEL_OF.get(m.get("T"))  # type: ignore[arg-type]
        if channel not in SSE_CHANNELS:
            return None
        msg = market_message(m)
        if msg is None:
            return None
        symbol = m.get("S")
        key = (self.prefix_of(symbol) + channel, symbol)  # type: ignore[arg-type,operator]
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
        channel = CHANNEL_OF.get(m.get("T"))  # type: ignore[arg-type]
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


class _Ghost:
    """Keeps a departed client's keys recorded (no delivery) for GHOST_HOLD seconds.

    A weak hub holder: it gives its keys up the moment the symbol cap needs room for someone (``evicted``), so
    an anonymous client that left cannot keep the global cap from everyone else for a minute."""

    def __init__(self, codec: Codec, ip: str, keys: list[Key], on_evicted: Any) -> None:
        self.codec = codec
        self.ip = ip
        self.keys = keys
        self.timer: asyncio.TimerHandle | None = None
        self._on_evicted = on_evicted

    def send(self, bodies: Any, count: int = 1) -> bool:
        return True

    def evicted(self, keys: list[Key]) -> None:
        self._on_evicted(self, keys)


@dataclass
class OrderStream:
    """One private order stream: its user, the accounts it follows and its position in each journal, so every
    event's id says where the client is in all of them (event_ids.py, compound ids)."""

    user: User
    names: list[str]
    positions: dict[str, str] = field(default_factory=dict)  # account -> "<epoch>-<n>"
    kind: str = "orders"  # "orders", "positions" or "trading" (both)
    legacy: bool = False  # ?format=legacy: the old event names, order_update and position_update

    @property
    def wants_orders(self) -> bool:
        return self.kind != "positions"

    @property
    def wants_positions(self) -> bool:
        return self.kind != "orders" or self.legacy

    def event_id(self, account: str, epoch: str | None, n: int) -> str | int:
        here = event_ids.cursor(epoch, n) if epoch else str(n)
        if len(self.names) == 1:
            return here if epoch else n
        return event_ids.compound({**self.positions, account: here})

    def current_id(self) -> str | None:
        """Where the client is in its journals now: the id of a position event, so that a Last-Event-ID taken
        from one resumes the order events of a trading stream exactly (positions are state: a reconnect gets
        all of them first)."""
        if len(self.names) == 1:
            return self.positions.get(self.names[0])
        return event_ids.compound(self.positions) if self.positions else None


class Request:
    def __init__(self, method: str, target: str, headers: dict[str, str]) -> None:
        self.method = method
        parts = urlsplit(target)
        self.path = parts.path
        self.query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.headers = headers


class SseServer:
    def __init__(self, cfg: Config, relay: Relay, accounts: Accounts | None, origins: OriginPolicy, stats: Stats,
                 status: Callable[[], dict[str, Any]] | None = None, snapshots: Snapshots | None = None,
                 broker: Any = None) -> None:
        self.cfg = cfg
        self.relay = relay
        self.status = status or relay.status  # the same public view as the main port's /api/stream/status
        self.accounts = accounts
        self.origins = origins
        self.stats = stats
        self.ring = Ring(cfg.sse_replay)
        self.codec = SseCodec(self.ring, relay.sources.browser_prefix)
        self.price_ring = Ring(cfg.sse_replay)
        self.price_codec = PriceCodec(self.price_ring, relay.sources.browser_prefix)
        self.price_codec.deliver = self._deliver_price
        self.snapshots = snapshots  # the first price:update of a symbol (core/snapshots.py)
        self.sent: Counter[str] = Counter()  # events written, per stream
        self.server: asyncio.Server | None = None
        self.clients: set[SseClient] = set()
        self.order_clients: dict[SseClient, OrderStream] = {}
        self.order_joined: dict[str, set[SseClient]] = {}  # account -> clients live on it
        self.alert_clients: dict[SseClient, User] = {}
        self.notifier: Any = None  # trade notifications (core/notifier.py), for /api/stream/alerts
        self.admission = Admission.of(cfg.max_connections, cfg.max_connections_per_ip,
                                      cfg.max_connect_rate_per_ip)
        self.max_symbols_per_client = cfg.max_symbols_per_client
        self._ghosts: dict[str, list[_Ghost]] = {}  # per address, oldest first
        self._handlers: set[asyncio.Task[Any]] = set()
        for orders in accounts or ():
            self.order_joined[orders.account] = set()
            orders.listeners.append(lambda entry, orders=orders: self._on_order_event(entry, orders))
            orders.position_listeners.append(self._on_position)
            orders.reset_listeners.append(lambda reason, orders=orders: self._on_orders_reset(reason, orders))
        from trade_stream.edges.events_api import EventsApi

        self.events_api = EventsApi(self, broker)  # Alpaca's events API, and /api/stream/broker in Broker mode

    def add_alerts(self, notifier: Any) -> None:
        """Serve trade notifications on /api/stream/alerts (``alert:new``, ``alert:read``)."""
        self.notifier = notifier
        notifier.listeners.append(self._on_alert)
        notifier.read_listeners.append(self._on_alerts_read)

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    def reload_limits(self, cfg: Config) -> None:
        """SIGHUP: new limits apply to new connections and requests; nobody is dropped."""
        self.admission.update(cfg.max_connections, cfg.max_connections_per_ip, cfg.max_connect_rate_per_ip)
        self.max_symbols_per_client = cfg.max_symbols_per_client

    async def start(self, supervise: Supervise | None = None) -> None:
        """Listen; the stall sweep runs under ``supervise`` (restarted on any exception, in health and metrics)."""
        self.server = await asyncio.start_server(self._handle, self.cfg.host, self.cfg.sse_port)
        if self.cfg.stall_timeout:
            def sweep() -> Coroutine[Any, Any, None]:
                return watch_stalls(lambda: [*self.clients, *self.order_clients, *self.alert_clients],
                                    self.cfg.stall_timeout)

            self._handlers.add(supervise("stall-sweep-sse", sweep) if supervise else asyncio.create_task(sweep()))
        log.info("sse_listening port=%d", self.port)

    async def close(self) -> None:
        if self.server is None:
            return
        self.server.close()
        for client in [*self.clients, *self.order_clients, *self.alert_clients, *self.events_api.live]:
            client.end()
        for task in list(self._handlers):
            task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.server.wait_closed(), self.cfg.timings.shutdown_grace)

    # --- connection ---------------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        peer = writer.get_extra_info("peername")
        ip = str(peer[0]) if peer else "?"
        conn = h11.Connection(h11.SERVER)
        try:
            request = await asyncio.wait_for(self._read_request(conn, reader), REQUEST_TIMEOUT)
            if request is not None:
                await self._serve(conn, request, reader, writer, ip)
        except h11.RemoteProtocolError as exc:  # malformed request (a NUL in the target, huge headers, …)
            _bad_request(conn, writer, exc)
        except (TimeoutError, ConnectionError):
            pass
        except asyncio.CancelledError:
            # close() cancels every handler (one may be waiting on a snapshot batch): the connection ends here.
            # A handler task that ends cancelled makes asyncio's stream server log "Exception in callback ...
            # CancelledError" (Python 3.11), so at shutdown the cancel stops here; at any other time it goes on.
            if self.server is not None and self.server.is_serving():
                raise
        finally:
            if task is not None:
                self._handlers.discard(task)
            writer.close()

    async def _read_request(self, conn: h11.Connection, reader: asyncio.StreamReader) -> Request | None:
        request = None
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(8192)
                conn.receive_data(data)
                if not data and conn.their_state is not h11.DONE and request is None:
                    return None
                continue
            if isinstance(event, h11.Request):
                headers = {k.decode().lower(): v.decode("latin-1") for k, v in event.headers}
                request = Request(event.method.decode(), event.target.decode("latin-1"), headers)
            elif isinstance(event, h11.EndOfMessage):
                return request
            elif isinstance(event, h11.ConnectionClosed):
                return None

    def _head(self, request: Request, status: int, extra: list[tuple[bytes, bytes]], correlation: str) -> list:
        headers = [(b"X-Correlation-ID", correlation.encode()), (b"Vary", b"Origin"), *extra]
        allow = self.origins.cors_origin(request.headers.get("origin"), request.headers.get("host"))
        if allow:
            headers.append((b"Access-Control-Allow-Origin", allow.encode()))
        return headers

    def _respond(self, conn: h11.Connection, writer: asyncio.StreamWriter, request: Request, status: int,
                 payload: Any, correlation: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        body = orjson.dumps(payload) if payload is not None else b""
        headers = self._head(request, status, [*(extra or []), (b"Content-Length", str(len(body)).encode()),
                                               (b"Connection", b"close")], correlation)
        if payload is not None:
            headers.append((b"Content-Type", b"application/json"))
        writer.write(conn.send(h11.Response(status_code=status, headers=headers, reason=_reason(status))))
        if body and request.method != "HEAD":
            writer.write(conn.send(h11.Data(data=body)))
        writer.write(conn.send(h11.EndOfMessage()))

    async def _serve(self, conn: h11.Connection, request: Request, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter, ip: str) -> None:
        correlation = correlation_id(request.headers.get("x-correlation-id"))
        log.info("sse_request method=%s path=%s ip=%s correlation_id=%s", request.method, request.path, ip,
                 correlation)
        known = request.path in (*STREAM_PATHS, "/api/stream/status", "/api/stream/metrics",
                                 *self.events_api.paths)
        if not known:
            return self._respond(conn, writer, request, 404, _error(404, f"no such path {request.path}"), correlation)
        if request.method == "OPTIONS":
            return self._respond(conn, writer, request, 204, None, correlation, CORS_HEADERS)
        if request.path == "/api/stream/status" and request.method in ("GET", "HEAD"):
            return self._respond(conn, writer, request, 200, self.status(), correlation)
        if request.path == "/api/stream/metrics" and request.method in ("GET", "HEAD"):
            return self._respond(conn, writer, request, 200, self.metrics(request, ip), correlation)
        if request.method != "GET":
            return self._respond(conn, writer, request, 405, _error(405, f"{request.method} not allowed"),
                                 correlation, [(b"Allow", b"GET, OPTIONS")])
        throttle = parse_throttle(request.query.get("throttle_ms"))
        if isinstance(throttle, str):
            return self._respond(conn, writer, request, 400, _error(400, throttle), correlation)
        refused = self.admission.refuse(ip, len(self.clients) + len(self.order_clients) + len(self.alert_clients),
                                        time.monotonic())
        if refused is not None:
            status, message, retry_after = refused
            self.stats.connections_refused += 1
            return self._respond(conn, writer, request, status, _error(status, message), correlation,
                                 [(b"Retry-After", str(retry_after).encode())])
        self.admission.opened(ip)
        try:  # whatever happens from here on, the slot is given back
            if request.path in self.events_api.paths:
                await self.events_api.serve(conn, request, reader, writer, ip, correlation)
            elif request.path in PRIVATE_KINDS:
                await self._serve_orders(conn, request, reader, writer, ip, correlation, PRIVATE_KINDS[request.path])
            elif request.path == "/api/stream/prices":
                await self._serve_prices(conn, request, reader, writer, ip, correlation)
            elif request.path == "/api/stream/alerts":
                await self._serve_alerts(conn, request, reader, writer, ip, correlation)
            else:
                await self._serve_trades(conn, request, reader, writer, ip, correlation)
        finally:
            self.admission.closed(ip)

    def _open_stream(self, conn: h11.Connection, request: Request, writer: asyncio.StreamWriter, ip: str,
                     correlation: str, codec: Codec, kind: str, user: str) -> SseClient:
        gzip = "gzip" in request.headers.get("accept-encoding", "").lower()
        throttle = parse_throttle(request.query.get("throttle_ms"))
        throttle = throttle if isinstance(throttle, float) else 0.0  # refused with 400 before a stream opens
        headers = [(b"Content-Type", b"text/event-stream; charset=utf-8"), (b"Cache-Control", b"no-cache"),
                   (b"X-Accel-Buffering", b"no")]
        if gzip:
            headers.append((b"Content-Encoding", b"gzip"))
        writer.write(conn.send(h11.Response(status_code=200, reason=b"OK",
                                            headers=self._head(request, 200, headers, correlation))))
        client = SseClient(writer, ip, self.cfg.client_buffer_bytes, self.stats, codec, gzip, throttle)
        client.kind, client.tally = kind, self.sent
        self.stats.connections_total += 1
        client_id = f"{user}-{kind}-{int(time.time() * 1000)}"
        hello = b"retry: 5000\n\n" + event_bytes("connected", encode({"client_id": client_id,
                                                                      "correlation_id": correlation}))
        client.write(hello)
        log.info("sse_open kind=%s client_id=%s ip=%s gzip=%s throttle=%.3f", kind, client_id, ip, gzip, throttle)
        return client

    async def _serve_trades(self, conn: h11.Connection, request: Request, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter, ip: str, correlation: str) -> None:
        keys = _parse_keys(request.query, self.relay.sources.browser_keys)
        cap = self.max_symbols_per_client
        if not isinstance(keys, str) and len({s for _, s in keys}) > cap:
            keys = f"at most {cap} symbols per stream (TRADE_STREAM_MAX_SYMBOLS_PER_CLIENT)"
        if isinstance(keys, str):
            return self._respond(conn, writer, request, 400, _error(400, keys), correlation)
        client = self._open_stream(conn, request, writer, ip, correlation, self.codec, "trades", "anonymous")
        held = False
        try:
            last = _last_event_id(request)
            if last is not None:
                after = last.n if last.epoch is None else -1  # market ids carry no epoch
                replay = self.ring.replay(after, set(keys))
                if replay is None:
                    client.write(event_bytes("reset", encode({
                        "reason": "cannot replay from that id; refetch state", "last_event_id": after,
                        "current_id": self.ring.last_id})))
                elif replay:
                    client.write(b"".join(replay), len(replay))
            self._hold(client, keys)
            held = True
            self.clients.add(client)
            await self._pump(client, reader)
        finally:
            self.clients.discard(client)
            if held:
                self._release(client, keys)
            self._leave(client)

    async def _serve_orders(self, conn: h11.Connection, request: Request, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter, ip: str, correlation: str, kind: str = "orders") -> None:
        """The user's accounts' order events: each account's journal replayed from its own position (a compound
        Last-Event-ID names one per account), then live; every event's id is the client's position in all.

        ``positions`` follows the same journals without sending their events (its ids are the same positions,
        so ``trading``, which sends both, resumes its orders from any event's id) and starts with every position
        of the user's accounts: positions are state, so that first event is also what a reconnect replays."""
        accounts = self.accounts
        user = self._authorized(conn, request, writer, ip, correlation) if accounts is not None else None
        if user is None or accounts is None:
            return
        names = accounts.visible(user)
        if not names:
            return self._respond(conn, writer, request, 403, _error(403, f"user {user.name} may see no account"),
                                 correlation)
        if not self._admit(conn, request, writer, correlation, user):
            return
        client = self._open_stream(conn, request, writer, ip, correlation, self.codec, kind, user.name)
        stream = self.order_clients[client] = OrderStream(user, names, kind=kind,
                                                          legacy=request.query.get("format") == "legacy")
        watched = [accounts.orders[n] for n in names] if stream.wants_positions else []
        for orders in watched:
            orders.watch(client)  # positions marked to market while someone watches them
        try:
            raw = request.headers.get("last-event-id") or request.query.get("lastEventId") \
                or request.query.get("last_event_id")
            last = event_ids.parse_compound(raw) if event_ids.is_compound(raw) else _last_event_id(request)
            sinces = split_since(last, names, lambda n: accounts.orders[n].epoch)
            for name in names:
                orders = accounts.orders[name]
                plan = orders.plan(sinces.get(name) if stream.wants_orders else None)
                if orders.epoch and plan.start is not None:
                    stream.positions[name] = event_ids.cursor(orders.epoch, plan.start)
                if stream.wants_orders:
                    await self._replay_account(client, stream, orders, plan, sinces.get(name))
                else:
                    self.order_joined[name].add(client)
                if client.closed:
                    return
            if stream.wants_positions and not stream.legacy:
                self._write_positions(client, stream, [p for n in names for p in self._positions_of(n)],
                                      initializing=True)
            await self._pump(client, reader, user.expires_at)
        finally:
            for orders in watched:
                orders.unwatch(client)
            self.order_clients.pop(client, None)
            for joined in self.order_joined.values():
                joined.discard(client)
            self._leave(client)
            accounts.identity.sessions.release(user.name, writer)

    async def _replay_account(self, client: SseClient, stream: OrderStream, orders: Orders, plan: Any,
                              last: event_ids.EventId | None) -> None:
        name = orders.account
        framed: list[int] = []  # ids of frames built but not yet written (the last one of a page may not be)

        def reset(reason: str) -> None:
            epoch, last_id = orders.epoch, orders.plan(None).start
            client.write(event_bytes("reset", encode({
                "reason": reason, "account": name, "last_event_id": last.n if last is not None else None,
                "epoch": epoch,
                "current_id": event_ids.cursor(epoch, last_id) if epoch and last_id is not None else None})))

        def frame(entry: Entry) -> bytes:
            framed.append(entry.id)
            return _order_event(order_events(orders.message(entry), stream.legacy),
                                stream.event_id(name, orders.epoch, entry.id))

        def write(data: bytes, count: int) -> bool:
            if count and orders.epoch:
                stream.positions[name] = event_ids.cursor(orders.epoch, framed[count - 1])
            framed.clear()
            return client.write(data, count)

        if plan.reset:
            reset(plan.reset)
        await orders.replay(client, plan.start, frame, write, reset,
                            lambda: self.order_joined[name].add(client), lambda: not client.closed)

    def _admit(self, conn: h11.Connection, request: Request, writer: asyncio.StreamWriter, correlation: str,
               user: User) -> bool:
        """The user's connection limit (TRADE_STREAM_MAX_CONNECTIONS_PER_USER): one more gets 429."""
        refused = self.accounts.identity.sessions.admit(user.name, writer) if self.accounts is not None else None
        if refused is not None:
            self._respond(conn, writer, request, 429, _error(429, refused.message), correlation,
                          [(b"Retry-After", b"10")])
            return False
        return True

    def _authorized(self, conn: h11.Connection, request: Request, writer: asyncio.StreamWriter, ip: str,
                    correlation: str) -> User | None:
        """The credential check of the private streams (edges/identity.py), and the user's connection limit;
        answers 401, 429 or 503 itself when it fails."""
        accounts = self.accounts
        auth = request.headers.get("authorization", "")
        token = auth[7:] if auth[:7].lower() == "bearer " else request.query.get("token", "")
        found = accounts.identity.resolve(token, ip) if (accounts is not None and token) else None
        if isinstance(found, AuthThrottled):
            self._respond(conn, writer, request, 429, _error(429, found.message), correlation,
                          [(b"Retry-After", str(found.retry_after).encode())])
            return None
        if not isinstance(found, User):
            message = found.message if found is not None else "private streams need a token (Authorization: Bearer …)"
            self._respond(conn, writer, request, 401, {"error": "Unauthorized", "message": message},
                          correlation, [(b"WWW-Authenticate", b"Bearer")])
            return None
        return found

    async def _serve_alerts(self, conn: h11.Connection, request: Request, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter, ip: str, correlation: str) -> None:
        """Trade notifications: ``alert:new`` (id = the notification id), ``alert:read``; Last-Event-ID replays."""
        notifier = self.notifier
        if notifier is None:
            return self._respond(conn, writer, request, 404, _error(404, "notifications are off"), correlation)
        user = self._authorized(conn, request, writer, ip, correlation)
        if user is None:
            return
        if not self._admit(conn, request, writer, correlation, user):
            return
        client = self._open_stream(conn, request, writer, ip, correlation, self.codec, "alerts", user.name)
        try:
            last = _last_event_id(request)
            if last is not None:
                self._replay_alerts(client, last, user)
            self.alert_clients[client] = user  # no await since the replay's read: nothing missed, nothing twice
            await self._pump(client, reader, user.expires_at)
        finally:
            self.alert_clients.pop(client, None)
            self._leave(client)
            self.accounts.identity.sessions.release(user.name, writer)

    def _replay_alerts(self, client: SseClient, last: event_ids.EventId, user: User) -> None:
        notifier = self.notifier
        newest = notifier.last_id()
        notes = None
        if newest is None:
            reason = f"notification store unavailable: {notifier.fault}"
        elif not last.known or last.epoch is not None or last.n > newest:
            reason = "unknown notification id; refetch state"
        else:
            notes = notifier.since(last.n, ALERT_REPLAY_LIMIT + 1, user)
            reason = "notification store unavailable" if notes is None else (
                f"more than {ALERT_REPLAY_LIMIT} notifications to replay; refetch state"
                if len(notes) > ALERT_REPLAY_LIMIT else "")
        if reason:
            client.write(event_bytes("reset", encode({"reason": reason, "last_event_id": last.n,
                                                      "current_id": newest})))
            return
        if notes:
            client.write(b"".join(_alert_event(n) for n in notes), len(notes))

    async def _pump(self, client: SseClient, reader: asyncio.StreamReader, expires_at: float | None = None) -> None:
        """Wait for the client to go away; write a keepalive comment after each quiet interval. A stream opened
        with a JWT ends when the token expires: an ``error`` event says ``token_expired``, then the stream ends
        (EventSource reconnects, and the page's next request carries a fresh token)."""
        keepalive = self.cfg.sse_keepalive
        while not client.closed:
            wait = keepalive - (time.monotonic() - client.last_write)
            if expires_at is not None:
                left = expires_at - time.time()
                if left <= 0:
                    log.info("token_expired kind=sse stream=%s ip=%s", client.kind, client.ip)
                    client.write(event_bytes("error", encode(ClientError(
                        "token_expired", "your token expired: this stream ends; reconnect with a fresh token")
                        .to_message())))
                    client.end()
                    return
                wait = min(wait, left)
            if wait <= 0:
                if not client.write(b": keepalive\n\n"):
                    return
                continue
            try:
                data = await asyncio.wait_for(reader.read(1024), wait)
            except TimeoutError:
                continue
            if not data:
                return

    def _leave(self, client: SseClient) -> None:
        client.finish()

    # --- hub holds --------------------------------------------------------------------------------------

    def _hold(self, client: SseClient, keys: list[Key]) -> None:
        codec = client.codec
        assert isinstance(codec, SseCodec)
        ring = codec.ring
        for key in codec.ring_keys(keys):
            ring.recording_since.setdefault(key, ring.last_id + 1)
        def reply(err: ClientError | None) -> None:
            if err is not None:  # e.g. the symbol cap: say so on the stream, which stays open
                client.write(event_bytes("error", encode(err.to_message())))
                self._stop_recording(keys, codec)

        self.relay.subscribe(client, keys, reply)  # type: ignore[arg-type]

    def _release(self, client: SseClient, keys: list[Key]) -> None:
        """Hand the client's keys to a ghost so they keep being recorded for a reconnect.

        Ghosts are weak holds (they give way to the symbol cap) and one address's ghosts together hold at most
        the per-client cap: the oldest go first."""
        ghost = _Ghost(client.codec, client.ip, keys, self._ghost_evicted)
        self.relay.subscribe(ghost, keys, lambda err: None, weak=True)  # type: ignore[arg-type]
        self.relay.unsubscribe(client, keys)  # type: ignore[arg-type]
        ghost.timer = asyncio.get_running_loop().call_later(GHOST_HOLD, self._drop_ghost, ghost)
        ghosts = self._ghosts.setdefault(ghost.ip, [])
        ghosts.append(ghost)
        while len({s for g in ghosts for _, s in self.relay.hub.held_by(g)}) > self.max_symbols_per_client:
            self._drop_ghost(ghosts[0])

    def _drop_ghost(self, ghost: _Ghost) -> None:
        if ghost.timer is not None:
            ghost.timer.cancel()
        ghosts = self._ghosts.get(ghost.ip, [])
        if ghost in ghosts:
            ghosts.remove(ghost)
            if not ghosts:
                del self._ghosts[ghost.ip]
        self.relay.unsubscribe(ghost, ghost.keys)  # type: ignore[arg-type]
        self._stop_recording(ghost.keys, ghost.codec)

    def _ghost_evicted(self, ghost: _Ghost, keys: list[Key]) -> None:
        self._stop_recording(keys, ghost.codec)
        if not self.relay.hub.held_by(ghost):
            self._drop_ghost(ghost)

    def _stop_recording(self, keys: list[Key], codec: Any) -> None:
        """Keys no SSE holder of this codec takes any more are not recorded: a replay asking for them must get a
        reset (and a price stream's per-symbol state goes)."""
        holders = self.relay.hub.holders
        gone = [key for key in keys if not any(getattr(h, "codec", None) is codec for h in holders.get(key, ()))]
        for key in codec.ring_keys(gone):
            codec.ring.recording_since.pop(key, None)
        codec.forget(gone)

    # --- orders -----------------------------------------------------------------------------------------

    def _on_order_event(self, entry: Entry, orders: Orders) -> None:
        """Only to clients live on this account; the data is encoded once, the id is each client's position."""
        joined = self.order_joined.get(orders.account)
        if not joined:
            return
        message = orders.message(entry)
        rendered: dict[bool, list[tuple[str, bytes]]] = {}  # per format, encoded once
        epoch = orders.epoch
        for client in list(joined):
            stream = self.order_clients.get(client)
            if stream is None:
                continue
            if epoch:
                stream.positions[orders.account] = event_ids.cursor(epoch, entry.id)
            if not stream.wants_orders:
                continue  # a positions stream only moves its position in the journal
            events = rendered.get(stream.legacy)
            if events is None:
                events = rendered[stream.legacy] = order_events(message, stream.legacy)
            client.write(_order_event(events, stream.event_id(orders.account, epoch, entry.id)), len(events))

    def _on_orders_reset(self, reason: str, orders: Orders) -> None:
        ev = event_bytes("reset", encode({"reason": reason, "epoch": orders.epoch, "account": orders.account}))
        for client in list(self.order_joined.get(orders.account, ())):
            client.write(ev)

    def _on_alert(self, msg: dict[str, Any]) -> None:
        account = msg["data"].get("account")
        for client, user in list(self.alert_clients.items()):
            if user.sees(account):
                client.write(_alert_event(msg["data"]), 1)

    def _on_alerts_read(self, msg: dict[str, Any]) -> None:
        ev = event_bytes("alert:read", encode({k: msg[k] for k in ("ids", "all", "unread")}))
        for client, user in list(self.alert_clients.items()):
            if user.name == msg.get("user"):  # read state is per user
                client.write(ev, 1)

    def _on_position(self, msg: dict[str, Any]) -> None:
        """One position changed (a fill, or a price move: Orders sends at most 4 a second per symbol)."""
        joined = self.order_joined.get(msg.get("account", ""))
        if not joined:
            return
        legacy: bytes | None = None
        view = [position_view(msg, msg["account"])]
        for client in list(joined):
            stream = self.order_clients.get(client)
            if stream is None or not stream.wants_positions:
                continue
            if stream.legacy:
                legacy = legacy if legacy is not None else event_bytes("position_update", encode(msg))
                client.write(legacy, 1)
            else:
                self._write_positions(client, stream, view)

    def _positions_of(self, account: str) -> list[dict[str, Any]]:
        assert self.accounts is not None
        return [position_view(p, account) for p in self.accounts.orders[account].positions.views()]

    def _write_positions(self, client: SseClient, stream: OrderStream, positions: list[dict[str, Any]],
                         initializing: bool = False) -> None:
        """``position:update``: the positions that changed (all of them first) and the user's total value over
        every account they see."""
        assert self.accounts is not None
        total = sum(self.accounts.orders[n].positions.portfolio()["market_value"] for n in stream.names)
        body: dict[str, Any] = {"positions": positions, "totalValue": round(total, 2)}
        if initializing:
            body["initializing"] = True
        client.write(event_bytes("position:update", encode(body), stream.current_id()), 1)

    # --- prices -----------------------------------------------------------------------------------------

    async def _serve_prices(self, conn: h11.Connection, request: Request, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter, ip: str, correlation: str) -> None:
        """Public merged prices: first the snapshot of each symbol (``initializing: true``), or the missed events
        after a Last-Event-ID the ring can vouch for, then live ``price:update``."""
        keys = _parse_keys({**request.query, "channels": ",".join(SSE_CHANNELS)}, self.relay.sources.browser_keys)
        cap = self.max_symbols_per_client
        if not isinstance(keys, str) and len({s for _, s in keys}) > cap:
            keys = f"at most {cap} symbols per stream (TRADE_STREAM_MAX_SYMBOLS_PER_CLIENT)"
        if isinstance(keys, str):
            return self._respond(conn, writer, request, 400, _error(400, keys), correlation)
        codec = self.price_codec
        client = self._open_stream(conn, request, writer, ip, correlation, codec, "prices", "anonymous")
        symbols = list(dict.fromkeys(s for _, s in keys))
        held = False
        try:
            last = _last_event_id(request)
            replay = None
            if last is not None:
                after = last.n if last.epoch is None else -1
                replay = self.price_ring.replay(after, set(codec.ring_keys(keys)))
                if replay is None:
                    client.write(event_bytes("reset", encode({
                        "reason": "cannot replay from that id; refetch state", "last_event_id": after,
                        "current_id": self.price_ring.last_id})))
            first: list[dict[str, Any]] = []
            if replay is None:
                stocks = [s for s in symbols if not self.relay.sources.browser_prefix(s)]
                snaps = {m["symbol"]: m["data"] for m in await self.snapshots.get(stocks)} \
                    if self.snapshots is not None and stocks else {}
                first = [f for s in symbols if (f := _initial_price(s, snaps.get(s), codec.state.get(s)))]
                if first:
                    client.write(b"".join(event_bytes("price:update", encode(f)) for f in first), len(first))
            elif replay:
                client.write(b"".join(replay), len(replay))
            self._hold(client, keys)
            held = True
            now_held = {s for _, s in self.relay.hub.held_by(client)}  # not those the symbol cap refused
            for f in first:  # a quote before the next trade still carries the snapshot's price
                if f["symbol"] in now_held:
                    codec.state.setdefault(f["symbol"], {k: f[k] for k in ("symbol", "price", "bid", "ask",
                                                                           "timestamp")})
            self.clients.add(client)
            await self._pump(client, reader)
        finally:
            self.clients.discard(client)
            if held:
                self._release(client, keys)
            self._leave(client)

    def _deliver_price(self, symbol: str, key: Key, ev: bytes) -> None:
        """A coalesced price:update to every price stream holding the symbol (ghosts record, never deliver)."""
        holders = self.relay.hub.holders
        prefix = key[0][:-len("prices")]
        clients = {h for ch in SSE_CHANNELS for h in holders.get((prefix + ch, symbol), ())
                   if getattr(h, "codec", None) is self.price_codec}
        for client in clients:
            client.send([(key, ev)], 1)

    # --- metrics ----------------------------------------------------------------------------------------

    def metrics(self, request: Request, ip: str) -> dict[str, Any]:
        """Public counts. Per-user counts are anonymous unless the caller is an admin user (or holds
        TRADE_STREAM_TOKEN): who is connected is nobody else's business."""
        private = [*self.order_clients.items(), *self.alert_clients.items()]
        per_user = Counter((s.user.name if isinstance(s, OrderStream) else s.name) for _, s in private)
        auth = request.headers.get("authorization", "")
        token = auth[7:] if auth[:7].lower() == "bearer " else request.query.get("token", "")
        found = self.accounts.identity.resolve(token, ip) if (self.accounts is not None and token) else None
        admin = isinstance(found, User) and found.admin
        connections = Counter(c.kind for c in [*self.clients, *self.order_clients, *self.alert_clients])
        return {
            "connections": {k: connections.get(k, 0) for k in ("trades", "prices", "orders", "positions",
                                                               "trading", "alerts")},
            "users": dict(sorted(per_user.items())) if admin else sorted(per_user.values(), reverse=True),
            "events_sent": dict(sorted(self.sent.items())),
            "replay_buffers": {"trades": len(self.ring.events), "prices": len(self.price_ring.events),
                               "prices_coalescing": len(self.price_codec.pending),
                               "orders": "the order journal (TRADE_STREAM_JOURNAL_RETENTION_DAYS)"},
        }


def correlation_id(raw: str | None) -> str:
    """The client's X-Correlation-ID when it is a plain token (it is echoed in a header and logged: no spaces,
    control characters or separators), else a fresh one."""
    value = (raw or "").strip()[:CORRELATION_MAX]
    return value if CORRELATION_RE.fullmatch(value) else uuid.uuid4().hex


def _bad_request(conn: h11.Connection, writer: asyncio.StreamWriter, exc: h11.RemoteProtocolError) -> None:
    """Answer a request h11 could not parse with its 4xx (h11 allows one response after such an error)."""
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    status = exc.error_status_hint if 400 <= exc.error_status_hint < 500 else 400
    body = orjson.dumps(_error(status, "malformed HTTP request"))
    headers = [(b"Content-Type", b"application/json"), (b"Content-Length", str(len(body)).encode()),
               (b"Connection", b"close"), (b"X-Correlation-ID", uuid.uuid4().hex.encode())]
    with contextlib.suppress(h11.LocalProtocolError):
        writer.write(conn.send(h11.Response(status_code=status, headers=headers, reason=_reason(status))))
        writer.write(conn.send(h11.Data(data=body)))
        writer.write(conn.send(h11.EndOfMessage()))


def order_view(message: dict[str, Any]) -> dict[str, Any]:
    """The SSE API's order event: the order's state after this event, flat and camelCase."""
    data = message.get("data") or {}
    order = data.get("order") or {}
    view = {"orderId": order.get("id"), "account": message.get("account"), "symbol": order.get("symbol"),
            "side": order.get("side"), "status": order.get("status"), "qty": order.get("qty"),
            "filledQty": order.get("filled_qty"), "filledAvgPrice": order.get("filled_avg_price"),
            "timestamp": data.get("timestamp") or order.get("updated_at"), "event": message.get("event"),
            "reconciled": message.get("reconciled", False)}
    if message.get("event") in FILL_EVENTS:
        view.update(fillQty=data.get("qty"), fillPrice=data.get("price"))
    return view


def order_events(message: dict[str, Any], legacy: bool) -> list[tuple[str, bytes]]:
    """(event name, data) of one journal entry, encoded once for every client of the same format:
    ``order:update`` (plus ``order:fill`` for a fill), or ``order_update`` with ``?format=legacy``."""
    if legacy:
        return [("order_update", encode(message))]
    data = encode(order_view(message))
    return [("order:update", data), ("order:fill", data)] if message.get("event") in FILL_EVENTS \
        else [("order:update", data)]


def _order_event(events: list[tuple[str, bytes]], event_id: str | int) -> bytes:
    """``id: <epoch>-<n>`` (one account) or the compound id (several): EventSource sends it back as
    Last-Event-ID, which tells our journals from another's and resumes each account where it was. A fill's
    ``order:update`` and ``order:fill`` share the id: they are one journal entry, written together."""
    return b"".join(event_bytes(name, data, event_id) for name, data in events)


def position_view(p: dict[str, Any], account: str) -> dict[str, Any]:
    return {"account": account, "symbol": p.get("symbol"), "qty": p.get("qty"), "side": p.get("side"),
            "avgEntryPrice": p.get("avg_entry_price"), "currentPrice": p.get("current_price"),
            "marketValue": p.get("market_value"), "unrealizedPl": p.get("unrealized_pl")}


def _initial_price(symbol: str, snap: dict[str, Any] | None, live: dict[str, Any] | None) -> dict[str, Any] | None:
    """A symbol's first ``price:update`` (``initializing: true``): the REST snapshot's latest trade and quote, or
    the live state when the snapshot has none (a crypto pair, or no REST feed)."""
    if snap is not None:
        trade, quote = snap.get("latest_trade") or {}, snap.get("latest_quote") or {}
        return {"symbol": symbol, "price": trade.get("price"), "bid": quote.get("bid_price"),
                "ask": quote.get("ask_price"), "timestamp": trade.get("timestamp") or quote.get("timestamp"),
                "initializing": True}
    return {**live, "initializing": True} if live is not None else None


def _alert_event(note: dict[str, Any]) -> bytes:
    """``alert:new`` with the notification's own id (a notification that could not be stored has none)."""
    return event_bytes("alert:new", encode(note), note.get("id"))


def _parse_keys(query: dict[str, str], browser_keys: Callable[[Iterable[str], Iterable[str]], list[Key]]
                ) -> list[Key] | str:
    """The hub keys of ``?symbols=…&channels=…``: the WebSocket side's symbol rules and routing (a pair goes to
    the crypto source), via ``relay.sources.browser_keys``."""
    raw = [s for s in query.get("symbols", "").split(",") if s.strip()]
    if not raw:
        return "give ?symbols=AAPL,MSFT"
    symbols = []
    for s in raw:
        symbol = check_symbol(s)
        if isinstance(symbol, ClientError):
            return f"invalid symbol {s.strip()[:20]!r}: {symbol.message}"
        symbols.append(symbol)
    channels = [c.strip() for c in query.get("channels", "trades").split(",") if c.strip()]
    wrong = [c for c in channels if c not in SSE_CHANNELS]
    if wrong or not channels:
        return f"channels must be from {list(SSE_CHANNELS)}"
    assert set(SSE_CHANNELS) <= set(MARKET_CHANNELS)
    return browser_keys(dict.fromkeys(symbols), dict.fromkeys(channels))


def _last_event_id(request: Request) -> event_ids.EventId | None:
    """None when the client sent none; an unknown id (-1) gets a reset (see event_ids.py)."""
    return event_ids.parse(request.headers.get("last-event-id") or request.query.get("lastEventId")
                           or request.query.get("last_event_id"))



MAX_THROTTLE_MS = 60_000


def parse_throttle(raw: str | None) -> float | str:
    """``throttle_ms`` as seconds (0.0 when absent), or why it is refused: a window must be a finite number of
    milliseconds up to a minute (``1e400`` is infinity, and no timer can wait ``1e308`` ms)."""
    if raw is None or raw == "":
        return 0.0
    try:
        ms = float(raw)
    except ValueError:
        ms = math.nan
    if not 0 <= ms <= MAX_THROTTLE_MS:  # also false for nan
        return f"throttle_ms must be a number of milliseconds from 0 to {MAX_THROTTLE_MS}"
    return ms / 1000


def _error(status: int, message: str) -> dict[str, str]:
    return {"error": _reason(status).decode(), "message": message}


def _reason(status: int) -> bytes:
    from http import HTTPStatus

    return HTTPStatus(status).phrase.encode()
