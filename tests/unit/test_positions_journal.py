"""Position arithmetic and the order journal, checked with exact numbers."""

from decimal import Decimal as D

from trade_stream.core.journal import Journal, dedupe_key
from trade_stream.core.positions import Positions


def test_average_entry_grows_holds_and_flips():
    p = Positions()
    p.apply_fill("X", "buy", D(10), D(100), D(10))
    p.apply_fill("X", "buy", D(30), D(120), D(40))
    assert p.by_symbol["X"].avg_entry == D(115)
    p.apply_fill("X", "sell", D(15), D(130), D(25))
    assert (p.by_symbol["X"].qty, p.by_symbol["X"].avg_entry) == (D(25), D(115))
    p.apply_fill("X", "sell", D(35), D(90), D(-10))
    assert (p.by_symbol["X"].qty, p.by_symbol["X"].avg_entry) == (D(-10), D(90))
    p.mark("X", D(80))
    view = p.by_symbol["X"].to_dict()
    assert (view["qty"], view["unrealized_pl"], view["side"]) == ("-10", 100.0, "short")
    p.apply_fill("X", "buy", D(10), D(80), D(0))
    assert "X" not in p.by_symbol


def test_snapshot_and_portfolio():
    p = Positions()
    p.load([{"symbol": "A", "qty": "2", "avg_entry_price": "10.5", "side": "long", "current_price": "11"},
            {"symbol": "B", "qty": "3", "avg_entry_price": "20", "side": "short", "current_price": "19"}])
    assert p.portfolio() == {"positions": 2, "market_value": 22 - 57, "unrealized_pl": 1.0 + 3.0}


def test_journal_dedupes_and_survives_reopen(tmp_path):
    path = tmp_path / "j.sqlite3"
    j = Journal(path)
    fill = {"event": "fill", "execution_id": "e1", "order": {"id": "o1", "status": "filled", "filled_qty": "1"}}
    first = j.append(fill)
    assert first is not None and j.append(fill) is None
    second = j.append({"event": "canceled", "timestamp": "t", "order": {"id": "o2", "status": "canceled"}})
    j.close()
    j = Journal(path)
    assert [e.id for e in j.since(0)] == [first.id, second.id]
    assert j.order_state("o1")[:2] == ("filled", "1")
    assert j.append({"event": "new", "timestamp": "t2", "order": {"id": "o3"}}).id > second.id
    assert dedupe_key(fill) == "x:e1"


def test_journal_retention(tmp_path):
    j = Journal(tmp_path / "j.sqlite3", retention_days=1)
    j.append({"event": "new", "timestamp": "t", "order": {"id": "o"}})
    assert j.prune(now=10**12) == 1 and j.since(0) == []


def test_timestamps_with_nanoseconds_keep_their_zone_offset():
    from trade_stream.core.orders import parse_ts

    utc = parse_ts("2026-01-02T15:00:00.123456789Z")
    assert parse_ts("2026-01-02T17:00:00.123456789+02:00") == utc  # the zone's digits are not fraction digits
    assert parse_ts("2026-01-02T10:00:00.123456789-05:00") == utc
    assert parse_ts("2026-01-02T15:00:00+00:00") == parse_ts("2026-01-02T15:00:00Z")
