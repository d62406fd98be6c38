"""Connection admission: total, per-IP and connect-rate limits, one rule set for every listener."""

from trade_stream.limits import Admission


def test_total_then_per_ip_then_rate():
    a = Admission.of(max_total=3, max_per_ip=2, connects_per_minute=3)
    assert a.refuse("1.1.1.1", total=3, now=0)[:2] == (503, "server is at its connection limit; try again later")
    a.opened("1.1.1.1")
    a.opened("1.1.1.1")
    assert a.refuse("1.1.1.1", total=2, now=0)[0] == 429
    a.closed("1.1.1.1")
    assert a.refuse("1.1.1.1", total=1, now=0) is None
    assert a.refuse("2.2.2.2", total=1, now=0) is None
    assert a.refuse("2.2.2.2", total=1, now=1) is None
    assert a.refuse("2.2.2.2", total=1, now=2) is None
    assert a.refuse("2.2.2.2", total=1, now=3) == (429, "connecting too often; slow down", 60)
    assert a.refuse("2.2.2.2", total=1, now=61) is None


def test_closing_the_last_connection_forgets_the_ip_and_update_applies_new_limits():
    a = Admission.of(10, 1, 0)
    a.opened("x")
    assert a.refuse("x", 1, 0)[0] == 429
    a.update(10, 2, 0)
    assert a.refuse("x", 1, 0) is None
    a.closed("x")
    assert a.per_ip == {}
