"""Connection admission: total, per-IP and connect-rate limits, one rule set for every listener."""

from trade_stream.core.limits import Admission


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


def test_failed_auth_is_counted_per_source_and_token_with_a_per_source_ceiling():
    from trade_stream.core.limits import FailedAuth, SlidingWindow

    f = FailedAuth(per_credential=SlidingWindow(3), per_source=SlidingWindow(5))
    assert [f.fail("1.1.1.1", "bad", t) for t in (0, 1, 2)] == [0, 0, 0]
    assert f.fail("1.1.1.1", "bad", 3) == 57  # until the first failure leaves the 60 s window
    assert f.fail("2.2.2.2", "bad", 3) == 0  # another source
    assert f.fail("1.1.1.1", "other", 3) == 0  # another token from the same source
    assert f.fail("1.1.1.1", "third", 3) == 0
    assert f.fail("1.1.1.1", "fourth", 4) == 56  # rotating guesses hit the per-source ceiling
    assert f.fail("1.1.1.1", "bad", 61) == 0
    assert all("bad" not in str(key) for key in f.per_credential.events)  # tokens are kept only as a hash


def test_sliding_window_table_is_bounded():
    from trade_stream.core.limits import SlidingWindow

    w = SlidingWindow(2, max_keys=3)
    for i in range(10):
        w.hit(f"ip{i}", 0)
    assert list(w.events) == ["ip7", "ip8", "ip9"]
    w.hit("ip7", 1)  # recently hit keys are kept, the least recent one goes
    w.hit("new", 1)
    assert list(w.events) == ["ip9", "ip7", "new"]
