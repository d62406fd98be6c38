"""The write delay's slots over real sockets: whatever is queued while a slot's clients are being written is
written in its own turn, never left without a timer."""

from __future__ import annotations

import asyncio

import pytest

from trade_stream.core.stats import Stats
from trade_stream.edges.transport import Peer, Writes

pytestmark = pytest.mark.timeout(20)


class Relaying(Peer):
    """A peer whose write hook sends on to another peer, as a write can set off a send (an SSE stream's tally
    hook, a cut-off's consequences) while the slot that holds it is being written."""

    wrapped = True  # the write hooks are called

    def __init__(self, transport: asyncio.Transport, writes: Writes, then: Peer | None) -> None:
        self._init_peer(transport, "127.0.0.1", 1 << 20, Stats(), writes)
        self.then = then

    def wrote(self, count: int) -> None:
        if self.then is not None:
            then, self.then = self.then, None
            then.send(b"second", 1)


async def connected_pair() -> tuple[asyncio.Transport, asyncio.StreamReader, asyncio.AbstractServer,
                                    asyncio.StreamWriter]:
    """A server-side transport and the client's reader (and writer, which must outlive it), over loopback TCP."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[asyncio.Transport] = loop.create_future()

    class Side(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted.set_result(transport)  # type: ignore[arg-type]

    server = await loop.create_server(Side, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return await accepted, reader, server, writer


async def test_a_send_made_while_a_slot_is_written_is_written_a_delay_later():
    writes = Writes(Stats(), delay=0.02)
    (ta, ra, sa, wa), (tb, rb, sb, wb) = await connected_pair(), await connected_pair()
    try:
        b = Relaying(tb, writes, None)
        a = Relaying(ta, writes, b)  # a's write sends to b, with nothing else waiting
        a.send(b"first", 1)
        assert await asyncio.wait_for(ra.readexactly(5), 5) == b"first"
        assert await asyncio.wait_for(rb.readexactly(6), 5) == b"second"
    finally:
        for t, s, w in ((ta, sa, wa), (tb, sb, wb)):
            t.abort()
            w.close()
            s.close()
