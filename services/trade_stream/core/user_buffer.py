"""The per-user event buffer of the SSE streams: the last events each user was sent on a stream, replayed to that
user's next connection to it that names no id. Pure: the caller passes the clock in and does the writing.

A buffer is keyed by (user, stream): a stream is what a connection asked for (``alerts``, ``ai-decisions``,
``strategies:abc``), so a user's tab on one strategy never replays another strategy's events. It holds the
encoded events themselves (bytes, with their ids), at most ``size`` of them, the oldest evicted first, and an
event sent to two tabs of the same user is recorded once: by its key, the event's identity in its source
(``@alerts:<ms>-<seq>``, ``notifications:<n>``), not the id it carried, which on a stream of several sources
says where that tab was and so differs between tabs. A buffer lives while the user has a
connection on that stream and for ``linger`` seconds after the last one closed; ``sweep`` drops those past it
(the caller logs each). So the table holds the buffers of open connections, bounded by the connection limits,
plus those of the last ``linger`` seconds, and never more than ``max_buffers`` in all: past that the buffer whose
user left longest ago goes first, and when every buffer has a connection, a new one is not kept at all.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

Owner = tuple[str, str]  # (user, stream)

DEFAULT_SIZE = 100
DEFAULT_LINGER = 300.0
MAX_BUFFERS = 10_000


@dataclass
class Buffer:
    events: dict[str, bytes] = field(default_factory=dict)  # key -> encoded event, oldest first
    holders: set[Hashable] = field(default_factory=set)  # the user's open connections on this stream
    idle_since: float | None = None  # when the last connection closed; None while one is open


class UserBuffers:
    def __init__(self, size: int = DEFAULT_SIZE, linger: float = DEFAULT_LINGER,
                 max_buffers: int = MAX_BUFFERS) -> None:
        self.size = size
        self.linger = linger
        self.max_buffers = max_buffers
        self.buffers: dict[Owner, Buffer] = {}

    def opened(self, owner: Owner, holder: Hashable) -> list[bytes]:
        """A connection of ``owner`` opened: what to send it first (the buffer, oldest first) when it named no
        id. The caller writes that and joins the live events without awaiting in between, so nothing is sent
        twice or missed. Taking the buffer keeps it, so a third tab gets it too."""
        if not self.size:
            return []
        buf = self.buffers.get(owner)
        if buf is None:
            if len(self.buffers) >= self.max_buffers and not self._evict_idle():
                return []  # every buffer has a connection: this one goes without
            buf = self.buffers[owner] = Buffer()
        buf.holders.add(holder)
        buf.idle_since = None
        return list(buf.events.values())

    def closed(self, owner: Owner, holder: Hashable, now: float) -> None:
        buf = self.buffers.get(owner)
        if buf is None:
            return
        buf.holders.discard(holder)
        if not buf.holders:
            buf.idle_since = now

    def record(self, owner: Owner, key: str, event: bytes) -> None:
        """An event sent to one of ``owner``'s connections; the same key again (another tab, maybe later under
        ``throttle_ms``) is not kept twice."""
        buf = self.buffers.get(owner)
        if buf is None or key in buf.events:
            return
        buf.events[key] = event
        if len(buf.events) > self.size:
            del buf.events[next(iter(buf.events))]

    def sweep(self, now: float) -> list[tuple[Owner, int]]:
        """Drop every buffer whose user left ``linger`` seconds ago or more: (owner, events dropped) of each."""
        gone = [(owner, len(buf.events)) for owner, buf in self.buffers.items()
                if buf.idle_since is not None and now - buf.idle_since >= self.linger]
        for owner, _ in gone:
            del self.buffers[owner]
        return gone

    def _evict_idle(self) -> bool:
        idle = [(buf.idle_since, owner) for owner, buf in self.buffers.items() if buf.idle_since is not None]
        if not idle:
            return False
        del self.buffers[min(idle)[1]]
        return True

    def held(self, owner: Owner) -> int:
        buf = self.buffers.get(owner)
        return len(buf.events) if buf is not None else 0
