"""Price alerts end to end over real sockets: the daemon against the simulator, REST and WebSocket, the live trade
that fires an alert, the notification it becomes, the upstream hold, a restart, and the stale clock."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.error
import urllib.request

import orjson
import pytest

from tests.support.clocks import ny
from tests.support.relay import Browser, free_port, relay_config, running, wait_until
from tests.support.sse import sse_get
from trade_stream.edges.identity import UserRecord, hash_token, write_users
from trade_stream.simulator import SimConfig, Simulator
from trade_stream.simulator.clock import Clock

pytestmark = pytest.mark.timeout(45)
API = "/api/alerts"
ALICE, BOB = "alice-token-" + "a" * 32, "bob-token-" + "b" * 32


def call(port: int, path: str, method: str = "GET", body: object = None, token: str | None = ALICE,
         raw: bytes | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            text = resp.read()
            return resp.status, orjson.loads(text) if text else {}
    except urllib.error.HTTPError as exc:
        text = exc.read()
        return exc.code, orjson.loads(text) if text else {}


async def rest(port: int, path: str, method: str = "GET", body: object = None, token: str | None = ALICE,
               raw: bytes | None = None) -> tuple[int, dict]:
    return await asyncio.to_thread(call, port, path, method, body, token, raw)


def users_file(tmp_path):
    path = tmp_path / "users.toml"
    write_users(str(path), [UserRecord("alice", hash_token(ALICE), ("default",)),
                            UserRecord("bob", hash_token(BOB), ("default",))])
    return str(path)


@contextlib.asynccontextmanager
async def daemon(sim, tmp_path, **overrides):
    cfg = relay_config(sim, tmp_path / "state", sse_port=free_port(), users_file=users_file(tmp_path), token="",
                       **overrides)
    async with running(cfg) as a:
        await wait_until(lambda: a.relay.sources.default.upstream.connected and a.alerts.loaded,
                         what="market data up and alerts loaded")
        yield a


@contextlib.asynccontextmanager
async def user_ws(port: int, token: str):
    """An authenticated browser connection subscribed to orders (notifications ride that subscription)."""
    async with Browser.connect(port) as c:
        await c.send({"action": "auth", "token": token})
        await c.expect("authenticated")
        await c.send({"action": "subscribe", "channel": "orders"})
        await c.expect("orders_snapshot")
        yield c


def upstream_symbols(sim) -> set[str]:
    subs = sim.state()["subscriptions"].get("/v2/iex") or {}
    return set(subs.get("trades", [])) if isinstance(subs, dict) else set()


async def test_rest_create_list_patch_delete_and_every_400(sim, tmp_path):
    async with daemon(sim, tmp_path, alerts_per_user=3) as app:
        port = app.port
        status, made = await rest(port, API, "POST", {"symbol": "aapl", "condition": "crosses_above", "price": 230})
        assert status == 201, made
        assert (made["symbol"], made["condition"], made["price"], made["state"]) == ("AAPL", "crosses_above", 230,
                                                                                    "armed")
        assert made["id"] and made["trade"] is None
        status, pct = await rest(port, API, "POST", {"symbol": "MSFT", "condition": "percent_change", "percent": -3})
        assert (status, pct["percent"]) == (201, -3)
        status, body = await rest(port, API)
        assert status == 200 and [a["id"] for a in body["alerts"]] == [made["id"], pct["id"]]
        assert (await rest(port, API, token=BOB))[1]["alerts"] == []  # a user sees only their alerts

        bad = [({"condition": "crosses_above", "price": 1}, "symbol"),
               ({"symbol": "1BAD", "condition": "crosses_above", "price": 1}, "symbol"),
               ({"symbol": "AAPL", "condition": "moon", "price": 1}, "condition"),
               ({"symbol": "AAPL", "condition": "crosses_below"}, "price"),
               ({"symbol": "AAPL", "condition": "crosses_below", "price": "230"}, "price"),
               ({"symbol": "AAPL", "condition": "crosses_below", "price": -1}, "price"),
               ({"symbol": "AAPL", "condition": "percent_change"}, "percent"),
               ({"symbol": "AAPL", "condition": "percent_change", "percent": 0}, "percent"),
               ({"symbol": "AAPL", "condition": "stale"}, "minutes"),
               ({"symbol": "AAPL", "condition": "stale", "minutes": 10, "price": 3}, "price"),
               ([1, 2], "body")]
        for payload, field in bad:
            status, body = await rest(port, API, "POST", payload)
            assert (status, body.get("field")) == (400, field), (payload, body)
            assert body["message"]
        status, body = await rest(port, API, "POST", raw=b"{")
        assert (status, body["field"]) == (400, "body")

        status, third = await rest(port, API, "POST", {"symbol": "NVDA", "condition": "stale", "minutes": 10})
        assert status == 201
        status, body = await rest(port, API, "POST", {"symbol": "TSLA", "condition": "crosses_below", "price": 1})
        assert (status, body["code"]) == (409, "alert_limit") and "at most 3" in body["message"]

        status, changed = await rest(port, f"{API}/{made['id']}", "PATCH", {"price": 231.5})
        assert (status, changed["price"], changed["state"]) == (200, 231.5, "armed")
        for patch, field in (({"state": "triggered"}, "state"), ({"percent": 3}, "percent"),
                             ({"symbol": "X"}, "symbol"), ({"price": 0}, "price")):
            status, body = await rest(port, f"{API}/{made['id']}", "PATCH", patch)
            assert (status, body.get("field")) == (400, field), (patch, body)
        assert (await rest(port, f"{API}/{made['id']}", "PATCH", {"price": 5}, token=BOB))[0] == 404
        assert (await rest(port, f"{API}/{made['id']}", "DELETE", token=BOB))[0] == 404
        assert (await rest(port, API, token=None))[0] == 401

        status, body = await rest(port, f"{API}/{third['id']}", "DELETE")
        assert (status, body["deleted"]) == (200, True)
        assert (await rest(port, f"{API}/{third['id']}", "DELETE"))[0] == 404
        status, body = await rest(port, API)
        assert [a["id"] for a in body["alerts"]] == [made["id"], pct["id"]]
        assert (await rest(port, API, "PUT", {}))[0] == 405


async def test_a_cross_fires_once_to_its_user_on_ws_and_sse_and_rearms(sim, tmp_path):
    async with daemon(sim, tmp_path) as app, user_ws(app.port, ALICE) as alice, user_ws(app.port, BOB) as bob:
        sim.inject_trade("AAPL", 229.0, 100)  # a price before the alert: the snapshot's reference is below
        status, made = await rest(app.port, API, "POST",
                                  {"symbol": "AAPL", "condition": "crosses_above", "price": 230})
        assert status == 201
        assert (await alice.expect("alert"))["op"] == "created"
        await wait_until(lambda: "AAPL" in upstream_symbols(sim), what="AAPL held upstream")
        assert (await rest(app.port, "/api/stream/status"))[1]["price_alerts"]["symbols"] == 1
        async with sse_get(app.sse.port, "/api/stream/alerts", {"Authorization": f"Bearer {ALICE}"}) as sse, \
                sse_get(app.sse.port, "/api/stream/alerts", {"Authorization": f"Bearer {BOB}"}) as bob_sse:
            await sse.until("connected")
            await bob_sse.until("connected")
            await asyncio.sleep(0.3)  # the snapshot reference has been fetched (no timing is asserted)
            sim.inject_trade("AAPL", 229.5, 10)
            sim.inject_trade("AAPL", 230.05, 10)
            note = (await alice.expect("notification"))["data"]
            assert (note["type"], note["level"], note["kind"]) == ("price_alert", "warning", "price_alerts")
            assert note["message"] == "AAPL crossed above $230.00 at $230.05"
            assert note["alert_id"] == made["id"]
            pushed = await alice.expect(lambda m: m.get("type") == "alert" and m["op"] == "triggered")
            assert pushed["alert"]["state"] == "triggered" and pushed["alert"]["trade"]["price"] == 230.05
            new = (await sse.until("alert:new")).json()
            assert new["message"] == note["message"]
            sim.inject_trade("AAPL", 231.0, 10)  # beyond: it does not fire again
            sim.inject_trade("AAPL", 229.0, 10)
            sim.inject_trade("AAPL", 232.0, 10)
            await alice.drain(0.5)
            assert len(alice.of_type("notification")) == 1
            with pytest.raises(TimeoutError):  # bob's stream gets nothing of alice's alert
                await bob_sse.until("alert:new", timeout=0.3)
        assert bob.of_type("notification") == [] and bob.of_type("alert") == []
        _, body = await rest(app.port, API)
        (only,) = body["alerts"]
        assert only["state"] == "triggered" and only["trade"]["price"] == 230.05 and only["triggered_at"]
        await wait_until(lambda: "AAPL" not in upstream_symbols(sim), what="AAPL released upstream")
        assert (await rest(app.port, "/api/stream/status"))[1]["price_alerts"]["symbols"] == 0

        status, again = await rest(app.port, f"{API}/{made['id']}", "PATCH", {"state": "armed"})
        assert (status, again["state"], again["trade"]) == (200, "armed", None)
        await wait_until(lambda: "AAPL" in upstream_symbols(sim), what="AAPL held again")
        await asyncio.sleep(0.3)
        sim.inject_trade("AAPL", 229.0, 10)
        sim.inject_trade("AAPL", 230.5, 10)
        second = await alice.expect(lambda m: m.get("type") == "notification" and m["data"]["id"] != note["id"])
        assert second["data"]["message"] == "AAPL crossed above $230.00 at $230.50"


async def test_the_websocket_alert_actions(sim, tmp_path):
    async with daemon(sim, tmp_path) as app, user_ws(app.port, ALICE) as alice, Browser.connect(app.port) as anon:
        await anon.send({"action": "alert", "op": "list"})
        assert (await anon.expect("error"))["code"] == "unauthorized"
        await alice.send({"action": "alert", "op": "create", "symbol": "TSLA", "condition": "crosses_below",
                          "price": 100})
        created = await alice.expect("alert")
        assert (created["op"], created["alert"]["symbol"], created["alert"]["price"]) == ("created", "TSLA", 100)
        await alice.send({"action": "alert", "op": "create", "symbol": "TSLA", "condition": "crosses_below"})
        err = await alice.expect("error")
        assert (err["code"], err["field"]) == ("invalid_alert", "price")
        await alice.send({"action": "alert", "op": "fly"})
        assert (await alice.expect("error"))["code"] == "invalid_alert"
        await alice.send({"action": "alert", "op": "list"})
        listed = await alice.expect("alerts")
        assert [a["id"] for a in listed["alerts"]] == [created["alert"]["id"]]
        await alice.send({"action": "alert", "op": "update", "id": created["alert"]["id"], "price": 99})
        assert (await alice.expect("alert"))["alert"]["price"] == 99
        await alice.send({"action": "alert", "op": "delete", "id": created["alert"]["id"]})
        assert (await alice.expect("alert"))["op"] == "deleted"
        await alice.send({"action": "alert", "op": "delete", "id": created["alert"]["id"]})
        assert (await alice.expect("error"))["code"] == "unknown_alert"


async def test_percent_change_against_the_previous_close(sim, tmp_path):
    async with daemon(sim, tmp_path) as app, user_ws(app.port, ALICE) as alice:
        status, made = await rest(app.port, API, "POST", {"symbol": "MSFT", "condition": "percent_change",
                                                          "percent": -3})
        assert (status, made["prev_close"]) == (201, None)  # known once the snapshot has been fetched
        await wait_until(lambda: app.alerts.book.symbols["MSFT"].prev_close, what="the previous close")
        prev = app.alerts.book.symbols["MSFT"].prev_close
        sim.inject_trade("MSFT", round(prev * 0.98, 2), 10)  # down 2 %: not yet
        sim.inject_trade("MSFT", round(prev * 0.965, 2), 10)  # down 3.5 %
        note = (await alice.expect("notification"))["data"]
        assert note["type"] == "price_alert" and note["message"].startswith("MSFT is down 3.5")
        assert f"(previous close ${prev:,.2f})" in note["message"]
        sim.inject_trade("MSFT", round(prev * 0.9, 2), 10)
        await alice.drain(0.4)
        assert len(alice.of_type("notification")) == 1


async def test_alerts_survive_a_restart(sim, tmp_path):
    async with daemon(sim, tmp_path) as app:
        status, made = await rest(app.port, API, "POST", {"symbol": "AMD", "condition": "crosses_below",
                                                          "price": 50})
        assert status == 201
    async with daemon(sim, tmp_path) as app, user_ws(app.port, ALICE) as alice:
        _, body = await rest(app.port, API)
        assert [(a["id"], a["state"]) for a in body["alerts"]] == [(made["id"], "armed")]
        await wait_until(lambda: "AMD" in upstream_symbols(sim), what="AMD held after the restart")
        await asyncio.sleep(0.3)
        sim.inject_trade("AMD", 51.0, 10)
        sim.inject_trade("AMD", 49.9, 10)
        note = (await alice.expect("notification"))["data"]
        assert note["message"] == "AMD crossed below $50.00 at $49.90"
    async with daemon(sim, tmp_path) as app:
        _, body = await rest(app.port, API)
        assert body["alerts"][0]["state"] == "triggered"  # the fire was stored: no second one after a restart
        assert app.alerts.book.alerts == {}


@pytest.fixture
async def pinned_sim():
    """A simulator whose clock stands still at 10:00 New York time on a trading day, moved by the test."""
    clock = Clock.frozen_at(ny(2026, 12, 2, 10, 0))
    async with Simulator(SimConfig(host="127.0.0.1", port=0, accounts={"KEY": "SECRET"}, rate_per_symbol=0.0,
                                   clock=clock)) as s:
        yield s


async def test_stale_fires_after_minutes_without_a_trade_in_the_session(pinned_sim, tmp_path):
    sim = pinned_sim
    async with daemon(sim, tmp_path, alert_stale_check=0.1) as app, user_ws(app.port, ALICE) as alice:
        status, made = await rest(app.port, API, "POST", {"symbol": "IBM", "condition": "stale", "minutes": 10})
        assert status == 201
        await wait_until(lambda: app.alerts.book.stale.get(made["id"]) is not None, what="the first check")
        sim.clock.set(ny(2026, 12, 2, 10, 6))
        sim.inject_trade("IBM", 150.0, 10)  # a trade at 10:06 restarts the count
        await wait_until(lambda: app.alerts.book.symbols["IBM"].last_at, what="the trade seen")
        sim.clock.set(ny(2026, 12, 2, 10, 14))
        await alice.drain(0.6)  # eight minutes since the trade: several checks, no fire
        assert alice.of_type("notification") == []
        sim.clock.set(ny(2026, 12, 2, 10, 16, 30))
        note = (await alice.expect("notification", timeout=10))["data"]
        assert note["message"] == "IBM has not traded for 10 minutes during the session (last trade $150.00)"


async def test_stale_does_not_count_outside_the_session(pinned_sim, tmp_path):
    sim = pinned_sim
    sim.clock.set(ny(2026, 12, 2, 16, 30))  # after the close
    async with daemon(sim, tmp_path, alert_stale_check=0.1) as app, user_ws(app.port, ALICE) as alice:
        status, made = await rest(app.port, API, "POST", {"symbol": "IBM", "condition": "stale", "minutes": 5})
        assert status == 201
        await wait_until(lambda: app.alerts.book.stale.get(made["id"]) is not None, what="the first check")
        sim.clock.set(ny(2026, 12, 3, 9, 0))  # overnight and pre-market: sixteen hours, none of it in session
        await alice.drain(0.6)
        assert alice.of_type("notification") == []
        sim.clock.set(ny(2026, 12, 3, 9, 36))  # six minutes into the next session
        note = (await alice.expect("notification", timeout=10))["data"]
        assert note["message"] == "IBM has not traded for 5 minutes during the session"
        assert made["id"] == note["alert_id"]


async def test_a_two_node_cluster_fires_once(sim, tmp_path, redis_server):
    users = users_file(tmp_path)
    async with contextlib.AsyncExitStack() as stack:
        apps = [await stack.enter_async_context(running(relay_config(
            sim, tmp_path / f"node{i}", redis_url=redis_server.url, node_id=f"node{i}", cluster_lease=1.0,
            users_file=users, token="", sse_port=free_port()))) for i in range(2)]
        await wait_until(lambda: sum(a.engine.is_leader for a in apps) == 1 and sim.sessions("/v2/iex") == 1,
                         timeout=15, what="one leader holding the market data session")
        leader = next(a for a in apps if a.engine.is_leader)
        follower = next(a for a in apps if a is not leader)
        ws = [await stack.enter_async_context(user_ws(a.port, ALICE)) for a in (leader, follower)]
        status, made = await rest(follower.port, API, "POST",
                                  {"symbol": "AAPL", "condition": "crosses_above", "price": 230})
        assert status == 201
        await wait_until(lambda: made["id"] in leader.alerts.book.alerts, what="the leader has the alert")
        _, listed = await rest(leader.port, API)
        assert [a["id"] for a in listed["alerts"]] == [made["id"]]
        await wait_until(lambda: "AAPL" in upstream_symbols(sim), what="AAPL held upstream")

        async def reference() -> None:
            for _ in range(50):
                sim.inject_trade("AAPL", 229.0, 1)
                with contextlib.suppress(AssertionError):
                    await wait_until(lambda: leader.alerts.book.symbols["AAPL"].last == 229.0, timeout=0.2)
                    return
            raise AssertionError("no AAPL trade reached the leader's alerts")

        await reference()
        sim.inject_trade("AAPL", 230.05, 1)
        for c in ws:
            note = (await c.expect("notification", timeout=10))["data"]
            assert note["message"] == "AAPL crossed above $230.00 at $230.05"
        sim.inject_trade("AAPL", 231.0, 1)
        for c in ws:
            await c.drain(0.5)
            assert len(c.of_type("notification")) == 1  # one notification per node's client, from one fire
        for a in apps:
            _, body = await rest(a.port, "/api/notifications/trades")
            assert [n["type"] for n in body["notifications"]] == ["price_alert"]
            _, listed = await rest(a.port, API)
            assert listed["alerts"][0]["state"] == "triggered"
        assert leader.alerts.fired == 1 and follower.alerts.fired == 1  # each node notified its own once


async def test_a_fire_reaches_the_webhook_targets_once(sim, tmp_path):
    from tests.integration.test_webhooks import TIMINGS, targets
    from tests.support.receiver import Receiver

    receiver = await Receiver().start()
    try:
        async with daemon(sim, tmp_path, timings=TIMINGS, webhooks=targets(("desk", receiver))) as app:
            sim.inject_trade("TSLA", 101.0, 1)
            status, made = await rest(app.port, API, "POST", {"symbol": "TSLA", "condition": "crosses_below",
                                                              "price": 100})
            assert status == 201
            await wait_until(lambda: app.alerts.book.symbols["TSLA"].last is not None, what="the reference")
            sim.inject_trade("TSLA", 99.0, 1)
            sim.inject_trade("TSLA", 98.0, 1)
            await wait_until(lambda: receiver.acked(), timeout=10, what="the webhook delivery")
            await asyncio.sleep(0.3)  # room for a second delivery, were there one (none is asserted below)
            (got,) = receiver.acked()
            body = orjson.loads(got.body)
            assert body["event"] == "price_alert"
            assert body["notification"]["message"] == "TSLA crossed below $100.00 at $99.00"
            assert body["notification"]["alert_id"] == made["id"]
    finally:
        await receiver.stop()


async def test_the_symbol_cap_refuses_an_alert_on_a_symbol_it_has_no_room_for(sim, tmp_path):
    async with daemon(sim, tmp_path, max_symbols=1) as app:
        status, _ = await rest(app.port, API, "POST", {"symbol": "AAPL", "condition": "crosses_above", "price": 1})
        assert status == 201
        status, body = await rest(app.port, API, "POST", {"symbol": "MSFT", "condition": "crosses_above", "price": 1})
        assert (status, body["code"]) == (409, "symbol_limit") and "cap 1" in body["message"]
        status, _ = await rest(app.port, API, "POST", {"symbol": "AAPL", "condition": "stale", "minutes": 5})
        assert status == 201  # a symbol already held takes no more room
        _, listed = await rest(app.port, API)
        assert [a["symbol"] for a in listed["alerts"]] == ["AAPL", "AAPL"]
        async with Browser.connect(app.port) as c:  # the alerts' symbol counts against a client's too
            await c.send({"action": "subscribe", "symbol": "NVDA"})
            assert (await c.expect("error"))["code"] == "symbol_limit"


async def test_a_price_already_beyond_the_level_does_not_fire_until_it_crosses(sim, tmp_path):
    """The REST snapshot says AAPL last traded at 231: an alert to cross above 230 is not fired by it, nor by a
    later trade above, only by a trade back below and then one at or above the level."""
    async with daemon(sim, tmp_path) as app, user_ws(app.port, ALICE) as alice:
        sim.inject_trade("AAPL", 231.0, 1)
        status, _ = await rest(app.port, API, "POST", {"symbol": "AAPL", "condition": "crosses_above", "price": 230})
        assert status == 201
        await wait_until(lambda: app.alerts.book.symbols["AAPL"].last == 231.0, what="the snapshot's reference")
        await wait_until(lambda: "AAPL" in upstream_symbols(sim), what="AAPL held upstream")
        sim.inject_trade("AAPL", 231.5, 1)
        await wait_until(lambda: app.alerts.book.symbols["AAPL"].last == 231.5, what="the live trade seen")
        await alice.drain(0.3)
        assert alice.of_type("notification") == []
        sim.inject_trade("AAPL", 229.9, 1)
        sim.inject_trade("AAPL", 230.0, 1)
        note = (await alice.expect("notification"))["data"]
        assert note["message"] == "AAPL crossed above $230.00 at $230.00"
