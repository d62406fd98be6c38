"""The pure price-alert evaluation (core/alerts.py): crossing as TradingView defines it, percent change against
the previous close, stale during the session, validation naming the field, and the index touching only what
fires."""

from __future__ import annotations

import pytest

from trade_stream.core.alerts import Alert, Book, Invalid, parse_change, parse_new

pytestmark = pytest.mark.timeout(10)


def alert(alert_id: str, condition: str = "crosses_above", value: float = 230.0, symbol: str = "AAPL") -> Alert:
    return Alert(id=alert_id, user="alice", symbol=symbol, condition=condition, value=value)


def fired_ids(fired) -> list[str]:
    return sorted(f.alert.id for f in fired)


def test_a_cross_above_needs_a_trade_below_first():
    book = Book()
    book.add(alert("up"))
    assert book.on_trade("AAPL", 231.0) == []  # the first trade only sets the side: already above
    assert book.on_trade("AAPL", 232.0) == []
    assert book.on_trade("AAPL", 229.0) == []
    (fired,) = book.on_trade("AAPL", 230.0, 5, "2026-12-01T15:00:00Z")  # on the level counts
    assert fired.alert.state == "triggered" and fired.alert.trade == {"price": 230.0, "size": 5,
                                                                      "timestamp": "2026-12-01T15:00:00Z"}
    assert fired.alert.message == "AAPL crossed above $230.00 at $230.00"
    assert book.on_trade("AAPL", 229.0) == [] and book.on_trade("AAPL", 231.0) == []  # fired once
    assert len(book) == 0 and book.held() == set()


def test_a_cross_below_from_the_snapshot_reference():
    book = Book()
    book.add(alert("down", "crosses_below", 100.0))
    book.reference("AAPL", 101.0, None)  # the REST snapshot's last trade is above the level
    (fired,) = book.on_trade("AAPL", 99.5)
    assert fired.alert.message == "AAPL crossed below $100.00 at $99.50"


def test_a_gap_through_many_levels_fires_each_of_them_and_no_other():
    book = Book()
    for i, level in enumerate((100.0, 101.0, 102.0, 103.0, 110.0)):
        book.add(alert(f"a{i}", value=level))
    book.add(alert("b", "crosses_below", 99.0))
    book.on_trade("AAPL", 99.5)
    assert fired_ids(book.on_trade("AAPL", 103.0)) == ["a0", "a1", "a2", "a3"]
    assert sorted(book.alerts) == ["a4", "b"]
    assert book.on_trade("AAPL", 109.99) == []


def test_a_follower_keeps_the_reference_without_firing():
    book = Book()
    book.add(alert("up"))
    book.on_trade("AAPL", 229.0, evaluate=False)
    assert book.on_trade("AAPL", 231.0, evaluate=False) == []
    assert book.symbols["AAPL"].last == 231.0 and "up" in book.alerts


def test_percent_change_waits_for_the_previous_close_and_takes_its_sign_as_direction():
    book = Book()
    book.add(alert("down3", "percent_change", -3.0))
    book.add(alert("up2", "percent_change", 2.0))
    assert book.on_trade("AAPL", 50.0) == []  # no previous close yet: nothing to compare with
    book.reference("AAPL", None, 200.0)
    assert book.on_trade("AAPL", 195.0) == []  # -2.5 %
    (down,) = book.on_trade("AAPL", 193.5)  # -3.25 %
    assert down.alert.id == "down3"
    assert down.alert.message == "AAPL is down 3.25% at $193.50 (previous close $200.00)"
    (up,) = book.on_trade("AAPL", 204.0)
    assert up.alert.message == "AAPL is up 2.00% at $204.00 (previous close $200.00)"


def test_stale_counts_only_session_time_since_the_last_trade():
    book = Book()
    book.add(alert("quiet", "stale", 10.0))
    open_at = 1_000_000.0
    assert book.check_stale(open_at + 60, open_at) == []  # the first check starts the count
    assert book.check_stale(open_at + 9 * 60, open_at) == []
    book.on_trade("AAPL", 150.0, 1, "1970-01-12T13:55:00Z")  # 1_000_500 s: a trade restarts it
    assert book.check_stale(open_at + 1000, open_at) == []
    assert book.check_stale(open_at + 2000, None) == []  # closed: no count
    (fired,) = book.check_stale(open_at + 500 + 600, open_at)
    assert fired.alert.message == "AAPL has not traded for 10 minutes during the session (last trade $150.00)"


def test_stale_counts_from_the_open_after_a_night():
    book = Book()
    book.add(alert("quiet", "stale", 5.0))
    assert book.check_stale(0.0, None) == []  # armed overnight
    assert book.check_stale(50_000.0, 49_900.0) == []  # 100 s into the session
    assert fired_ids(book.check_stale(50_200.0, 49_900.0)) == ["quiet"]


def test_removing_and_re_adding_keeps_the_index_exact():
    book = Book()
    book.add(alert("x", value=230.0))
    book.add(alert("y", value=230.0))
    book.remove("x")
    book.add(alert("y", value=240.0))  # a re-arm with a new level replaces the old entry
    book.on_trade("AAPL", 200.0)
    assert book.on_trade("AAPL", 235.0) == []
    assert fired_ids(book.on_trade("AAPL", 240.0)) == ["y"]


def test_validation_names_the_field():
    assert parse_new({"symbol": " msft ", "condition": "stale", "minutes": 10}) == ("MSFT", "stale", 10.0)
    assert parse_new({"symbol": "BTC/USD", "condition": "crosses_below", "price": 1}) == ("BTC/USD",
                                                                                         "crosses_below", 1.0)
    for body, field in (({"condition": "stale", "minutes": 1}, "symbol"),
                        ({"symbol": "TOO-LONG-SYMBOL-X", "condition": "stale", "minutes": 1}, "symbol"),
                        ({"symbol": "AAPL", "condition": "CROSSES"}, "condition"),
                        ({"symbol": "AAPL", "condition": "stale"}, "minutes"),
                        ({"symbol": "AAPL", "condition": "stale", "minutes": 391}, "minutes"),
                        ({"symbol": "AAPL", "condition": "crosses_above", "price": True}, "price"),
                        ({"symbol": "AAPL", "condition": "crosses_above", "price": float("inf")}, "price"),
                        ({"symbol": "AAPL", "condition": "percent_change", "percent": -100}, "percent"),
                        ({"symbol": "AAPL", "condition": "crosses_above", "price": 1, "colour": "red"}, "colour"),
                        ("AAPL", "body")):
        with pytest.raises(Invalid) as caught:
            parse_new(body)
        assert caught.value.field == field, body
    a = alert("x")
    assert parse_change(a, {"state": "armed"}) == 230.0 and parse_change(a, {"price": 231}) == 231.0
    with pytest.raises(Invalid) as caught:
        parse_change(a, {"minutes": 3})
    assert caught.value.field == "minutes"


def test_a_trade_touches_only_the_alerts_it_fires():
    """10,000 alerts on one symbol: a trade between levels fires nothing and leaves every list as it was."""
    book = Book()
    for i in range(5000):
        book.add(alert(f"u{i}", value=1000.0 + i))
        book.add(alert(f"d{i}", "crosses_below", value=999.0 - i * 0.1))
    book.on_trade("AAPL", 999.5)
    assert book.on_trade("AAPL", 999.6) == [] and book.on_trade("AAPL", 999.2) == []
    assert fired_ids(book.on_trade("AAPL", 1001.0)) == ["u0", "u1"]
    assert len(book) == 9998


def test_a_new_previous_close_moves_the_percent_thresholds():
    book = Book()
    book.add(alert("down3", "percent_change", -3.0))
    book.reference("AAPL", 200.0, 200.0)
    assert book.on_trade("AAPL", 195.0) == []  # -2.5 % against 200
    book.reference("AAPL", 195.0, 190.0)  # the next session: the previous close is 190
    assert book.on_trade("AAPL", 185.0) == []  # -2.6 % against 190 (it was -7.5 % against 200)
    assert book.symbols["AAPL"].last == 185.0 and book.percent_symbols() == ["AAPL"]
    (fired,) = book.on_trade("AAPL", 184.0)
    assert fired.alert.message == "AAPL is down 3.16% at $184.00 (previous close $190.00)"
