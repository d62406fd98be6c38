"""Realized P&L over real sockets: fills in the simulator reduce, close and cross positions, and the WebSocket
order subscriber and the SSE ``/api/stream/positions`` client both get each update with the P&L it realized; a
replayed fill counts once."""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest

from tests.support.relay import KEY, TOKEN, Browser, free_port, relay_config, running, wait_until
from tests.support.sse import SseResponse, sse_get
from trade_stream.core.orders.events import alpaca_fields

pytestmark = pytest.mark.timeout(30)


class Followers:
    """An authenticated WebSocket client subscribed to orders and an SSE positions stream, both past their
    snapshots: every position update reaches both."""

    def __init__(self, ws: Browser, sse: SseResponse) -> None:
        self.ws = ws
        self.sse = sse

    async def next_update(self, symbol: str) -> tuple[dict, dict]:
        """The next ``position_update`` of ``symbol`` on the WebSocket and ``position:update`` on SSE."""
        ws = await self.ws.expect(lambda m: m.get("type") == "position_update" and m.get("symbol") == symbol)
        while True:
            body = (await self.sse.until("position:update")).json()
            mine = [p for p in body["positions"] if p["symbol"] == symbol]
            if mine:
                return ws, mine[0]


@pytest.fixture
async def followers(sim, tmp_path):
    async with AsyncExitStack() as stack:
        app = await stack.enter_async_context(running(relay_config(sim, tmp_path, sse_port=free_port())))
        await wait_until(lambda: app.relay.sources.default.upstream.connected and app.tradings["default"].connected,
                         what="both streams up")
        ws = await stack.enter_async_context(Browser.connect(app.port))
        await ws.send({"action": "auth", "token": TOKEN})
        await ws.expect("authenticated")
        await ws.send({"action": "subscribe", "channel": "orders"})
        await ws.expect("orders_snapshot")
        sse = await stack.enter_async_context(
            sse_get(app.sse.port, "/api/stream/positions", {"Authorization": f"Bearer {TOKEN}"}))
        assert sse.status == 200
        assert (await sse.until("position:update")).json()["initializing"]
        yield Followers(ws, sse)


def filled(sim, symbol: str, side: str, qty: str, price: str, partial: str | None = None) -> dict:
    """Submit an order and fill it (first ``partial`` of it, if given, then the rest), at ``price``."""
    order = sim.submit_order(symbol, side, qty)
    if partial is not None:
        sim.fill_order(order["id"], qty=partial, price=price)
    return sim.fill_order(order["id"], price=price)


def sim_position(sim, symbol: str) -> dict | None:
    return next((p for p in sim.book.positions(KEY) if p["symbol"] == symbol), None)


async def test_a_reducing_then_a_closing_fill_carry_their_realized_pl_to_websocket_and_sse(sim, followers):
    filled(sim, "AAPL", "buy", "10", "100")
    ws, sse = await followers.next_update("AAPL")
    assert (ws["qty"], ws["realized_pl"], sse["qty"], sse["realizedPl"]) == ("10", None, "10", None)

    filled(sim, "AAPL", "sell", "4", "110.25")
    ws, sse = await followers.next_update("AAPL")
    assert (ws["qty"], ws["avg_entry_price"], ws["realized_pl"]) == ("6", "100", 41.0)
    assert (sse["qty"], sse["avgEntryPrice"], sse["realizedPl"], sse["account"]) == ("6", "100", 41.0, "default")
    assert sim_position(sim, "AAPL")["avg_entry_price"] == "100"  # Alpaca keeps the entry on a reduction

    filled(sim, "AAPL", "sell", "6", "95.5")
    ws, sse = await followers.next_update("AAPL")
    assert (ws["qty"], ws["realized_pl"], ws["portfolio"]["positions"]) == ("0", -27.0, 0)
    assert (sse["qty"], sse["realizedPl"]) == ("0", -27.0)
    assert sim_position(sim, "AAPL") is None


async def test_partial_fills_of_fractional_quantities_each_realize_their_own_part(sim, followers):
    filled(sim, "TSLA", "buy", "2.5", "200")
    await followers.next_update("TSLA")
    filled(sim, "TSLA", "sell", "2.5", "210.1", partial="0.75")
    ws, sse = await followers.next_update("TSLA")
    assert (ws["qty"], ws["realized_pl"], sse["realizedPl"]) == ("1.75", 7.58, 7.58)
    ws, sse = await followers.next_update("TSLA")
    assert (ws["qty"], ws["realized_pl"], sse["qty"], sse["realizedPl"]) == ("0", 17.68, "0", 17.68)


async def test_a_fill_crossing_zero_realizes_on_the_held_part_and_opens_a_short_at_the_fill(sim, followers):
    filled(sim, "MSFT", "buy", "100", "50")
    await followers.next_update("MSFT")
    filled(sim, "MSFT", "sell", "150", "60")
    ws, sse = await followers.next_update("MSFT")
    assert (ws["qty"], ws["side"], ws["avg_entry_price"], ws["realized_pl"]) == ("-50", "short", "60", 1000.0)
    assert (sse["qty"], sse["side"], sse["avgEntryPrice"], sse["realizedPl"]) == ("-50", "short", "60", 1000.0)
    assert (sim_position(sim, "MSFT")["qty"], sim_position(sim, "MSFT")["avg_entry_price"]) == ("-50", "60")
    filled(sim, "MSFT", "buy", "50", "55")
    ws, sse = await followers.next_update("MSFT")
    assert (ws["qty"], ws["realized_pl"], sse["realizedPl"]) == ("0", 250.0, 250.0)


async def test_a_replayed_fill_is_not_counted_twice(sim, followers):
    filled(sim, "NVDA", "buy", "10", "100")
    await followers.next_update("NVDA")
    filled(sim, "NVDA", "sell", "4", "110")
    ws, sse = await followers.next_update("NVDA")
    assert (ws["realized_pl"], sse["realizedPl"]) == (40.0, 40.0)
    fill = [m for m in followers.ws.of_type("order_update") if m["event"] == "fill"][-1]  # came before its update
    assert fill["data"]["side"] == "sell"
    event = alpaca_fields(fill["data"])
    # the very same event again (its execution id is known: the journal drops it), then the same fill under new
    # ids (a journal takes it, positions must not: the order had reached this filled quantity already)
    sim.inject_raw("/stream", {"stream": "trade_updates", "data": event})
    sim.inject_raw("/stream", {"stream": "trade_updates",
                               "data": {**event, "execution_id": "replayed-1", "event_id": "01JREPLAYED0000000000000"}})
    await followers.ws.expect(lambda m: m.get("type") == "order_update" and m["data"].get("execution_id")
                              == "replayed-1")
    filled(sim, "NVDA", "sell", "6", "90")
    ws, sse = await followers.next_update("NVDA")  # the next update is the closing fill's: none came between
    assert (ws["qty"], ws["realized_pl"], sse["qty"], sse["realizedPl"]) == ("0", -60.0, "0", -60.0)
    assert followers.ws.of_type("order_update")[-1]["data"]["position_qty"] == "0"
