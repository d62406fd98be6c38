"""The stall rule: pending data and no acknowledged progress for the timeout means stalled; any progress, or
nothing pending, restarts the clock; a write alone is not progress."""

from trade_stream.edges.transport import Progress


def test_idle_client_with_nothing_pending_is_never_stalled():
    rule = Progress()
    assert not any(rule.stalled(False, 0, t, 1.0) for t in (0.0, 5.0, 50.0))


def test_pending_without_progress_stalls_after_the_timeout():
    rule = Progress()
    assert not rule.stalled(True, 400, 10.0, 1.0)
    assert not rule.stalled(True, 400, 10.9, 1.0)
    assert rule.stalled(True, 400, 11.1, 1.0)


def test_progress_resets_the_clock_and_writes_alone_are_not_progress():
    rule = Progress()
    rule.stalled(True, 400, 10.0, 1.0)
    assert rule.stalled(True, 400, 11.5, 1.0)  # more was written meanwhile; the peer acknowledged nothing
    assert not rule.stalled(True, 500, 11.6, 1.0)  # the peer took 100 bytes
    assert not rule.stalled(True, 500, 12.5, 1.0)
    assert rule.stalled(True, 500, 12.7, 1.0)


def test_the_clock_starts_when_data_becomes_pending_not_at_the_last_progress():
    """A client quiet for a minute that is sent one message must get the whole timeout to take it."""
    rule = Progress()
    assert not rule.stalled(True, 100, 0.0, 1.0)
    assert not rule.stalled(False, 100, 0.5, 1.0)  # caught up
    assert not rule.stalled(True, 100, 60.0, 1.0)  # a minute later, something pending and the same total
    assert not rule.stalled(True, 100, 60.9, 1.0)
    assert rule.stalled(True, 100, 61.1, 1.0)
