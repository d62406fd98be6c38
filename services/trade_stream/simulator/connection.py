"""One simulated WebSocket connection: its server-side state, and the three ways bytes cross it.

Both sessions (data_stream.py, trading_stream.py), the ticker and the façade share this one type, so a fault or
an inspection applies to every connection alike. Sending here never blocks the control API: ``push`` uses
``broadcast()``, and only the session handlers, which own their connection, await ``reply``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import ServerConnection, broadcast

from . import protocol
from .config import CRYPTO_FEEDS, feed_kind
from .protocol import Subs
from .wire import decode_client, encode_data, encode_trading


@dataclass(eq=False)
class Conn:
    """Server-side state of one WebSocket connection."""

    id: int
    ws: ServerConnection
    path: str
    feed: str | None
    use_msgpack: bool
    key: str | None = None
    subs: Subs = field(default_factory=protocol.empty_subs)
    streams: set[str] = field(default_factory=set)
    muted: bool = False
    frozen: bool = False  # nothing at all is sent (control replies neither); pings are still answered
    #: (channel, symbol) pairs of statuses/lulds this connection has been sent the current state of.
    announced: set[tuple[str, str]] = field(default_factory=set)

    @property
    def is_data(self) -> bool:
        return self.feed is not None

    @property
    def crypto(self) -> bool:
        return self.feed in CRYPTO_FEEDS

    @property
    def kind(self) -> str:
        return feed_kind(self.feed)


async def receive(conn: Conn, timeout: float | None, read_delay: Callable[[], float],
                  record: Callable[[Conn, Any], None]) -> Any:
    """Receive, honour the simulated read delay, decode and ``record`` one client message.

    ``read_delay`` is asked once the frame is in, so a delay set while the session waits applies to that frame.

    Returns the decoded message, or ``ValueError`` (as a value) for undecodable input, which is recorded raw.
    ``TimeoutError`` past ``timeout``.
    """
    data = await asyncio.wait_for(conn.ws.recv(), timeout) if timeout is not None else await conn.ws.recv()
    delay = read_delay()
    if delay:
        await asyncio.sleep(delay)
    try:
        msg: Any = decode_client(data, conn.use_msgpack)
    except ValueError as exc:
        record(conn, data)
        return exc
    record(conn, msg)
    return msg


async def reply(conn: Conn, *messages: dict) -> None:
    """Answer a client message: one array frame on a data stream, one binary frame per message on trading."""
    if conn.frozen:
        return
    if conn.is_data:
        await conn.ws.send(encode_data(list(messages), conn.use_msgpack), text=not conn.use_msgpack)
    else:
        for message in messages:
            await conn.ws.send(encode_trading(message, conn.use_msgpack), text=False)


def push(conn: Conn, payload: bytes, text: bool, slow_client_buffer: int) -> None:
    """Send without awaiting; a client too far behind gets 407 "slow client" and is dropped."""
    transport = conn.ws.transport
    if transport is None or transport.is_closing():
        return
    if transport.get_write_buffer_size() > slow_client_buffer:
        broadcast([conn.ws], encode_data([protocol.error(407)], conn.use_msgpack), text=text)
        transport.abort()
        return
    broadcast([conn.ws], payload, text=text)
