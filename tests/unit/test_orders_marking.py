"""Positions marked to market: the price tap holds held symbols only while someone follows positions, fills
are pushed at once, price moves at most once per interval per symbol (the latest price winning) — with a fake
relay, fake clients, and the clock and timer driven by hand."""

from decimal import Decimal

import orjson
import pytest

from tests.support.orders_fakes import FakeClient, FakeRelay
from trade_stream.core.orders.marking import POSITION_INTERVAL, PositionMarker
from trade_stream.core.positions import Positions

pytestmark = pytest.mark.timeout(10)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.timers: list[tuple[float, object, str]] = []

    def __call__(self) -> float:
        return self.now

    def schedule(self, delay, callback, symbol):
        self.timers.append((self.now + delay, callback, symbol))
        return None

    def run_due(self) -> None:
        due = [t for t in self.timers if t[0] <= self.now]
        self.timers = [t for t in self.timers if t[0] > self.now]
        for _, callback, symbol in due:
            callback(symbol)


def updates(client: FakeClient) -> list[dict]:
    """The position_update messages in the client's WebSocket frames (unmasked server text frames)."""
    out = []
    for frame, _ in client.frames:
        n = frame[1] & 0x7F
        start = 2 if n < 126 else 4 if n == 126 else 10
        out.append(orjson.loads(frame[start:]))
    return out


def setup(rows=None):
    relay, clock, subscribers, seen = FakeRelay(), Clock(), set(), []
    marker = PositionMarker(relay, Positions(), "acct", subscribers, clock=clock, schedule=clock.schedule)
    marker.listeners.append(seen.append)
    if rows is not None:
        marker.load(rows)  # pushes each position once; the tests start one interval later, with none seen
        seen.clear()
        clock.now += POSITION_INTERVAL
    return marker, relay, clock, subscribers, seen


def held(marker: PositionMarker, relay: FakeRelay) -> set:
    return relay.held.get(marker._tap, set())


def fill(symbol: str, side: str, qty: str, price: str, position_qty: str | None = None) -> dict:
    return {"event": "fill", "order": {"symbol": symbol, "side": side}, "qty": qty, "price": price,
            "position_qty": position_qty}


def test_the_tap_holds_held_symbols_only_while_someone_follows_positions():
    marker, relay, _, subscribers, _ = setup([{"symbol": "AAPL", "qty": "5", "avg_entry_price": "100"}])
    assert held(marker, relay) == set()  # nobody follows: no upstream trades needed
    client = FakeClient()
    subscribers.add(client)
    marker.sync()
    assert held(marker, relay) == {("trades", "AAPL")} and relay.private == [True]  # not in public status
    subscribers.discard(client)
    marker.sync()
    assert held(marker, relay) == set()
    marker.watch("sse-stream")  # an SSE position stream counts as well
    assert held(marker, relay) == {("trades", "AAPL")}
    marker.unwatch("sse-stream")
    assert held(marker, relay) == set()


def test_a_fill_changes_the_position_and_is_pushed_at_once_to_subscribers_and_listeners():
    marker, relay, _, subscribers, seen = setup([])
    client = FakeClient()
    subscribers.add(client)
    marker.apply_fill(fill("AAPL", "buy", "10", "100"))
    marker.apply_fill(fill("AAPL", "buy", "10", "110"))  # at the same instant: fills are never held back
    assert [m["qty"] for m in seen] == ["10", "20"] and seen[-1]["avg_entry_price"] == "105"
    assert seen[-1]["type"] == "position_update" and seen[-1]["account"] == "acct"
    assert updates(client) == seen
    assert held(marker, relay) == {("trades", "AAPL")}  # a new holding is marked to market from now on


def test_price_moves_are_pushed_at_most_once_per_interval_with_the_latest_price():
    marker, _, clock, subscribers, seen = setup([{"symbol": "AAPL", "qty": "2", "avg_entry_price": "100"}])
    subscribers.add(FakeClient())
    marker.on_trades([{"T": "t", "S": "AAPL", "p": 101}])
    assert [m["current_price"] for m in seen] == [101.0]
    clock.now += POSITION_INTERVAL / 5
    marker.on_trades([{"T": "t", "S": "AAPL", "p": 102}])
    marker.on_trades([{"T": "t", "S": "AAPL", "p": 103}])
    assert len(seen) == 1 and len(clock.timers) == 1  # one push scheduled, however many trades
    clock.now += POSITION_INTERVAL
    clock.run_due()
    assert [m["current_price"] for m in seen] == [101.0, 103.0]
    assert seen[-1]["market_value"] == 206.0 and seen[-1]["unrealized_pl"] == 6.0
    marker.on_trades([{"T": "t", "S": "AAPL", "p": 103}])  # the same price: nothing to say
    assert len(seen) == 2


def test_trades_of_symbols_not_held_and_bad_prices_are_ignored():
    marker, _, _, _, seen = setup([{"symbol": "AAPL", "qty": "2", "avg_entry_price": "100"}])
    marker.on_trades([{"T": "t", "S": "MSFT", "p": 400}, {"T": "t", "S": "AAPL", "p": None}])
    assert seen == [] and marker.positions.by_symbol["AAPL"].price is None


def test_a_closed_position_is_pushed_as_zero_and_leaves_no_state_behind():
    marker, relay, _, subscribers, seen = setup([{"symbol": "AAPL", "qty": "2", "avg_entry_price": "100"}])
    subscribers.add(FakeClient())
    marker.sync()
    marker.apply_fill(fill("AAPL", "sell", "2", "120", position_qty="0"))
    assert seen[-1]["qty"] == "0" and seen[-1]["portfolio"]["positions"] == 0
    assert "AAPL" not in marker.positions.by_symbol and "AAPL" not in marker._last_push
    assert held(marker, relay) == set()


def test_loading_from_rest_pushes_every_position():
    marker, _, _, _, seen = setup()
    marker.load([{"symbol": "AAPL", "qty": "2", "avg_entry_price": "100"},
                 {"symbol": "TSLA", "qty": "1", "avg_entry_price": "200", "side": "long"}])
    assert sorted(m["symbol"] for m in seen) == ["AAPL", "TSLA"]
    assert marker.positions.by_symbol["AAPL"].qty == Decimal(2)


def test_a_fill_without_price_or_quantity_changes_nothing():
    marker, _, _, _, seen = setup([])
    marker.apply_fill({"event": "fill", "order": {"symbol": "AAPL", "side": "buy"}, "qty": "1"})
    assert seen == [] and marker.positions.by_symbol == {}


def order_fill(order_id: str, side: str, qty: str, price: str, filled: str, position_qty: str) -> dict:
    return {"event": "fill", "qty": qty, "price": price, "position_qty": position_qty,
            "order": {"id": order_id, "symbol": "AAPL", "side": side, "filled_qty": filled}}


def test_reducing_and_closing_fills_carry_their_realized_pl_and_other_updates_none():
    marker, _, clock, subscribers, seen = setup([{"symbol": "AAPL", "qty": "10", "avg_entry_price": "100"}])
    client = FakeClient()
    subscribers.add(client)
    marker.sync()
    marker.apply_fill(order_fill("o1", "sell", "4", "110.25", "4", "6"))
    assert (seen[-1]["qty"], seen[-1]["avg_entry_price"], seen[-1]["realized_pl"]) == ("6", "100", 41.0)
    clock.now += POSITION_INTERVAL
    marker.on_trades([{"T": "t", "S": "AAPL", "p": 111}])
    assert seen[-1]["current_price"] == 111.0 and seen[-1]["realized_pl"] is None  # a price move realizes nothing
    marker.apply_fill(order_fill("o1", "sell", "6", "99.5", "10", "0"))
    assert (seen[-1]["qty"], seen[-1]["realized_pl"], seen[-1]["portfolio"]["positions"]) == ("0", -3.0, 0)
    assert updates(client) == seen


def test_a_replayed_fill_is_neither_applied_nor_pushed_again():
    marker, _, _, subscribers, seen = setup([{"symbol": "AAPL", "qty": "10", "avg_entry_price": "100"}])
    subscribers.add(FakeClient())
    reducing = order_fill("o1", "sell", "4", "110", "4", "6")
    marker.apply_fill(reducing)
    marker.apply_fill(dict(reducing, position_qty=None))  # the same fill again, as a derived event without it
    assert [m["realized_pl"] for m in seen] == [40.0] and marker.positions.by_symbol["AAPL"].qty == 6


def test_an_opening_fill_reports_no_realized_pl():
    marker, _, _, _, seen = setup([])
    marker.apply_fill(order_fill("o1", "buy", "3", "50", "3", "3"))
    assert seen[-1]["qty"] == "3" and seen[-1]["realized_pl"] is None


def test_a_client_joining_after_its_snapshot_gets_what_changed_meanwhile():
    """Between a client's snapshot and its joining the live set (its journal replay), fills reach only the
    subscribers of that moment: on joining, it gets one update for each position that changed, a closed one at 0,
    and nothing for one that stayed as the snapshot showed it."""
    marker, _, _, _, _ = setup([{"symbol": "AAPL", "qty": "5", "avg_entry_price": "100"},
                                    {"symbol": "MSFT", "qty": "2", "avg_entry_price": "300"},
                                    {"symbol": "TSLA", "qty": "1", "avg_entry_price": "200"}])
    shown = marker.positions.views()
    marker.apply_fill(fill("AAPL", "buy", "5", "110"))  # changed
    marker.apply_fill(fill("TSLA", "sell", "1", "210"))  # closed
    marker.apply_fill(fill("NVDA", "buy", "3", "50"))  # opened
    client = FakeClient()
    marker.catch_up(client, shown)
    got = {u["symbol"]: u["qty"] for u in updates(client)}
    assert got == {"AAPL": "10", "TSLA": "0", "NVDA": "3"}  # MSFT as shown: nothing
