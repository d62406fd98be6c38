"""Small rate and count limiters, for the relay's subscription changes and the edges' admission and failed-auth
throttles. Pure: callers pass the clock in."""

from __future__ import annotations

import hashlib
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any


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
    """At most ``limit`` events per ``window`` seconds per key (0 = unlimited).

    The table is bounded: past ``max_keys`` keys the least recently hit one is forgotten, so a flood of new
    keys (addresses, guessed tokens) costs memory once, not forever.
    """

    limit: int
    window: float = 60.0
    events: dict[Any, deque[float]] = field(default_factory=dict)
    max_keys: int = 10_000

    def hit(self, key: Any, now: float) -> bool:
        """Record an event; False when it goes over the limit (and then it is not recorded)."""
        if not self.limit:
            return True
        q = self.events.pop(key, None)
        if q is None:
            q = deque()
            while len(self.events) >= self.max_keys:
                del self.events[next(iter(self.events))]
        self.events[key] = q  # (re)inserted last: dict order is least recently hit first
        self._expire(q, now)
        if len(q) >= self.limit:
            return False
        q.append(now)
        return True

    def count(self, key: Any, now: float) -> int:
        q = self.events.get(key)
        if not q:
            return 0
        self._expire(q, now)
        if not q:
            del self.events[key]
            return 0
        return len(q)

    def retry_after(self, key: Any, now: float) -> int:
        """Whole seconds until ``key`` is under the limit again (0 = it is now)."""
        if not self.limit or self.count(key, now) < self.limit:
            return 0
        q = self.events[key]
        return max(1, math.ceil(q[len(q) - self.limit] + self.window - now))

    def _expire(self, q: deque[float], now: float) -> None:
        while q and q[0] <= now - self.window:
            q.popleft()


@dataclass
class FailedAuth:
    """Throttles wrong credentials, before they cost any hashing.

    The caller asks ``repeated`` and ``crowded`` before it checks a credential, and reports only wrong ones with
    ``fail``. Failures are counted per source *and presented credential*, so a bot retrying its stale token behind
    a shared proxy address gets 429 while other people at that address still get a plain 401 for their own typo;
    and per source across all credentials, with a higher limit, so rotating guesses from one address are slowed
    too. Tokens are kept only as a short hash. Both tables are bounded.
    """

    per_credential: SlidingWindow = field(default_factory=lambda: SlidingWindow(10))
    per_source: SlidingWindow = field(default_factory=lambda: SlidingWindow(100))

    def repeated(self, source: str, presented: str, now: float) -> int:
        """Seconds until this source may present this same wrong credential again (0: now). Records nothing."""
        return self.per_credential.retry_after(self._key(source, presented), now)

    def crowded(self, source: str, now: float) -> int:
        """Seconds until this source is under its limit across all credentials (0: it is). Records nothing."""
        return self.per_source.retry_after(source, now)

    def fail(self, source: str, presented: str, now: float) -> int:
        """Record a wrong credential. Returns 0 when it was counted (answer 401), else the seconds to wait
        (answer 429 with Retry-After; not counted, so a throttled flood does not extend its own ban)."""
        wait = max(self.repeated(source, presented, now), self.crowded(source, now))
        if wait:
            return wait
        self.per_credential.hit(self._key(source, presented), now)
        self.per_source.hit(source, now)
        return 0

    @staticmethod
    def _key(source: str, presented: str) -> tuple[str, str]:
        return source, hashlib.sha256(presented.encode("utf-8", "surrogatepass")).hexdigest()[:16]


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
