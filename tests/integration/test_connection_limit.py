"""The per-user connection limit under its default policy, close_oldest, over real sockets (the daemon in process,
the simulator as Alpaca): one more private connection of a user at the limit is let in and the user's oldest,
whatever its kind (browser WebSocket after ``auth``, SSE private stream, Alpaca-compatible ``/stream``), gets the
``connection_limit`` warning and is closed; the others keep streaming and the count stays exact. The ``refuse``
policy is tested with several users in test_accounts.py."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.support.relay import FAST, TOKEN, Browser, free_port, relay_config, running, small_socket, wait_until
from tests.support.sse import SseResponse, sse_get

pytestmark = pytest.mark.timeout(60)

LIMIT = 10  # TRADE_STREAM_MAX_CONNECTIONS_PER_USER's default
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@contextlib.asynccontextmanager
async def daemon(sim, tmp_path, **overrides):
    async with running(relay_config(sim, tmp_path, sse_port=free_port(), **overrides)) as app:
        await wait_until(lambda: app.relay.sources.default.upstream.connected
                                 and all(t.connected for t in app.tradings.values()), what="every stream up")
        yield app


@pytest.fixture
async def app(sim, tmp_path):
    async with daemon(sim, tmp_path) as a:
        yield a


async def browser(stack: contextlib.AsyncExitStack, port: int, **kwargs) -> Browser:
    """A browser connection of the token's user, private (authenticated) and holding AAPL."""
    c = await stack.enter_async_context(Browser.connect(port, **kwargs))
    await c.send({"action": "auth", "token": TOKEN})
    await c.expect("authenticated")
    await c.send({"action": "subscribe", "symbol": "AAPL"})
    await c.expect("subscribed")
    return c


async def stream(stack: contextlib.AsyncExitStack, app, path: str = "/api/stream/orders") -> SseResponse:
    """A private SSE stream of the token's user, open (its ``connected`` event read)."""
    r = await stack.enter_async_context(sse_get(app.sse.port, path, AUTH))
    assert r.status == 200, r.body
    await r.until("connected")
    return r


async def close_of(c: Browser, timeout: float = 5.0):
    """The close frame the daemon sent, once the connection has closed (whatever else arrived before is read)."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(c.ws.recv(), timeout)
    assert closed.value.rcvd is not None, "closed without a close frame from the daemon"
    return closed.value.rcvd


async def ended(r: SseResponse) -> None:
    """The stream's last chunk arrives (events before it are read and kept)."""
    with pytest.raises(EOFError):
        while True:
            await r.next()


async def order_event(r: SseResponse) -> dict:
    while True:
        ev = await r.next()
        if ev.event.startswith("order:"):
            return ev.json()


def assert_limit_warning(warning: dict) -> None:
    assert warning["type"] == "warning" and warning["code"] == "connection_limit", warning
    assert "TRADE_STREAM_MAX_CONNECTIONS_PER_USER" in warning["message"] and "oldest" in warning["message"]


def closed_oldest_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("user_connection_closed_oldest")]


async def test_the_eleventh_websocket_closes_the_oldest_websocket_and_the_other_nine_keep_receiving(sim, app):
    async with contextlib.AsyncExitStack() as stack:
        clients = [await browser(stack, app.port) for _ in range(LIMIT + 1)]
        oldest, kept = clients[0], clients[1:]
        assert_limit_warning(await oldest.expect("warning"))
        close = await close_of(oldest)
        assert close.code == 1008 and "connection limit" in close.reason, close
        sim.inject_trade("AAPL", price=101.5)
        for c in kept:
            assert (await c.expect("trade"))["data"]["price"] == 101.5
            assert not c.of_type("warning")
        assert app.identity.sessions.counts() == [LIMIT]


async def test_an_sse_stream_as_the_oldest_gets_event_warning_when_a_websocket_is_the_eleventh(sim, app, caplog):
    caplog.set_level(logging.WARNING, logger="trade_stream.edges.identity")
    async with contextlib.AsyncExitStack() as stack:
        oldest = await stream(stack, app)
        clients = [await browser(stack, app.port) for _ in range(LIMIT)]
        warning = await oldest.until("warning")
        assert_limit_warning(warning.json())
        await ended(oldest)
        assert closed_oldest_lines(caplog) == [
            f"user_connection_closed_oldest user=default kind=sse-orders ip=127.0.0.1 new_kind=websocket "
            f"new_ip=127.0.0.1 limit={LIMIT}"]
        sim.inject_trade("AAPL", price=102.5)
        for c in clients:
            assert (await c.expect("trade"))["data"]["price"] == 102.5
        assert app.identity.sessions.counts() == [LIMIT]


async def test_a_websocket_as_the_oldest_is_closed_when_an_sse_stream_is_the_eleventh(sim, app, caplog):
    caplog.set_level(logging.WARNING, logger="trade_stream.edges.identity")
    async with contextlib.AsyncExitStack() as stack:
        oldest = await browser(stack, app.port)
        streams = [await stream(stack, app) for _ in range(LIMIT)]
        assert_limit_warning(await oldest.expect("warning"))
        assert (await close_of(oldest)).code == 1008
        assert closed_oldest_lines(caplog) == [
            f"user_connection_closed_oldest user=default kind=websocket ip=127.0.0.1 new_kind=sse-orders "
            f"new_ip=127.0.0.1 limit={LIMIT}"]
        sim.submit_order("AAPL", "buy", 1)
        for r in streams:
            assert (await order_event(r))["symbol"] == "AAPL"
            assert not [e for e in r.events if e.event == "warning"]
        assert app.identity.sessions.counts() == [LIMIT]


async def test_an_alpaca_trading_stream_as_the_oldest_gets_alpacas_error_shape_then_closes(app):
    """``/stream`` is counted too; its client is an Alpaca SDK, so the warning comes in Alpaca's error shape."""
    async with contextlib.AsyncExitStack() as stack:
        ws = await stack.enter_async_context(connect(f"ws://127.0.0.1:{app.port}/stream", ping_interval=None,
                                                     close_timeout=0.5))
        await ws.send(orjson.dumps({"action": "auth", "key": "any", "secret": TOKEN}).decode())
        assert orjson.loads(await ws.recv())["data"]["status"] == "authorized"
        for _ in range(LIMIT):
            await browser(stack, app.port)
        error = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert error["action"] == "error" and error["data"]["error_message"].startswith("connection limit: ")
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        assert app.identity.sessions.counts() == [LIMIT]


async def test_alpacas_events_api_as_the_oldest_ends_with_a_comment_not_an_event(app, caplog):
    """``/v2/events/trades`` speaks Alpaca's wire format, where every ``data:`` line is one of Alpaca's events: the
    warning is a comment there, which its clients skip, then the stream ends."""
    caplog.set_level(logging.WARNING, logger="trade_stream.edges.identity")
    async with contextlib.AsyncExitStack() as stack:
        oldest = await stack.enter_async_context(sse_get(app.sse.port, "/v2/events/trades", AUTH))
        assert oldest.status == 200
        await wait_until(lambda: app.identity.sessions.counts() == [1], what="the events stream counted")
        for _ in range(LIMIT):
            await browser(stack, app.port)
        comment = await oldest.next(comments=True)
        assert comment.comment is not None and comment.comment.startswith("warning connection_limit ")
        assert "TRADE_STREAM_MAX_CONNECTIONS_PER_USER" in comment.comment
        await ended(oldest)
        assert oldest.events == [comment]  # no event, only the comment
        assert [line.split()[2] for line in closed_oldest_lines(caplog)] == ["kind=sse-events-trades"]
        assert app.identity.sessions.counts() == [LIMIT]


async def test_a_stalled_oldest_client_does_not_hold_up_the_new_one_and_is_aborted(sim, tmp_path):
    """The oldest has stopped reading with frames backed up in the daemon: its close handshake cannot finish. The
    new connection is admitted while the stalled one is still there, and the stalled one is dropped once the
    grace is over (no stall sweep and a byte cap it never reaches here, so only the close takes it away)."""
    timings = dataclasses.replace(FAST, shutdown_grace=5.0)
    async with daemon(sim, tmp_path, stall_timeout=0, client_buffer_bytes=64 * 1024 * 1024, timings=timings) as app:
        async with contextlib.AsyncExitStack() as stack:
            stalled = await browser(stack, app.port, sock=small_socket(app.port))
            server_side = next(c for c in app.relay.clients if app.accounts.user_of(c) is not None)
            stalled.ws.transport.pause_reading()
            while not server_side.transport.get_write_buffer_size():
                for _ in range(200):
                    sim.inject_trade("AAPL", price=100.0)
                await asyncio.sleep(0.05)
            newer = [await browser(stack, app.port) for _ in range(LIMIT)]
            assert server_side in app.relay.clients  # still connected: nobody waited for its close
            assert app.identity.sessions.counts() == [LIMIT]
            assert app.accounts.user_of(server_side) is None  # its private side ended at once
            await wait_until(lambda: server_side not in app.relay.clients, timeout=10,
                             what="the stalled oldest dropped")
            sim.inject_trade("AAPL", price=103.5)
            for c in newer:
                await c.expect(lambda m: m.get("type") == "trade" and m["data"]["price"] == 103.5)


async def test_twenty_five_in_a_row_leave_the_newest_ten_and_warn_the_first_fifteen_once_each(sim, app):
    """WebSockets and SSE streams in turn: each one past the tenth closes the oldest. The count stays exact
    through every round, each closed connection's slot is freed once (its own teardown later frees nothing
    more), and once all have gone the user holds none."""
    total = 25
    async with contextlib.AsyncExitStack() as stack:
        opened: list[Browser | SseResponse] = []
        for i in range(total):
            opened.append(await (browser(stack, app.port) if i % 2 == 0 else stream(stack, app)))
            assert app.identity.sessions.counts() == [min(i + 1, LIMIT)]
        for conn in opened[:total - LIMIT]:
            if isinstance(conn, Browser):
                assert_limit_warning(await conn.expect("warning"))
                assert (await close_of(conn)).code == 1008
            else:
                assert_limit_warning((await conn.until("warning")).json())
                await ended(conn)
        assert app.identity.sessions.closed_oldest == total - LIMIT
        await wait_until(lambda: len(app.relay.clients) == len(app.sse.order_clients) == LIMIT // 2,
                         what="the closed ones' teardowns")
        assert app.identity.sessions.counts() == [LIMIT]  # their releases freed nothing more
        sim.inject_trade("AAPL", price=104.5)
        sim.submit_order("AAPL", "buy", 1)
        for conn in opened[total - LIMIT:]:
            if isinstance(conn, Browser):
                await conn.expect(lambda m: m.get("type") == "trade" and m["data"]["price"] == 104.5)
                assert not conn.of_type("warning")
            else:
                await order_event(conn)
                assert not [e for e in conn.events if e.event == "warning"]
    await wait_until(lambda: app.identity.sessions.counts() == [], what="every slot freed")
    assert app.identity.sessions.closed_oldest == total - LIMIT
