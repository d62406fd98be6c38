"""The P&L a fill realizes, and what it does to quantity and average entry: exact decimals, fractional
quantities, partial fills, a fill crossing zero, and a replayed fill applied once."""

from decimal import Decimal as D

import pytest

from trade_stream.core.positions import FILLED_ORDERS, Positions, fill_effect

pytestmark = pytest.mark.timeout(10)


def effect(held, avg, signed, price, after=None):
    e = fill_effect(D(held), D(avg), D(signed), D(price), None if after is None else D(after))
    return e.qty, e.avg_entry, e.closed, e.realized_pl


def test_a_sell_reducing_a_long_realizes_fill_minus_entry_and_keeps_the_average_entry():
    assert effect("100", "50", "-40", "55") == (D(60), D(50), D(40), D(200))
    assert effect("100", "50", "-40", "45") == (D(60), D(50), D(40), D(-200))


def test_a_buy_reducing_a_short_realizes_entry_minus_fill():
    assert effect("-100", "50", "30", "45") == (D(-70), D(50), D(30), D(150))
    assert effect("-100", "50", "100", "52") == (D(0), D(0), D(100), D(-200))


def test_a_fill_crossing_zero_realizes_on_the_held_part_and_opens_the_rest_at_the_fill_price():
    assert effect("100", "50", "-150", "60", after="-50") == (D(-50), D(60), D(100), D(1000))
    assert effect("-20", "10", "25", "8") == (D(5), D(8), D(20), D(40))


def test_adding_realizes_nothing_and_moves_the_average_entry_to_the_weighted_mean():
    assert effect("10", "100", "30", "120") == (D(40), D(115), D(0), D(0))
    assert effect("-10", "100", "-10", "90") == (D(-20), D(95), D(0), D(0))
    assert effect("0", "0", "5", "42.5") == (D(5), D("42.5"), D(0), D(0))


def test_fractional_quantities_are_exact():
    qty, avg, closed, realized = effect("0.75", "60000.10", "-0.3333", "61000.35")
    assert (qty, avg, closed) == (D("0.4167"), D("60000.10"), D("0.3333"))
    assert realized == D("0.3333") * D("1000.25") == D("333.383325")


def test_alpacas_position_after_the_event_bounds_what_was_closed():
    # the held quantity already counted this fill (a REST snapshot taken after it): nothing is closed again
    assert effect("60", "50", "-40", "55", after="60") == (D(60), D(50), D(0), D(0))
    # the position moved less than the fill says: only the part that is gone was closed
    assert effect("100", "50", "-40", "55", after="90") == (D(90), D(50), D(10), D(50))


def test_partial_fills_each_realize_their_own_quantity_at_their_own_price():
    p = Positions()
    p.load([{"symbol": "X", "qty": "100", "avg_entry_price": "20", "side": "long"}])
    first = p.apply_fill("X", "sell", D(30), D("21"), D(70), "o1", D(30))  # filled_qty: the order's total so far
    second = p.apply_fill("X", "sell", D(70), D("19.5"), D(0), "o1", D(100))
    assert first is not None and second is not None
    assert (first.position.qty, first.position.avg_entry, first.realized_pl) == (D(70), D(20), D(30))
    assert (second.position.qty, second.realized_pl) == (D(0), D(-35))
    assert "X" not in p.by_symbol


def test_a_replayed_fill_is_not_applied_twice():
    p = Positions()
    p.load([{"symbol": "X", "qty": "10", "avg_entry_price": "100"}])
    assert p.apply_fill("X", "sell", D(4), D(110), None, "o1", D(4)) is not None
    assert p.apply_fill("X", "sell", D(4), D(110), None, "o1", D(4)) is None  # the same event again
    assert p.apply_fill("X", "sell", D(2), D(110), None, "o1", D(3)) is None  # an older one of the order
    assert p.by_symbol["X"].qty == D(6)
    later = p.apply_fill("X", "sell", D(6), D(120), None, "o1", D(10))
    assert later is not None and later.position.qty == 0 and later.realized_pl == D(120)


def test_the_replay_memory_is_bounded():
    p = Positions()
    for n in range(FILLED_ORDERS + 5):
        p.apply_fill("X", "buy", D(1), D(1), None, f"o{n}", D(1))
    assert len(p._filled) == FILLED_ORDERS and "o0" not in p._filled and f"o{FILLED_ORDERS + 4}" in p._filled


def test_a_fill_that_opens_or_adds_reports_no_realized_pl():
    p = Positions()
    opened = p.apply_fill("X", "buy", D(10), D(100), D(10))
    added = p.apply_fill("X", "buy", D(10), D(110), D(20))
    assert opened is not None and opened.realized_pl is None
    assert added is not None and added.realized_pl is None and added.position.avg_entry == D(105)
    at_cost = p.apply_fill("X", "sell", D(5), D(105), D(15))
    assert at_cost is not None and at_cost.realized_pl == D(0)  # closed at cost: realized, and zero

