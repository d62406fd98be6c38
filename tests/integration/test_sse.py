"""The SSE side-port over real sockets: headers, replay and reset, keepalive, CORS, gzip, throttling, errors,
orders from the journal, and a stalled reader cut off while others keep receiving."""

from __future__ import annotations

import asyncio
import re
import socket

import orjson
import pytest

from tests.support.relay import TOKEN, fill_journal, free_port, relay_config, running, wait_until
from tests.support.sse import sse_get

pytestmark = pytest.mark.timeout(30)


async def start(sim, tmp_path, **overrides):
    cfg = relay_config(sim, tmp_path, sse_port=free_port(), **overrides)
    cm = running(cfg)
    app = await cm.__aenter__()
    await wait_until(lambda: app.relay.sources.default.upstream.connected and app.tradings["default"].connected)
    return cm, app


@pytest.fixture
async def app(sim, tmp_path):
    cm, a = await start(sim, tmp_path)
    yield a
    await cm.__aexit__(None, None, None)


async def test_stream_headers_connected_event_and_trades(sim, app):
    headers = {"Origin": "http://localhost:8080", "X-Correlation-ID": "abc-123"}
    async with sse_get(app.sse.port, "/api/stream/trades?symbols=AAPL,msft", headers) as r:
        assert r.status == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        assert r.headers["x-accel-buffering"] == "no"
        assert r.headers["access-control-allow-origin"] == "http://localhost:8080"
        assert r.headers["x-correlation-id"] == "abc-123"
        assert (await r.next()).event == "retry" and r.events[0].data == "5000"
        connected = await r.next()
        assert connected.event == "connected"
        assert re.fullmatch(r"anonymous-trades-\d+", connected.json()["client_id"])
        await wait_until(lambda: sim.subscriptions("/v2/iex")["trades"] == ["AAPL", "MSFT"], what="upstream hold")
        assert app.relay.hub.holder_counts() == {"AAPL": {"trades": 1}, "MSFT": {"trades": 1}}
        sent = sim.inject_trade("MSFT", price=421.5, size=7)
        ev = await r.until("trade")
        msg = ev.json()
        assert msg["symbol"] == "MSFT" and msg["data"]["price"] == 421.5 and msg["data"]["timestamp"] == sent["t"]
        first = int(ev.id)
        sim.inject_trade("AAPL", price=1.0)
        assert int((await r.until("trade")).id) == first + 1


async def test_last_event_id_replays_missed_events_in_order_without_duplicates(sim, app):
    port = app.sse.port
    async with sse_get(port, "/api/stream/trades?symbols=AAPL") as r:
        await wait_until(lambda: sim.subscriptions("/v2/iex")["trades"] == ["AAPL"])
        for price in (1.0, 2.0, 3.0):
            sim.inject_trade("AAPL", price=price)
        got = [await r.until("trade") for _ in range(3)]
    last = got[-1].id
    for price in (4.0, 5.0):  # while the client is away
        sim.inject_trade("AAPL", price=price)
    await asyncio.sleep(0.1)
    async with sse_get(port, "/api/stream/trades?symbols=AAPL", {"Last-Event-ID": last}) as r:
        missed = [await r.until("trade"), await r.until("trade")]
        assert [e.json()["data"]["price"] for e in missed] == [4.0, 5.0]
        assert [int(e.id) for e in missed] == [int(last) + 1, int(last) + 2]
        sim.inject_trade("AAPL", price=6.0)
        live = await r.until("trade")
        assert live.json()["data"]["price"] == 6.0 and int(live.id) == int(last) + 3
    # the query form works for a first connect
    async with sse_get(port, f"/api/stream/trades?symbols=AAPL&lastEventId={last}") as r:
        assert (await r.until("trade")).json()["data"]["price"] == 4.0


async def test_reset_when_the_id_is_too_old_or_unknown(sim, tmp_path):
    cm, app = await start(sim, tmp_path, sse_replay=2)
    try:
        async with sse_get(app.sse.port, "/api/stream/trades?symbols=AAPL") as r:
            await wait_until(lambda: sim.subscriptions("/v2/iex")["trades"] == ["AAPL"])
            for price in range(1, 6):
                sim.inject_trade("AAPL", price=float(price))
            ids = [int((await r.until("trade")).id) for _ in range(5)]
        for last in (ids[0], 999_999, "garbage"):
            async with sse_get(app.sse.port, "/api/stream/trades?symbols=AAPL", {"Last-Event-ID": str(last)}) as r:
                reset = await r.until("reset")
                assert reset.json()["last_event_id"] in (ids[0], 999_999, -1)
                sim.inject_trade("AAPL", price=9.0)
                assert (await r.until("trade")).json()["data"]["price"] == 9.0
    finally:
        await cm.__aexit__(None, None, None)


async def test_keepalive_comment_after_quiet_interval(sim, tmp_path):
    cm, app = await start(sim, tmp_path, sse_keepalive=0.2)
    try:
        async with sse_get(app.sse.port, "/api/stream/trades?symbols=AAPL") as r:
            await r.next()
            await r.next()
            loop = asyncio.get_running_loop()
            started = loop.time()
            ev = await r.next(timeout=3, comments=True)
            assert ev.comment == "keepalive"
            assert 0.1 <= loop.time() - started < 2
    finally:
        await cm.__aexit__(None, None, None)


async def test_cors_preflight_and_errors(sim, app):
    port = app.sse.port
    pre = {"Origin": "http://127.0.0.1:9000", "Access-Control-Request-Method": "GET",
           "Access-Control-Request-Headers": "last-event-id"}
    async with sse_get(port, "/api/stream/trades", pre, method="OPTIONS") as r:
        assert r.status == 204
        assert r.headers["access-control-allow-methods"] == "GET, OPTIONS"
        assert r.headers["access-control-allow-headers"] == "Content-Type, Authorization, Last-Event-ID"
        assert r.headers["access-control-allow-origin"] == "http://127.0.0.1:9000"
    async with sse_get(port, "/api/stream/trades?symbols=AAPL", {"Origin": "http://evil.example"}) as r:
        assert "access-control-allow-origin" not in r.headers
    cases = [("GET", "/nope", 404), ("POST", "/api/stream/trades?symbols=AAPL", 405),
             ("HEAD", "/api/stream/trades?symbols=AAPL", 405), ("DELETE", "/api/stream/orders", 405),
             ("GET", "/api/stream/trades?symbols=AA%20PL", 400), ("GET", "/api/stream/trades", 400),
             ("GET", "/api/stream/trades?symbols=AAPL&channels=bars", 400),
             ("GET", "/api/stream/orders", 401), ("GET", "/api/stream/orders?token=wrong", 401)]
    for method, target, status in cases:
        async with sse_get(port, target, method=method) as r:
            assert r.status == status, target
            if method == "HEAD":
                continue
            body = orjson.loads(r.body)
            assert body["error"] and body["message"]
            if status == 401:
                assert body["error"] == "Unauthorized"
    async with sse_get(port, "/api/stream/status") as r:
        assert r.status == 200 and orjson.loads(r.body)["alpaca_connected"] is True


async def test_gzip_is_flushed_per_event(sim, app):
    async with sse_get(app.sse.port, "/api/stream/trades?symbols=AAPL", {"Accept-Encoding": "gzip, br"}) as r:
        assert r.headers["content-encoding"] == "gzip"
        await r.next()
        await r.next()
        await wait_until(lambda: sim.subscriptions("/v2/iex")["trades"] == ["AAPL"])
        for price in (1.5, 2.5):
            sim.inject_trade("AAPL", price=price)
            assert (await r.until("trade")).json()["data"]["price"] == price  # arrives alone, decompressible


async def test_throttle_sends_at_most_one_per_window_and_always_the_latest(sim, app):
    async with sse_get(app.sse.port, "/api/stream/trades?symbols=AAPL&throttle_ms=300") as r:
        await wait_until(lambda: sim.subscriptions("/v2/iex")["trades"] == ["AAPL"])
        for i in range(10):
            sim.inject_trade("AAPL", price=100.0 + i)
        first = await r.until("trade")
        second = await r.until("trade", timeout=2)
        assert first.json()["data"]["price"] == 100.0
        assert second.json()["data"]["price"] == 109.0
        with pytest.raises(TimeoutError):
            await r.until("trade", timeout=0.5)


async def test_a_throttle_no_timer_can_wait_is_refused_with_400_and_a_finite_one_delivers(sim, app):
    for bad in ("1e400", "1e308", "inf", "nan", "-5", "abc", "60001"):
        async with sse_get(app.sse.port, f"/api/stream/trades?symbols=AAPL&throttle_ms={bad}") as r:
            assert r.status == 400, bad
            assert "throttle_ms must be a number of milliseconds from 0 to 60000" in r.body.decode(), bad
    async with sse_get(app.sse.port, "/api/stream/trades?symbols=AAPL&throttle_ms=60000") as r:
        assert r.status == 200
        await wait_until(lambda: sim.subscriptions("/v2/iex")["trades"] == ["AAPL"])
        sim.inject_trade("AAPL", price=7.0)
        assert (await r.until("trade")).json()["data"]["price"] == 7.0  # the first of a window goes at once


async def test_orders_stream_legacy_format_needs_the_token_and_replays_from_the_journal(sim, app):
    port = app.sse.port
    order = sim.submit_order("AAPL", "buy", 2)
    await wait_until(lambda: app.stats.order_events == 1)
    async with sse_get(port, "/api/stream/orders?format=legacy", {"Authorization": f"Bearer {TOKEN}"}) as r:
        assert r.status == 200
        assert re.fullmatch(r"default-orders-\d+", (await r.until("connected")).json()["client_id"])
        sim.fill_order(order["id"], price=10)
        fill = await r.until("order_update")
        assert (fill.json()["event"] == "fill"
                and fill.id == f"{app.accounts.orders['default'].epoch}-{fill.json()['id']}")
        pos = await r.until("position_update")
        assert pos.json()["symbol"] == "AAPL" and pos.json()["qty"] == "2"
    async with sse_get(port, f"/api/stream/orders?format=legacy&token={TOKEN}&last_event_id=0") as r:
        replayed = [await r.until("order_update"), await r.until("order_update")]
        assert [e.json()["event"] for e in replayed] == ["new", "fill"]


async def test_stalled_reader_is_cut_off_while_others_keep_receiving(sim, tmp_path):
    cm, app = await start(sim, tmp_path, client_buffer_bytes=32 * 1024)
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", app.sse.port))
        sock.setblocking(False)
        async with sse_get(app.sse.port, "/api/stream/trades?symbols=AAPL") as good, \
                sse_get(app.sse.port, "/api/stream/trades?symbols=AAPL", sock=sock) as stalled:
            stalled.writer.transport.pause_reading()
            await wait_until(lambda: len(app.sse.clients) == 2)
            sent = received = 0

            async def reader():
                nonlocal received
                while True:
                    await good.until("trade", timeout=10)
                    received += 1

            task = asyncio.create_task(reader())
            pad = "x" * 500
            while not app.stats.slow_client_cutoffs and sent < 40000:
                sim.inject_trade("AAPL", price=1.0, pad=pad)
                sent += 1
                if sent % 100 == 0:
                    await asyncio.sleep(0)
            await wait_until(lambda: app.stats.slow_client_cutoffs == 1, timeout=10, what="stalled cut off")
            for _ in range(100):
                sim.inject_trade("AAPL", price=2.0)
                sent += 1
            await wait_until(lambda: received == sent, timeout=10, what="good client got everything")
            task.cancel()
            assert len(app.sse.clients) == 1
    finally:
        await cm.__aexit__(None, None, None)


async def test_sighup_limits_apply_to_the_sse_side_too(sim, app):
    import dataclasses

    app.reload(dataclasses.replace(app.cfg, max_connections_per_ip=1))
    async with sse_get(app.sse.port, "/api/stream/trades?symbols=AAPL") as first:
        assert first.status == 200
        async with sse_get(app.sse.port, "/api/stream/trades?symbols=AAPL") as second:
            assert second.status == 429


HUGE_ID = "18446744073709551616"  # 2**64: past SQLite's and orjson's 64-bit integers


async def test_ids_out_of_range_get_a_reset_and_never_keep_the_ips_slot(sim, tmp_path):
    cm, app = await start(sim, tmp_path, max_connections_per_ip=2)
    try:
        port, auth = app.sse.port, {"Authorization": f"Bearer {TOKEN}"}
        for path, extra in (("/api/stream/trades?symbols=AAPL", {}), ("/api/stream/orders", auth)):
            for last in (HUGE_ID, "-5", "9" * 40, "1e3", "garbage"):
                async with sse_get(port, path, {"Last-Event-ID": last, **extra}) as r:
                    assert r.status == 200
                    assert (await r.until("reset")).json()["last_event_id"] == -1
            await wait_until(lambda: not app.sse.admission.per_ip, what="every slot released")
        async with sse_get(port, "/api/stream/trades?symbols=AAPL") as a, \
                sse_get(port, "/api/stream/trades?symbols=AAPL") as b:
            assert (a.status, b.status) == (200, 200)
    finally:
        await cm.__aexit__(None, None, None)


@pytest.mark.timeout(60)
async def test_order_replay_goes_past_10000_and_says_reset_when_cut_short(sim, tmp_path):
    count = 10_050
    fill_journal(tmp_path / "orders.sqlite3", count)
    cm, app = await start(sim, tmp_path)
    try:
        port, epoch = app.sse.port, app.accounts.orders["default"].epoch
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with sse_get(port, "/api/stream/orders", {**auth, "Last-Event-ID": f"{epoch}-0"}) as r:
            ids = [(await r.until("order:update")).id for _ in range(count)]
            assert ids == [f"{epoch}-{n}" for n in range(1, count + 1)]
            sim.submit_order("TSLA", "buy", 1)
            assert (await r.until("order:update")).id == f"{epoch}-{count + 1}"
            assert not [e for e in r.events if e.event == "reset"]
        app.accounts.orders["default"].replay_limit = 100
        for last, why in (("0", "more than 100"), ("0a1b2c-5", "another journal"), ("99999", "past the journal")):
            async with sse_get(port, "/api/stream/orders", {**auth, "Last-Event-ID": last}) as r:
                assert why in (await r.until("reset")).json()["reason"]
        async with sse_get(port, "/api/stream/orders", {**auth, "Last-Event-ID": f"{epoch}-0"}) as r:
            await r.until("reset")
            sim.submit_order("TSLA", "buy", 2)
            assert (await r.until("order:update")).id == f"{epoch}-{count + 2}"  # live, nothing replayed
    finally:
        await cm.__aexit__(None, None, None)


def _crypto_trade(symbol: str, price: float, i: int) -> dict:
    return {"T": "t", "S": symbol, "p": price, "s": 0.5, "t": f"2026-01-02T03:04:05.{i:09d}Z", "i": i,
            "tks": "B"}


async def test_crypto_pairs_route_to_the_crypto_source_with_replay_and_throttle(sim, app):
    """BTC/USD on the SSE side goes to the crypto stream (not the stock feed), as on the WebSocket side, and the
    replay ring and the throttle key it apart from stocks."""
    crypto, port = "/v1beta3/crypto/us", app.sse.port
    async with sse_get(port, "/api/stream/trades?symbols=btc/usd,AAPL&channels=trades,quotes") as r:
        await wait_until(lambda: sim.subscriptions(crypto)["trades"] == ["BTC/USD"], what="crypto upstream hold")
        assert sim.subscriptions(crypto)["quotes"] == ["BTC/USD"]
        assert sim.subscriptions("/v2/iex")["trades"] == ["AAPL"]
        sim.inject_raw(crypto, [_crypto_trade("BTC/USD", 65000.0 + i, i) for i in (1, 2)])
        got = [await r.until("trade"), await r.until("trade")]
        assert [e.json()["symbol"] for e in got] == ["BTC/USD", "BTC/USD"]
        assert [e.json()["data"]["price"] for e in got] == [65001.0, 65002.0]
        last = got[0].id
    await asyncio.sleep(0.05)
    async with sse_get(port, "/api/stream/trades?symbols=BTC/USD,AAPL&channels=trades,quotes",
                       {"Last-Event-ID": last}) as r:  # the ghost kept recording: a complete replay
        replayed = await r.until("trade")
        assert replayed.json()["data"]["price"] == 65002.0 and int(replayed.id) == int(last) + 1
    async with sse_get(port, "/api/stream/trades?symbols=BTC/USD&throttle_ms=300") as r:
        await wait_until(lambda: sim.subscriptions(crypto)["trades"] == ["BTC/USD"])
        await r.until("connected")
        sim.inject_raw(crypto, [_crypto_trade("BTC/USD", 1.0 + i, 10 + i) for i in range(5)])
        first, second = await r.until("trade"), await r.until("trade", timeout=2)
        assert (first.json()["data"]["price"], second.json()["data"]["price"]) == (1.0, 5.0)
    for bad in ("BTC/", "BTC/USD/EUR", "B%24C/USD"):
        async with sse_get(port, f"/api/stream/trades?symbols={bad}") as r:
            assert r.status == 400, bad
            assert "BASE/QUOTE" in orjson.loads(r.body)["message"] or bad == "B%24C/USD"


async def test_stopping_while_a_prices_stream_waits_for_its_snapshot_logs_no_error(sim, tmp_path, caplog):
    """The daemon stops while a prices stream still waits for its first snapshot (the batch timer not yet
    fired): the wait ends quietly, no asyncio "Exception in callback ... CancelledError" line."""
    cm, app = await start(sim, tmp_path)
    app.ws.snapshots.window = 30.0  # the batch timer stays pending: the stream waits on the snapshot
    try:
        async with sse_get(app.sse.port, "/api/stream/prices?symbols=AAPL") as r:
            assert r.status == 200
            await wait_until(lambda: app.ws.snapshots._batch is not None, what="a snapshot batch pending")
            with caplog.at_level("DEBUG"):
                await cm.__aexit__(None, None, None)
                await asyncio.sleep(0.1)
    finally:
        if app.ws.snapshots._batch is not None:
            app.ws.snapshots._batch.cancel()
    bad = [r for r in caplog.records if r.levelno >= 40 or "CancelledError" in r.getMessage()
           or (r.exc_info and r.exc_info[0] is asyncio.CancelledError)]
    assert not bad, [r.getMessage() for r in bad]
    assert app.ws.snapshots._batch is None
