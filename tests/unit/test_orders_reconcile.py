"""REST reconciliation after a gap in the trading stream: the lifecycle events a live client would have had,
derived from what REST shows now, published marked reconciled, in order, and only once — with a fake journal and
a fake trading REST."""

import logging
import sqlite3
from pathlib import Path

import pytest

from tests.support.orders_fakes import FakeLog, FakeRelay, FakeRest, NoRecovery, Opener
from trade_stream.core.orders.events import parse_ts
from trade_stream.core.orders.journal_writer import JournalWriter
from trade_stream.core.orders.marking import PositionMarker
from trade_stream.core.orders.reconcile import SEEN_KEY, Reconciler
from trade_stream.core.positions import Positions
from trade_stream.core.stats import Stats

pytestmark = pytest.mark.timeout(10)

GAP_START = "2026-11-30T15:00:00Z"  # the stream was last heard from then


def order(oid: str, status: str, filled: str = "0", submitted: str = "2026-11-30T15:01:00Z",
          updated: str = "2026-11-30T15:05:00Z", **extra) -> dict:
    return {"id": oid, "symbol": "AAPL", "side": "buy", "qty": "10", "status": status, "filled_qty": filled,
            "filled_avg_price": "101.5" if filled != "0" else None, "submitted_at": submitted,
            "created_at": submitted, "updated_at": updated, **extra}


class Side:
    """A reconciler over a fake journal and REST, with what it published."""

    def __init__(self, rest: FakeRest, log: FakeLog | None = None, seen: str | None = GAP_START) -> None:
        self.log = log or FakeLog()
        if seen is not None:
            self.log.meta[SEEN_KEY] = repr(parse_ts(seen))
        self.writer = JournalWriter(Path("/state/orders.sqlite3"), Stats(), self, NoRecovery(),
                                    open_log=Opener(self.log))
        self.writer.start()
        self.marker = PositionMarker(FakeRelay(), Positions(), "acct", set())
        self.rest = rest
        self.reconciler = Reconciler(rest, self.writer, self.publish, self.marker)
        self.published: list[tuple[str, bool, str]] = []

    def publish(self, data, reconciled, dedupe):
        entry = self.writer.append(data, reconciled, dedupe)
        if entry is not None:
            self.published.append((entry.event, entry.reconciled, entry.data["order"]["status"]))
        return entry

    def on_entry(self, entry): ...
    def on_log_reset(self, reason): ...
    def on_recovered(self, reset): ...

    def since_gap(self) -> None:
        """As if the stream went away again at GAP_START, for a second reconciliation of the same gap."""
        self.log.meta[SEEN_KEY] = repr(parse_ts(GAP_START))


async def test_first_start_records_what_exists_as_the_baseline_not_as_news():
    rest = FakeRest([order("A", "filled", "10"), order("B", "new")])
    side = Side(rest, seen=None)
    await side.reconciler.reconcile()
    assert side.published == [] and side.log.entries == []
    assert side.log.order_state("A")[:2] == ("filled", "10") and side.log.order_state("B")[:2] == ("new", "0")
    assert ("orders", 500) in rest.calls and float(side.log.meta[SEEN_KEY])  # the next gap starts now


async def test_an_order_placed_and_filled_during_the_gap_yields_new_then_fill_once():
    side = Side(FakeRest([order("A", "filled", "10")]))
    await side.reconciler.reconcile()
    assert side.published == [("new", True, "new"), ("fill", True, "filled")]
    fill = side.log.entries[1].data
    assert fill["qty"] == "10" and fill["price"] == "101.5"
    assert side.log.entries[0].data["order"]["filled_qty"] == "0"  # ``new`` as the order was then
    assert side.log.synced == 1  # a shared log is caught up with before comparing

    side.since_gap()
    await side.reconciler.reconcile()  # the same gap again (another reconnect, another node)
    assert len(side.published) == 2 and len(side.log.entries) == 2


async def test_a_known_order_partly_filled_then_canceled_yields_the_partial_fill_first():
    log = FakeLog()
    log.append({"event": "new", "order": order("A", "new", updated="2026-11-30T14:59:00Z")})
    side = Side(FakeRest([order("A", "canceled", "4", canceled_at="2026-11-30T15:05:00Z")]), log)
    await side.reconciler.reconcile()
    assert side.published == [("partial_fill", True, "partially_filled"), ("canceled", True, "canceled")]
    partial = log.entries[1].data
    assert partial["qty"] == "4" and partial["order"]["canceled_at"] is None  # not yet canceled then
    assert log.order_state("A")[:2] == ("canceled", "4")


async def test_an_open_order_submitted_long_before_the_gap_is_fetched_by_id():
    log = FakeLog()
    gtc = order("G", "new", submitted="2026-11-01T15:00:00Z", updated="2026-11-01T15:00:00Z")
    log.append({"event": "new", "order": gtc})
    rest = FakeRest([{**gtc, "status": "filled", "filled_qty": "10", "filled_avg_price": "99",
                      "updated_at": "2026-11-30T15:10:00Z"}])
    side = Side(rest, log)
    await side.reconciler.reconcile()
    assert ("order", "G") in rest.calls  # not among the orders submitted since the gap
    assert side.published == [("fill", True, "filled")]


async def test_an_order_gone_from_alpaca_does_not_stop_the_others(caplog):
    log = FakeLog()
    log.append({"event": "new", "order": order("GONE", "new", submitted="2026-11-01T15:00:00Z")})
    side = Side(FakeRest([order("A", "filled", "10")]), log)
    with caplog.at_level(logging.WARNING, logger="trade_stream.core.orders"):
        await side.reconciler.reconcile()
    assert [e for e, _, _ in side.published] == ["new", "fill"]
    assert any(r.getMessage().startswith("reconcile_order_failed order_id=GONE") for r in caplog.records)


async def test_changes_before_the_gap_and_ones_already_relayed_are_left_alone():
    log = FakeLog()
    log.append({"event": "fill", "order": order("B", "filled", "10", updated="2026-11-30T15:06:00Z")})
    old = order("OLD", "canceled", updated="2026-11-30T14:00:00Z")  # changed before the gap (beyond the margin)
    newer_here = order("B", "partially_filled", "4", updated="2026-11-30T15:03:00Z")  # REST behind the journal
    side = Side(FakeRest([old, newer_here]), log)
    await side.reconciler.reconcile()
    assert side.published == []


async def test_rest_failing_publishes_nothing_and_keeps_the_gap_open(caplog):
    rest = FakeRest([order("A", "filled", "10")])
    rest.fail = TimeoutError("alpaca down")
    side = Side(rest)
    with caplog.at_level(logging.WARNING, logger="trade_stream.core.orders"):
        await side.reconciler.reconcile()
    assert side.published == [] and side.log.meta[SEEN_KEY] == repr(parse_ts(GAP_START))
    assert any(r.getMessage().startswith("reconcile_failed") for r in caplog.records)
    rest.fail = None
    await side.reconciler.reconcile()  # the next attempt covers the same gap
    assert [e for e, _, _ in side.published] == ["new", "fill"]


async def test_without_a_journal_nothing_is_asked_of_rest():
    rest = FakeRest([order("A", "filled", "10")])
    side = Side(rest)
    side.log.broken = sqlite3.OperationalError("disk I/O error")
    side.writer.append({"event": "x", "order": {"id": "Z"}})  # the fault: the journal closes
    await side.reconciler.reconcile()
    assert rest.calls == [] and side.published == []


async def test_positions_come_from_rest_after_reconciling():
    rest = FakeRest([], positions=[{"symbol": "MSFT", "qty": "3", "avg_entry_price": "400"}])
    side = Side(rest)
    await side.reconciler.reconcile()
    assert side.marker.positions.by_symbol["MSFT"].qty == 3
    rest.rows = [{"symbol": "TSLA", "qty": "1", "avg_entry_price": "200"}]
    await side.reconciler.load_positions()  # a node without the trading stream
    assert set(side.marker.positions.by_symbol) == {"TSLA"}


def test_the_gap_starts_when_a_live_stream_goes_away():
    side = Side(FakeRest(), seen=None)
    side.reconciler.on_state(False)  # never connected: no gap to remember
    assert SEEN_KEY not in side.log.meta
    side.reconciler.on_state(True)
    assert side.reconciler.live and SEEN_KEY not in side.log.meta
    side.reconciler.on_state(False)
    assert not side.reconciler.live and float(side.log.meta[SEEN_KEY])  # now: the gap's start
