"""Clients and the fan-out path: each upstream message is encoded once per codec and written, never awaited.

Two rules bound what a client can cost. A client whose unsent backlog passes ``cap`` is aborted (a graceful
close would wait in drain() forever on a stalled peer). And a client that accepts no data
at all for ``stall_timeout`` seconds while data is pending is aborted too: kernel buffers autotune to megabytes,
so a reader that stopped could otherwise look healthy for minutes. All frames a client is owed from one upstream
batch go out in one ``transport.write``.
"""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import logging
import struct
import termios
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from websockets.asyncio.server import ServerConnection
from websockets.protocol import State

from trade_stream.core.framing import text_frame
from trade_stream.core.protocol import CHANNEL_OF, encode, market_message
from trade_stream.core.stats import Stats

log = logging.getLogger("trade_stream.core.fanout")
_ids = itertools.count(1)


class Codec:
    """How one kind of client wants messages: ``body`` per market message (cached across clients), ``frames``
    to turn a client's bodies from one batch into the bytes to write, and ``control`` to render one of the
    relay's own browser-protocol messages (status, errors) for this kind of client, or None to say nothing.
    Every relay-originated message goes through ``control``: that is what keeps a browser frame from ever
    reaching an Alpaca SDK."""

    def body(self, m: dict[str, Any]) -> bytes | None:
        raise NotImplementedError

    def frames(self, bodies: list[bytes]) -> bytes:
        raise NotImplementedError

    def control(self, msg: dict[str, Any]) -> bytes | None:
        raise NotImplementedError


def browser_control(msg: dict[str, Any]) -> bytes:
    return text_frame(encode(msg))


class BrowserCodec(Codec):
    """One message per frame; the body is the finished frame, so clients share the exact bytes."""

    def body(self, m: dict[str, Any]) -> bytes | None:
        msg = market_message(m)
        return text_frame(encode(msg)) if msg is not None else None

    def frames(self, bodies: list[bytes]) -> bytes:
        return bodies[0] if len(bodies) == 1 else b"".join(bodies)

    def control(self, msg: dict[str, Any]) -> bytes:
        return browser_control(msg)


class BrowserBatchCodec(Codec):
    """Opt-in batched mode: one JSON array per upstream batch."""

    def body(self, m: dict[str, Any]) -> bytes | None:
        msg = market_message(m)
        return encode(msg) if msg is not None else None

    def frames(self, bodies: list[bytes]) -> bytes:
        return text_frame(b"[" + b",".join(bodies) + b"]")

    def control(self, msg: dict[str, Any]) -> bytes:
        return browser_control(msg)


BROWSER = BrowserCodec()
BROWSER_BATCH = BrowserBatchCodec()


class Holder(Protocol):
    """What the relay holds keys for and the router delivers to: a codec, and ``send`` for what that codec's
    ``frames`` make, with the number of messages in it. A browser socket (Client), an SSE stream, a ghost keeping
    a departed stream's keys and the position marker's tap are all holders."""

    @property
    def codec(self) -> Codec: ...

    def send(self, data: Any, count: int = 1) -> bool: ...

    def __hash__(self) -> int: ...  # the hub keys its tables by holder


def kernel_unsent(fd: int) -> int:
    """Bytes in the socket's send queue not yet acknowledged by the peer (SIOCOUTQ, which is TIOCOUTQ)."""
    if fd < 0:
        return 0
    try:
        return struct.unpack("i", fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    except OSError:  # closed under us
        return 0


class Peer:
    """What every streaming client shares: a transport, a byte cap, and progress tracking for stalls."""

    __slots__ = ("_mark", "_mark_time", "cap", "fd", "ip", "stats", "transport", "written")

    def _init_peer(self, transport: Any, ip: str, cap: int, stats: Stats) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        self.fd = sock.fileno() if sock is not None else -1
        self.ip = ip
        self.cap = cap
        self.stats = stats
        self.written = 0
        self._mark = 0
        self._mark_time = 0.0

    def stalled(self, now: float, timeout: float) -> bool:
        """True when data is pending and the peer has accepted none of it for ``timeout`` seconds."""
        if self.written == self._mark:  # nothing written since all was seen delivered: skip the syscall
            self._mark_time = now
            return False
        pending = self.transport.get_write_buffer_size() + kernel_unsent(self.fd)
        delivered = self.written - pending
        if pending == 0 or delivered > self._mark or not self._mark_time:
            self._mark, self._mark_time = delivered, now
            return False
        return now - self._mark_time > timeout

    def cut_off(self, reason: str = "slow") -> None:
        raise NotImplementedError


def sweep_stalled(peers: Iterable[Peer], now: float, timeout: float) -> None:
    for peer in list(peers):
        if peer.stalled(now, timeout):
            peer.cut_off("stalled")


async def watch_stalls(peers: Callable[[], Iterable[Peer]], timeout: float) -> None:
    """Check every client several times per ``timeout``: one ioctl each, no per-client timers."""
    period = max(0.05, min(0.5, timeout / 4))
    while True:
        await asyncio.sleep(period)
        sweep_stalled(peers(), time.monotonic(), timeout)


class Client(Peer):
    """One connected client. Writes go straight to the transport: no per-client task, no await."""

    __slots__ = ("_on_cutoff", "codec", "conn", "id", "protocol")

    def __init__(self, conn: ServerConnection, ip: str, cap: int, stats: Stats,
                 on_cutoff: Callable[[Client], None], codec: Codec = BROWSER) -> None:
        self._init_peer(conn.transport, ip, cap, stats)
        self.id = next(_ids)
        self.conn = conn
        self.protocol = conn.protocol
        self.codec = codec
        self._on_cutoff = on_cutoff

    def __repr__(self) -> str:
        return f"<Client {self.id} {self.ip}>"

    @property
    def open(self) -> bool:
        return self.protocol.state is State.OPEN and not self.transport.is_closing()

    def send(self, data: bytes, count: int = 1) -> bool:
        """Queue ``data`` on the socket, or cut the client off if it is too far behind. Never blocks."""
        if self.protocol.state is not State.OPEN:
            return False
        transport = self.transport
        if transport.get_write_buffer_size() > self.cap:  # the backlog: a caught-up client takes any batch
            self.cut_off()
            return False
        transport.write(data)
        self.written += len(data)
        stats = self.stats
        stats.deliveries += count
        stats.bytes_out += len(data)
        return True

    def send_message(self, msg: dict[str, Any]) -> bool:
        """Send one of the relay's own messages, rendered for this kind of client (or not at all)."""
        frame = self.codec.control(msg)
        return self.send(frame, 0) if frame is not None else False

    def cut_off(self, reason: str = "slow") -> None:
        if self.transport.is_closing():
            return
        self.stats.slow_client_cutoffs += 1
        log.warning("slow_client_cut_off client=%s ip=%s reason=%s buffered=%d cap=%d", self.id, self.ip, reason,
                    self.transport.get_write_buffer_size(), self.cap)
        self.transport.abort()
        self._on_cutoff(self)


def broadcast(clients: Iterable[Client], msg: dict[str, Any]) -> None:
    """Send one control message (e.g. status) to many clients, rendered and framed once per kind of client."""
    frames: dict[Codec, bytes | None] = {}
    for client in list(clients):
        codec = client.codec
        frame = frames[codec] if codec in frames else frames.setdefault(codec, codec.control(msg))
        if frame is not None:
            client.send(frame, 0)


class Router:
    """Routes batches of Alpaca market messages to the clients holding their (channel, symbol)."""

    def __init__(self, holders: dict[tuple[str, str], set[Any]], stats: Stats,
                 channel_of: dict[str, str] | None = None) -> None:
        self.holders = holders  # the hub's live table; read-only here
        self.stats = stats
        # Alpaca message type -> the hub channel holding it; one router per upstream source, whose channels carry
        # the source's prefix (upstream/sources.py), so routing costs the same one lookup for every source.
        self.channel_of = CHANNEL_OF if channel_of is None else channel_of
        self.last_seen: dict[str, float] = {}

    def route(self, messages: list[dict[str, Any]], now: float) -> None:
        if len(messages) == 1:
            self._route_one(messages[0], now)
            return
        holders = self.holders
        owed: dict[Client, list[bytes]] = {}
        last_seen = self.last_seen
        channel_of = self.channel_of
        for m in messages:
            channel = channel_of.get(m.get("T", ""))
            if channel is None:
                continue
            symbol = m.get("S", "")
            last_seen[symbol] = now
            clients = holders.get((channel, symbol))
            star = holders.get((channel, "*"))  # Alpaca-compatible clients may hold the wildcard
            if star:
                clients = (clients | star) if clients else star
            if not clients:
                continue
            cache: dict[Codec, bytes | None] = {}
            for client in clients:
                codec = client.codec
                body = cache[codec] if codec in cache else cache.setdefault(codec, codec.body(m))
                if body is not None:
                    bodies = owed.get(client)
                    if bodies is None:
                        owed[client] = [body]
                    else:
                        bodies.append(body)
        self.stats.messages_in += len(messages)
        for client, bodies in owed.items():
            client.send(client.codec.frames(bodies), len(bodies))

    def route_news(self, messages: list[dict[str, Any]], now: float) -> None:
        """News articles have no ``S``: each goes to the holders of any symbol it names, or of ``*``, once."""
        holders = self.holders
        owed: dict[Client, list[bytes]] = {}
        for m in messages:
            channel = self.channel_of.get(m.get("T", ""))
            if channel is None:
                continue
            clients: set[Any] = set()
            for symbol in (m.get("symbols") or ()) if isinstance(m.get("symbols"), list) else ():
                clients |= holders.get((channel, symbol), set()) if isinstance(symbol, str) else set()
            clients |= holders.get((channel, "*"), set())
            cache: dict[Codec, bytes | None] = {}
            for client in clients:
                codec = client.codec
                body = cache[codec] if codec in cache else cache.setdefault(codec, codec.body(m))
                if body is not None:
                    owed.setdefault(client, []).append(body)
        self.stats.messages_in += len(messages)
        for client, bodies in owed.items():
            client.send(client.codec.frames(bodies), len(bodies))

    def _route_one(self, m: dict[str, Any], now: float) -> None:
        """The common case (one message per upstream frame): no coalescing, write as we go."""
        self.stats.messages_in += 1
        channel = self.channel_of.get(m.get("T", ""))
        if channel is None:
            return
        symbol = m.get("S", "")
        self.last_seen[symbol] = now
        clients = self.holders.get((channel, symbol))
        star = self.holders.get((channel, "*"))
        if star:
            clients = (clients | star) if clients else star
        if not clients:
            return
        cache: dict[Codec, Any] = {}
        for client in list(clients):  # a copy: a cut-off client leaves the set while we loop
            codec = client.codec
            frame = cache.get(codec)
            if frame is None:
                body = codec.body(m)
                frame = cache[codec] = codec.frames([body]) if body is not None else b""
            if frame:
                client.send(frame, 1)
