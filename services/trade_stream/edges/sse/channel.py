"""One connection of the SSE side-port, as the streams see it: the request, and how to answer it.

h11 parses the request and writes the response head (sans-I/O, as websockets does for WebSocket); the body is
either one JSON ``Response`` or a chunked event stream that a ``Channel`` opens and keeps alive. Everything a
stream needs from the connection goes through its ``Channel``, so the streams never touch h11.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import h11
import orjson

from trade_stream.config import Config
from trade_stream.core import event_ids
from trade_stream.core.fanout import Codec
from trade_stream.core.protocol import ClientError, encode
from trade_stream.core.stats import Stats
from trade_stream.edges.http.request import Headers, Request, query_of
from trade_stream.edges.http.responses import Cors, Response, error_body, preflight
from trade_stream.edges.sse.client import SseClient
from trade_stream.edges.sse.wire import event_bytes
from trade_stream.edges.transport import Writes

log = logging.getLogger("trade_stream.edges.sse")

REQUEST_TIMEOUT = 10.0
CORRELATION_RE = re.compile(r"[A-Za-z0-9._:-]+")
CORRELATION_MAX = 100
PREFLIGHT = preflight("GET, OPTIONS", "Content-Type, Authorization, Last-Event-ID")
MAX_THROTTLE_MS = 60_000
STREAM_HEADERS = [(b"Content-Type", b"text/event-stream; charset=utf-8"), (b"Cache-Control", b"no-cache"),
                  (b"X-Accel-Buffering", b"no")]


@dataclass
class Shared:
    """What every stream of the port shares: the config, the counters, the CORS rule, and the per-client symbol
    cap (SIGHUP changes it for new streams)."""

    cfg: Config
    stats: Stats
    cors: Cors
    max_symbols_per_client: int
    sent: Counter[str] = field(default_factory=Counter)  # events written, per stream kind
    writes: Writes = field(init=False)  # every stream's writes of one iteration (or delay), merged

    def __post_init__(self) -> None:
        self.writes = Writes(self.stats, self.cfg.write_delay_ms / 1000)


async def read_request(conn: h11.Connection, reader: asyncio.StreamReader, ip: str,
                       max_body: int = 0) -> Request | None:
    """The request with its whole body read, or None when the client left first. A header sent twice keeps its
    last value. A body of at most ``max_body`` bytes is kept (``POST /api/publish``); a larger one is not
    read on (``body_error`` 413), any other is read and dropped."""
    request = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(8192)
            conn.receive_data(data)
            if not data and conn.their_state is not h11.DONE and request is None:
                return None
            continue
        if isinstance(event, h11.Request):
            target = urlsplit(event.target.decode("latin-1"))
            headers = Headers((k.decode(), v.decode("latin-1")) for k, v in event.headers)
            request = Request(event.method.decode(), target.path, headers, query_of(target.query), ip)
        elif isinstance(event, h11.Data) and max_body:
            body += event.data
            if len(body) > max_body and request is not None:
                return dataclasses.replace(request, body_error=413)
        elif isinstance(event, h11.EndOfMessage):
            return dataclasses.replace(request, body=bytes(body)) if body and request is not None else request
        elif isinstance(event, h11.ConnectionClosed):
            return None


def bad_request(conn: h11.Connection, writer: asyncio.StreamWriter, exc: h11.RemoteProtocolError) -> None:
    """Answer a request h11 could not parse with its 4xx (h11 allows one response after such an error)."""
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    status = exc.error_status_hint if 400 <= exc.error_status_hint < 500 else 400
    body = orjson.dumps(error_body(status, "malformed HTTP request"))
    headers = [(b"Content-Type", b"application/json"), (b"Content-Length", str(len(body)).encode()),
               (b"Connection", b"close"), (b"X-Correlation-ID", uuid.uuid4().hex.encode())]
    with contextlib.suppress(h11.LocalProtocolError):
        writer.write(conn.send(h11.Response(status_code=status, headers=headers, reason=_reason(status))))
        writer.write(conn.send(h11.Data(data=body)))
        writer.write(conn.send(h11.EndOfMessage()))


class Channel:
    """One request on the side-port: answer it once (``respond``), or open an event stream on it (``open``) and
    keep that alive until the client leaves (``pump``)."""

    def __init__(self, conn: h11.Connection, request: Request, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, shared: Shared) -> None:
        self.conn = conn
        self.request = request
        self.reader = reader
        self.writer = writer
        self.shared = shared
        self.correlation = correlation_id(request.headers.get("x-correlation-id"))

    @property
    def ip(self) -> str:
        return self.request.ip

    def head(self, extra: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """Every answer's headers: the correlation id, ``Vary: Origin``, ``extra``, and the CORS grant."""
        headers = [(b"X-Correlation-ID", self.correlation.encode()), (b"Vary", b"Origin"), *extra]
        headers += [(k.encode(), v.encode()) for k, v in self.shared.cors.grant(self.request.headers).items()]
        return headers

    def respond(self, resp: Response) -> None:
        """One response, then the connection closes (no body for HEAD; the length stays that of the GET)."""
        extra = [(k.encode(), v.encode()) for k, v in resp.headers.items()]
        headers = self.head([*extra, (b"Content-Length", str(len(resp.body)).encode()), (b"Connection", b"close")])
        if resp.content_type is not None:
            headers.append((b"Content-Type", resp.content_type.encode()))
        send, writer = self.conn.send, self.writer
        writer.write(send(h11.Response(status_code=resp.status, headers=headers, reason=_reason(resp.status))))
        if resp.body and self.request.method != "HEAD":
            writer.write(send(h11.Data(data=resp.body)))
        writer.write(send(h11.EndOfMessage()))

    def start(self, codec: Codec, kind: str, headers: list[tuple[bytes, bytes]], gzip: bool = False,
              throttle: float = 0.0) -> SseClient:
        """Write a 200 head with ``headers`` and make the stream's writer; nothing of the body yet."""
        self.writer.write(self.conn.send(h11.Response(status_code=200, reason=b"OK", headers=self.head(headers))))
        shared = self.shared
        client = SseClient(self.writer, self.ip, shared.cfg.client_buffer_bytes, shared.stats, shared.writes, codec,
                           gzip, throttle)
        client.kind, client.tally = kind, shared.sent
        return client

    def open(self, codec: Codec, kind: str, user: str) -> SseClient:
        """The side-port's own event stream: gzip when asked, ``throttle_ms``, then ``retry`` and ``connected``."""
        request = self.request
        gzip = "gzip" in request.headers.get("accept-encoding", "").lower()
        throttle = parse_throttle(request.query.get("throttle_ms"))
        throttle = throttle if isinstance(throttle, float) else 0.0  # refused with 400 before a stream opens
        headers = [*STREAM_HEADERS, (b"Content-Encoding", b"gzip")] if gzip else STREAM_HEADERS
        client = self.start(codec, kind, headers, gzip, throttle)
        self.shared.stats.connections_total += 1
        client_id = f"{user}-{kind}-{int(time.time() * 1000)}"
        hello = b"retry: 5000\n\n" + event_bytes("connected", encode({"client_id": client_id,
                                                                      "correlation_id": self.correlation}))
        client.write(hello)
        log.info("sse_open kind=%s client_id=%s ip=%s gzip=%s throttle=%.3f", kind, client_id, self.ip, gzip,
                 throttle)
        return client

    async def pump(self, client: SseClient, expires_at: float | None = None) -> None:
        """Wait for the client to go away; write a keepalive comment after each quiet interval. A stream opened
        with a JWT ends when the token expires: an ``error`` event says ``token_expired``, then the stream ends
        (EventSource reconnects, and the page's next request carries a fresh token)."""
        keepalive = self.shared.cfg.sse_keepalive
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
            if not await self.wait_read(wait):
                return

    async def wait_read(self, wait: float) -> bool:
        """False once the client has closed its side; True after ``wait`` seconds of quiet (or data, ignored)."""
        try:
            data = await asyncio.wait_for(self.reader.read(1024), wait)
        except TimeoutError:
            return True
        return bool(data)


def correlation_id(raw: str | None) -> str:
    """The client's X-Correlation-ID when it is a plain token (it is echoed in a header and logged: no spaces,
    control characters or separators), else a fresh one."""
    value = (raw or "").strip()[:CORRELATION_MAX]
    return value if CORRELATION_RE.fullmatch(value) else uuid.uuid4().hex


def last_event_id(request: Request) -> event_ids.EventId | None:
    """None when the client sent none; an unknown id (-1) gets a reset (see event_ids.py)."""
    return event_ids.parse(raw_last_event_id(request))


def raw_last_event_id(request: Request) -> str | None:
    return request.headers.get("last-event-id") or request.query.get("lastEventId") \
        or request.query.get("last_event_id")


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


def _reason(status: int) -> bytes:
    return Response(status).reason.encode()
