"""Pure tests of the simulator's data generation, encoding and protocol rules (no sockets)."""

import re

import msgpack
import orjson
import pytest

from trade_stream.simulator import BASIC_PLAN, Plan
from trade_stream.simulator import protocol as p
from trade_stream.simulator.market import BarBuilder, Market, parse_ts
from trade_stream.simulator.orders import OrderBook, Position, dec
from trade_stream.simulator.units import MINUTE_NS, NS, format_ts, round_price
from trade_stream.simulator.wire import Out, frame

TS_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z")
T0 = 1_795_000_000 * NS  # 2026-11-18T...Z, a whole second


def test_timestamp_has_nine_fraction_digits_and_round_trips():
    ns = T0 + 123_456_789
    text = format_ts(ns)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", text)
    assert text.endswith(".123456789Z")
    assert parse_ts(text) == ns


def test_timestamp_trims_trailing_zeros_like_go_rfc3339nano():
    assert format_ts(T0 + 120_000_000).endswith(".12Z")
    assert TS_RE.fullmatch(format_ts(T0)) and "." not in format_ts(T0)
    assert parse_ts(format_ts(T0 + 120_000_000)) == T0 + 120_000_000
    assert parse_ts("2026-01-02") == parse_ts("2026-01-02T00:00:00Z")


def test_price_rounding():
    assert round_price(230.123456) == 230.12
    assert round_price(0.123456) == 0.1235


def test_trades_are_well_formed_and_rounded_to_cents():
    market = Market(seed=7, start_prices={"AAPL": 230.0})
    for _ in range(500):
        msg, ns = market.trade("AAPL", "sip")
        assert list(msg)[:2] == ["T", "S"] and msg["T"] == "t" and msg["S"] == "AAPL"
        assert msg["p"] == round(msg["p"], 2) and msg["p"] > 0
        assert isinstance(msg["s"], int) and msg["s"] > 0
        assert msg["c"][0] == "@" and ("I" in msg["c"]) == (msg["s"] < 100)
        assert msg["z"] == "C" and len(msg["x"]) == 1
        assert TS_RE.fullmatch(msg["t"]) and parse_ts(msg["t"]) == ns
    ids = [market.trade("AAPL")[0]["i"] for _ in range(3)]
    assert ids == sorted(set(ids))


def test_iex_feed_trades_on_iex_only():
    market = Market(seed=1)
    assert {market.trade("MSFT", "iex")[0]["x"] for _ in range(50)} == {"V"}
    assert len({market.trade("MSFT", "sip")[0]["x"] for _ in range(200)}) > 3


def test_quotes_have_bid_below_ask_on_cent_grid():
    market = Market(seed=3, start_prices={"SPY": 590.0, "PENNY": 0.5})
    for symbol in ("SPY", "PENNY", "NEWSYM"):
        for _ in range(300):
            q, _ = market.quote(symbol, "sip")
            assert q["T"] == "q" and q["bp"] < q["ap"]
            assert q["bs"] > 0 and q["as"] > 0 and q["c"] == ["R"]
            if q["bp"] >= 1:
                assert q["bp"] == round(q["bp"], 2) and q["ap"] == round(q["ap"], 2)
            market.trade(symbol)


def test_seed_makes_data_reproducible():
    a, b = Market(seed=42), Market(seed=42)
    assert [a.trade("X", ns=T0)[0] for _ in range(20)] == [b.trade("X", ns=T0)[0] for _ in range(20)]


def test_bar_aggregation():
    bars = BarBuilder()
    m0 = T0 - T0 % MINUTE_NS
    assert bars.add(10.0, 100, m0 + 1) is None
    bars.add(12.0, 50, m0 + 20 * NS)
    bars.add(9.0, 10, m0 + 30 * NS)
    assert bars.add(11.0, 40, m0 + 59 * NS) is None
    done = bars.add(13.0, 1, m0 + MINUTE_NS + 5)
    assert done == {"o": 10.0, "h": 12.0, "l": 9.0, "c": 11.0, "v": 200, "t": format_ts(m0), "n": 4,
                    "vw": round((1000 + 600 + 90 + 440) / 200, 6)}
    assert done["t"].endswith(":00Z")
    assert bars.roll(m0 + MINUTE_NS + 10) is None
    assert bars.roll(m0 + 2 * MINUTE_NS)["o"] == 13.0


def test_market_bars_built_from_generated_trades():
    market = Market(seed=5)
    m0 = T0 - T0 % MINUTE_NS
    trades = [market.trade("AAPL", ns=m0 + i * NS)[0] for i in range(10)]
    [(bar, daily)] = market.roll_bars(["AAPL"], m0 + MINUTE_NS)
    b, _ = bar
    assert b["T"] == "b" and b["S"] == "AAPL" and b["t"] == format_ts(m0)
    assert b["o"] == trades[0]["p"] and b["c"] == trades[-1]["p"]
    assert b["h"] == max(t["p"] for t in trades) and b["l"] == min(t["p"] for t in trades)
    assert b["v"] == sum(t["s"] for t in trades) and b["n"] == 10
    assert daily[0]["T"] == "d" and daily[0]["v"] == b["v"]
    assert market.roll_bars(["AAPL"], m0 + MINUTE_NS) == []


def test_frames_encode_each_message_once_and_concatenate():
    outs = [Out(*Market(seed=1).trade("AAPL", ns=T0 + i)) for i in range(20)]
    assert orjson.loads(frame(outs, False)) == [o.msg for o in outs]
    decoded = msgpack.unpackb(frame(outs, True))
    assert [d["t"].to_unix_nano() for d in decoded] == [T0 + i for i in range(20)]
    assert decoded[0]["p"] == outs[0].msg["p"]


def test_subscription_rules():
    subs = p.empty_subs()
    subs = p.apply(subs, p.parse_request({"action": "subscribe", "trades": ["AAPL"], "quotes": ["*"]}), True)
    msg = p.subscription_message(subs)
    assert list(msg)[:10] == ["T", "trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds",
                              "corrections", "cancelErrors"]
    assert msg["corrections"] == msg["cancelErrors"] == ["AAPL"]
    for bad, code in [({"trades": "AAPL"}, 400), ({"trades": ["aapl"]}, 400), ({"trades": [1]}, 400),
                      ({"corrections": ["AAPL"]}, 400), ({"news": ["AAPL"]}, 410), ({"orderbooks": ["X"]}, 410),
                      ({}, 400)]:
        with pytest.raises(p.ProtocolError) as err:
            p.parse_request({"action": "subscribe", **bad})
        assert err.value.code == code
    # The Go SDK names every channel it knows, unset ones nil: null or empty lists mean nothing, on any key.
    assert p.parse_request({"action": "subscribe", "trades": None, "orderbooks": [], "pricing": None}) == {}
    with pytest.raises(p.ProtocolError):
        p.check_plan(subs, BASIC_PLAN)  # wildcard on a limited plan
    p.check_plan(subs, Plan())
    many = p.apply(p.empty_subs(), {"trades": [f"S{i}" for i in range(30)], "bars": ["S0"]}, True)
    p.check_plan(many, BASIC_PLAN)
    with pytest.raises(p.ProtocolError):
        p.check_plan(p.apply(many, {"quotes": ["S99"]}, True), BASIC_PLAN)


def test_positions_weighted_average_and_flip():
    pos = Position("AAPL")
    pos.apply_fill(dec(10), dec(100))
    pos.apply_fill(dec(10), dec(110))
    assert pos.qty == 20 and pos.avg_entry_price == 105
    pos.apply_fill(dec(-5), dec(120))
    assert pos.qty == 15 and pos.avg_entry_price == 105
    pos.apply_fill(dec(-25), dec(90))
    assert pos.qty == -10 and pos.avg_entry_price == 90


def test_order_book_partial_then_full_fill():
    book = OrderBook(["K"], lambda s: 100.0, seed=1)
    order, [new] = book.submit("K", "AAPL", "buy", 10, "limit", 100.5)
    assert new["event"] == "new" and order["status"] == "new" and order["limit_price"] == "100.5"
    order, [ev] = book.fill(order["id"], 4, 100)
    assert ev["event"] == "partial_fill" and ev["qty"] == "4" and ev["position_qty"] == "4"
    assert order["status"] == "partially_filled" and order["filled_qty"] == "4"
    order, [ev] = book.fill(order["id"], price=101)
    assert ev["event"] == "fill" and ev["qty"] == "6" and ev["position_qty"] == "10"
    assert order["filled_avg_price"] == "100.6" and order["filled_at"] is not None
    with pytest.raises(ValueError):
        book.fill(order["id"])
    [pos] = book.positions("K")
    assert pos["qty"] == "10" and pos["avg_entry_price"] == "100.6" and pos["side"] == "long"
    assert book.account_view("K")["cash"] == str(100_000 - 1006)
