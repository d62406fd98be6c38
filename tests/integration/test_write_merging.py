"""Write merging over real sockets: what one loop iteration sends a client leaves in one write, in order, for
WebSocket and SSE clients; with a write delay, writes of several iterations merge and nothing is lost."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
from collections.abc import AsyncIterator

import pytest
from websockets.exceptions import ConnectionClosedOK
from websockets.protocol import State

from tests.support.relay import Browser, free_port, relay_config, running, small_socket, wait_until
from tests.support.sse import sse_get

pytestmark = pytest.mark.timeout(30)


def trade(i: int, symbol: str = "AAPL") -> dict:
    return {"T": "t", "S": symbol, "i": i, "x": "V", "p": 100.0 + i / 100, "s": 1, "c": ["@"],
            "t": "2026-11-21T15:00:00.000000001Z", "z": "C"}


def write_calls() -> int:
    """write(2)/writev(2) calls made by this thread (``syscw`` of /proc/thread-self/io). The relay, the simulator
    and the test clients share this event loop thread, and nothing else writes while a test counts (no pings, no
    simulated ticks), so the difference across a burst is the relay's writes to its clients."""
    with open("/proc/thread-self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("syscw:"))


@contextlib.asynccontextmanager
async def holding(app, holds: list[list[str]]) -> AsyncIterator[list[Browser]]:
    """A browser per entry of ``holds``, subscribed to its symbols (each confirmed), closed on the way out."""
    async with contextlib.AsyncExitStack() as stack:
        browsers = []
        for symbols in holds:
            b = await stack.enter_async_context(Browser.connect(app.port))
            await b.send({"action": "subscribe", "symbols": symbols})
            for _ in symbols:
                await b.expect("subscribed")
            browsers.append(b)
        await wait_until(lambda: len(app.relay.clients) == len(holds))
        yield browsers


def subscribed(app, n: int) -> contextlib.AbstractAsyncContextManager[list[Browser]]:
    """``n`` browsers holding AAPL."""
    return holding(app, [["AAPL"]] * n)


async def test_many_fan_outs_in_one_iteration_leave_as_one_write_per_client_in_order(sim, tmp_path):
    async with running(relay_config(sim, tmp_path)) as app:
        await wait_until(lambda: app.relay.sources.default.upstream.connected)
        async with subscribed(app, 2) as browsers:
            await asyncio.sleep(0.2)  # let the subscribe replies and the snapshot go out first
            clients = sorted(app.relay.clients, key=lambda c: c.id)
            router = app.relay.sources.default.router
            now = asyncio.get_running_loop().time()
            before = write_calls()
            for i in range(300):  # 300 upstream frames handled in one iteration, a control message among them
                router.route([trade(i)], now)
                if i == 150:
                    clients[0].send_message({"type": "pong", "time": 0})
            assert write_calls() == before  # queued, not written, while the iteration runs
            for b in browsers:
                for i in range(300):
                    assert (await b.expect("trade"))["data"]["id"] == i
            first = browsers[0]
            kinds = [m["type"] for m in first.seen if m["type"] in ("trade", "pong")]
            assert kinds.index("pong") == 151  # after the 151 trades routed before it, before the rest
            assert write_calls() - before == 2  # one write per client for the whole iteration
            assert app.stats.slow_client_cutoffs == 0


async def test_a_fan_out_queues_each_clients_only_frame_without_a_container_per_client(sim, tmp_path):
    async with running(relay_config(sim, tmp_path)) as app:
        await wait_until(lambda: app.relay.sources.default.upstream.connected)
        n = 20
        async with subscribed(app, n) as browsers:
            await asyncio.sleep(0.2)
            router = app.relay.sources.default.router
            deliveries, bytes_out = app.stats.deliveries, app.stats.bytes_out
            gc.collect()
            gc.disable()  # nothing collected in between: the difference is what the fan-out left alive
            try:
                lists = sum(type(o) is list for o in gc.get_objects())
                router.route([trade(7)], 0.0)
                queued = sum(type(o) is list for o in gc.get_objects()) - lists
            finally:
                gc.enable()
            assert queued <= 1  # none per client: a list each would be n
            for b in browsers:
                assert (await b.expect("trade"))["data"]["id"] == 7
            assert app.stats.deliveries - deliveries == n
            sent = app.stats.bytes_out - bytes_out
            assert sent > 0 and sent % n == 0  # the same frame to each


async def test_without_a_delay_each_iteration_is_its_own_write_and_with_one_they_merge(sim, tmp_path):
    for delay_ms in (0, 100):
        async with running(relay_config(sim, tmp_path / str(delay_ms), write_delay_ms=delay_ms)) as app:
            await wait_until(lambda a=app: a.relay.sources.default.upstream.connected)
            async with subscribed(app, 1) as browsers:
                await asyncio.sleep(0.3)
                before = write_calls()
                router = app.relay.sources.default.router
                for i in range(50):
                    router.route([trade(i)], 0.0)
                    await asyncio.sleep(0)  # the next fan-out in the next iteration
                b = browsers[0]
                for i in range(50):
                    assert (await b.expect("trade"))["data"]["id"] == i
                sent = write_calls() - before
                if delay_ms:
                    assert 1 <= sent <= 5  # the iterations within one delay share a write
                else:
                    assert sent == 50  # a write per iteration


async def test_with_a_write_delay_every_upstream_trade_arrives_in_order(sim, tmp_path):
    async with running(relay_config(sim, tmp_path, write_delay_ms=20)) as app:
        await wait_until(lambda: app.relay.sources.default.upstream.connected)
        async with subscribed(app, 3) as browsers:
            sent = 0
            for i in range(600):
                sim.inject_trade("AAPL", price=100 + i / 100, size=i + 1)  # the size numbers them
                sent += 1
                if i % 25 == 0:
                    await asyncio.sleep(0.001)
            for b in browsers:
                sizes = [(await b.expect("trade"))["data"]["size"] for _ in range(sent)]
                assert sizes == list(range(1, sent + 1))
            assert app.stats.slow_client_cutoffs == 0


async def test_an_sse_stream_gets_one_chunk_for_an_iteration_and_every_event_in_order(sim, tmp_path):
    async with running(relay_config(sim, tmp_path, sse_port=free_port())) as app:
        await wait_until(lambda: app.relay.sources.default.upstream.connected)
        async with sse_get(app.sse.port, "/api/stream/trades?symbols=AAPL") as r:
            await r.until("connected")
            await wait_until(lambda: app.relay.hub.holder_counts().get("AAPL"), what="the stream holding AAPL")
            await asyncio.sleep(0.3)
            while r._parse_one(False) is not None:  # anything already read (a snapshot) is not ours to count
                pass
            chunks = r.chunks
            router = app.relay.sources.default.router
            for i in range(200):
                router.route([trade(i)], 0.0)
            ids = []
            while len(ids) < 200:
                ev = await r.next()
                if ev.event == "trade":
                    ids.append(ev.json()["data"]["id"])
            assert ids == list(range(200))
            assert r.chunks - chunks == 1


async def test_what_queues_behind_a_busy_socket_arrives_in_order_when_the_reader_resumes(sim, tmp_path):
    cfg = relay_config(sim, tmp_path, client_buffer_bytes=16 << 20, stall_timeout=0)
    async with running(cfg) as app:
        await wait_until(lambda: app.relay.sources.default.upstream.connected)
        async with Browser.connect(app.port, sock=small_socket(app.port)) as b:
            await b.send({"action": "subscribe", "symbol": "AAPL"})
            await b.expect("subscribed")
            await asyncio.sleep(0.2)
            (client,) = app.relay.clients
            b.ws.transport.pause_reading()
            router = app.relay.sources.default.router
            pad = "x" * 400
            sent = 0

            def burst() -> None:  # one iteration's worth; the conditions carry the padding
                nonlocal sent
                for _ in range(50):
                    router.route([{**trade(sent), "c": [pad]}], 0.0)
                    sent += 1

            while client.transport.get_write_buffer_size() == 0 and sent < 60_000:  # the kernel's buffers fill
                burst()
                await asyncio.sleep(0)
            assert client.transport.get_write_buffer_size() > 0, "the socket never backed up"
            for _ in range(20):  # more iterations queue behind the busy socket
                burst()
                await asyncio.sleep(0)
            b.ws.transport.resume_reading()
            for i in range(sent):
                assert (await b.expect("trade", timeout=10))["data"]["id"] == i
            assert app.stats.slow_client_cutoffs == 0


async def test_with_a_write_delay_a_steady_stream_is_written_once_per_delay_and_in_order(sim, tmp_path):
    delay = 0.05
    async with running(relay_config(sim, tmp_path, write_delay_ms=int(delay * 1000))) as app:
        await wait_until(lambda: app.relay.sources.default.upstream.connected)
        async with subscribed(app, 1) as browsers:
            await asyncio.sleep(0.3)
            router = app.relay.sources.default.router
            loop = asyncio.get_running_loop()
            before = write_calls()
            start = loop.time()
            for i in range(100):  # a trade every few ms for about half a second
                router.route([trade(i)], 0.0)
                await asyncio.sleep(0.004)
            b = browsers[0]
            for i in range(100):
                assert (await b.expect("trade"))["data"]["id"] == i
            elapsed = loop.time() - start
            sent = write_calls() - before
            # each write follows the client's first queued frame by 7/8 of the delay at least, however the
            # trades fall; and a client is not held until the stream ends either
            assert 2 <= sent <= elapsed / (delay * 7 / 8) + 1


async def test_no_frame_follows_the_close_frame_websockets_wrote(sim, tmp_path):
    async with running(relay_config(sim, tmp_path)) as app:
        await wait_until(lambda: app.relay.sources.default.upstream.connected)
        async with subscribed(app, 2) as browsers:
            await asyncio.sleep(0.2)
            closing, _ = sorted(app.relay.clients, key=lambda c: c.id)
            router = app.relay.sources.default.router
            # the relay closes one client, which does not answer yet: while the handshake runs it still holds AAPL
            browsers[0].ws.transport.pause_reading()
            task = asyncio.create_task(closing.close(1000, "bye"))
            await wait_until(lambda: closing.conn.protocol.state is not State.OPEN, what="the close frame written")
            assert closing in app.relay.hub.holders[("trades", "AAPL")]
            deliveries = app.stats.deliveries
            router.route([trade(1)], 0.0)  # fanned out whole
            router.route([trade(2)], 0.0)  # spilled into the queues
            await asyncio.sleep(0.05)
            assert app.stats.deliveries - deliveries == 2  # the open client's two; nothing after the close frame
            b = browsers[1]
            assert [(await b.expect("trade"))["data"]["id"] for _ in range(2)] == [1, 2]
            browsers[0].ws.transport.resume_reading()
            await task
            before_close = []  # what it read before the close frame (its subscribe replies, a snapshot)
            with pytest.raises(ConnectionClosedOK):
                while True:
                    before_close.append(json.loads(await browsers[0].ws.recv()))
            assert not [m for m in before_close if m["type"] == "trade" and m["data"]["id"] in (1, 2)]
            assert browsers[0].ws.close_code == 1000


async def test_a_batch_for_several_symbols_reaches_each_holder_in_order_in_one_write(sim, tmp_path):
    async with running(relay_config(sim, tmp_path)) as app:
        await wait_until(lambda: app.relay.sources.default.upstream.connected)
        holds = [["AAPL"], ["MSFT"], ["AAPL", "MSFT"]]
        async with holding(app, holds) as browsers:
            await asyncio.sleep(0.3)
            batch = [trade(i, "AAPL" if i % 3 else "MSFT") for i in range(60)]  # one upstream frame
            before = write_calls()
            app.relay.sources.default.router.route(batch, 0.0)
            for b, symbols in zip(browsers, holds, strict=True):
                want = [m["i"] for m in batch if m["S"] in symbols]
                got = [(await b.expect("trade"))["data"]["id"] for _ in want]
                assert got == want
            assert write_calls() - before == len(holds)  # one write per client for the whole batch
