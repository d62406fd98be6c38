"""App channels on the SSE side-port over real sockets (daemon + simulator): /api/stream/strategies/{id},
/api/stream/ai-decisions, app alerts and agent-status on /api/stream/alerts and /api/stream/trading; user scoping
on every path, Last-Event-ID replay and reset, compound ids, the per-user buffer and its cleanup, error alerts
past ``throttle_ms``, and POST /api/stream/test on both ports."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest

from tests.support.relay import Browser, free_port, http_get, relay_config, running, wait_until
from tests.support.sse import sse_get
from trade_stream.core.event_ids import channel_positions, is_compound, parse_compound
from trade_stream.edges.identity import UserRecord, hash_token, new_token, write_users

pytestmark = pytest.mark.timeout(60)
KEY = "publish-key-0123456789abcdef"
TOKENS = {name: new_token() for name in ("alice", "bob", "carol", "root")}
NOT_FOUND = {"error": "Not Found", "message": "Strategy not found", "statusCode": 404}


def tok(name: str) -> str:
    return TOKENS[name][1]


def auth(name: str, **more: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok(name)}", **more}


def users_file(path) -> str:
    write_users(str(path), [
        UserRecord("alice", hash_token(tok("alice")), ("*",), False, TOKENS["alice"][0]),
        UserRecord("bob", hash_token(tok("bob")), ("*",), False, TOKENS["bob"][0]),
        UserRecord("carol", hash_token(tok("carol")), ("*",), False, TOKENS["carol"][0], ("app:*",)),
        UserRecord("root", hash_token(tok("root")), ("*",), True, TOKENS["root"][0]),
    ])
    return str(path)


@asynccontextmanager
async def daemon(sim, tmp_path, **overrides: Any):
    cfg = relay_config(sim, tmp_path, sse_port=free_port(), publish_key=KEY,
                       users_file=users_file(tmp_path / "users.toml"), **overrides)
    async with running(cfg) as app:
        await wait_until(lambda: app.tradings["default"].connected, what="the trading stream")
        yield app


@pytest.fixture
async def app(sim, tmp_path):
    async with daemon(sim, tmp_path) as a:
        yield a


async def post(port: int, path: str, body: Any = None, token: str | None = KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=5) as client:
        return await client.post(f"http://127.0.0.1:{port}{path}", json=body, headers=headers)


async def publish(app, channel: str, event: str, data: dict[str, Any], users: list[str] | None = None) -> str:
    body: dict[str, Any] = {"channel": channel, "event": event, "data": data}
    if users is not None:
        body["users"] = users
    resp = await post(app.port, "/api/publish", body)
    assert resp.status_code == 200, resp.text
    return resp.json()["id"]


def alert(n: int, level: str = "info") -> dict[str, Any]:
    return {"alertId": f"a{n}", "level": level, "message": f"alert {n}", "timestamp": "2026-01-02T10:30:00Z"}


async def quiet(r, seconds: float = 0.4) -> None:
    """Read whatever else comes until the stream is quiet."""
    with contextlib.suppress(TimeoutError):
        while True:
            await r.next(seconds)


def body(e) -> dict[str, Any]:
    return e.json() if e.data.startswith("{") else {}


def named(r, *names: str) -> list:
    return [e for e in r.events if e.event in names]


async def test_each_channel_stream_sends_the_event_name_data_with_channel_and_the_event_id(app):
    await publish(app, "strategies:s1", "strategy:update", {"status": "started"})
    port = app.sse.port
    async with sse_get(port, "/api/stream/strategies/s1", auth("alice")) as s, \
            sse_get(port, "/api/stream/ai-decisions", auth("alice")) as a:
        for r, kind in ((s, "strategies"), (a, "ai-decisions")):
            assert r.status == 200 and r.headers["content-type"].startswith("text/event-stream")
            assert (await r.next()).event == "retry"
            assert (await r.until("connected")).json()["client_id"].startswith(f"alice-{kind}-")
        sid = await publish(app, "strategies:s1", "strategy:update", {"signal": "buy", "symbol": "AAPL"})
        aid = await publish(app, "ai-decisions", "ai:decision", {"symbol": "MSFT", "action": "hold"})
        got = await s.until("strategy:update")
        assert got.id == sid and got.json() == {"signal": "buy", "symbol": "AAPL", "channel": "strategies:s1"}
        got = await a.until("ai:decision")
        assert got.id == aid and got.json() == {"symbol": "MSFT", "action": "hold", "channel": "ai-decisions"}
        _, metrics = await asyncio.to_thread(http_get, app.sse.port, "/api/stream/metrics")
        assert metrics["connections"]["strategies"] == 1 and metrics["connections"]["ai-decisions"] == 1


async def test_a_strategy_is_404_unless_its_history_holds_an_event_the_user_may_see(app):
    await publish(app, "strategies:bobs", "strategy:update", {"x": 1}, users=["bob"])
    await publish(app, "strategies:open", "strategy:update", {"x": 2})
    cases = [("alice", "/api/stream/strategies/nothing"),  # no event at all
             ("alice", "/api/stream/strategies/bobs"),  # only bob's
             ("carol", "/api/stream/strategies/open"),  # carol may see app:* only: existence must not leak
             ("alice", "/api/stream/strategies/bad%20id"), ("alice", "/api/stream/strategies/"),
             ("alice", "/api/stream/strategies")]
    for user, path in cases:
        async with sse_get(app.sse.port, path, auth(user)) as r:
            assert r.status == 404, (user, path)
            assert orjson.loads(r.body) == NOT_FOUND, (user, path)
    async with sse_get(app.sse.port, "/api/stream/strategies/bobs", auth("bob")) as r:
        assert r.status == 200
    async with sse_get(app.sse.port, "/api/stream/strategies/open") as r:
        assert r.status == 401  # no credential: 401 before anything is looked up


async def test_a_user_never_sees_anothers_addressed_events_on_any_sse_path(app):
    await publish(app, "strategies:s1", "strategy:update", {"seed": True})
    paths = {"/api/stream/strategies/s1": "strategies:s1", "/api/stream/ai-decisions": "ai-decisions",
             "/api/stream/alerts": "alerts", "/api/stream/trading": "agent-status"}
    extra = {"/api/stream/alerts": "agent-status"}
    port = app.sse.port
    async with contextlib.AsyncExitStack() as stack:
        streams = {}
        for path in paths:
            for user in ("alice", "bob"):
                streams[path, user] = r = await stack.enter_async_context(sse_get(port, path, auth(user)))
                await r.until("connected")
        await wait_until(lambda: sum(len(s) for s in app.relay.channels.subs.values()) == 10,
                         what="every stream on its channels")
        for channel in [*paths.values(), *extra.values()]:
            event = "alert:new" if channel == "alerts" else "update"
            data = alert(1) if channel == "alerts" else {}
            for user in ("alice", "bob"):
                await publish(app, channel, event, {**data, "for": user}, users=[user])
            await publish(app, channel, event, {**data, "for": "everyone"})
        for (path, user), r in streams.items():
            channels = [paths[path], *([extra[path]] if path in extra else [])]
            for channel in channels:
                while not [e for e in r.events if body(e).get("for") == "everyone"
                           and body(e).get("channel") == channel]:
                    await r.next()
            seen = [body(e) for e in r.events if "for" in body(e)]
            assert {(d["channel"], d["for"]) for d in seen} == {(c, f) for c in channels for f in (user, "everyone")}, \
                (path, user)


async def test_last_event_id_replays_what_was_missed_in_order_and_too_old_is_a_reset(sim, tmp_path):
    async with daemon(sim, tmp_path, channel_history=3) as app:
        port = app.sse.port
        async with sse_get(port, "/api/stream/ai-decisions", auth("alice")) as r:
            ids = [await publish(app, "ai-decisions", "ai:decision", {"n": n}) for n in range(2)]
            got = [await r.until("ai:decision") for _ in ids]
            assert [e.id for e in got] == ids
        missed = [await publish(app, "ai-decisions", "ai:decision", {"n": n}) for n in (2, 3)]
        async with sse_get(port, "/api/stream/ai-decisions", auth("alice", **{"Last-Event-ID": ids[-1]})) as r:
            again = [await r.until("ai:decision") for _ in missed]
            assert [(e.id, e.json()["n"]) for e in again] == list(zip(missed, (2, 3), strict=True))
            live = await publish(app, "ai-decisions", "ai:decision", {"n": 4})
            assert (await r.until("ai:decision")).id == live
            await quiet(r)
            assert [e.id for e in named(r, "ai:decision")] == [*missed, live]  # nothing twice
        # ids[0] is past the channel's history of 3 now; garbage was never an id
        for last in (ids[0], "garbage"):
            async with sse_get(port, f"/api/stream/ai-decisions?lastEventId={last}", auth("alice")) as r:
                reset = await r.until("reset")
                assert reset.json()["channel"] == "ai-decisions" and reset.id is None
                live = await publish(app, "ai-decisions", "ai:decision", {"n": 9})
                assert (await r.until("ai:decision")).id == live


async def test_alerts_carry_notifications_and_both_channels_under_one_compound_id_that_resumes_each(sim, app):
    port = app.sse.port
    async with sse_get(port, "/api/stream/alerts", auth("alice")) as r:
        await r.until("connected")
        await wait_until(lambda: len(app.relay.channels.subs.get("alerts", {})) == 1, what="alerts followed")
        await publish(app, "alerts", "alert:new", alert(1))
        a1 = await r.until("alert:new")
        assert a1.json() == {**alert(1), "channel": "alerts"}
        await publish(app, "agent-status", "agent:status", {"agent": "planner", "state": "up"})
        s1 = await r.until("agent:status")
        order = sim.submit_order("AAPL", "buy", 1)
        sim.fill_order(order["id"], price=10)
        note = await wait_for_note(r, "order_filled")
    assert is_compound(note.id)
    assert set(channel_positions(note.id)) == {"alerts", "agent-status"}
    assert channel_positions(note.id)["agent-status"] == channel_positions(s1.id)["agent-status"]
    # away: one of each source
    a2 = await publish(app, "alerts", "alert:new", alert(2))
    s2 = await publish(app, "agent-status", "agent:status", {"agent": "planner", "state": "down"})
    order = sim.submit_order("MSFT", "buy", 1)
    sim.fill_order(order["id"], price=20)
    seen = parse_compound(note.id)["notifications"].n
    await wait_until(lambda: (app.parts.notifier.last_id() or 0) >= seen + 2, what="MSFT's two notifications")
    async with sse_get(port, "/api/stream/alerts", auth("alice", **{"Last-Event-ID": note.id})) as r:
        await quiet(r, 0.6)
        alerts = [e for e in named(r, "alert:new") if e.json().get("channel") == "alerts"]
        notes = [e for e in named(r, "alert:new") if "channel" not in e.json()]
        assert [e.json()["alertId"] for e in alerts] == ["a2"]
        assert channel_positions(alerts[0].id)["alerts"] == a2
        assert [e.json()["state"] for e in named(r, "agent:status")] == ["down"]
        assert channel_positions(named(r, "agent:status")[0].id)["agent-status"] == s2
        assert [n.json()["symbol"] for n in notes if n.json().get("type") == "order_filled"] == ["MSFT"]
        assert not named(r, "reset")


async def wait_for_note(r, kind: str):
    while True:
        ev = await r.until("alert:new")
        if ev.json().get("type") == kind and "channel" not in ev.json():
            return ev


async def test_agent_status_rides_on_the_trading_stream_and_its_compound_id_resumes_it(sim, app):
    port = app.sse.port
    async with sse_get(port, "/api/stream/trading", auth("alice")) as r:
        await r.until("position:update")
        await wait_until(lambda: len(app.relay.channels.subs.get("agent-status", {})) == 1, what="subscribed")
        first = await publish(app, "agent-status", "agent:status", {"agent": "a", "state": "up"})
        got = await r.until("agent:status")
        assert got.json() == {"agent": "a", "state": "up", "channel": "agent-status"}
        assert channel_positions(got.id) == {"agent-status": first}
        order = sim.submit_order("AAPL", "buy", 1)
        update = await r.until("order:update")
        assert channel_positions(update.id) == {"agent-status": first} and "default" in parse_compound(update.id)
    missed = await publish(app, "agent-status", "agent:status", {"agent": "a", "state": "down"})
    sim.fill_order(order["id"], price=10)
    await wait_until(lambda: app.stats.order_events >= 2, what="the fill journaled")
    async with sse_get(port, "/api/stream/trading", auth("alice", **{"Last-Event-ID": update.id})) as r:
        await quiet(r, 0.6)
        assert [e.id for e in named(r, "agent:status")] != [] and \
            channel_positions(named(r, "agent:status")[0].id)["agent-status"] == missed
        assert [e.json()["event"] for e in named(r, "order:update")] == ["fill"]
        assert not named(r, "reset")


async def test_a_new_connection_without_an_id_gets_its_users_buffer_first_then_live(app):
    port = app.sse.port
    async with sse_get(port, "/api/stream/ai-decisions", auth("alice")) as r:
        await r.until("connected")
        sent = [await publish(app, "ai-decisions", "ai:decision", {"n": n}) for n in range(3)]
        await publish(app, "ai-decisions", "ai:decision", {"n": "bob's"}, users=["bob"])
        assert [(await r.until("ai:decision")).id for _ in sent] == sent
    async with sse_get(port, "/api/stream/ai-decisions", auth("alice")) as r, \
            sse_get(port, "/api/stream/ai-decisions", auth("bob")) as b:
        replayed = [await r.until("ai:decision") for _ in sent]
        assert [e.id for e in replayed] == sent and [e.json()["n"] for e in replayed] == [0, 1, 2]
        live = await publish(app, "ai-decisions", "ai:decision", {"n": 3})
        assert (await r.until("ai:decision")).id == live
        await quiet(r)
        assert [e.id for e in named(r, "ai:decision")] == [*sent, live]
        # bob's buffer holds only what bob was sent: nothing (he had no connection then)
        assert (await b.until("ai:decision")).id == live
    # another stream of alice's has its own buffer
    await publish(app, "strategies:s9", "strategy:update", {})
    async with sse_get(port, "/api/stream/strategies/s9", auth("alice")) as r:
        await r.until("connected")
        await quiet(r)
        assert not named(r, "ai:decision", "strategy:update")


async def test_an_event_two_tabs_got_is_buffered_once_and_no_position_names_anothers_event(app):
    port = app.sse.port
    await publish(app, "agent-status", "agent:status", {"state": "up"})
    async with sse_get(port, "/api/stream/alerts", auth("alice")) as tab1, \
            sse_get(port, "/api/stream/alerts?throttle_ms=1000", auth("alice")) as tab2:
        for tab in (tab1, tab2):
            await tab.until("connected")
        await wait_until(lambda: len(app.relay.channels.subs.get("alerts", {})) == 2, what="both tabs")
        busy = await publish(app, "agent-status", "agent:status", {"state": "busy"})
        for tab in (tab1, tab2):
            assert (await tab.until("agent:status")).json()["state"] == "busy"  # tab2: the first of its window
        for n in range(2):  # tab1 writes them at once, tab2 when its window ends: after tab1 recorded both
            await publish(app, "alerts", "alert:new", alert(n))
        for tab in (tab1, tab2):
            got = [await tab.until("alert:new") for _ in range(2)]
            assert [e.json()["alertId"] for e in got] == ["a0", "a1"]
            assert channel_positions(got[-1].id)["agent-status"] == busy
        assert app.sse.buffers.held(("alice", "alerts")) == 3  # busy, a0, a1: once each
    await publish(app, "agent-status", "agent:status", {"state": "bob's"}, users=["bob"])
    async with sse_get(port, "/api/stream/alerts", auth("alice")) as tab3:
        replayed = [await tab3.next() for _ in range(5)][2:]  # after retry and connected
        assert [(e.event, body(e).get("alertId", body(e).get("state"))) for e in replayed] == \
            [("agent:status", "busy"), ("alert:new", "a0"), ("alert:new", "a1")]
        await wait_until(lambda: len(app.relay.channels.subs.get("alerts", {})) == 1, what="tab3 followed")
        await publish(app, "alerts", "alert:new", alert(2))
        live = await tab3.until("alert:new")
        assert live.json()["alertId"] == "a2"
        assert channel_positions(live.id)["agent-status"] == busy  # not bob's event, the newest alice may see


async def test_a_users_buffer_is_dropped_after_the_setting_once_their_last_connection_closed(sim, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="trade_stream.edges.sse")
    async with daemon(sim, tmp_path, sse_user_buffer=2, sse_user_buffer_ttl=0.3) as app:
        port = app.sse.port
        async with sse_get(port, "/api/stream/alerts", auth("alice")) as r:
            await r.until("connected")
            await wait_until(lambda: len(app.relay.channels.subs.get("alerts", {})) == 1, what="alerts followed")
            sent = [await publish(app, "alerts", "alert:new", alert(n)) for n in range(3)]
            for _ in sent:
                await r.until("alert:new")
            assert app.sse.buffers.held(("alice", "alerts")) == 2  # bounded by the setting
        await wait_until(lambda: not app.sse.buffers.buffers, what="the buffer dropped")
        assert any("sse_user_buffer_dropped user=alice stream=alerts events=2" in m for m in caplog.messages)
        async with sse_get(port, "/api/stream/alerts", auth("alice")) as r:
            await r.until("connected")
            await quiet(r)
            assert not named(r, "alert:new")


async def test_an_error_alert_is_not_held_by_throttle_ms_and_keeps_the_order(app, caplog):
    caplog.set_level(logging.INFO, logger="trade_stream.edges.sse")
    async with sse_get(app.sse.port, "/api/stream/alerts?throttle_ms=60000", auth("alice")) as r:
        await r.until("connected")
        await wait_until(lambda: len(app.relay.channels.subs.get("alerts", {})) == 1, what="alerts followed")
        await publish(app, "alerts", "alert:new", alert(1))
        assert (await r.until("alert:new")).json()["alertId"] == "a1"  # the first of a window goes at once
        await publish(app, "alerts", "alert:new", alert(2))  # held for the window (a minute)
        with pytest.raises(TimeoutError):
            await r.until("alert:new", timeout=0.5)
        await publish(app, "alerts", "alert:new", alert(3, "error"))
        got = [await r.until("alert:new", timeout=5) for _ in range(2)]
        assert [e.json()["alertId"] for e in got] == ["a2", "a3"]  # at once, with what was held before it
    assert any("alert_delivered level=error alert_id=a3 user=alice" in m for m in caplog.messages)


async def test_an_alert_must_have_the_alert_shape(app):
    for data in ({}, {**alert(1), "level": "fatal"}, {**alert(1), "alertId": 7}, {"message": "m"}):
        resp = await post(app.port, "/api/publish", {"channel": "alerts", "event": "alert:new", "data": data})
        assert resp.status_code == 400, data
        assert "alertId" in resp.json()["message"] or "level" in resp.json()["message"]


async def test_post_stream_test_reaches_every_open_stream_of_every_user_on_both_ports(app):
    await publish(app, "strategies:s1", "strategy:update", {})
    port = app.sse.port
    async with sse_get(port, "/api/stream/ai-decisions", auth("alice")) as a1, \
            sse_get(port, "/api/stream/alerts", auth("alice")) as a2, \
            sse_get(port, "/api/stream/strategies/s1", auth("bob")) as b1, \
            sse_get(port, "/api/stream/trading", auth("bob")) as b2, \
            Browser.connect(app.port) as ws:
        await ws.expect("welcome")
        streams = (a1, a2, b1, b2)
        for r in streams:
            await r.until("connected")
        for target in (app.port, port):
            resp = await post(target, "/api/stream/test", token=tok("root"))
            assert resp.status_code == 200
            assert resp.json() == {"sent": 5, "sse": 4, "websocket": 1}
            for r in streams:
                got = await r.until("test")
                assert got.id is None and set(got.json()) == {"message", "timestamp"}
            msg = await ws.expect("test")
            assert set(msg) == {"type", "message", "timestamp"}
        resp = await post(port, "/api/stream/test", token=KEY)  # the publish key may too
        assert resp.status_code == 200 and resp.json()["sse"] == 4
        for target in (app.port, port):
            assert (await post(target, "/api/stream/test", token=tok("alice"))).status_code == 403
            assert (await post(target, "/api/stream/test", token=None)).status_code == 401
        for r in streams:
            await quiet(r, 0.3)
            assert len(named(r, "test")) == 3  # the refused ones sent nothing


async def test_a_channel_position_past_the_history_on_alerts_is_a_reset_then_live(sim, tmp_path):
    async with daemon(sim, tmp_path, channel_history=2) as app:
        port = app.sse.port
        async with sse_get(port, "/api/stream/alerts", auth("alice")) as r:
            await r.until("connected")
            await wait_until(lambda: len(app.relay.channels.subs.get("alerts", {})) == 1, what="alerts followed")
            await publish(app, "alerts", "alert:new", alert(0))
            seen = await r.until("alert:new")
        for n in range(1, 4):  # while away: three more, so the history of 2 no longer holds a0
            await publish(app, "alerts", "alert:new", alert(n))
        async with sse_get(port, "/api/stream/alerts", auth("alice", **{"Last-Event-ID": seen.id})) as r:
            reset = await r.until("reset")
            assert reset.json()["channel"] == "alerts" and reset.id is None
            await publish(app, "alerts", "alert:new", alert(9))
            live = await r.until("alert:new")
            assert live.json()["alertId"] == "a9" and channel_positions(live.id)["alerts"] != \
                channel_positions(seen.id)["alerts"]
            await quiet(r)
            assert [body(e).get("alertId") for e in named(r, "alert:new")] == ["a9"]  # nothing replayed past a reset


async def test_channel_streams_take_gzip_and_the_per_user_connection_limit(sim, tmp_path):
    async with daemon(sim, tmp_path, max_connections_per_user=1, connection_limit_policy="refuse") as app:
        port = app.sse.port
        async with sse_get(port, "/api/stream/ai-decisions", auth("alice", **{"Accept-Encoding": "gzip"})) as r:
            assert r.status == 200 and r.headers["content-encoding"] == "gzip"
            await r.until("connected")
            async with sse_get(port, "/api/stream/ai-decisions", auth("alice")) as second:
                assert second.status == 429 and second.headers["retry-after"]
            async with sse_get(port, "/api/stream/ai-decisions", auth("bob")) as bob:
                assert bob.status == 200  # the limit is per user
            sent = await publish(app, "ai-decisions", "ai:decision", {"n": 1})
            assert (await r.until("ai:decision")).id == sent  # arrives alone, decompressible
        await wait_until(lambda: not app.sse.ai_decisions.clients, what="the stream released")
        async with sse_get(port, "/api/stream/ai-decisions", auth("alice")) as again:
            assert again.status == 200  # its slot was given back


async def test_a_newer_connection_of_the_user_closes_the_oldest_channel_stream(sim, tmp_path):
    async with daemon(sim, tmp_path, max_connections_per_user=1) as app:  # close_oldest, the default
        await publish(app, "strategies:s1", "strategy:update", {})
        port = app.sse.port
        async with sse_get(port, "/api/stream/strategies/s1", auth("alice")) as old:
            await old.until("connected")
            async with sse_get(port, "/api/stream/ai-decisions", auth("alice")) as new:
                assert new.status == 200
                warning = await old.until("warning")
                assert warning.json()["code"] == "connection_limit"
                with pytest.raises(EOFError):
                    await old.next()
                await wait_until(lambda: not app.sse.strategies.clients, what="the old stream released")
                sent = await publish(app, "ai-decisions", "ai:decision", {"n": 1})
                assert (await new.until("ai:decision")).id == sent


async def test_every_id_on_trading_names_the_journal_even_when_a_channel_replays_first(sim, app):
    status = await publish(app, "agent-status", "agent:status", {"state": "up"})
    sim.submit_order("AAPL", "buy", 1)
    await wait_until(lambda: app.stats.order_events >= 1, what="the order journaled")
    epoch = app.accounts.orders["default"].epoch
    # A plain journal id names no channel: agent-status replays from its history, before the journal's events.
    async with sse_get(app.sse.port, "/api/stream/trading", auth("alice", **{"Last-Event-ID": f"{epoch}-0"})) as r:
        replayed = await r.until("agent:status")
        assert channel_positions(replayed.id) == {"agent-status": status}
        assert {k: (v.epoch, v.n) for k, v in parse_compound(replayed.id).items()} == {"default": (epoch, 0)}
        order = await r.until("order:update")
        assert parse_compound(order.id)["default"].n == 1 and channel_positions(order.id) == {"agent-status": status}


async def test_a_compound_id_without_notifications_replays_the_users_notifications(sim, app):
    """A client that connected while the notification store was down holds ids naming only the channels."""
    async with sse_get(app.sse.port, "/api/stream/alerts", auth("alice")) as r:
        await r.until("connected")
        await wait_until(lambda: len(app.relay.channels.subs.get("agent-status", {})) == 1, what="followed")
        await publish(app, "agent-status", "agent:status", {"state": "up"})
        seen = await r.until("agent:status")
    only_channels = f"@agent-status:{channel_positions(seen.id)['agent-status']}"
    order = sim.submit_order("AAPL", "buy", 1)  # while away
    sim.fill_order(order["id"], price=10)
    await wait_until(lambda: (app.parts.notifier.last_id() or 0) >= 2, what="two notifications")
    async with sse_get(app.sse.port, "/api/stream/alerts", auth("alice", **{"Last-Event-ID": only_channels})) as r:
        got = [await r.until("alert:new") for _ in range(2)]
        assert [e.json()["type"] for e in got] == ["order_accepted", "order_filled"]
        assert parse_compound(got[-1].id)["notifications"].n == got[-1].json()["id"]
        await quiet(r)
        assert not named(r, "agent:status", "reset")  # the channel resumed after what it had seen
