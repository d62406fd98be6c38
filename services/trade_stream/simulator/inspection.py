"""What the simulator holds and has seen: the open connections, every client message, and the counters tests ask.

``Connections`` is the one table of open connections. The sessions add to it and count refusals; the ticker and
the injectors read it; the queries (``connections``, ``sessions``, ``subscriptions``, ``state``) answer tests,
both in-process and over ``/_sim/``. It does no I/O, so a query never races a send.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, NamedTuple

from . import protocol
from .config import DATA_PATHS, feed_kind
from .connection import Conn


class Received(NamedTuple):
    """One message a client sent, as decoded by the server."""

    conn_id: int
    path: str
    message: Any
    time: float


class Connections:
    """The open connections, the messages they sent, and totals over the simulator's life."""

    def __init__(self) -> None:
        self.by_id: dict[int, Conn] = {}
        self.received: list[Received] = []
        self.connection_count_total = 0
        self.session_refusals = 0  # 406s and refused trading logins: a second session for the same account
        self._next_id = 0

    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def add(self, conn: Conn) -> None:
        self.by_id[conn.id] = conn
        self.connection_count_total += 1

    def drop(self, conn: Conn) -> None:
        self.by_id.pop(conn.id, None)

    def __iter__(self) -> Iterator[Conn]:
        """A snapshot, so a caller may drop connections while it walks them."""
        return iter(list(self.by_id.values()))

    def record(self, conn: Conn, message: Any) -> None:
        self.received.append(Received(conn.id, conn.path, message, time.monotonic()))

    def received_on(self, path: str | None = None) -> list[Any]:
        """Just the decoded messages clients sent (on ``path``), in order."""
        return [r.message for r in self.received if path is None or r.path == path]

    def connections(self, path: str | None = None) -> int:
        """Open connections (authenticated or not)."""
        return sum(1 for c in self.by_id.values() if path is None or c.path == path)

    def sessions(self, path: str, *, key: str | None = None) -> int:
        """Authenticated sessions on ``path`` (of ``key``, if given)."""
        return sum(1 for c in self.by_id.values()
                   if c.path == path and c.key is not None and (key is None or c.key == key))

    def subscriptions(self, path: str) -> dict[str, list[str]]:
        """The union of the current subscriptions of all connections on ``path``, per channel."""
        union = protocol.empty_subs(kind=feed_kind(DATA_PATHS.get(path)))
        for conn in self.by_id.values():
            if conn.path == path:
                for ch, symbols in conn.subs.items():
                    union[ch] |= symbols
        return {ch: sorted(symbols) for ch, symbols in union.items()}

    def data_conns(self, path: str | None = None) -> list[Conn]:
        """Authenticated, unmuted market-data connections (on ``path``): who gets generated data."""
        return [c for c in self.by_id.values()
                if c.is_data and c.key is not None and not c.muted and (path is None or c.path == path)]

    def state(self) -> dict[str, Any]:
        """The connection part of the simulator's ``state()``."""
        paths = sorted({c.path for c in self.by_id.values()})
        return {
            "connections": {p: self.connections(p) for p in paths},
            "sessions": {p: self.sessions(p) for p in paths},
            "subscriptions": {p: self.subscriptions(p) for p in paths if p in DATA_PATHS},
            "listening": {str(c.id): sorted(c.streams) for c in self.by_id.values() if not c.is_data},
            "connection_count_total": self.connection_count_total,
            "session_refusals": self.session_refusals,
            "muted": sorted(c.id for c in self.by_id.values() if c.muted),
        }
