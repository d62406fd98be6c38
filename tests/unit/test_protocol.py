"""Parsing browser messages and formatting Alpaca messages for browsers."""

import orjson
import pytest

from trade_stream.core import protocol
from trade_stream.core.event_ids import EventId
from trade_stream.core.framing import text_frame
from trade_stream.core.protocol import ClientError


def test_original_subscribe_shape():
    action = protocol.parse('{"action":"subscribe","symbol":"aapl"}')
    assert action == protocol.Subscribe(("AAPL",), ("trades",))


def test_symbols_and_channels_extension():
    action = protocol.parse('{"action":"unsubscribe","symbols":["MSFT","BRK.B","MSFT"],"channels":["quotes"]}')
    assert action == protocol.Unsubscribe(("MSFT", "BRK.B"), ("quotes",))


@pytest.mark.parametrize(("raw", "code"), [
    ("not json", "bad_json"),
    ("[1,2]", "bad_message"),
    ('"subscribe"', "bad_message"),
    ("{}", "missing_action"),
    ('{"action":"dance"}', "unknown_action"),
    ('{"action":"subscribe"}', "missing_symbol"),
    ('{"action":"subscribe","symbols":[]}', "missing_symbol"),
    ('{"action":"subscribe","symbol":42}', "bad_type"),
    ('{"action":"subscribe","symbols":"AAPL"}', "bad_type"),
    ('{"action":"subscribe","symbol":"AA PL"}', "invalid_symbol"),
    ('{"action":"subscribe","symbol":"*"}', "invalid_symbol"),
    ('{"action":"subscribe","symbol":"ABCDEFGHIJKLMNOP"}', "invalid_symbol"),
    ('{"action":"subscribe","symbol":"AAPL","channels":["news"]}', "invalid_channel"),
    ('{"action":"subscribe","symbol":"AAPL","channels":[]}', "bad_type"),
    ('{"action":"subscribe","channel":"secrets"}', "invalid_channel"),
    ('{"action":"subscribe","channel":"orders","since":[1]}', "bad_type"),
    ('{"action":"auth"}', "bad_type"),
    ('{"action":"options","batch":"yes"}', "bad_type"),
])
def test_bad_input_gets_a_named_error(raw, code):
    result = protocol.parse(raw)
    assert isinstance(result, ClientError)
    assert result.code == code
    assert result.to_message()["type"] == "error"


def test_orders_channel_and_ping():
    assert protocol.parse('{"action":"subscribe","channel":"orders","since":7}') == protocol.SubscribeOrders(EventId(7))
    assert protocol.parse('{"action":"ping"}') == protocol.Ping()


def test_trade_keeps_full_precision_timestamp():
    msg = protocol.market_message({"T": "t", "S": "AAPL", "i": 5, "x": "Q", "p": 175.23, "s": 100, "c": ["@"],
                                   "t": "2025-10-31T14:30:45.123456789Z", "z": "C"})
    assert msg == {"type": "trade", "symbol": "AAPL", "data": {
        "timestamp": "2025-10-31T14:30:45.123456789Z", "price": 175.23, "size": 100, "exchange": "Q",
        "conditions": ["@"], "id": 5, "tape": "C"}}


def test_quote_and_bar_shapes():
    q = protocol.market_message({"T": "q", "S": "A", "bp": 1.0, "ap": 1.1, "bs": 1, "as": 2, "bx": "V", "ax": "V",
                                 "t": "x", "c": ["R"], "z": "A"})
    assert q["type"] == "quote" and q["data"]["bid_price"] == 1.0 and q["data"]["ask_size"] == 2
    b = protocol.market_message({"T": "b", "S": "A", "o": 1, "h": 2, "l": 0.5, "c": 1.5, "v": 10, "n": 3,
                                 "vw": 1.2, "t": "x"})
    assert b["data"] == {"timestamp": "x", "open": 1, "high": 2, "low": 0.5, "close": 1.5, "volume": 10,
                         "trade_count": 3, "vwap": 1.2}
    assert protocol.market_message({"T": "s", "S": "A"}) is None


@pytest.mark.parametrize("n", [0, 125, 126, 65535, 65536])
def test_text_frame_lengths_parse_back(n):
    from websockets.frames import Frame
    from websockets.streams import StreamReader

    payload = orjson.dumps("x" * max(0, n - 2))[:n] if n else b""
    reader = StreamReader()
    reader.feed_data(text_frame(payload))
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        frame = done.value
    assert frame.data == payload and frame.fin


def test_snapshot_message_from_alpacas_rest_shape():
    snap = {"latestTrade": {"t": "2026-11-21T15:00:00.5Z", "x": "V", "p": 10.5, "s": 5, "c": ["@"], "i": 7, "z": "C"},
            "prevDailyBar": {"c": 10.0, "o": 9.0}, "dailyBar": {"o": 10.1, "h": 10.6, "l": 10.0, "c": 10.5, "v": 99,
                                                                "vw": 10.4, "t": "2026-11-21T05:00:00Z"},
            "latestQuote": {"t": "2026-11-21T15:00:00.4Z", "bx": "V", "bp": 10.4, "bs": 2, "ax": "V", "ap": 10.6,
                            "as": 3, "c": ["R"], "z": "C"}}
    msg = protocol.snapshot_message("AAPL", snap)
    assert msg == {"type": "snapshot", "symbol": "AAPL", "data": {
        "latest_trade": {"timestamp": "2026-11-21T15:00:00.5Z", "price": 10.5, "size": 5, "exchange": "V",
                         "conditions": ["@"], "id": 7, "tape": "C"},
        "prev_close": 10.0,
        "daily": {"open": 10.1, "high": 10.6, "low": 10.0, "close": 10.5, "volume": 99, "vwap": 10.4,
                  "timestamp": "2026-11-21T05:00:00Z"},
        "latest_quote": {"timestamp": "2026-11-21T15:00:00.4Z", "bid_price": 10.4, "bid_size": 2, "bid_exchange": "V",
                         "ask_price": 10.6, "ask_size": 3, "ask_exchange": "V", "conditions": ["R"], "tape": "C"}}}
    assert protocol.snapshot_message("X", None) is None
    assert protocol.snapshot_message("X", {})["data"] == {"latest_trade": None, "prev_close": None, "daily": None,
                                                          "latest_quote": None}


def test_event_ids_in_range_are_known_and_anything_else_is_unknown():
    from trade_stream.core.event_ids import MAX_ID, UNKNOWN, parse

    assert parse(None) is None and parse("") is None
    assert parse(7) == EventId(7) and parse(" 7 ") == EventId(7) and parse(MAX_ID) == EventId(MAX_ID)
    assert parse("3f9a0c1b2d4e-17") == EventId(17, "3f9a0c1b2d4e")
    for raw in (-1, MAX_ID + 1, 2**64, "18446744073709551616", "-5", "1e3", "+5", "٣", "a-b", 1.0, True, [1]):
        assert parse(raw) == UNKNOWN, raw
    msg = protocol.parse('{"action":"subscribe","channel":"orders","since":18446744073709551616}')
    assert msg == protocol.SubscribeOrders(UNKNOWN)  # orjson reads it as a float: still just an unknown id
