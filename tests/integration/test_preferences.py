"""Notification preferences and Broker notifications over real sockets: the daemon, the Alpaca simulator (and its
Broker API side), SSE and WebSocket clients, a webhook receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.test_broker import JWT_SECRET, broker_config, token
from tests.integration.test_notifications import call
from tests.integration.test_orders import orders_client
from tests.integration.test_webhooks import TIMINGS, scrape, targets, verify
from tests.support.receiver import Received, Receiver
from tests.support.relay import TOKEN, Browser, free_port, relay_config, running, wait_until
from tests.support.sse import sse_get
from trade_stream.simulator.broker import BrokerSim

pytestmark = pytest.mark.timeout(40)
PREFS = "/api/notifications/preferences"
EVERYWHERE = ["bell", "desktop", "sound", "email", "push", "webhooks"]
DEFAULTS = {"fills": EVERYWHERE, "rejections": EVERYWHERE, "order_events": ["bell", "webhooks"],
            "price_alerts": EVERYWHERE, "account_status": ["bell", "webhooks"], "activities": ["bell", "webhooks"]}


@pytest.fixture
async def receiver():
    r = await Receiver().start()
    yield r
    await r.stop()


def put(port: int, body: bytes, tok: str | None = TOKEN):
    return call(port, PREFS, "PUT", body, token=tok)


async def both_streams(app) -> None:
    await wait_until(lambda: app.relay.sources.default.upstream.connected and app.tradings["default"].connected,
                     what="both streams up")


async def test_preferences_round_trip_defaults_validation_and_a_restart(sim, tmp_path):
    async with running(relay_config(sim, tmp_path)) as app:
        status, body, _ = await asyncio.to_thread(call, app.port, PREFS)
        assert status == 200 and body["preferences"] == DEFAULTS
        assert body["kinds"] == list(DEFAULTS) and body["channels"] == EVERYWHERE
        status, body, _ = await asyncio.to_thread(put, app.port, b'{"activities":["bell","email"],"fills":[]}')
        assert status == 200
        assert body["preferences"] == {**DEFAULTS, "activities": ["bell", "email"], "fills": []}
        status, body, _ = await asyncio.to_thread(put, app.port, b'{"rejections":["push"]}')  # the rest stays
        assert body["preferences"]["fills"] == [] and body["preferences"]["rejections"] == ["push"]
        for raw, field in ((b'{"fill":["bell"]}', "fill:"), (b'{"fills":["bell","pager"]}', "fills: unknown channel"),
                           (b'{"fills":"bell"}', "fills: must be a list"), (b"[1]", "send {"),
                           (b"not json", "the body is not JSON")):
            status, body, _ = await asyncio.to_thread(put, app.port, raw)
            assert status == 400 and body["message"].startswith(field), (raw, body)
        status, _, _ = await asyncio.to_thread(call, app.port, PREFS, token=None)
        assert status == 401
        status, _, _ = await asyncio.to_thread(put, app.port, b'{"fills":[]}', "wrong-token")
        assert status == 401
        status, _, headers = await asyncio.to_thread(call, app.port, PREFS, "OPTIONS", token=None)
        assert status == 204 and "PUT" in headers["Access-Control-Allow-Methods"]
        status, body, headers = await asyncio.to_thread(call, app.port, PREFS, "DELETE")
        assert status == 405 and "PUT" in headers["Allow"]
    async with running(relay_config(sim, tmp_path)) as app:  # stored: a restart keeps them
        status, body, _ = await asyncio.to_thread(call, app.port, PREFS)
        assert body["preferences"] == {**DEFAULTS, "activities": ["bell", "email"], "fills": [],
                                       "rejections": ["push"]}


async def test_a_kind_off_for_the_bell_or_for_webhooks_is_not_sent_there(sim, tmp_path, receiver):
    """Other order events off everywhere, fills on the bell only: the page and the streams get the fill and the
    rejection, not the acceptances; the webhook receiver gets the rejection alone."""
    cfg = relay_config(sim, tmp_path, sse_port=free_port(), timings=TIMINGS, webhooks=targets(("desk", receiver)))
    async with running(cfg) as app:
        await both_streams(app)
        status, _, _ = await asyncio.to_thread(put, app.port, b'{"order_events":[],"fills":["bell"]}')
        assert status == 200
        cm, ws = await orders_client(app.port)
        try:
            async with sse_get(app.sse.port, "/api/stream/alerts", {"Authorization": f"Bearer {TOKEN}"}) as alerts:
                await alerts.until("connected")
                a = sim.submit_order("AAPL", "buy", 5)
                sim.fill_order(a["id"], price="187.5")
                b = sim.submit_order("TSLA", "sell", 10, type="limit", limit_price=900)
                sim.reject_order(b["id"])
                pushed = [(await ws.expect("notification"))["data"] for _ in range(2)]
                assert [(n["type"], n["kind"]) for n in pushed] == [("order_filled", "fills"),
                                                                    ("order_rejected", "rejections")]
                streamed = [(await alerts.until("alert:new")).json()["type"] for _ in range(2)]
                assert streamed == ["order_filled", "order_rejected"]
                # Pushed in the order they are stored: an acceptance pushed would have come first or second.
                assert pushed[1]["id"] - pushed[0]["id"] == 2  # the acceptance between them was stored
        finally:
            await cm.__aexit__(None, None, None)
        status, body, _ = await asyncio.to_thread(call, app.port, "/api/notifications/trades")
        assert [n["type"] for n in body["notifications"]] == ["order_rejected", "order_filled"]
        assert body["unread"] == 2
        await wait_until(lambda: receiver.acked(), what="a webhook delivery")
        totals = app.parts.channels.channel("webhooks")
        await wait_until(lambda: totals.pending == 0 and totals.sent, 10, what="the outbox drained")
        assert [verify(r)["event"] for r in receiver.seen] == ["order_rejected"]
        _, status_view = await asyncio.to_thread(lambda: call(app.port, "/api/stream/status", token=None)[:2])
        assert status_view["channels"]["webhooks"] == {"sent": 1, "failed": 0, "pending": 0, "given_up": 0,
                                                       "last_error": None}
        metrics = await asyncio.to_thread(scrape, app.port)
        assert 'trade_stream_channel_sent_total{channel="webhooks"} 1.0' in metrics
        assert 'trade_stream_channel_pending{channel="webhooks"} 0.0' in metrics


async def test_a_notification_for_named_users_reaches_them_alone_and_webhooks_by_their_preference(sim, tmp_path,
                                                                                                receiver):
    """The entry point price alerts use: ``notify(…, users=[…])``. Alice and Bob see the same account; a
    notification for Alice reaches Alice's WebSocket, SSE stream and list, never Bob's, and no webhook target,
    since Alice turned webhooks off for its kind; Bob's (defaults) reaches the receiver, without ``users``."""
    cfg = relay_config(sim, tmp_path, sse_port=free_port(), timings=TIMINGS, jwt_secret=JWT_SECRET,
                       webhooks=targets(("desk", receiver)))
    alice, bob = token("alice", ["default"]), token("bob", ["default"])
    async with running(cfg) as app:
        await both_streams(app)
        status, _, _ = await asyncio.to_thread(put, app.port, b'{"price_alerts":["bell","push"]}', alice)
        assert status == 200
        async with Browser.connect(app.port) as a_ws, Browser.connect(app.port) as b_ws, \
                sse_get(app.sse.port, "/api/stream/alerts", {"Authorization": f"Bearer {bob}"}) as b_sse, \
                sse_get(app.sse.port, "/api/stream/alerts", {"Authorization": f"Bearer {alice}"}) as a_sse:
            for ws, tok in ((a_ws, alice), (b_ws, bob)):
                await ws.send({"action": "auth", "token": tok})
                await ws.expect("authenticated")
                await ws.send({"action": "subscribe", "channel": "orders"})
                await ws.expect("orders_snapshot")
            await a_sse.until("connected")
            await b_sse.until("connected")
            fields = {"type": "price_alert", "level": "warning", "symbol": "AAPL",
                      "message": "AAPL crossed above $230.00 at $230.05"}
            notifier = app.parts.notifier
            first = notifier.notify(fields, users=["alice"], source="alert-1")
            assert first is not None and first["kind"] == "price_alerts" and first["account"] is None
            assert notifier.notify(fields, users=["alice"], source="alert-1") is None  # one source, once
            notifier.notify({**fields, "message": "AAPL crossed above $231.00 at $231.10"}, users=["bob"],
                            source="alert-2")
            got = await a_ws.expect("notification")
            assert got["data"]["message"] == "AAPL crossed above $230.00 at $230.05" and got["unread"] == 1
            assert (await a_sse.until("alert:new")).json()["id"] == first["id"]
            assert (await b_ws.expect("notification"))["data"]["message"].startswith("AAPL crossed above $231")
            assert (await b_sse.until("alert:new")).json()["message"].startswith("AAPL crossed above $231")
            await a_ws.drain(0.2)
            assert len(a_ws.of_type("notification")) == 1 and len(b_ws.of_type("notification")) == 1
        for tok, message in ((alice, "AAPL crossed above $230.00 at $230.05"),
                             (bob, "AAPL crossed above $231.00 at $231.10")):
            status, body, _ = await asyncio.to_thread(call, app.port, "/api/notifications/trades", "GET", None, tok)
            assert [n["message"] for n in body["notifications"]] == [message] and body["unread"] == 1
        await wait_until(lambda: receiver.acked(), what="bob's delivery")
        totals = app.parts.channels.channel("webhooks")
        await wait_until(lambda: totals.pending == 0, what="the outbox drained")
        (delivered,) = [verify(r) for r in receiver.seen]
        assert delivered["event"] == "price_alert" and delivered["notification"]["message"].endswith("$231.10")
        assert "users" not in delivered["notification"]


def acked_once(receiver: Receiver) -> dict[str, Received]:
    """The receiver's acknowledged deliveries, one per delivery id."""
    return {r.headers["webhook-id"]: r for r in receiver.acked()}


async def test_broker_account_status_activities_and_trade_reasons_become_notifications(sim, tmp_path, receiver):
    bsim = await BrokerSim(accounts=2, seed=5, heartbeat=0.3).start()
    try:
        mine, other = list(bsim.accounts)
        cfg = broker_config(sim, bsim, tmp_path, free_port(), timings=TIMINGS, webhooks=targets(("desk", receiver)))
        async with running(cfg) as app:
            await wait_until(lambda: all(bsim.listening(s) == 1 for s in ("trades", "accounts", "activities")),
                             10, "the three Broker streams up")
            alice = token("alice", [mine])
            async with Browser.connect(app.port) as ws, \
                    sse_get(app.sse.port, "/api/stream/alerts", {"Authorization": f"Bearer {alice}"}) as alerts:
                await alerts.until("connected")
                await ws.send({"action": "auth", "token": alice})
                await ws.expect("authenticated")
                await ws.send({"action": "subscribe", "channel": "orders"})
                await wait_until(lambda: app.broker.clients, what="alice watching")
                order = {"id": "b-order-1", "symbol": "MSFT", "side": "sell", "qty": "2", "status": "canceled"}
                short = mine[:8] + "\u2026"
                expected = [("account_status", f"Account {short} is now ACTIVE"),
                            ("activity", "Dividend: $12.40 from AAPL"),
                            ("order_cancelled", "Sell 2 MSFT cancelled: broker halted the symbol")]
                bsim.set_status(other, "ACCOUNT_CLOSED")  # not hers: she never hears of it
                # One at a time: the three streams are three connections, in no order among each other.
                streamed = []
                for emit in (lambda: bsim.set_status(mine, "ACTIVE"),
                             lambda: bsim.dividend(mine, "AAPL", per_share="1.24", qty=10),
                             lambda: bsim.publish_raw("trades", {
                                 "account_id": mine, "at": "2026-01-02T15:00:00Z", "event": "canceled",
                                 "event_id": "01JGZZZZZZZZZZZZZZZZZZZZZZ", "order": order,
                                 "reason": "broker halted the symbol"})):
                    emit()
                    streamed.append((await alerts.until("alert:new", timeout=10)).json())
                assert [(n["type"], n["message"]) for n in streamed] == expected
                assert {n["account"] for n in streamed} == {mine}
                assert streamed[2]["reason"] == "broker halted the symbol"
                assert [n["kind"] for n in streamed] == ["account_status", "activities", "order_events"]
                pushed = [(await ws.expect("notification", timeout=10))["data"] for _ in range(3)]
                assert [(n["type"], n["message"]) for n in pushed] == expected
            status, body, _ = await asyncio.to_thread(call, app.port, "/api/notifications/trades?limit=10", "GET",
                                                      None, alice)
            assert status == 200 and [n["message"] for n in body["notifications"]] == [m for _, m in expected][::-1]
            # The webhook target (every type, every account) gets all four, the closed account's too.
            # At least once per target: an attempt that timed out here but reached the receiver is sent again under
            # the same id, so deliveries are counted by id.
            await wait_until(lambda: len(acked_once(receiver)) == 4, 10, "four webhook deliveries")
            got = list(acked_once(receiver).values())
            events = sorted((verify(r)["event"], verify(r)["notification"]["message"]) for r in got)
            assert events == sorted([*expected, ("account_status", f"Account {other[:8]}\u2026 is now ACCOUNT_CLOSED")])
            closed = next(verify(r)["notification"] for r in got if verify(r)["notification"]["account"] == other)
            assert closed["level"] == "warning" and "users" not in closed
    finally:
        await bsim.stop()
