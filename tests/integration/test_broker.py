"""Broker API mode against the simulator's Broker API: one upstream SSE connection per stream for 1,000 accounts,
every fill to exactly the users of its account, once, across a restart, an upstream drop mid-replay and a
"reading too slowly" gap; the polling fallback; Alpaca's events API served from the journal."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import sqlite3
import time
from collections import Counter
from pathlib import Path

import httpx
import jwt
import pytest
from httpx_sse import aconnect_sse

from tests.support.relay import FAST, Browser, free_port, relay_config, running, wait_until
from tests.support.sse import sse_get
from trade_stream.simulator.broker import BrokerSim

JWT_SECRET = "broker-test-secret-0123456789abcdef"
USERS = 20
BROKER_TIMINGS = dataclasses.replace(FAST, broker_backoff_max=0.3)


def broker_config(sim, bsim: BrokerSim, state: Path, sse_port: int, **overrides):
    values = dict(sse_port=sse_port, broker_api_key=bsim.key, broker_secret_key=bsim.secret,
                  broker_base_url=bsim.url, broker_silence=2.0, broker_fallback_after=60.0,
                  broker_poll_interval=0.1, jwt_secret=JWT_SECRET, timings=BROKER_TIMINGS, sse_keepalive=0.5)
    values.update(overrides)
    return relay_config(sim, state, **values)


def token(name: str, accounts: list[str]) -> str:
    return jwt.encode({"sub": name, "accounts": accounts, "exp": int(time.time()) + 3600}, JWT_SECRET,
                      algorithm="HS256")


class SseUser:
    """A user on /api/stream/broker who resumes with Last-Event-ID and counts each fill it sees."""

    def __init__(self, name: str, accounts: list[str]) -> None:
        self.name, self.accounts, self.token = name, accounts, token(name, accounts)
        self.fills: Counter[tuple[str, str]] = Counter()
        self.last: str | None = None
        self.wrong: list[str] = []
        self.task: asyncio.Task | None = None

    def start(self, port: int) -> None:
        self.task = asyncio.create_task(self._read(port))

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task

    async def _read(self, port: int) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        if self.last:
            headers["Last-Event-ID"] = self.last
        async with sse_get(port, "/api/stream/broker", headers) as resp:
            assert resp.status == 200
            while True:
                ev = await resp.next(timeout=30)
                if ev.event != "order:update":
                    continue
                msg = ev.json()
                self.last = ev.id
                if msg["account"] not in self.accounts:
                    self.wrong.append(msg["account"])
                if msg["event"] in ("fill", "partial_fill"):
                    order = msg["data"]["order"]
                    self.fills[(order["id"], order["filled_qty"])] += 1


def expected_for(user: SseUser, fills: list[dict]) -> set[tuple[str, str]]:
    mine = set(user.accounts)
    return {(f["order"]["id"], f["order"]["filled_qty"]) for f in fills if f["account_id"] in mine}


@pytest.mark.timeout(90)
async def test_a_thousand_accounts_each_fill_reaches_exactly_its_users_once(sim, tmp_path):
    bsim = await BrokerSim(accounts=1000, seed=7, heartbeat=0.3).start()
    rng = random.Random(3)
    accounts = list(bsim.accounts)
    users = [SseUser(f"u{i}", [a for j, a in enumerate(accounts) if j % USERS == i]) for i in range(USERS)]
    fills: list[dict] = []
    port = free_port()
    cfg = broker_config(sim, bsim, tmp_path, port)

    def fill_some(n: int) -> None:
        for account in rng.sample(accounts, n):
            fills.append(bsim.fill(account, rng.choice(["AAPL", "MSFT"]), rng.randint(1, 9), 100 + rng.random()))

    async def all_delivered(what: str) -> None:
        await wait_until(lambda: all(set(u.fills) >= expected_for(u, fills) for u in users), 20, what)

    try:
        async with running(cfg) as app:
            await wait_until(lambda: bsim.listening("trades") == 1, what="the trades stream up")
            for u in users:
                u.start(app.sse.port)
            async with Browser.connect(app.port) as ws:
                await ws.send({"action": "auth", "token": users[0].token})
                await ws.expect("authenticated")
                await ws.send({"action": "subscribe", "channel": "orders"})
                await wait_until(lambda: app.broker.clients, what="the WebSocket user watching")
                await wait_until(lambda: len(app.sse.events_api.live) == USERS, what="SSE users live")
                fill_some(300)  # fills in 300 of the 1,000 accounts
                await all_delivered("the first 300 fills")
                await ws.drain(0.5)
                ws_fills = Counter((m["data"]["order"]["id"], m["data"]["order"]["filled_qty"])
                                   for m in ws.of_type("order_update") if m["event"] == "fill")
                assert set(ws_fills) == expected_for(users[0], fills) and max(ws_fills.values()) == 1
                assert {m["account"] for m in ws.of_type("order_update")} <= set(users[0].accounts)
        for u in users:
            await u.stop()

        fill_some(100)  # while the daemon is down: replayed from its cursor when it is back
        async with running(cfg) as app:
            await wait_until(lambda: bsim.listening("trades") == 1, what="the trades stream back")
            for u in users:
                u.start(app.sse.port)  # each resumes from its Last-Event-ID
            await all_delivered("the fills made while the daemon was down")

            fill_some(50)  # an upstream drop in the middle of the replay that follows
            await all_delivered("50 more")
            bsim.cut_after(10)
            bsim.cut_all()
            fill_some(40)
            await all_delivered("the fills across a drop mid-replay")
            connects = app.broker.upstreams[0].counts["connects"]
            assert connects >= 2

            bsim.slow_once(5)  # "reading too slowly": a gap, re-replayed from the cursor
            fill_some(30)
            await all_delivered("the fills across a 'reading too slowly' gap")
            view = app.broker.upstreams[0].view()
            assert view["gaps"] == 1 and view["dropped"] == 5
        for u in users:
            await u.stop()
        for u in users:
            assert not u.wrong, f"{u.name} got another account's events: {u.wrong[:3]}"
            assert set(u.fills) == expected_for(u, fills)
            assert max(u.fills.values()) == 1, f"{u.name} got a fill twice"
    finally:
        for u in users:
            await u.stop()
        await bsim.stop()


@pytest.mark.timeout(60)
async def test_polling_fallback_delivers_fills_late_while_sse_answers_503_then_sse_resumes(sim, tmp_path):
    bsim = await BrokerSim(accounts=5, seed=1, heartbeat=0.3).start()
    accounts = list(bsim.accounts)
    user = SseUser("p", accounts[:3])
    cfg = broker_config(sim, bsim, tmp_path, free_port(), broker_fallback_after=0.3, broker_streams=("trades",))
    try:
        async with running(cfg) as app:
            stream = app.broker.upstreams[0]
            await wait_until(lambda: bsim.listening("trades") == 1, what="the trades stream up")
            user.start(app.sse.port)
            await wait_until(lambda: len(app.sse.events_api.live) == 1, what="the user live")
            bsim.unavailable = True  # SSE answers 503 from now on
            bsim.cut_all()
            await wait_until(lambda: stream.mode == "polling", 10, "the polling fallback")
            assert app.status()["broker"]["streams"]["trades"]["mode"] == "polling"
            late = [bsim.fill(a, "AAPL", 2, 101) for a in accounts]
            await wait_until(lambda: set(user.fills) >= expected_for(user, late), 10, "polled fills")
            assert app.broker.counts["late"] >= len(late)
            bsim.unavailable = False
            await wait_until(lambda: stream.mode == "sse" and bsim.listening("trades") == 1, 10, "SSE back")
            live = [bsim.fill(a, "MSFT", 1, 50) for a in accounts]
            await wait_until(lambda: set(user.fills) >= expected_for(user, late + live), 10, "fills over SSE again")
            await asyncio.sleep(0.3)
            assert max(user.fills.values()) == 1  # the SSE replay of the outage was absorbed by the dedupe
    finally:
        await user.stop()
        await bsim.stop()


class AlpacaSSEClient:
    """Written to Alpaca's published events API (the seed guide's pattern): httpx + httpx-sse, HTTP Basic with
    key id and secret, since_id replay, each event a JSON ``data`` line."""

    def __init__(self, base_url: str, key: str, secret: str) -> None:
        self.base_url, self.auth = base_url, (key, secret)

    async def stream_trade_events(self, **params: str):
        async with httpx.AsyncClient(auth=self.auth, timeout=10) as client, aconnect_sse(
                client, "GET", f"{self.base_url}/v2/events/trades", params=params) as source:
            source.response.raise_for_status()
            async for sse in source.aiter_sse():
                yield sse.json()


@pytest.mark.timeout(60)
async def test_alpaca_events_api_clients_read_trade_events_with_since_id_and_until(sim, tmp_path):
    bsim = await BrokerSim(accounts=3, seed=2, heartbeat=0.3).start()
    a, b, c = list(bsim.accounts)
    cfg = broker_config(sim, bsim, tmp_path, free_port())
    try:
        async with running(cfg) as app:
            await wait_until(lambda: bsim.listening("trades") == 1, what="the trades stream up")
            fills = [bsim.fill(acct, "AAPL", 1, 10 + i) for i, acct in enumerate([a, b, a, c, a])]
            await wait_until(lambda: app.broker.counts["events"] >= 10, what="journaled")
            base = f"http://127.0.0.1:{app.sse.port}"
            mine = [f for f in fills if f["account_id"] == a]
            client = AlpacaSSEClient(base, "any-key-id", token("alice", [a]))
            # since_id (exclusive) .. until_id: the history of alice's account only, then the stream ends
            got = [e async for e in client.stream_trade_events(since_id="0" * 26, until_id=mine[1]["event_id"])]
            assert [e["event_id"] for e in got if e["event"] == "fill"] == [f["event_id"] for f in mine[:2]]
            assert all(e["account_id"] == a and e["at"] for e in got)
            # since_id replays after that id (exclusive), then live; until (RFC 3339) in the past ends at once
            got = [e async for e in client.stream_trade_events(since_id=mine[0]["event_id"],
                                                               until_id=mine[2]["event_id"])]
            assert [e["event_id"] for e in got if e["event"] == "fill"] == [f["event_id"] for f in mine[1:]]
            got = [e async for e in client.stream_trade_events(since="2020-01-01", until="2020-01-02")]
            assert got == []
            # live, then an until that passes ends the stream with 200
            until = time.time() + 1.0
            from datetime import UTC, datetime
            stamp = datetime.fromtimestamp(until, UTC).isoformat().replace("+00:00", "Z")
            reading = asyncio.create_task(_collect(client.stream_trade_events(since=stamp[:19] + "Z",
                                                                              until=stamp)))
            await asyncio.sleep(0.3)
            late = bsim.fill(a, "MSFT", 1, 5)
            assert any(e["event_id"] == late["event_id"] for e in await asyncio.wait_for(reading, 5))
            # the query rules
            async with httpx.AsyncClient(auth=("k", token("alice", [a]))) as h:
                r = await h.get(f"{base}/v2/events/trades", params={"since": "2020-01-01", "since_id": "0"})
                assert r.status_code == 400 and "can't be used at the same time" in r.json()["message"]
                r = await h.get(f"{base}/v2/events/trades", params={"until_id": "0"})
                assert r.status_code == 400
            # the Go SDK's request: APCA-API-KEY-ID / APCA-API-SECRET-KEY headers, since_id / until_id, lines
            # read with the "data: " prefix
            reader, writer = await asyncio.open_connection("127.0.0.1", app.sse.port)
            writer.write((f"GET /v2/events/trades?since_id={'0' * 26}&until_id={mine[0]['event_id']} HTTP/1.1\r\n"
                          f"Host: x\r\nAPCA-API-KEY-ID: key\r\nAPCA-API-SECRET-KEY: {token('alice', [a])}\r\n"
                          "Accept-Encoding: gzip\r\n\r\n").encode())
            body = await asyncio.wait_for(reader.read(-1), 5)
            writer.close()
            assert body.startswith(b"HTTP/1.1 200")
            lines = [ln for ln in body.split(b"\n") if ln.startswith(b"data: ")]
            assert lines and b'"event_id":"' + mine[0]["event_id"].encode() in lines[-1]
            # without a valid token: 401 with Alpaca's error body
            async with httpx.AsyncClient() as h:
                r = await h.get(f"{base}/v2/events/trades", auth=("k", "wrong"))
                assert r.status_code == 401 and r.json()["code"] == 40110000
                r = await h.get(f"{base}/v2/events/trades")
                assert r.status_code == 401
    finally:
        await bsim.stop()


async def _collect(agen) -> list:
    return [e async for e in agen]


@pytest.mark.timeout(60)
async def test_websocket_orders_subscribe_with_since_replays_the_users_broker_events(sim, tmp_path):
    bsim = await BrokerSim(accounts=3, seed=4, heartbeat=0.3).start()
    a, b, _ = list(bsim.accounts)
    alice = token("alice", [a])
    cfg = broker_config(sim, bsim, tmp_path, free_port())
    try:
        async with running(cfg) as app:
            await wait_until(lambda: bsim.listening("trades") == 1, what="the trades stream up")
            async with Browser.connect(app.port) as ws:
                await ws.send({"action": "auth", "token": alice})
                await ws.expect("authenticated")
                await ws.send({"action": "subscribe", "channel": "orders"})
                await wait_until(lambda: app.broker.clients, what="alice watching")
                bsim.fill(a, "AAPL", 1, 10)
                bsim.fill(b, "AAPL", 1, 10)
                await ws.expect(lambda m: m.get("type") == "order_update" and m["event"] == "fill", timeout=10)
                last = [m for m in ws.of_type("order_update")][-1]["id"]
            missed = [bsim.fill(a, "MSFT", 2, 20), bsim.fill(b, "MSFT", 2, 20), bsim.fill(a, "NVDA", 3, 30)]
            await wait_until(lambda: app.broker.counts["events"] >= 10, what="journaled while alice was away")
            async with Browser.connect(app.port) as ws:
                await ws.send({"action": "auth", "token": alice})
                await ws.expect("authenticated")
                await ws.send({"action": "subscribe", "channel": "orders", "since": last})
                got = [await ws.expect("order_update") for _ in range(4)]
                assert [(m["event"], m["data"]["order"]["symbol"]) for m in got] == [
                    ("new", "MSFT"), ("fill", "MSFT"), ("new", "NVDA"), ("fill", "NVDA")]
                assert [m["data"]["event_id"] for m in got if m["event"] == "fill"] == [
                    missed[0]["event_id"], missed[2]["event_id"]]
                assert {m["account"] for m in got} == {a}
                await ws.drain(0.3)
                assert len(ws.of_type("order_update")) == 4  # nothing before the id, nothing twice
            async with Browser.connect(app.port) as ws:  # an id this journal never issued: a reset, then live
                await ws.send({"action": "auth", "token": alice})
                await ws.expect("authenticated")
                await ws.send({"action": "subscribe", "channel": "orders", "since": "abcdef012345-3"})
                reset = await ws.expect("orders_reset")
                assert reset["broker"] is True and reset["epoch"] == app.broker.epoch
                bsim.fill(a, "TSLA", 1, 5)
                live = await ws.expect(lambda m: m.get("type") == "order_update" and m["event"] == "fill",
                                       timeout=10)
                assert live["data"]["order"]["symbol"] == "TSLA"
    finally:
        await bsim.stop()


@pytest.mark.timeout(30)
async def test_a_broker_only_users_orders_subscribe_is_answered_with_subscribed(sim, tmp_path):
    bsim = await BrokerSim(accounts=2, seed=5, heartbeat=0.3).start()
    a, _ = list(bsim.accounts)
    cfg = broker_config(sim, bsim, tmp_path, free_port(), broker_streams=("trades",))
    try:
        async with running(cfg) as app:
            await wait_until(lambda: bsim.listening("trades") == 1, what="the trades stream up")
            async with Browser.connect(app.port) as ws:
                await ws.send({"action": "auth", "token": token("alice", [a])})
                await ws.expect("authenticated")
                await ws.send({"action": "subscribe", "channel": "orders"})
                reply = await ws.expect(lambda m: m.get("type") in ("subscribed", "error"), timeout=5)
                assert reply == {"type": "subscribed", "channel": "orders", "broker": True}
                bsim.fill(a, "AAPL", 1, 10)  # and it is live right after the reply
                await ws.expect(lambda m: m.get("type") == "order_update" and m["event"] == "fill", timeout=10)
    finally:
        await bsim.stop()


@pytest.mark.timeout(40)
async def test_healthz_counts_a_broker_stream_polling_past_the_grace_as_down_until_sse_returns(sim, tmp_path):
    from tests.integration.test_health import wait_for_status

    bsim = await BrokerSim(accounts=2, seed=6, heartbeat=0.3).start()
    cfg = broker_config(sim, bsim, tmp_path, free_port(), broker_fallback_after=0.2, broker_streams=("trades",),
                        health_grace=0.5)
    try:
        async with running(cfg) as app:
            stream = app.broker.upstreams[0]
            await wait_until(lambda: bsim.listening("trades") == 1, what="the trades stream up")
            await wait_for_status(app.port, 200)
            bsim.unavailable = True  # SSE answers 503: the stream falls back to polling, which works
            bsim.cut_all()
            await wait_until(lambda: stream.mode == "polling", 10, "the polling fallback")
            body = await wait_for_status(app.port, 503)
            assert "broker:trades" in body["down"]
            assert body["upstreams"]["broker:trades"]["ok"] is False
            assert body["broker"]["trades"]["mode"] == "polling"
            bsim.unavailable = False
            body = await wait_for_status(app.port, 200)
            assert body["upstreams"]["broker:trades"]["state"] == "connected"
    finally:
        await bsim.stop()


@pytest.mark.timeout(30)
async def test_the_legacy_nta_stream_when_enabled_routes_dividends_as_activity(sim, tmp_path):
    bsim = await BrokerSim(accounts=2, seed=8, heartbeat=0.3).start()
    a, b = list(bsim.accounts)
    cfg = broker_config(sim, bsim, tmp_path, free_port(), broker_streams=("nta",))
    try:
        async with running(cfg) as app:
            await wait_until(lambda: bsim.listening("nta") == 1, what="the nta stream up")
            async with Browser.connect(app.port) as ws, sse_get(
                    app.sse.port, "/api/stream/broker", {"Authorization": f"Bearer {token('alice', [a])}"}) as resp:
                assert resp.status == 200
                await ws.send({"action": "auth", "token": token("alice", [a])})
                await ws.expect("authenticated")
                await ws.send({"action": "subscribe", "channel": "orders"})
                await wait_until(lambda: app.broker.clients, what="alice watching")
                bsim.dividend(b, "MSFT", "1", 5)  # not alice's
                div = bsim.dividend(a, "AAPL", "1.234", 10)
                msg = await ws.expect("activity", timeout=10)
                assert msg["account"] == a and msg["data"]["id"] == div["id"]
                assert msg["data"]["activity_type"] == "DIV" and msg["data"]["net_amount"] == "12.34"
                while (ev := await resp.next(timeout=10)).event != "activity:new":
                    pass
                assert ev.json()["data"]["id"] == div["id"]
                assert app.status()["broker"]["streams"]["nta"]["cursor"] is not None
    finally:
        await bsim.stop()


def journaled_ids(app) -> set[str]:
    return {r[0] for r in app.broker.journal.db.execute("SELECT event_id FROM events WHERE stream = 'trades'")}


def made_ids(fills: list[dict], bsim: BrokerSim) -> set[str]:
    """Event ids of the fills given and of the ``new`` event before each."""
    orders = {f["order"]["id"] for f in fills}
    return {e["event_id"] for e in bsim.events["trades"] if e.get("order", {}).get("id") in orders}


@pytest.mark.timeout(60)
async def test_event_ids_that_are_no_ulid_or_lie_in_the_future_never_move_the_cursor(sim, tmp_path):
    bsim = await BrokerSim(accounts=3, seed=5, heartbeat=0.3).start()
    account = next(iter(bsim.accounts))
    cfg = broker_config(sim, bsim, tmp_path, free_port())
    poison = {"account_id": account, "at": "2026-01-01T00:00:00Z", "event": "new", "timestamp": "2026-01-01T00:00:00Z",
              "order": {"id": "poison", "symbol": "AAPL", "status": "new"}}
    try:
        async with running(cfg) as app:
            await wait_until(lambda: bsim.listening("trades") == 1, what="the trades stream up")
            bsim.fill(account)
            bsim.publish_raw("trades", {**poison, "event_id": "9" * 5000})  # not a ULID: refused
            bsim.publish_raw("trades", {**poison, "event_id": "01ZZZZZZZZZZZZZZZZZZZZZZZZ"})  # a ULID of year 4000
            last = bsim.fill(account)
            await wait_until(lambda: last["event_id"] in journaled_ids(app), what="the fill after the poison")
            view = app.broker.upstreams[0].view()
            assert view["cursor"] == last["event_id"]  # the highest plausible id, not the far-future one
            assert "9" * 5000 not in journaled_ids(app)
            assert view.get("bad_ids") == 1 and app.broker.counts.get("future_ids") == 1
        down = [bsim.fill(account) for _ in range(10)]  # 20 events while the daemon is down
        async with running(cfg) as app:
            await wait_until(lambda: made_ids(down, bsim) <= journaled_ids(app), 15, "the 20 events made while down")
            assert len(made_ids(down, bsim)) == 20
            assert app.broker.upstreams[0].view()["cursor"] == down[-1]["event_id"]
    finally:
        await bsim.stop()


@pytest.mark.timeout(60)
async def test_a_poisoned_stored_cursor_is_repaired_at_start(sim, tmp_path):
    bsim = await BrokerSim(accounts=3, seed=6, heartbeat=0.3).start()
    account = next(iter(bsim.accounts))
    cfg = broker_config(sim, bsim, tmp_path, free_port())
    try:
        async with running(cfg) as app:
            await wait_until(lambda: bsim.listening("trades") == 1, what="the trades stream up")
            first = bsim.fill(account)
            await wait_until(lambda: first["event_id"] in journaled_ids(app), what="the first fill")
        with sqlite3.connect(tmp_path / "broker.sqlite3") as db:  # what a daemon without the id checks stored
            db.execute("UPDATE meta SET value = ? WHERE key = 'cursor:trades'", ("9" * 5000,))
        down = [bsim.fill(account) for _ in range(10)]
        async with running(cfg) as app:
            await wait_until(lambda: made_ids(down, bsim) <= journaled_ids(app), 15, "the 20 events made while down")
            assert app.broker.upstreams[0].view()["cursor"] == down[-1]["event_id"]
            assert app.broker.counts.get("cursor_repairs") == 1
    finally:
        await bsim.stop()
