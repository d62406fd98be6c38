"""The SSE side-port's parts that need no socket: the stream template, the replay ring, the request and response
framing through h11 (a fed reader and a recording writer), the private streams' ids, the events API's window."""

from __future__ import annotations

import asyncio

import h11
import pytest

from trade_stream.config import Config
from trade_stream.core.event_ids import compound, is_compound, parse_compound
from trade_stream.core.stats import Stats
from trade_stream.core.users import User
from trade_stream.edges.http.request import Headers, Request
from trade_stream.edges.http.responses import Cors, Response, error
from trade_stream.edges.origins import OriginPolicy
from trade_stream.edges.sse.channel import Channel, Shared, parse_throttle, read_request
from trade_stream.edges.sse.events import Window
from trade_stream.edges.sse.private import OrderState
from trade_stream.edges.sse.streams import Opened, Stream
from trade_stream.edges.sse.wire import Ring, event_bytes

pytestmark = pytest.mark.timeout(10)
K = ("trades", "AAPL")


class Recorder(Stream[list]):
    """A stream kind that records the template's calls; ``hold_says`` or ``hold_raises`` steer it."""

    def __init__(self, hold_says: bool = True, hold_raises: bool = False) -> None:
        self.hold_says, self.hold_raises = hold_says, hold_raises

    def accept(self, request: Request) -> Response | list:
        return error(400, "no") if request.query.get("bad") else []

    def open(self, channel, state):
        state.append("open")
        return "client"

    async def hold(self, channel, client, state):
        state.append("hold")
        if self.hold_raises:
            raise ConnectionResetError
        return self.hold_says

    async def pump(self, channel, client, state):
        state.append("pump")

    def release(self, client, state):
        state.append(f"release {client}")


def request(query: dict | None = None) -> Request:
    return Request("GET", "/s", Headers(), query or {})


async def test_a_stream_runs_open_hold_pump_release_in_that_order():
    opened = Recorder()(request())
    assert isinstance(opened, Opened)
    await opened.run(None)
    assert opened.state == ["open", "hold", "pump", "release client"]


async def test_a_stream_that_ended_in_its_hold_is_not_pumped_but_still_released():
    opened = Recorder(hold_says=False)(request())
    await opened.run(None)
    assert opened.state == ["open", "hold", "release client"]


async def test_release_runs_when_the_hold_fails():
    opened = Recorder(hold_raises=True)(request())
    with pytest.raises(ConnectionResetError):
        await opened.run(None)
    assert opened.state[-1] == "release client"


def test_a_refused_request_is_answered_and_nothing_is_opened():
    answer = Recorder()(request({"bad": "1"}))
    assert isinstance(answer, Response) and answer.status == 400


def filled_ring(size: int, n: int) -> Ring:
    ring = Ring(size)
    ring.recording_since[K] = 1
    for _ in range(n):
        ring.record(K, lambda eid: event_bytes("t", b"{}", eid))
    return ring


def test_the_ring_replays_exactly_what_came_after_the_id():
    assert filled_ring(10, 5).replay(3, {K}) == [event_bytes("t", b"{}", 4), event_bytes("t", b"{}", 5)]
    assert filled_ring(10, 5).replay(5, {K}) == []


def test_the_ring_refuses_a_replay_it_cannot_vouch_for():
    ring = filled_ring(3, 10)  # ids 8..10 kept
    assert ring.replay(2, {K}) is None  # older than the ring
    assert ring.replay(11, {K}) is None  # never given (or from before a restart)
    assert ring.replay(-1, {K}) is None  # unparseable
    assert ring.replay(9, {("trades", "MSFT")}) is None  # a key it was not recording


@pytest.mark.parametrize("raw,expected", [(None, 0.0), ("", 0.0), ("250", 0.25), ("60000", 60.0)])
def test_throttle_is_milliseconds_up_to_a_minute(raw, expected):
    assert parse_throttle(raw) == expected


@pytest.mark.parametrize("raw", ["-5", "60001", "1e400", "nan", "inf", "soon"])
def test_throttle_outside_the_range_is_refused_with_the_rule(raw):
    assert "from 0 to 60000" in parse_throttle(raw)


class Writer:
    """What a channel writes, kept instead of sent."""

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


async def channel_for(raw: bytes, allowed: tuple[str, ...] = ("https://ok.example",)) -> tuple[Channel, Writer]:
    reader = asyncio.StreamReader()
    reader.feed_data(raw)
    reader.feed_eof()
    conn = h11.Connection(h11.SERVER)
    req = await read_request(conn, reader, "10.0.0.1")
    assert req is not None
    writer = Writer()
    shared = Shared(Config(), Stats(), Cors(OriginPolicy(allowed)), 10)
    return Channel(conn, req, reader, writer, shared), writer  # type: ignore[arg-type]  # a recording writer


async def test_the_request_read_with_h11_has_its_path_query_and_last_repeated_header():
    channel, _ = await channel_for(b"GET /api/stream/trades?symbols=A&symbols=B HTTP/1.1\r\nHost: h\r\n"
                                   b"X-Correlation-ID: one\r\nx-correlation-id: two\r\n\r\n")
    req = channel.request
    assert (req.method, req.path, req.query, req.ip) == ("GET", "/api/stream/trades", {"symbols": "B"}, "10.0.0.1")
    assert channel.correlation == "two"


async def test_a_response_carries_the_correlation_id_and_cors_and_head_gets_no_body():
    channel, writer = await channel_for(b"HEAD /api/stream/status HTTP/1.1\r\nHost: h\r\n"
                                        b"Origin: https://ok.example\r\nX-Correlation-ID: c-1\r\n\r\n")
    channel.respond(error(404, "gone"))
    head, _, body = writer.data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404 Not Found")
    for line in (b"x-correlation-id: c-1", b"vary: origin", b"access-control-allow-origin: https://ok.example",
                 b"content-type: application/json", b"connection: close",
                 f"content-length: {len(error(404, 'gone').body)}".encode()):
        assert line in head.lower()
    assert body == b""


async def test_a_correlation_id_that_is_not_a_plain_token_is_replaced():
    channel, _ = await channel_for(b"GET / HTTP/1.1\r\nHost: h\r\nX-Correlation-ID: a b;c\r\n\r\n")
    assert channel.correlation != "a b;c" and len(channel.correlation) == 32


def test_one_account_ids_are_its_cursor_and_several_make_a_compound_id():
    user = User("alice", None)
    one = OrderState(user, ["a"])
    assert one.event_id("a", "E", 7) == "E-7" and one.event_id("a", None, 7) == 7
    two = OrderState(user, ["a", "b"], positions={"b": "F-3"})
    both = two.event_id("a", "E", 7)
    assert isinstance(both, str) and is_compound(both)
    assert {k: (v.epoch, v.n) for k, v in parse_compound(both).items()} == {"a": ("E", 7), "b": ("F", 3)}
    assert two.current_id() == compound({"b": "F-3"})  # where it is now: only b has a position yet


@pytest.mark.parametrize("query,message", [
    ({"since": "2026-01-01", "since_id": "X"}, "can't be used at the same time"),
    ({"until": "2026-01-01"}, "since required if until specified"),
    ({"until_id": "X"}, "since_id required if until_id specified"),
    ({"since": "yesterday"}, "RFC 3339 or a date"),
])
def test_the_events_api_window_refuses_what_alpaca_refuses(query, message):
    with pytest.raises(ValueError, match=message):
        Window(query, "since_id", "until_id")


def test_the_events_api_window_without_a_cursor_is_live_only():
    assert not Window({}, "since_id", "until_id").history
    assert Window({"since_id": "01J"}, "since_id", "until_id").wants({"event_id": "01K"})
