"""The bench's load client counts each market message by its own timestamp, even when one read spans the
window's edges (a busy load client reads many messages at once)."""

from __future__ import annotations

import time

import orjson
import pytest

from trade_stream.bench.loadclient import NS, Window, WsClient
from trade_stream.core.framing import text_frame

pytestmark = pytest.mark.timeout(10)
START = 1_700_000_000 * NS
END = START + 2 * NS


def trade(ns: int) -> bytes:
    secs, frac = divmod(ns, NS)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"
    return text_frame(orjson.dumps({"type": "trade", "symbol": "AAPL",
                                    "data": {"timestamp": stamp, "price": 1.0, "size": 1}}))


def client() -> tuple[WsClient, Window]:
    window = Window(start_ns=START, end_ns=END)
    c = WsClient(window, 0, "127.0.0.1", 1, ["AAPL"], batch=False, staller=False)
    c.upgraded = True
    return c, window


async def test_a_read_across_both_edges_counts_each_message_where_it_was_stamped():
    c, window = client()
    c.data_received(trade(START - 1) + trade(START) + trade(START + NS) + trade(END - 1) + trade(END))
    assert (window.early, c.received, window.late) == (1, 3, 1)
    assert window.hist.total == 3


async def test_a_read_inside_the_window_counts_all_of_it():
    c, window = client()
    c.data_received(trade(START + 1) + trade(START + 2) + trade(START + 3)[:5])  # the last frame incomplete
    assert (window.early, c.received, window.late) == (0, 2, 0)
    c.data_received(trade(START + 3)[5:] + trade(END + 1))
    assert (window.early, c.received, window.late) == (0, 3, 1)
