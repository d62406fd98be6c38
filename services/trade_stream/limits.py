"""Small rate and count limiters. Pure: callers pass the clock in."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    """``rate`` actions per second with a burst of ``burst``."""

    rate: float
    burst: float
    tokens: float = -1.0
    stamp: float = 0.0

    def take(self, now: float) -> bool:
        if self.tokens < 0:
            self.tokens, self.stamp = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class SlidingWindow:
    """At most ``limit`` events per ``window`` seconds per key (0 = unlimited)."""

    limit: int
    window: float = 60.0
    events: dict[str, deque[float]] = field(default_factory=dict)

    def hit(self, key: str, now: float) -> bool:
        """Record an event; False when it goes over the limit (and then it is not recorded)."""
        if not self.limit:
            return True
        q = self.events.setdefault(key, deque())
        while q and q[0] <= now - self.window:
            q.popleft()
        if len(q) >= self.limit:
            return False
        q.append(now)
        return True

    def count(self, key: str, now: float) -> int:
        q = self.events.get(key)
        if not q:
            return 0
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            del self.events[key]
            return 0
        return len(q)
