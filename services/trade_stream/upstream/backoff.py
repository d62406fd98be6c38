"""Reconnect policy: how long to wait after each kind of upstream failure. Pure: no clocks, no sockets."""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

from trade_stream.config import Timings


class Failure(enum.Enum):
    NETWORK = "network"  # socket closed, timeout, refused, stale
    CONNECTION_LIMIT = "connection_limit"  # 406 after retrying auth on the same socket
    RATE_LIMITED = "rate_limited"  # HTTP 429 at the handshake
    CONFIG = "config"  # 402 auth failed, 409 insufficient subscription: a human must act


@dataclass
class Backoff:
    """Exponential backoff with equal jitter: the wait is uniform in [cap/2, cap], cap doubling per attempt.

    Equal jitter keeps a floor under each wait (no hammering at 0 s) while still spreading a fleet of relays that
    lost the same upstream at the same moment.
    """

    timings: Timings
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def reset(self) -> None:
        """Called once data flows again: the next failure starts from the minimum."""
        self.attempt = 0

    def delay(self, failure: Failure = Failure.NETWORK) -> float:
        t = self.timings
        cap = min(t.reconnect_max, t.reconnect_min * (2**self.attempt))
        self.attempt += 1
        base = self.rng.uniform(cap / 2, cap)
        if failure is Failure.CONNECTION_LIMIT:
            return max(base, t.conn_limit_wait)
        if failure is Failure.RATE_LIMITED:
            return max(base, t.rate_limited_wait) * self.rng.uniform(1.0, 1.5)
        if failure is Failure.CONFIG:
            return max(base, t.config_error_wait)
        return base
