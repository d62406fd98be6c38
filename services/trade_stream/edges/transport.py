"""The clients' side of the socket: merged writes, the byte cap and the stall sweep, for WebSocket and SSE alike.

Merging. What a client is sent while the loop runs one iteration is queued on it, and the whole queue goes out in
one ``transport.write`` when the iteration ends: one ``call_soon`` per iteration flushes every client of a server
(``Writes``), so a burst of N messages costs a client one syscall instead of N (uWS corks every write of an
iteration the same way). An iteration whose only traffic is one message fanned out to many clients keeps no queue
per client: the frame goes to each holder straight from the flush. With a write delay
(``TRADE_STREAM_WRITE_DELAY_MS``) a client's queue waits that long from its first frame and takes in everything
that comes meanwhile, a few milliseconds of latency for far fewer syscalls (Centrifugo's write delay). When a
socket is not writable, the transport keeps what the kernel did not take and later writes join that buffer, so
everything queued behind a busy socket leaves in its next send. Each client's own order is the order of its
queue; nothing here awaits.

Bounds. A client whose transport still holds more than ``cap`` unsent bytes when its queue is due is aborted (a
graceful close would wait in drain() forever on a stalled peer); a caught-up client takes any one write. A queue
that grows past ``cap`` before it is due is written at once, so it is bounded the same way. A client that accepts
no data at all for ``stall_timeout`` seconds while data is pending is aborted too: kernel buffers autotune to
megabytes, so a reader that stopped could otherwise look healthy for minutes. The sweep reads the kernel, and only
for clients written to since the last sweep or still owing data then: what is pending (the transport's buffer and
``SIOCOUTQ``) and, when something is, the peer's progress, the kernel's count of bytes it acknowledged
(``TCP_INFO``). A write keeps no stall bookkeeping.
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import itertools
import logging
import socket
import struct
import termios
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.protocol import State

from trade_stream.core.fanout import BROWSER, Codec
from trade_stream.core.stats import Stats

log = logging.getLogger("trade_stream.edges.transport")
_ids = itertools.count(1)
_OPEN = State.OPEN

# struct tcp_info (linux/tcp.h): tcpi_bytes_acked, a u64 at offset 120 (Linux 4.1 and later).
_TCP_INFO_LEN = 128
_ACKED = struct.Struct("=Q")


def kernel_unsent(fd: int) -> int:
    """Bytes in the socket's send queue not yet acknowledged by the peer (SIOCOUTQ, which is TIOCOUTQ)."""
    if fd < 0:
        return 0
    try:
        return struct.unpack("i", fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    except OSError:  # closed under us
        return 0


def kernel_acked(sock: Any) -> int:
    """How many bytes the peer has acknowledged on this TCP socket in all (``TCP_INFO``); 0 when unknown."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
    except (OSError, AttributeError):  # closed under us, or no socket at all
        return 0
    return _ACKED.unpack_from(info, 120)[0] if len(info) >= _TCP_INFO_LEN else 0


class Progress:
    """The stall rule on what the sweep reads: stalled when data has been pending for more than ``timeout``
    seconds while the peer's acknowledged total stayed where it was. Any progress, or nothing pending, restarts
    the clock; a write alone is not progress."""

    __slots__ = ("acked", "since")

    def __init__(self) -> None:
        self.acked = 0
        self.since: float | None = None  # when the current pending stretch (or its last progress) began

    def stalled(self, pending: bool, acked: int, now: float, timeout: float) -> bool:
        if not pending:
            self.since = None
            return False
        if self.since is None or acked != self.acked:
            self.acked, self.since = acked, now
            return False
        return now - self.since > timeout


class Writes:
    """One server's write merging: which clients have a queue, and the flush that writes them all. It also keeps,
    for the stall sweep, who was written to since the sweep last ran (only once a sweep runs). The server's
    delivery counters are added up over a flush and bumped once, not per client.

    Without a delay the flush runs at the end of the iteration (``call_soon``). An iteration that fans out one
    frame to many clients and sends nothing else (one upstream message, the common case) keeps no queue per client
    at all: ``fan`` keeps the frame and its holders, and the flush writes the frame to each, so a delivery costs
    little more than its write. Anything else sent in that iteration first spills the kept fan-out into the
    clients' queues, which keeps each client's order and its one write.

    With a delay each client's queue waits ``delay`` from its first frame, as Centrifugo's write delay does, so a
    client is written at most once per delay however its messages fall. Clients are grouped by when they first
    queued, in slots of ``delay / 8``, and one timer ticks once a slot while anything waits (no timer per
    client): each tick closes the open slot and writes the slots whose delay ends before the next tick, so a
    client waits between 7/8 of the delay and the whole of it."""

    __slots__ = ("_bulk", "_dirty", "_due", "_handle", "_opened", "_timer", "delay", "granule", "owing", "stats",
                 "swept", "written")

    def __init__(self, stats: Stats, delay: float = 0.0) -> None:
        self.stats = stats  # the server's, which its clients count their cut-offs in too
        self.delay = delay  # seconds a queue may wait to be merged with what follows; 0: the end of the iteration
        self.granule = max(0.0005, delay / 8)
        self._dirty: list[Peer] = []  # clients queued since the last flush (with a delay: in the open slot)
        self._bulk: tuple[bytes, list[Peer], int] | None = None  # the iteration's one fan-out, not yet spilled
        self._handle: asyncio.Handle | None = None  # the pending flush (with a delay: the tick, while a slot is open)
        self._opened = 0.0  # with a delay: when the open slot began
        self._due: collections.deque[tuple[float, list[Peer]]] = collections.deque()  # closed slots, oldest first
        self._timer: asyncio.TimerHandle | None = None  # with a delay: the next tick, while anything waits
        self.swept = False  # set by the first sweep: before that nobody reads ``written``
        self.written: list[Peer] = []
        self.owing: set[Peer] = set()  # what the last sweep found still pending

    def schedule(self) -> None:
        """The first client queued since the last flush, or into a new slot (``Peer.send`` adds itself to
        ``_dirty``)."""
        loop = asyncio.get_running_loop()
        if self.delay:
            self._opened = loop.time()
            if self._timer is None:
                self._timer = loop.call_later(self.granule, self._tick)
            self._handle = self._timer
        else:
            self._handle = loop.call_soon(self.flush)

    def fan(self, frame: bytes, peers: list[Peer], count: int) -> None:
        """Send one frame to many clients. Kept whole when it is all this iteration sends (see the class)."""
        if self._bulk is None and not self._dirty and not self.delay:
            self._bulk = (frame, peers, count)
            if self._handle is None:
                self.schedule()
            return
        for peer in peers:
            peer.send(frame, count)

    def spill(self) -> None:
        """Turn the kept fan-out into queued frames, before anything else is queued behind it."""
        if self._bulk is not None:
            frame, peers, count = self._bulk
            self._bulk = None
            for peer in peers:
                peer.send(frame, count)

    def flush(self) -> None:
        """The end of the iteration (without a delay): write what it queued."""
        self._handle = None
        bulk = self._bulk
        if bulk is not None:
            self._bulk = None
            self._write_bulk(*bulk)
        dirty, self._dirty = self._dirty, []
        self._write(dirty)

    def _tick(self) -> None:
        """With a delay: close the open slot, write every slot whose delay ends before the next tick, and tick
        again while anything waits. A write may send (a client's write hook, a cut-off's consequences): that
        opens a slot, which the next tick closes."""
        self._timer = None  # this tick's timer has fired
        loop = asyncio.get_running_loop()
        if self._handle is not None:
            self._due.append((self._opened + self.delay, self._dirty))
            self._dirty = []
            self._handle = None
        soon = loop.time() + self.granule
        due = self._due
        while due and due[0][0] <= soon:
            self._write(due.popleft()[1])
        if (due or self._handle is not None) and self._timer is None:
            self._timer = loop.call_later(self.granule, self._tick)

    def _write_bulk(self, frame: bytes, peers: list[Peer], count: int) -> None:
        """The kept fan-out: the frame to each client, with only the checks a write must make. A client's
        connection marks it closed the moment it stops taking frames (``WatchedConnection``), so no per-write
        look at the connection's state is needed."""
        written = 0
        for peer in peers:
            if peer.closed:
                continue
            transport = peer.transport
            if transport.get_write_buffer_size() > peer.cap:  # the backlog: a caught-up client takes any write
                peer.cut_off()
                continue
            try:
                transport.write(frame)
            except Exception:  # one client's failure must not leave the others unwritten
                log.exception("write_failed %s", peer.describe())
                peer.abort()
                continue
            written += 1
        stats = self.stats
        stats.deliveries += written * count
        stats.bytes_out += written * len(frame)
        if self.swept:
            self.written += peers

    def _write(self, dirty: list[Peer]) -> None:
        deliveries = bytes_out = 0
        for peer in dirty:
            try:
                sent = peer.write_queue()
            except Exception:  # one client's failure must not leave the others' queues unwritten
                log.exception("write_failed %s", peer.describe())
                peer.abort()
                continue
            if sent:
                bytes_out += sent
                deliveries += peer._count
        stats = self.stats
        stats.deliveries += deliveries
        stats.bytes_out += bytes_out
        if self.swept:
            self.written += dirty

    def sweep(self, now: float, timeout: float) -> None:
        """Abort every client that stalled, looking only at those written to or owing since the last sweep."""
        self.swept = True
        candidates = self.owing.union(self.written)
        self.written = []
        owing: set[Peer] = set()
        for peer in candidates:
            if peer.closed or peer.transport.is_closing():  # its socket may be gone, its descriptor reused
                continue
            # the cheap reading first: a client owing nothing (the common case) costs one ioctl
            pending = peer.transport.get_write_buffer_size() > 0 or kernel_unsent(peer.fd) > 0
            acked = kernel_acked(peer.sock) if pending else 0
            if peer.progress.stalled(pending, acked, now, timeout):
                peer.cut_off("stalled")
            elif pending:
                owing.add(peer)
        self.owing = owing


async def watch_stalls(writes: Writes, timeout: float) -> None:
    """Sweep several times per ``timeout``: no per-client timers, no work for clients with nothing pending."""
    period = max(0.05, min(0.5, timeout / 4))
    while True:
        await asyncio.sleep(period)
        writes.sweep(time.monotonic(), timeout)


class Peer:
    """What every streaming client shares: a transport, a byte cap, the queue of one flush, stall progress."""

    __slots__ = ("_count", "_queue", "_queued", "_writes", "cap", "closed", "fd", "ip", "progress", "sock",
                 "stats", "transport")

    def _init_peer(self, transport: Any, ip: str, cap: int, stats: Stats, writes: Writes) -> None:
        self.transport = transport
        self.sock = transport.get_extra_info("socket")
        self.fd = self.sock.fileno() if self.sock is not None else -1
        self.ip = ip
        self.cap = cap
        self.stats = stats
        self._writes = writes
        self._queue: bytes | list[bytes] | None = None  # one frame as it is, a list from the second on
        self._queued = 0  # bytes in the queue
        self._count = 0  # deliveries in the queue, for the stats
        self.closed = False
        self.progress = Progress()

    def send(self, data: bytes, count: int = 1) -> bool:
        """Queue ``data`` (carrying ``count`` deliveries) for this iteration's write; False when the client is
        closed or cut off. Never blocks."""
        queue = self._queue
        if queue is None:
            if self.closed:  # the rest is checked once per write, in write_queue
                return False
            writes = self._writes
            if writes._bulk is not None:  # a fan-out kept whole goes first, into the queues
                writes.spill()
                if self._queue is not None:  # this client was in it: join its queue
                    return self.send(data, count)
            self._queue = data  # a client's only frame of an iteration (the common case) needs no list
            self._queued = len(data)
            self._count = count
            writes._dirty.append(self)
            if writes._handle is None:
                writes.schedule()
            return True
        if isinstance(queue, list):
            queue.append(data)
        else:
            self._queue = [queue, data]
        self._count += count
        self._queued += len(data)
        if self._queued > self.cap:  # written now, so the cap bounds it even within one iteration
            self.flush()
        return True

    def fan(self, data: bytes, peers: list[Peer], count: int = 1) -> None:
        """Send ``data`` to ``peers`` (this one among them), all of this kind and server: one fan-out."""
        self._writes.fan(data, peers, count)

    def flush(self) -> None:
        """Write the queue now (outside the server's flush), counting what it carried."""
        self._writes.spill()  # what was fanned out before comes first
        sent = self.write_queue()
        if sent:
            stats = self.stats
            stats.deliveries += self._count
            stats.bytes_out += sent

    def write_queue(self) -> int:
        """Write the queue in one ``transport.write``, or cut the client off if its backlog passed the cap: the
        bytes written (``_count`` deliveries), 0 when nothing was. The caller counts them."""
        queue = self._queue
        if queue is None:
            return 0
        self._queue = None
        transport = self.transport
        # Checked per write, not per message. A WebSocket client is marked closed the moment websockets writes
        # its close frame (``WatchedConnection``), so frames queued before are dropped, not written after it.
        if self.closed or transport.is_closing():
            self.closed = True  # closed under us: later sends stop at once
            return 0
        if transport.get_write_buffer_size() > self.cap:  # the backlog: a caught-up client takes any write
            self.cut_off()
            return 0
        data = b"".join(queue) if isinstance(queue, list) else queue
        if self.wrapped:
            data = self.encode(data)
        transport.write(data)
        if self.wrapped:
            self.wrote(self._count)
        return len(data)

    # WebSocket frames are final as queued; a kind whose queue needs wrapping (SSE: one chunk, gzipped) sets
    # ``wrapped`` and overrides the two hooks, so the WebSocket path pays no call for them.
    wrapped = False

    def encode(self, data: bytes) -> bytes:
        """The bytes a queue becomes on the wire."""
        return data

    def wrote(self, count: int) -> None:
        """Called after each write with the deliveries it carried."""

    def backlog(self) -> int:
        """Bytes queued or buffered in the transport, not yet handed to the kernel."""
        queued = self._queued if self._queue is not None else 0
        return queued + self.transport.get_write_buffer_size()

    def closing(self) -> bool:
        return self.closed or self.transport.is_closing()

    def abort(self) -> None:
        """Drop the connection and whatever is queued for it; nothing more is taken."""
        self.closed = True
        self._queue = None
        self.transport.abort()

    def cut_off(self, reason: str = "slow") -> None:
        if self.closed:
            return
        self.closed = True
        self._queue = None
        self.stats.slow_client_cutoffs += 1
        log.warning("slow_client_cut_off %s reason=%s buffered=%d cap=%d", self.describe(), reason,
                    self.transport.get_write_buffer_size(), self.cap)
        self.transport.abort()
        self.cutoff_done()

    def describe(self) -> str:
        return f"ip={self.ip}"

    def cutoff_done(self) -> None:
        """What the server does once this client is cut off."""


class WatchedConnection(ServerConnection):
    """A websockets connection that marks its ``Client`` closed the moment it stops taking data frames: when
    websockets has written a close frame (ours, or the answer to the peer's), or the connection is lost. Every
    frame websockets itself writes goes through ``send_data``, so the mark is set in the same call that writes the
    close frame, and a write of queued frames needs no look at the connection's state."""

    client: Client | None = None

    def send_data(self) -> None:
        super().send_data()
        if self.client is not None and self.protocol.state is not _OPEN:
            self.client.closed = True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client is not None:
            self.client.closed = True
        super().connection_lost(exc)


class Client(Peer):
    """One connected WebSocket client. Its frames go out through the queue, in order, never awaited."""

    __slots__ = ("_on_cutoff", "codec", "conn", "id", "protocol")

    def __init__(self, conn: WatchedConnection, ip: str, cap: int, stats: Stats, writes: Writes,
                 on_cutoff: Callable[[Client], None], codec: Codec = BROWSER) -> None:
        self._init_peer(conn.transport, ip, cap, stats, writes)
        self.id = next(_ids)
        self.conn = conn
        self.protocol = conn.protocol
        conn.client = self
        self.closed = conn.protocol.state is not _OPEN
        self.codec = codec
        self._on_cutoff = on_cutoff

    def __repr__(self) -> str:
        return f"<Client {self.id} {self.ip}>"

    @property
    def open(self) -> bool:
        return self.protocol.state is State.OPEN and not self.transport.is_closing()

    async def close(self, code: int, reason: str) -> None:
        """Close the connection after what is queued: a close frame must not overtake the client's last frames."""
        self.flush()
        await self.conn.close(code, reason)

    def send_message(self, msg: dict[str, Any]) -> bool:
        """Send one of the relay's own messages, rendered for this kind of client (or not at all)."""
        frame = self.codec.control(msg)
        return self.send(frame, 0) if frame is not None else False

    def describe(self) -> str:
        return f"client={self.id} ip={self.ip}"

    def cut_off(self, reason: str = "slow") -> None:
        if not self.transport.is_closing():  # websockets is closing it already: its close timeout applies
            super().cut_off(reason)

    def cutoff_done(self) -> None:
        self._on_cutoff(self)
