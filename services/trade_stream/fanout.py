"""Clients and the fan-out path: each upstream message is encoded once per codec and written, never awaited.

A client's unsent bytes are bounded: past ``cap`` the connection is aborted (a graceful close would wait in
drain() forever on a stalled peer; see stack notes §1.6). All frames a client is owed from one upstream batch go
out in one ``transport.write``.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.protocol import State

from trade_stream.framing import text_frame
from trade_stream.protocol import CHANNEL_OF, encode, market_message
from trade_stream.stats import Stats

log = logging.getLogger("trade_stream.fanout")
_ids = itertools.count(1)


class Codec:
    """How one kind of client wants market messages: ``body`` per message (cached across clients), ``frames``
    to turn a client's bodies from one batch into the bytes to write."""

    def body(self, m: dict[str, Any]) -> bytes | None:
        raise NotImplementedError

    def frames(self, bodies: list[bytes]) -> bytes:
        raise NotImplementedError


class BrowserCodec(Codec):
    """One message per frame; the body is the finished frame, so clients share the exact bytes."""

    def body(self, m: dict[str, Any]) -> bytes | None:
        msg = market_message(m)
        return text_frame(encode(msg)) if msg is not None else None

    def frames(self, bodies: list[bytes]) -> bytes:
        return bodies[0] if len(bodies) == 1 else b"".join(bodies)


class BrowserBatchCodec(Codec):
    """Opt-in batched mode: one JSON array per upstream batch."""

    def body(self, m: dict[str, Any]) -> bytes | None:
        msg = market_message(m)
        return encode(msg) if msg is not None else None

    def frames(self, bodies: list[bytes]) -> bytes:
        return text_frame(b"[" + b",".join(bodies) + b"]")


BROWSER = BrowserCodec()
BROWSER_BATCH = BrowserBatchCodec()


class Client:
    """One connected client. Writes go straight to the transport: no per-client task, no await."""

    __slots__ = ("_on_cutoff", "cap", "codec", "conn", "id", "ip", "protocol", "stats", "transport")

    def __init__(self, conn: ServerConnection, ip: str, cap: int, stats: Stats,
                 on_cutoff: Callable[[Client], None], codec: Codec = BROWSER) -> None:
        self.id = next(_ids)
        self.conn = conn
        self.transport = conn.transport
        self.protocol = conn.protocol
        self.ip = ip
        self.cap = cap
        self.stats = stats
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
        if transport.get_write_buffer_size() + len(data) > self.cap:
            self.cut_off()
            return False
        transport.write(data)
        self.stats.deliveries += count
        self.stats.bytes_out += len(data)
        return True

    def send_message(self, msg: Any) -> bool:
        return self.send(text_frame(encode(msg)), 0)

    def cut_off(self) -> None:
        if self.transport.is_closing():
            return
        self.stats.slow_client_cutoffs += 1
        log.warning("slow_client_cut_off client=%s ip=%s buffered=%d cap=%d", self.id, self.ip,
                    self.transport.get_write_buffer_size(), self.cap)
        self.transport.abort()
        self._on_cutoff(self)


def broadcast(clients: Iterable[Client], msg: Any) -> None:
    """Send one control message (e.g. status) to many clients, framed once."""
    frame = text_frame(encode(msg))
    for client in list(clients):
        client.send(frame, 0)


class Router:
    """Routes batches of Alpaca market messages to the clients holding their (channel, symbol)."""

    def __init__(self, holders: dict[tuple[str, str], set[Any]], stats: Stats) -> None:
        self.holders = holders  # the hub's live table; read-only here
        self.stats = stats
        self.last_seen: dict[str, float] = {}
        self.last_any = 0.0

    def route(self, messages: list[dict[str, Any]], now: float) -> None:
        holders = self.holders
        owed: dict[Client, list[bytes]] = {}
        last_seen = self.last_seen
        for m in messages:
            channel = CHANNEL_OF.get(m.get("T"))  # type: ignore[arg-type]
            if channel is None:
                continue
            symbol = m.get("S")
            last_seen[symbol] = now  # type: ignore[index]
            clients = holders.get((channel, symbol))  # type: ignore[arg-type]
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
        self.last_any = now
        for client, bodies in owed.items():
            client.send(client.codec.frames(bodies), len(bodies))
