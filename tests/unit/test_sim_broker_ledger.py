"""The Broker API simulator's books (simulator/broker_ledger.py) without sockets: the events a fill books, the
cursor rules a stream query follows, a stream's end, and the REST activities pages, on a pinned clock."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from trade_stream.simulator.broker_ledger import BrokerLedger, parse_time, past_until

pytestmark = pytest.mark.timeout(10)

T0 = int(datetime(2026, 11, 24, 15, 0, tzinfo=UTC).timestamp() * 1e9)


class SteppingClock:
    """A pinned clock one second further on at each reading: every booking gets its own, known instant."""

    def __init__(self) -> None:
        self.ns = T0

    def __call__(self) -> int:
        self.ns += 1_000_000_000
        return self.ns


def ledger(seen: list[tuple[str, dict[str, Any]]] | None = None) -> BrokerLedger:
    book = BrokerLedger(seed=3, on_event=(lambda s, e: seen.append((s, e))) if seen is not None else None,
                        clock=SteppingClock())
    book.add_accounts(2)
    return book


def test_a_fill_books_new_then_fill_hands_each_on_and_moves_the_position():
    seen: list[tuple[str, dict[str, Any]]] = []
    book = ledger(seen)
    account = next(iter(book.accounts))
    fill = book.fill(account, "AAPL", qty=2, price="101.5")
    assert [(s, e["event"]) for s, e in seen] == [("trades", "new"), ("trades", "fill")]
    assert book.events["trades"] == [e for _, e in seen]
    assert (fill["qty"], fill["price"], fill["position_qty"], fill["order"]["status"]) == ("2", "101.5", "2", "filled")
    assert book.accounts[account].positions == {"AAPL": Decimal(2)}
    assert [(a["activity_type"], a["order_status"]) for a in book.activities] == [("FILL", "filled")]
    ids = [e["event_id"] for e in book.events["trades"]]
    assert ids == sorted(ids) and len(set(ids)) == 2  # ULIDs in booking order


def test_a_partial_fill_of_a_larger_order_then_a_sell():
    book = ledger()
    account = next(iter(book.accounts))
    partial = book.fill(account, "MSFT", qty=1, price=10, partial_of=3)
    assert (partial["event"], partial["order"]["status"], partial["order"]["qty"]) == ("partial_fill",
                                                                                      "partially_filled", "3")
    sell = book.fill(account, "MSFT", qty=1, price=11, side="sell")
    assert sell["position_qty"] == "0"


def test_a_dividend_is_booked_on_the_activities_and_the_legacy_stream():
    book = ledger()
    account = next(iter(book.accounts))
    event = book.dividend(account, "AAPL", per_share="0.25", qty=4)
    assert event["net_amount"] == "1" and book.events["activities"] == [event]
    (nta,) = book.events["nta"]
    assert nta["id"] == event["id"] and nta["event_id"] != event["event_id"]  # numbered by its own stream


def test_select_follows_the_cursor_rules():
    book = ledger()
    account = next(iter(book.accounts))
    for _ in range(3):
        book.fill(account)
    events = book.events["trades"]
    assert book.select("trades", {}, "since_id", "until_id") == (None, None, None)  # no cursor: live only
    history, until_id, _ = book.select("trades", {"since_id": events[1]["event_id"]}, "since_id", "until_id")
    assert history == events[2:] and until_id is None  # since_id is exclusive
    since = events[3]["at"]
    history, _, until = book.select("trades", {"since": since, "until": events[4]["at"]}, "since_id", "until_id")
    assert history == events[4:] and until == parse_time(events[4]["at"])
    for query, message in [({"since": since, "since_id": "0"}, "can't be used at the same time"),
                           ({"until": since}, "since required"),
                           ({"until_id": "0"}, "since_id required")]:
        with pytest.raises(ValueError, match=message):
            book.select("trades", query, "since_id", "until_id")


def test_past_until_by_id_or_time():
    event = {"event_id": "01B", "at": "2026-11-24T15:00:05Z"}
    assert past_until(event, "01A", None) and not past_until(event, "01B", None)
    assert past_until(event, None, parse_time("2026-11-24T15:00:04Z"))
    assert not past_until(event, None, parse_time("2026-11-24") + 86400)
    assert not past_until(event, None, None)


def test_rest_activities_filter_and_page_by_token():
    book = ledger()
    account = next(iter(book.accounts))
    for _ in range(3):
        book.fill(account)
    book.split(account, "AAPL")
    status, fills = book.rest_activities({"activity_types": "FILL"})
    assert status == 200 and [a["activity_type"] for a in fills] == ["FILL"] * 3
    _, page = book.rest_activities({"activity_types": "FILL", "page_size": "2"})
    _, rest = book.rest_activities({"activity_types": "FILL", "page_token": page[-1]["id"]})
    assert page + rest == fills
    _, after = book.rest_activities({"after": fills[-1]["transaction_time"]})
    assert [a["activity_type"] for a in after] == ["SPLIT"]
