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


@dataclass
class Admission:
    """Connection limits for one listener: in total, per IP, and new connections per minute per IP.

    ``refuse`` answers whether a new connection may open (status, message and Retry-After seconds when not);
    ``opened`` / ``closed`` keep the per-IP count.
    """

    max_total: int
    max_per_ip: int
    connects: SlidingWindow
    per_ip: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, max_total: int, max_per_ip: int, connects_per_minute: int) -> Admission:
        return cls(max_total, max_per_ip, SlidingWindow(connects_per_minute))

    def update(self, max_total: int, max_per_ip: int, connects_per_minute: int) -> None:
        """New limits (SIGHUP) apply to connections from now on; open ones stay."""
        self.max_total, self.max_per_ip, self.connects.limit = max_total, max_per_ip, connects_per_minute

    def refuse(self, ip: str, total: int, now: float) -> tuple[int, str, int] | None:
        if total >= self.max_total:
            return 503, "server is at its connection limit; try again later", 10
        if self.per_ip.get(ip, 0) >= self.max_per_ip:
            return 429, "too many connections from your address", 10
        if not self.connects.hit(ip, now):
            return 429, "connecting too often; slow down", 60
        return None

    def opened(self, ip: str) -> None:
        self.per_ip[ip] = self.per_ip.get(ip, 0) + 1

    def closed(self, ip: str) -> None:
        left = self.per_ip.get(ip, 1) - 1
        if left:
            self.per_ip[ip] = left
        else:
            self.per_ip.pop(ip, None)
