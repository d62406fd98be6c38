"""A latency histogram with ~2 % relative resolution that merges by adding counts.

Load clients record millions of latencies; keeping every sample would cost memory and a sort at the end, and
summing histograms across processes is exact, so each process keeps one of these and ships its counts as JSON.
"""

from __future__ import annotations

import math

STEPS_PER_E = 50  # bucket i >= 1 holds [exp((i-1)/50), exp(i/50)) µs, 2 % wide; bucket 0 is < 1 µs
MAX_BUCKET = 1200  # exp(24) µs ≈ 7 hours: nothing real lands past this


class Histogram:
    """Counts of latencies in microseconds, plus the exact maximum."""

    __slots__ = ("counts", "max_us", "total")

    def __init__(self) -> None:
        self.counts = [0] * (MAX_BUCKET + 1)
        self.total = 0
        self.max_us = 0.0

    def add(self, us: float, n: int = 1) -> None:
        """Record ``n`` messages with latency ``us``."""
        idx = int(math.log(us) * STEPS_PER_E) + 1 if us >= 1.0 else 0
        self.counts[idx if idx < MAX_BUCKET else MAX_BUCKET] += n
        self.total += n
        if us > self.max_us:
            self.max_us = us

    def merge(self, counts: list[int], max_us: float) -> None:
        for i, c in enumerate(counts):
            self.counts[i] += c
        self.total += sum(counts)
        self.max_us = max(self.max_us, max_us)

    def to_json(self) -> dict[str, object]:
        return {"counts": self.counts, "max_us": self.max_us}

    def percentile(self, p: float) -> float | None:
        """The ``p``-th percentile in microseconds (geometric middle of its bucket), None when empty."""
        if not self.total:
            return None
        rank = max(1, math.ceil(self.total * p / 100.0))
        seen = 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= rank:
                if i == 0:
                    return 0.5
                return min(math.exp((i - 0.5) / STEPS_PER_E), self.max_us)
        return self.max_us
