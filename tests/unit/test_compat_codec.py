"""Alpaca-format codecs: msgpack Timestamp conversion and batched arrays built from pre-encoded parts."""

import msgpack
import pytest

from trade_stream.edges.compat import ALPACA_MSGPACK, msgpack_array, to_timestamp


@pytest.mark.parametrize(("text", "nanos"), [
    ("2021-02-22T15:51:45.335689322Z", 1614009105335689322),
    ("2021-02-22T15:51:45.3Z", 1614009105300000000),
    ("2021-02-22T15:51:45Z", 1614009105000000000),
])
def test_rfc3339_to_msgpack_timestamp_keeps_nanoseconds(text, nanos):
    ts = to_timestamp(text)
    assert isinstance(ts, msgpack.Timestamp) and ts.to_unix_nano() == nanos


def test_non_timestamps_pass_through():
    assert to_timestamp("yesterday") == "yesterday" and to_timestamp(5) == 5


@pytest.mark.parametrize("n", [0, 1, 15, 16, 300, 70000])
def test_array_from_parts_decodes(n):
    parts = [msgpack.packb(i) for i in range(n)]
    assert msgpack.unpackb(msgpack_array(n) + b"".join(parts)) == list(range(n))


def test_msgpack_codec_frame_keeps_t_first_and_decodes():
    body = ALPACA_MSGPACK.body({"T": "t", "S": "AAPL", "p": 1.5, "t": "2021-02-22T15:51:45.335689322Z"})
    decoded = msgpack.unpackb(body)
    assert next(iter(decoded)) == "T" and isinstance(decoded["t"], msgpack.Timestamp)
