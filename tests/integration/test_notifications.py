"""Trade notifications end to end: simulator order events → stored notifications → WebSocket, REST and SSE."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

import orjson
import pytest

from tests.integration.test_orders import orders_client
from tests.support.relay import TOKEN
from tests.support.sse import sse_get

pytestmark = pytest.mark.timeout(30)
API = "/api/notifications/trades"


@pytest.fixture
def app(app_sse):
    return app_sse


def call(port: int, path: str, method: str = "GET", body: bytes | None = None, token: str | None = TOKEN,
         headers: dict[str, str] | None = None) -> tuple[int, dict, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            raw = resp.read()
            return resp.status, orjson.loads(raw) if raw else {}, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, orjson.loads(raw) if raw else {}, dict(exc.headers)


async def test_each_order_event_becomes_a_notification_on_ws_and_rest(sim, app):
    cm, c = await orders_client(app.port)
    try:
        a = sim.submit_order("AAPL", "buy", 100, type="limit", limit_price=150.25)
        sim.fill_order(a["id"], qty=40, price=150.1)
        sim.fill_order(a["id"], qty=60, price="150.35")
        b = sim.submit_order("TSLA", "sell", 10, type="limit", limit_price=900)
        sim.reject_order(b["id"])
        for action in (sim.cancel_order, sim.expire_order):
            action(sim.submit_order("MSFT", "buy", "0.5", type="limit", limit_price=400)["id"])
        d = sim.submit_order("NVDA", "buy", 3, type="limit", limit_price=100)
        replacement = sim.replace_order(d["id"], qty=4)
        sim.emit_order_event(replacement["id"], "done_for_day")
        expected = [
            ("order_accepted", "Buy 100 AAPL accepted"),
            ("order_partial_fill", "Buy 40 of 100 AAPL partially filled at $150.10"),
            ("order_filled", "Buy 100 AAPL filled at $150.25"),
            ("order_accepted", "Sell 10 TSLA accepted"),
            ("order_rejected", "Sell 10 TSLA rejected"),
            ("order_accepted", "Buy 0.5 MSFT accepted"),
            ("order_cancelled", "Buy 0.5 MSFT cancelled"),
            ("order_accepted", "Buy 0.5 MSFT accepted"),
            ("order_expired", "Buy 0.5 MSFT expired"),
            ("order_accepted", "Buy 3 NVDA accepted"),
            ("order_replaced", "Buy 3 NVDA replaced"),
            ("order_accepted", "Buy 4 NVDA accepted"),
            ("order_other", "Buy 4 NVDA: done for day"),
        ]
        got = [await c.expect("notification") for _ in expected]
        assert [(m["data"]["type"], m["data"]["message"]) for m in got] == expected
        fill = got[2]["data"]
        assert (fill["trade_id"], fill["symbol"], fill["action"], fill["status"]) == (a["id"], "AAPL", "BUY", "filled")
        assert (fill["fill_price"], fill["quantity"], fill["account"], fill["read"]) == ("150.25", "100", "default",
                                                                                         False)
        assert fill["timestamp"] and got[4]["data"]["level"] == "warning" and fill["level"] == "info"
        ids = [m["data"]["id"] for m in got]
        assert ids == sorted(ids) and len(set(ids)) == len(ids) and got[-1]["unread"] == len(expected)
        # each notification comes right after its order_update
        assert c.seen.index(got[0]) == c.seen.index(next(m for m in c.seen if m.get("type") == "order_update")) + 1

        status, body, _ = await asyncio.to_thread(call, app.port, f"{API}?limit=5")
        assert status == 200 and body["unread"] == len(expected)
        assert [n["id"] for n in body["notifications"]] == ids[::-1][:5]  # newest first, limited
        status, body, _ = await asyncio.to_thread(call, app.port, f"{API}?limit=1000&unread_only=true")
        assert status == 200 and len(body["notifications"]) == len(expected) and body["limit"] == 200
    finally:
        await cm.__aexit__(None, None, None)


async def test_read_state_over_rest_is_pushed_to_every_open_tab(sim, app):
    cm1, tab1 = await orders_client(app.port)
    cm2, tab2 = await orders_client(app.port)
    try:
        o = sim.submit_order("AAPL", "buy", 1)
        sim.fill_order(o["id"], price=10)
        first, second = (await tab1.expect("notification"))["data"], (await tab1.expect("notification"))["data"]
        status, body, _ = await asyncio.to_thread(call, app.port, f"{API}/{first['id']}/read", "POST")
        assert (status, body["ids"], body["unread"]) == (200, [first["id"]], 1)
        pushed = await tab2.expect("notifications_read")
        assert (pushed["ids"], pushed["all"], pushed["unread"]) == ([first["id"]], False, 1)
        status, body, _ = await asyncio.to_thread(call, app.port, f"{API}?unread_only=true")
        assert [n["id"] for n in body["notifications"]] == [second["id"]]

        status, body, _ = await asyncio.to_thread(call, app.port, f"{API}/read", "POST", b'{"all":true}')
        assert (status, body["ids"], body["unread"]) == (200, [second["id"]], 0)
        for tab in (tab1, tab2):
            pushed = await tab.expect(lambda m: m.get("type") == "notifications_read" and m["all"])
            assert pushed["unread"] == 0
        status, body, _ = await asyncio.to_thread(call, app.port, f"{API}/read", "POST",
                                                  orjson.dumps({"ids": [first["id"], second["id"]]}))
        assert (status, body["ids"]) == (200, [])  # already read: nothing changes

        for bad in (b"{", b"[]", b'{"ids":[]}', b'{"ids":["1"]}', b'{"ids":[1],"all":true}', b'{"all":false}'):
            status, body, _ = await asyncio.to_thread(call, app.port, f"{API}/read", "POST", bad)
            assert status == 400 and body["error"] == "Bad Request", bad
        status, _, _ = await asyncio.to_thread(call, app.port, f"{API}/read", "POST", b"x" * 70_000)
        assert status == 413
    finally:
        await cm1.__aexit__(None, None, None)
        await cm2.__aexit__(None, None, None)


async def test_rest_needs_the_token_and_answers_preflight(sim, app):
    for path, method, body in ((API, "GET", None), (f"{API}/1/read", "POST", None),
                               (f"{API}/read", "POST", b'{"all":true}')):
        status, answer, headers = await asyncio.to_thread(call, app.port, path, method, body, None)
        assert status == 401 and answer["error"] == "Unauthorized" and headers["WWW-Authenticate"] == "Bearer"
        status, _, _ = await asyncio.to_thread(call, app.port, path, method, body, "wrong-token")
        assert status == 401
    origin = {"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"}
    status, _, headers = await asyncio.to_thread(call, app.port, f"{API}/read", "OPTIONS", None, None, origin)
    assert status == 204 and "POST" in headers["Access-Control-Allow-Methods"]
    assert "Authorization" in headers["Access-Control-Allow-Headers"]
    assert headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    status, _, headers = await asyncio.to_thread(call, app.port, API, "POST", b"{}")
    assert status == 405 and headers["Allow"] == "GET, OPTIONS"
    status, _, _ = await asyncio.to_thread(call, app.port, f"{API}/x/read", "POST")
    assert status == 404
    status, _, _ = await asyncio.to_thread(call, app.port, "/", "POST", b'{"a":1}')
    assert status == 405  # a body on another path: a clear answer, not a dropped connection


async def test_sse_alerts_stream_new_read_and_replay(sim, app):
    sse, auth = app.sse.port, {"Authorization": f"Bearer {TOKEN}"}
    async with sse_get(sse, "/api/stream/alerts", auth) as alerts:
        assert alerts.status == 200 and alerts.headers["content-type"].startswith("text/event-stream")
        await alerts.until("connected")
        o = sim.submit_order("TSLA", "sell", 10, type="limit", limit_price=900)
        sim.reject_order(o["id"])
        new, rejected = await alerts.until("alert:new"), await alerts.until("alert:new")
        data = rejected.json()
        assert (data["type"], data["level"], data["message"]) == ("order_rejected", "warning", "Sell 10 TSLA rejected")
        assert rejected.id == str(data["id"]) and int(new.id) < int(rejected.id)
        await asyncio.to_thread(call, app.port, f"{API}/read", "POST", b'{"all":true}')
        read = (await alerts.until("alert:read")).json()
        assert read["all"] is True and read["unread"] == 0
    async with sse_get(sse, "/api/stream/alerts", {**auth, "Last-Event-ID": new.id,
                                                   "Accept-Encoding": "gzip"}) as again:
        assert again.gzip
        replayed = await again.until("alert:new")
        assert replayed.id == rejected.id and replayed.json()["read"] is True
    async with sse_get(sse, "/api/stream/alerts", {**auth, "Last-Event-ID": "999999"}) as ahead:
        assert "unknown" in (await ahead.until("reset")).json()["reason"]
    async with sse_get(sse, "/api/stream/alerts") as anonymous:
        assert anonymous.status == 401
    async with sse_get(sse, "/api/stream/alerts", method="OPTIONS") as preflight:
        assert preflight.status == 204
