"""SSE symbol limits: the per-client cap applies as on WebSocket, a departed client's reconnect hold (the ghost)
never keeps the global symbol cap from anyone, ghosts are bounded per address, and per-symbol tables are pruned
when a symbol is dropped."""

from __future__ import annotations

import orjson
import pytest

from tests.support.relay import Browser, free_port, relay_config, running, wait_until
from tests.support.sse import sse_get

pytestmark = pytest.mark.timeout(30)
T = "trades"


async def start(sim, tmp_path, **overrides):
    cfg = relay_config(sim, tmp_path, sse_port=free_port(), **overrides)
    cm = running(cfg)
    app = await cm.__aenter__()
    await wait_until(lambda: app.relay.sources.default.upstream.connected and app.tradings["default"].connected)
    return cm, app


async def test_sse_request_over_the_per_client_symbol_cap_is_refused(sim, tmp_path):
    cm, app = await start(sim, tmp_path, max_symbols_per_client=3)
    try:
        async with sse_get(app.sse.port, "/api/stream/trades?symbols=A,B,C,D") as r:
            assert r.status == 400
            assert "at most 3 symbols" in orjson.loads(r.body)["message"]
        assert app.relay.hub.wanted() == set()
        async with sse_get(app.sse.port, "/api/stream/trades?symbols=A,B,C&channels=trades,quotes") as r:
            assert r.status == 200  # the cap counts symbols, not symbol-channel pairs
    finally:
        await cm.__aexit__(None, None, None)


async def test_a_departed_sse_clients_hold_gives_way_when_the_global_cap_is_needed(sim, tmp_path):
    cm, app = await start(sim, tmp_path, max_symbols=2)
    try:
        async with sse_get(app.sse.port, "/api/stream/trades?symbols=AAPL,MSFT") as r:
            await r.until("connected")
            await wait_until(lambda: sim.subscriptions("/v2/iex")["trades"] == ["AAPL", "MSFT"])
        await wait_until(lambda: not app.sse.clients, what="SSE client gone")
        assert app.relay.hub.wanted_symbols() == {"AAPL", "MSFT"}  # the ghost keeps them for a reconnect
        async with Browser.connect(app.port) as c:
            await c.send({"action": "subscribe", "symbol": "TSLA"})
            reply = await c.expect(lambda m: m.get("type") in ("subscribed", "error"))
            assert reply["type"] == "subscribed", reply
            await wait_until(lambda: "TSLA" in sim.subscriptions("/v2/iex")["trades"], what="TSLA upstream")
            assert len(app.relay.hub.wanted_symbols()) <= 2
            # The evicted symbol is no longer recorded for replay: a reconnect asking for it gets a reset.
            evicted = {"AAPL", "MSFT"} - app.relay.hub.wanted_symbols()
            assert evicted and all((T, s) not in app.sse.ring.recording_since for s in evicted)
    finally:
        await cm.__aexit__(None, None, None)


async def test_ghost_holds_are_bounded_per_address(sim, tmp_path):
    cm, app = await start(sim, tmp_path, max_symbols_per_client=3)
    try:
        for symbols in ("A,B,C", "D,E,F", "G,H"):
            async with sse_get(app.sse.port, f"/api/stream/trades?symbols={symbols}") as r:
                await r.until("connected")
            await wait_until(lambda: not app.sse.clients, what="SSE client gone")
        # One address's ghosts hold at most the per-client cap together: the oldest go first, whole.
        assert {s for _, s in app.relay.hub.holders} == {"G", "H"}
        await wait_until(lambda: app.relay.hub.wanted_symbols() == {"G", "H"}, what="dropped ones lingered out")
        assert {s for _, s in app.sse.ring.recording_since} == {"G", "H"}
    finally:
        await cm.__aexit__(None, None, None)


async def test_per_symbol_tables_are_pruned_when_the_symbol_is_dropped(sim, tmp_path):
    cm, app = await start(sim, tmp_path)
    try:
        async with Browser.connect(app.port) as c:
            await c.send({"action": "subscribe", "symbols": ["AAPL", "MSFT"]})
            await c.expect("subscribed")
            await wait_until(lambda: sim.subscriptions("/v2/iex")["trades"] == ["AAPL", "MSFT"])
            sim.inject_trade("AAPL", price=1.0)
            sim.inject_trade("MSFT", price=1.0)
            await c.expect("trade")
            await c.expect("trade")
            assert set(app.relay.sources.default.router.last_seen) == {"AAPL", "MSFT"}
            await c.send({"action": "unsubscribe", "symbol": "AAPL"})
            await wait_until(lambda: sim.subscriptions("/v2/iex")["trades"] == ["MSFT"], what="AAPL dropped")
            await wait_until(lambda: set(app.relay.sources.default.router.last_seen) == {"MSFT"}, what="AAPL pruned")
    finally:
        await cm.__aexit__(None, None, None)
