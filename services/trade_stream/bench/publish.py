"""``trade-stream bench publish``: app-channel events one daemon takes in on ``POST /api/publish`` and delivers.

A daemon (``--demo``, its own state directory, the relay pinned to the first core when there are two) serves
``--clients`` subscribers spread over ``--channels`` channels: SSE streams on the side-port (``--via sse``, the
default: ``GET /api/stream/strategies/bench-<n>`` with the run's token, each channel given one ``warmup`` event
first so that the stream exists) or browser WebSocket clients (``--via ws``: ``app:bench-<n>``, public for the
run, so they need no login). ``--publishers`` concurrent HTTP clients post batches of ``--batch`` events round
the channels for ``--duration`` seconds. Reported: events accepted per second (ids
returned), deliveries per second (events counted at the clients, from the first post to the last delivery),
deliveries missing once the publishers stopped and the clients drained (expected 0), and the CPU seconds of
the relay and of this process meanwhile: the clients and publishers run here, on the other cores, and when this
process is the one using a whole core, the numbers are the bench's limit, not the relay's.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

EVENT = b'"type":"event"'
SSE_EVENT = b"event: bench\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="trade-stream bench publish", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=1000, help="subscribers (default 1000)")
    p.add_argument("--via", choices=("sse", "ws"), default="sse",
                   help="how the subscribers connect: SSE streams on the side-port or browser WebSockets (default sse)")
    p.add_argument("--channels", type=int, default=100, help="channels, the clients spread evenly (default 100)")
    p.add_argument("--publishers", type=int, default=4, help="concurrent publishers (default 4)")
    p.add_argument("--batch", type=int, default=10, help="events per POST (default 10)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds of publishing (default 5)")
    p.add_argument("--no-pin", action="store_true", help="do not pin the daemon to a core of its own")
    p.add_argument("--json", action="store_true", help="print JSON results instead of the table")
    return p.parse_args(argv)


class Tally:
    """Deliveries counted at the clients; ``done`` once they reach ``target`` (set when the publishers stop)."""

    def __init__(self) -> None:
        self.total = 0
        self.last = 0.0
        self.target: float = float("inf")
        self.done = asyncio.Event()

    def add(self) -> None:
        self.total += 1
        self.last = time.perf_counter()
        if self.total >= self.target:
            self.done.set()

    def expect(self, target: int) -> None:
        self.target = target
        if self.total >= target:
            self.done.set()


class Subscriber(asyncio.Protocol):
    """One browser client on a raw socket: the WebSocket handshake, one masked subscribe frame, then every
    ``"type":"event"`` in what arrives counted with ``bytes.count`` (frames are not parsed: a client library
    would cost the bench more per message than the relay spends on it)."""

    def __init__(self, channel: str, tally: Tally) -> None:
        self.channel = channel
        self.tally = tally
        self.ready = asyncio.Event()
        self.transport: Any = None  # uvloop's transports are not instances of asyncio's classes
        self._buf = b""
        self._open = False

    def protocol(self) -> Subscriber:
        """The protocol factory ``create_connection`` calls: this client itself."""
        return self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        key = base64.b64encode(secrets.token_bytes(16))
        self.transport.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                             b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")

    def data_received(self, data: bytes) -> None:
        data = self._buf + data
        if not self._open:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self._buf = data
                return
            if not data.startswith(b"HTTP/1.1 101"):
                raise RuntimeError(f"the handshake was refused: {data[:80]!r}")
            self._open, data = True, data[end + 4:]
            self.transport.write(masked(json.dumps({"action": "subscribe", "channel": self.channel}).encode()))
        if not self.ready.is_set() and b'"subscribed"' in data:
            self.ready.set()
        for _ in range(data.count(EVENT)):
            self.tally.add()
        self._buf = data[-(len(EVENT) - 1):]  # a marker split across two reads is counted once, in the second
        if EVENT in self._buf:
            self._buf = b""


class SseSubscriber(asyncio.Protocol):
    """One SSE client on a raw socket: ``GET /api/stream/strategies/<id>`` with the run's token, then every
    ``event: bench`` line in what arrives counted with ``bytes.count`` (the chunked framing is not parsed: one event
    is one chunk, so a marker never straddles a chunk header; one that straddles two reads is kept for the next)."""

    def __init__(self, strategy: str, token: str, tally: Tally) -> None:
        self.strategy = strategy
        self.token = token
        self.tally = tally
        self.ready = asyncio.Event()
        self.transport: Any = None
        self._buf = b""

    def protocol(self) -> SseSubscriber:
        return self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.transport.write(f"GET /api/stream/strategies/{self.strategy} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                             f"Authorization: Bearer {self.token}\r\nAccept: text/event-stream\r\n\r\n".encode())

    def data_received(self, data: bytes) -> None:
        data = self._buf + data
        if not self.ready.is_set():
            if not data.startswith(b"HTTP/1.1 200"):
                if b"\r\n\r\n" in data:
                    raise RuntimeError(f"the stream was refused: {data[:200]!r}")
                self._buf = data
                return
            if b"event: connected" not in data:
                self._buf = data
                return
            self.ready.set()
        for _ in range(data.count(SSE_EVENT)):
            self.tally.add()
        self._buf = data[-(len(SSE_EVENT) - 1):]
        if SSE_EVENT in self._buf:
            self._buf = b""


def masked(payload: bytes) -> bytes:
    """One client text frame (clients must mask; payloads here are short)."""
    mask = secrets.token_bytes(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + body


async def post(port: int, key: str, body: bytes) -> tuple[int, bytes]:
    """One ``POST /api/publish`` on a connection of its own (the main port answers one request per connection),
    written and read with plain asyncio streams: an HTTP client library would cost the bench more than the
    daemon."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + key.encode()
                     + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
                     + b"\r\n\r\n" + body)
        answer = await reader.read(-1)
    finally:
        writer.close()
    head, _, payload = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), payload


async def publisher(port: int, key: str, channels: list[str], offset: int, batch: int, until: float) -> int:
    accepted = 0
    n = offset
    while time.perf_counter() < until:
        body = json.dumps([{"channel": channels[(n + i) % len(channels)], "event": "bench", "data": {"n": n + i}}
                           for i in range(batch)]).encode()
        n += batch
        status, payload = await post(port, key, body)
        if status != 200:
            raise RuntimeError(f"publish answered {status}: {payload[:200]!r}")
        accepted += len(json.loads(payload)["ids"])
    return accepted


async def warm_up(port: int, key: str, channels: list[str]) -> None:
    """One ``warmup`` event on each channel: a strategy's stream answers 404 until the relay holds an event of it."""
    body = json.dumps([{"channel": c, "event": "warmup", "data": {}} for c in channels]).encode()
    status, payload = await post(port, key, body)
    if status != 200:
        raise RuntimeError(f"the warm-up publish answered {status}: {payload[:200]!r}")


async def wait_listening(port: int, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                await client.get(f"http://127.0.0.1:{port}/healthz")
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not listen on {port} within {timeout:.0f}s")
            await asyncio.sleep(0.2)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    from trade_stream.bench.probes import cpu_seconds
    from trade_stream.bench.procs import Children, core_split, raise_fd_limit
    from trade_stream.bench.runner import free_port

    raise_fd_limit()
    relay_cores, other_cores = core_split(not args.no_pin)
    if other_cores:
        os.sched_setaffinity(0, other_cores)
    key, token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    port, sse_port = free_port(), free_port()
    sse = args.via == "sse"
    channels = [f"strategies:bench-{i}" if sse else f"app:bench-{i}" for i in range(args.channels)]
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp:
        children = Children(Path(tmp))
        env = {"TRADE_STREAM_PUBLISH_KEY": key, "TRADE_STREAM_PUBLIC_CHANNELS": "app:bench-*",
               "TRADE_STREAM_MAX_CONNECTIONS_PER_IP": "1000000", "TRADE_STREAM_MAX_CONNECTIONS": "1000000",
               "TRADE_STREAM_MAX_CONNECT_RATE_PER_IP": "0", "TRADE_STREAM_LOG_LEVEL": "WARNING",
               "TRADE_STREAM_PING_INTERVAL": "0",  # the raw clients answer no pings
               "TRADE_STREAM_STATE_DIR": str(Path(tmp) / "state"), "TRADE_STREAM_PORT": str(port),
               "TRADE_STREAM_SSE_PORT": str(sse_port), "TRADE_STREAM_TOKEN": token,
               "TRADE_STREAM_MAX_CONNECTIONS_PER_USER": "1000000"}
        os.environ.update(env)  # the daemon inherits them (Children passes this environment on)
        try:
            relay = await children.spawn("relay", [sys.executable, "-m", "trade_stream", "--demo", "--env-file",
                                           "/dev/null"], relay_cores)
            await wait_listening(port, 60)
            tally, loop = Tally(), asyncio.get_running_loop()
            subs: list[Subscriber] | list[SseSubscriber]
            if sse:
                await warm_up(port, key, channels)
                subs = [SseSubscriber(channels[i % len(channels)].partition(":")[2], token, tally)
                        for i in range(args.clients)]
            else:
                subs = [Subscriber(channels[i % len(channels)], tally) for i in range(args.clients)]
            for i in range(0, len(subs), 100):  # connect in waves, as browsers arrive
                wave = subs[i:i + 100]
                await asyncio.gather(*(loop.create_connection(s.protocol, "127.0.0.1", sse_port if sse else port)
                                       for s in wave))
                await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in wave)), 60)
            per_channel = [sum(1 for i in range(args.clients) if i % len(channels) == c) for c in range(len(channels))]
            relay_cpu, own_cpu = cpu_seconds(relay.pid), cpu_seconds(os.getpid())
            started = time.perf_counter()
            until = started + args.duration
            counts = await asyncio.gather(*(publisher(port, key, channels, p * 1_000_000, args.batch, until)
                                            for p in range(args.publishers)))
            published_for = time.perf_counter() - started
            accepted = sum(counts)
            # Every publisher walks the channels round-robin from its own offset: the deliveries each event owes.
            expected = sum(per_channel[(p * 1_000_000 + i) % len(channels)] for p, c in enumerate(counts)
                           for i in range(c))
            tally.expect(expected)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(tally.done.wait(), 30)  # the clients drain what is still on its way
            delivered, last = tally.total, tally.last or started
            relay_cpu, own_cpu = cpu_seconds(relay.pid) - relay_cpu, cpu_seconds(os.getpid()) - own_cpu
            for sub in subs:
                if sub.transport is not None:
                    sub.transport.close()
        finally:
            await children.stop_all()
    return {"via": args.via, "clients": args.clients, "channels": args.channels, "publishers": args.publishers,
            "batch": args.batch, "duration_s": round(published_for, 2), "accepted": accepted,
            "accepted_per_s": round(accepted / published_for), "deliveries": delivered,
            "deliveries_per_s": round(delivered / max(last - started, 1e-9)),
            "missing": max(0, expected - delivered), "pinned": relay_cores is not None,
            "relay_cpu_s": round(relay_cpu, 2), "bench_cpu_s": round(own_cpu, 2),
            "wall_s": round(max(last - started, published_for), 2)}


def main(argv: list[str]) -> int:
    import uvloop

    args = parse_args(argv)
    if min(args.clients, args.channels, args.publishers, args.batch) < 1 or args.duration <= 0:
        print("trade-stream bench publish: --clients, --channels, --publishers and --batch must be at least 1, "
              "--duration above 0", file=sys.stderr)
        return 2
    try:
        result = uvloop.run(bench(args))
    except (RuntimeError, OSError) as exc:
        print(f"trade-stream bench publish: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    kind = "SSE streams" if result["via"] == "sse" else "WebSocket clients"
    print(f"{result['clients']} {kind} on {result['channels']} channels, {result['publishers']} "
          f"publishers posting batches of {result['batch']} for {result['duration_s']} s"
          f"{' (relay pinned to its own core)' if result['pinned'] else ''}:")
    print(f"  taken in   {result['accepted_per_s']:>9,} events/s   ({result['accepted']:,} events)")
    print(f"  delivered  {result['deliveries_per_s']:>9,} events/s   ({result['deliveries']:,} deliveries, "
          f"{result['missing']:,} missing)")
    print(f"  CPU        relay {result['relay_cpu_s']} s, clients and publishers {result['bench_cpu_s']} s, over "
          f"{result['wall_s']} s")
    return 0
