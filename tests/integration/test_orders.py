"""Order updates: private, journaled, replayable, reconciled after gaps, positions marked to market."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

import orjson
import pytest

from tests.support.relay import TOKEN, Browser, relay_config, running, wait_until

pytestmark = pytest.mark.timeout(30)
STREAM = "/stream"


@pytest.fixture
async def app(sim, tmp_path):
    async with running(relay_config(sim, tmp_path)) as a:
        await wait_until(lambda: a.relay.upstream.connected and a.trading.connected, what="both streams up")
        yield a


async def orders_client(port: int, since: int | None = None):
    """Context manager factory: an authenticated client subscribed to orders, snapshot consumed."""
    cm = Browser.connect(port)
    c = await cm.__aenter__()
    await c.send({"action": "auth", "token": TOKEN})
    await c.expect("authenticated")
    msg = {"action": "subscribe", "channel": "orders"}
    if since is not None:
        msg["since"] = since
    await c.send(msg)
    await c.expect(lambda m: m.get("type") == "subscribed" and m.get("channel") == "orders")
    await c.expect("orders_snapshot")
    return cm, c


def get(port: int, path: str, token: str | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


async def test_nobody_without_the_token_sees_orders(sim, app):
    async with Browser.connect(app.port) as anon, Browser.connect(app.port) as wrong:
        await anon.send({"action": "subscribe", "channel": "orders"})
        assert (await anon.expect("error"))["code"] == "unauthorized"
        await wrong.send({"action": "auth", "token": "guess"})
        assert (await wrong.expect("error"))["code"] == "unauthorized"
        await wrong.send({"action": "subscribe", "channel": "orders"})
        assert (await wrong.expect("error"))["code"] == "unauthorized"
        await wrong.send({"action": "subscribe", "symbol": "AAPL"})  # public data still works
        await wrong.expect("subscribed")
        order = sim.submit_order("AAPL", "buy", 5)
        sim.fill_order(order["id"])
        await wait_until(lambda: app.stats.order_events >= 2, what="events journaled")
        await anon.drain(0.3)
        await wrong.drain(0.1)
        assert not anon.of_type("order_update") and not wrong.of_type("order_update")
    status, body = await asyncio.to_thread(get, app.port, "/api/orders/events?since=0")
    assert status == 401 and body["error"] == "Unauthorized"
    status, _ = await asyncio.to_thread(get, app.port, "/api/orders/events?since=0", "nope")
    assert status == 401
    status, body = await asyncio.to_thread(get, app.port, "/api/orders/events?since=0", TOKEN)
    assert status == 200 and [e["event"] for e in body["events"]] == ["new", "fill"]


async def test_lifecycle_events_arrive_with_their_fields(sim, app):
    cm, c = await orders_client(app.port)
    try:
        order = sim.submit_order("AAPL", "buy", 10, type="limit", limit_price=100)
        sim.fill_order(order["id"], qty=4, price=99.5)
        sim.fill_order(order["id"], qty=6, price=99.75)
        new = await c.expect("order_update")
        partial = await c.expect("order_update")
        fill = await c.expect("order_update")
        assert [new["event"], partial["event"], fill["event"]] == ["new", "partial_fill", "fill"]
        assert new["id"] < partial["id"] < fill["id"]
        d = partial["data"]
        assert d["order"]["id"] == order["id"] and d["symbol"] == "AAPL" and d["side"] == "buy"
        assert (d["price"], d["qty"], d["position_qty"]) == ("99.5", "4", "4")
        assert d["execution_id"] and d["timestamp"] and d["order"]["status"] == "partially_filled"
        assert fill["data"]["order"]["filled_qty"] == "10" and fill["data"]["position_qty"] == "10"
        assert fill["reconciled"] is False

        for action, event in ((sim.cancel_order, "canceled"), (sim.reject_order, "rejected"),
                              (sim.expire_order, "expired")):
            o = sim.submit_order("MSFT", "sell", 1, type="limit", limit_price=500)
            action(o["id"])
            assert (await c.expect("order_update"))["event"] == "new"
            got = await c.expect("order_update")
            assert got["event"] == event and got["data"]["order"]["id"] == o["id"]

        o = sim.submit_order("TSLA", "buy", 1, type="limit", limit_price=1)
        await c.expect("order_update")
        sim.emit_order_event(o["id"], "some_future_event")
        assert (await c.expect("order_update"))["event"] == "some_future_event"
    finally:
        await cm.__aexit__(None, None, None)


async def test_fills_during_a_trading_stream_outage_arrive_once_marked_reconciled(sim, app):
    cm, c = await orders_client(app.port)
    try:
        a = sim.submit_order("AAPL", "buy", 3)
        b = sim.submit_order("MSFT", "buy", 2)
        await c.expect("order_update")
        await c.expect("order_update")
        sim.fail_next_auth(401, times=1, path=STREAM)
        sim.cut_all()
        await wait_until(lambda: not app.trading.connected, what="trading down")
        sim.fill_order(a["id"], price=101)
        sim.fill_order(b["id"], price=202)
        await wait_until(lambda: app.trading.connected and app.trading.status.reconnects >= 1, timeout=8,
                         what="trading back")
        got = [await c.expect("order_update"), await c.expect("order_update")]
        assert sorted((g["data"]["order"]["id"], g["event"]) for g in got) == sorted(
            [(a["id"], "fill"), (b["id"], "fill")])
        assert all(g["reconciled"] for g in got)
        assert {g["data"]["qty"] for g in got} == {"3", "2"}
        await app.orders.reconcile()  # a second pass finds nothing new
        await c.drain(0.3)
        assert len(c.of_type("order_update")) == 4
    finally:
        await cm.__aexit__(None, None, None)


async def test_restart_between_fills_resumes_with_since(sim, tmp_path):
    cfg = relay_config(sim, tmp_path)
    o1 = sim.submit_order("AAPL", "buy", 1)
    o2 = sim.submit_order("AAPL", "buy", 1)
    async with running(cfg) as app:
        await wait_until(lambda: app.trading.connected)
        cm, c = await orders_client(app.port)
        sim.fill_order(o1["id"], price=150)
        first = await c.expect("order_update")
        assert first["event"] == "fill"
        last_id = first["id"]
        await cm.__aexit__(None, None, None)
    sim.fill_order(o2["id"], price=151)  # while the daemon is down
    async with running(cfg) as app:
        await wait_until(lambda: app.trading.connected and app.stats.order_events >= 1, what="reconciled")
        cm, c = await orders_client(app.port, since=last_id)
        try:
            missed = await c.expect("order_update")
            assert missed["event"] == "fill" and missed["data"]["order"]["id"] == o2["id"] and missed["id"] > last_id
            await c.drain(0.3)
            assert len(c.of_type("order_update")) == 1
        finally:
            await cm.__aexit__(None, None, None)


async def test_positions_follow_fills_and_live_trades(sim, app):
    cm, c = await orders_client(app.port)
    try:
        o = sim.submit_order("NVDA", "buy", 10)
        sim.fill_order(o["id"], price=100)
        pos = await c.expect(lambda m: m.get("type") == "position_update" and m["symbol"] == "NVDA")
        assert (pos["qty"], pos["avg_entry_price"]) == ("10", "100")
        o = sim.submit_order("NVDA", "buy", 10)
        sim.fill_order(o["id"], price=110)
        pos = await c.expect(lambda m: m.get("type") == "position_update" and m["qty"] == "20")
        assert pos["avg_entry_price"] == "105"
        await wait_until(lambda: sim.subscriptions("/v2/iex")["trades"] == ["NVDA"], what="price subscription")
        sim.inject_trade("NVDA", price=120.0)
        pos = await c.expect(lambda m: m.get("type") == "position_update" and m["current_price"] == 120.0)
        assert pos["unrealized_pl"] == 300.0 and pos["market_value"] == 2400.0
        assert pos["portfolio"]["unrealized_pl"] == 300.0
        o = sim.submit_order("NVDA", "sell", 5)
        sim.fill_order(o["id"], price=120)
        pos = await c.expect(lambda m: m.get("type") == "position_update" and m["qty"] == "15")
        assert pos["avg_entry_price"] == "105" and pos["unrealized_pl"] == 225.0
    finally:
        await cm.__aexit__(None, None, None)
    await wait_until(lambda: sim.subscriptions("/v2/iex")["trades"] == [], what="price subscription released")


async def test_first_start_does_not_report_existing_orders_as_missed(sim, tmp_path):
    sim.submit_order("AAPL", "buy", 1)
    sim.submit_order("MSFT", "sell", 2)
    async with running(relay_config(sim, tmp_path)) as app:
        await wait_until(lambda: app.trading.connected)
        await app.orders.reconcile()  # whatever the start-up pass would do, done again deterministically
        assert app.stats.order_events == 0 and app.orders.journal.last_id() == 0


async def test_subscribing_twice_quickly_does_not_duplicate_events(sim, app):
    async with Browser.connect(app.port) as c:
        await c.send({"action": "auth", "token": TOKEN})
        await c.expect("authenticated")
        await c.send({"action": "subscribe", "channel": "orders"})
        await c.send({"action": "subscribe", "channel": "orders"})  # before the snapshot has come back
        assert (await c.expect("error"))["code"] == "already_subscribed"
        await c.expect("orders_snapshot")
        sim.submit_order("AAPL", "buy", 1)
        await c.expect("order_update")
        await c.drain(0.3)
        assert len(c.of_type("order_update")) == 1 and len(c.of_type("orders_snapshot")) == 1
