"""How the streams that carry app-channel events write them: in order, under ``throttle_ms`` held and sent together
once per window (never dropped, never reordered), an urgent event at once, and each event with an id recorded in
its user's buffer (core/user_buffer.py).

Channel events are not state to coalesce: each one has an id the client resumes from, and an id says the client
has every event before it. So ``throttle_ms`` batches them instead of keeping the latest per key, and an urgent
event (an ``error`` alert) goes out at once *with* everything held before it, which keeps its id honest.
"""

from __future__ import annotations

import asyncio
import time

from trade_stream.core.user_buffer import Owner, UserBuffers
from trade_stream.edges.sse.client import SseClient


class Sender:
    def __init__(self, client: SseClient, buffers: UserBuffers | None = None, owner: Owner | None = None) -> None:
        self.client = client
        self.buffers = buffers
        self.owner = owner
        self.window = client.throttle
        self.held: list[tuple[bytes, str | None]] = []  # (event, its buffer key)
        self._last_sent = float("-inf")
        self._timer: asyncio.TimerHandle | None = None

    def write(self, event: bytes, key: str | None = None, urgent: bool = False) -> bool:
        """Queue one event. ``key`` is its identity in its source, for the user's buffer (core/user_buffer.py);
        None for one that is not a source's event (a reset, ``alert:read``), which no buffer keeps. False when
        the client is gone."""
        if self.client.closed:
            return False
        now = time.monotonic()
        if self.window and not urgent and (self.held or now - self._last_sent < self.window):
            self.held.append((event, key))
            if self._timer is None:
                delay = max(0.0, self._last_sent + self.window - now)
                self._timer = asyncio.get_running_loop().call_later(delay, self.flush)
            return True
        self.held.append((event, key))
        return self.flush()

    def flush(self) -> bool:
        """Everything held, in one write."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        held, self.held = self.held, []
        if not held or self.client.closed:
            return not self.client.closed
        self._last_sent = time.monotonic()
        if self.buffers is not None and self.owner is not None:
            for event, key in held:
                if key is not None:
                    self.buffers.record(self.owner, key, event)
        return self.client.write(b"".join(e for e, _ in held), sum(1 for _, i in held if i is not None))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.held.clear()
