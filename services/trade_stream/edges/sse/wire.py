"""The SSE wire format of the side-port: one event's bytes, the chunk that carries them, and the replay ring.

An event is ``id:``/``event:``/``data:`` lines and a blank line; the body is HTTP/1.1 chunked (h11 writes the
head, the chunks are framed here so one event built once can be written to many streams). The ``Ring`` keeps
recent market events for ``Last-Event-ID`` replay and, per key, since when it has recorded them, so it can tell
whether a replay would be complete.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from trade_stream.core.hub import Key


def event_bytes(event: str, data: bytes, event_id: int | str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\n".encode() + b"data: " + data + b"\n\n"


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


@dataclass
class Ring:
    """Recent market events for Last-Event-ID replay, plus when each key started being recorded."""

    size: int
    events: deque[tuple[int, Key, bytes]] = field(default_factory=deque)
    recording_since: dict[Key, int] = field(default_factory=dict)
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    last_id: int = 0

    def record(self, key: Key, build: Any) -> tuple[int, bytes]:
        self.last_id = event_id = next(self.ids)
        ev = build(event_id)
        if self.size:
            self.events.append((event_id, key, ev))
            if len(self.events) > self.size:
                self.events.popleft()
        return event_id, ev

    def replay(self, after: int, keys: set[Key]) -> list[bytes] | None:
        """Events after ``after`` for ``keys``, or None when the ring cannot vouch for a complete replay."""
        if after < 0 or after > self.last_id:
            return None  # unparseable, from before a restart, or invented
        oldest = self.events[0][0] if self.events else self.last_id + 1
        if after + 1 < oldest and after < self.last_id:
            return None
        for key in keys:
            since = self.recording_since.get(key)
            if since is None or since > after + 1:
                return None
        return [ev for eid, key, ev in self.events if eid > after and key in keys]
