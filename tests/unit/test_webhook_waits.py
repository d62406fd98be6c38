"""The wait before a webhook retry: pure, so every corner is checked directly."""

from __future__ import annotations

import pytest

from trade_stream.config import Timings
from trade_stream.edges.webhooks import retry_after, retry_wait

pytestmark = pytest.mark.timeout(10)
T = Timings()  # 1 s doubling, every wait within [1 s, 15 min]


@pytest.mark.parametrize("attempts", [1, 2, 10, 1023, 1024, 5000, 10**9])
def test_every_wait_is_within_the_floor_and_the_ceiling_at_any_attempt(attempts):
    waits = [retry_wait(attempts, None, T) for _ in range(200)]
    assert all(T.webhook_wait_min <= w <= T.webhook_backoff_max for w in waits)


def test_late_waits_keep_their_jitter():
    """Full jitter over [0, ceiling]: a thousand failing deliveries do not all come back in the same second."""
    waits = {round(retry_wait(2000, None, T)) for _ in range(200)}
    assert len(waits) > 50


@pytest.mark.parametrize("header, expected", [("0", 1.0), ("5", 5.0), ("99999999", 900.0), ("9" * 5000, 900.0)])
def test_retry_after_is_held_in_bounds(header, expected):
    assert retry_wait(3, retry_after(header, 0.0), T) == expected
