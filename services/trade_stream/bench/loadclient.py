"""One load-client process: hundreds of raw WebSocket clients on one uvloop loop, speaking the browser protocol.

Why raw frames instead of websockets' client: at 100k messages/s the clients share one core with the simulator,
and a full client library costs ~10 µs per message, so the clients, not the relay, would be the bottleneck. Here a
message costs a frame-header walk, a ``bytes.find`` for ``"timestamp"`` and a cached timestamp parse; nothing else
of a market message is decoded. Control messages (welcome, subscribed, errors) are rare and fully decoded.

Protocol with the parent (``bench``), one JSON object per line:
  stdin  ``{"cmd": "window", "start_ns": …, "end_ns": …}`` count market messages stamped inside [start, end)
         ``{"cmd": "stall"}`` the stalling clients stop reading; ``{"cmd": "report"}``; ``{"cmd": "exit"}``
  stdout ``{"event": "ready", …}`` once every client is subscribed; ``{"event": "report", …}`` when asked.
The process exits when stdin closes, so it cannot outlive the bench.
"""

from __future__ import annotations

import asyncio
import base64
import calendar
import json
import os
import re
import socket
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import uvloop

from trade_stream.bench.histogram import Histogram

NS = 1_000_000_000
STALLER_RCVBUF = 16 * 1024
_POW10 = [10 ** (9 - k) for k in range(10)]
_sec_cache: dict[bytes, int] = {}
_GENERIC_TS = re.compile(rb"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")


def ts_ns(ts: bytes) -> int:
    """RFC-3339 timestamp -> ns since the epoch. Any fraction length (Go trims trailing zeros, or drops the
    fraction entirely on a whole second); the whole-second prefix is cached because it changes once a second."""
    if ts[-1:] != b"Z" or len(ts) < 20:
        return _ts_generic(ts)
    sec = _sec_cache.get(ts[:19])
    if sec is None:
        if len(_sec_cache) > 4096:
            _sec_cache.clear()
        sec = _sec_cache[ts[:19]] = calendar.timegm(time.strptime(ts[:19].decode(), "%Y-%m-%dT%H:%M:%S"))
    if len(ts) == 20:
        return sec * NS
    frac = ts[20:-1]
    return sec * NS + int(frac) * _POW10[len(frac)]


def _ts_generic(ts: bytes) -> int:
    match = _GENERIC_TS.fullmatch(ts)
    if match is None:
        raise ValueError(f"bad timestamp {ts[:40]!r}")
    base, frac, zone = match.groups()
    zone = b"+00:00" if zone == b"Z" else zone
    seconds = int(datetime.fromisoformat((base + zone).decode()).timestamp())
    return seconds * NS + int((frac or b"0").ljust(9, b"0"))


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (servers must reject unmasked ones)."""
    n = len(payload)
    head = bytes((0x80 | opcode, 0x80 | n)) if n < 126 else bytes((0x80 | opcode, 0xFE)) + n.to_bytes(2, "big")
    key = os.urandom(4)
    if not n:
        return head + key
    mask = int.from_bytes((key * (n // 4 + 1))[:n], "big")
    return head + key + (int.from_bytes(payload, "big") ^ mask).to_bytes(n, "big")


@dataclass
class Window:
    """What every client in the process counts: market messages stamped in [start_ns, end_ns)."""

    start_ns: int = 0
    end_ns: int = 0
    hist: Histogram = field(default_factory=Histogram)
    early: int = 0
    late: int = 0
    errors: list[str] = field(default_factory=list)

    def error(self, text: str) -> None:
        if len(self.errors) < 10:
            self.errors.append(text[:300])


class WsClient(asyncio.Protocol):
    """One browser-protocol client: handshake, subscribe, then count and time market messages."""

    def __init__(self, window: Window, index: int, host: str, port: int, symbols: list[str], batch: bool,
                 staller: bool) -> None:
        self.window = window
        self.index = index  # position in the spec, so the bench can match counts to symbols
        self.host, self.port = host, port
        self.symbols = symbols
        self.batch = batch
        self.staller = staller
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.upgraded = False
        self.buf = b""
        self.subscribed = 0
        self.received = 0
        self.closed = False

    # --- connection ---------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's signature names the base class; a TCP connection's transport is a Transport, and uvloop's
        # TCPTransport implements it without subclassing asyncio.Transport, so isinstance cannot narrow it.
        tcp: asyncio.Transport = transport  # type: ignore[assignment]  # asyncio's and uvloop's types
        self.transport = tcp
        key = base64.b64encode(os.urandom(16)).decode()
        tcp.write((f"GET / HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
                         f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                         "User-Agent: trade-stream-bench\r\n\r\n").encode())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before subscribed: {exc}"))

    def send_json(self, msg: dict[str, Any]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(0x1, orjson.dumps(msg)))

    def stall(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    # --- frames -------------------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.buf:
            data = self.buf + data
            self.buf = b""
        if not self.upgraded:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buf = data
                return
            status = data[:data.find(b"\r\n")]
            if b" 101 " not in status:
                self._fail(f"handshake refused: {status.decode(errors='replace')} {data[end + 4:][:200]!r}")
                return
            self.upgraded = True
            data = data[end + 4:]
        i, n = 0, len(data)
        first_market = -1  # where this read's first market frame starts: its oldest message
        market_msgs = 0
        while i + 2 <= n:
            length = data[i + 1] & 0x7F
            start = i + 2
            if length == 126:
                if i + 4 > n:
                    break
                length = int.from_bytes(data[i + 2:i + 4], "big")
                start = i + 4
            elif length == 127:
                if i + 10 > n:
                    break
                length = int.from_bytes(data[i + 2:i + 10], "big")
                start = i + 10
            end = start + length
            if end > n:
                break
            opcode = data[i] & 0x0F
            if opcode == 0x1 or opcode == 0x2:
                count = data.count(b'"timestamp"', start, end)
                if count:
                    if first_market < 0:
                        first_market = start
                    market_msgs += count
                else:
                    self._control(data[start:end])
            else:
                self._control_frame(opcode, data[start:end])
            i = end
        if i < n:
            self.buf = data[i:]
        if market_msgs:
            self._market(data, first_market, market_msgs)

    def _market(self, data: bytes, start: int, count: int) -> None:
        """Count the ``count`` market messages of one read and time them by the first (oldest) one.

        Every message in a read arrived at the same instant, and the first was stamped earliest, so its latency
        is an upper bound for the rest: conservative, and one timestamp parse per read instead of per message,
        which keeps the load clients' own queueing out of the relay's numbers.
        """
        now = time.time_ns()
        window = self.window
        q = data.find(b'"', data.find(b'"timestamp"', start) + 11)
        ns = ts_ns(data[q + 1:data.find(b'"', q + 1)])
        if ns < window.start_ns:
            window.early += count
        elif ns < window.end_ns:
            if not self.staller:
                self.received += count
                lat = (now - ns) / 1000.0
                window.hist.add(lat if lat > 0 else 0.0, count)
        else:
            window.late += count

    def _control(self, payload: bytes) -> None:
        try:
            msg = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.window.error(f"undecodable frame {payload[:100]!r}")
            return
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind == "welcome":
            if self.batch:
                self.send_json({"action": "options", "batch": True})
            self.send_json({"action": "subscribe", "symbols": self.symbols})
        elif kind == "subscribed":
            self.subscribed += 1
            if self.subscribed >= len(self.symbols) and not self.ready.done():
                self.ready.set_result(None)
        elif kind == "error":
            if self.batch and msg.get("code") in ("unknown_action", "bad_message"):
                return  # a relay without batch support (the baseline): stay on one message per frame
            self.window.error(f"relay error: {payload[:200].decode(errors='replace')}")
            if not self.ready.done():
                self.ready.set_exception(RuntimeError(msg.get("message", "relay error")))

    def _control_frame(self, opcode: int, payload: bytes) -> None:
        if opcode == 0x9 and self.transport is not None:  # ping -> pong, or the relay's keepalive drops us
            self.transport.write(client_frame(0xA, payload))
        elif opcode == 0x8 and self.transport is not None:
            self.transport.write(client_frame(0x8, payload[:2]))
            self.transport.close()

    def _fail(self, text: str) -> None:
        self.window.error(text)
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(text))
        if self.transport is not None:
            self.transport.abort()


async def open_client(window: Window, index: int, host: str, port: int, symbols: list[str], batch: bool,
                      staller: bool, gate: asyncio.Semaphore, timeout: float) -> WsClient | None:
    """Connect and subscribe one client, retrying a refused connect (the listen backlog can overflow)."""
    loop = asyncio.get_running_loop()
    async with gate:
        for attempt in range(4):
            client = WsClient(window, index, host, port, symbols, batch, staller)
            try:
                sock = await asyncio.wait_for(_connect(host, port, staller), timeout)
                await loop.create_connection(lambda: client, sock=sock)  # noqa: B023  # called before the loop goes on
                await asyncio.wait_for(client.ready, timeout)
                return client
            except (OSError, TimeoutError, ConnectionError) as exc:
                if client.transport is not None:
                    client.transport.abort()
                if attempt == 3:
                    window.error(f"connect failed: {type(exc).__name__}: {exc}")
                    return None
                await asyncio.sleep(0.2 * (attempt + 1))
            except RuntimeError as exc:
                window.error(f"subscribe refused: {exc}")
                return None
    return None


async def _connect(host: str, port: int, staller: bool) -> socket.socket:
    """A connected socket. A staller gets a small fixed receive buffer: Linux would otherwise keep growing an
    unread socket's receive window (up to tcp_rmem's max, 32 MB here) and the relay would see a healthy reader
    for minutes. With 16 KiB the window closes at once, as it does for any client once its buffer is full."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    if staller:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STALLER_RCVBUF)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def run(spec: dict[str, Any]) -> None:
    window = Window()
    gate = asyncio.Semaphore(int(spec.get("concurrency", 32)))
    host, port, batch = spec["host"], int(spec["port"]), bool(spec.get("batch"))
    started = time.monotonic()
    opened = await asyncio.gather(*(
        open_client(window, i, host, port, c["symbols"], batch, bool(c.get("stall")), gate,
                    float(spec.get("timeout", 30)))
        for i, c in enumerate(spec["clients"])))
    clients = [c for c in opened if c is not None]
    emit({"event": "ready", "connected": len(clients), "failed": len(opened) - len(clients),
          "seconds": round(time.monotonic() - started, 2), "errors": window.errors})

    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd = json.loads(line)
        if cmd["cmd"] == "window":
            window.start_ns, window.end_ns = int(cmd["start_ns"]), int(cmd["end_ns"])
        elif cmd["cmd"] == "stall":
            for c in clients:
                if c.staller:
                    c.stall()
        elif cmd["cmd"] == "report":
            emit(report(window, clients))
        elif cmd["cmd"] == "exit":
            break
    for c in clients:
        if c.transport is not None:
            c.transport.abort()


def report(window: Window, clients: list[WsClient]) -> dict[str, Any]:
    normal = [c for c in clients if not c.staller]
    return {
        "event": "report",
        "per_client": [[c.index, c.received] for c in normal],
        "lost": sum(1 for c in normal if c.closed),
        "staller_closed": [c.closed for c in clients if c.staller],
        "early": window.early, "late": window.late,
        "hist": window.hist.to_json(), "errors": window.errors,
    }


def main() -> None:
    with open(sys.argv[1], "rb") as f:
        spec = orjson.loads(f.read())
    uvloop.run(run(spec))


if __name__ == "__main__":
    main()
