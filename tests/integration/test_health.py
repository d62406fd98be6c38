"""Supervision and health: a failing upstream task restarts, says so, and /healthz tells the truth about it."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import orjson
import pytest

from tests.support.relay import Browser, http_get, relay_config, running, wait_until

pytestmark = pytest.mark.timeout(30)


async def get_json(port: int, path: str) -> tuple[int, dict]:
    return await asyncio.to_thread(http_get, port, path)


async def wait_for_status(port: int, code: int, timeout: float = 10.0) -> dict:
    got: dict = {}

    async def check() -> bool:
        status, got["body"] = await get_json(port, "/healthz")
        return status == code

    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"/healthz never answered {code}; last {got['body']}")
        await asyncio.sleep(0.05)
    return got["body"]


async def test_healthz_turns_503_while_the_trading_stream_fails_and_recovers(sim, tmp_path):
    async with running(relay_config(sim, tmp_path, health_grace=0.3)) as app:
        await wait_until(lambda: app.tradings["default"].connected and app.relay.sources.default.upstream.connected,
                         what="both upstreams")
        await wait_for_status(app.port, 200)
        sim.fail_next_auth(times=10_000, path="/stream")  # every trading login is refused from now on
        sim.cut_all()
        body = await wait_for_status(app.port, 503)
        assert body["status"] == "down" and body["down"] == ["trading"]
        assert body["upstreams"]["trading"]["ok"] is False and body["upstreams"]["market_data"]["ok"] is True
        _, status = await get_json(app.port, "/api/stream/status")
        assert status["trading"]["ok"] is False and status["trading"]["state"] != "connected"
        order = sim.submit_order("AAPL", "buy", 5, "limit", 100)  # placed while the trading stream is down
        sim.clear_auth_failures()
        body = await wait_for_status(app.port, 200)
        assert body["upstreams"]["trading"]["state"] == "connected"
        # What happened during the outage is recovered over REST once the stream is back.
        await wait_until(lambda: any(e.data.get("order_id") == order["id"]
                                      for e in app.accounts.orders["default"].journal.since(0)),
                         what="the missed order event")
        events = [e for e in app.accounts.orders["default"].journal.since(0) if e.data.get("order_id") == order["id"]]
        assert [(e.event, e.reconciled) for e in events] == [("new", True)]


async def test_a_corrupt_journal_and_notification_store_at_start_are_down_at_once_not_after_the_grace(sim, tmp_path):
    for name in ("orders.sqlite3", "notifications.sqlite3"):
        (tmp_path / name).write_bytes(b"not a database " * 500)
    async with running(relay_config(sim, tmp_path, health_grace=60.0)) as app:  # the production grace
        await wait_until(lambda: app.tradings["default"].connected and app.relay.sources.default.upstream.connected,
                         what="both upstreams")
        status, body = await get_json(app.port, "/healthz")
        assert status == 503 and body["status"] == "down" and body["down"] == ["orders", "notifications"]
        assert body["orders"]["state"] == body["notifications"]["state"] == "fault"
        assert "orders.sqlite3" in body["orders"]["error"] and "notifications.sqlite3" in body["notifications"]["error"]
        assert body["upstreams"]["market_data"]["ok"] is True and body["upstreams"]["trading"]["ok"] is True
        for name in ("orders.sqlite3", "notifications.sqlite3"):
            (tmp_path / name).rename(tmp_path / f"{name}.bad")  # what the error line says to do
        body = await wait_for_status(app.port, 200, timeout=20)
        assert body["status"] == "ok" and body["down"] == []


async def test_healthz_turns_503_while_the_journal_stays_unwritable_and_recovers(sim, tmp_path):
    async with running(relay_config(sim, tmp_path, health_grace=60.0)) as app:  # a fault is down at once
        await wait_until(lambda: app.tradings["default"].connected and app.relay.sources.default.upstream.connected,
                         what="both upstreams")
        await wait_for_status(app.port, 200)
        path = app.accounts.orders["default"].journal_path
        aside = path.with_name("aside.sqlite3")
        path.rename(aside)  # the open connection keeps the renamed file...
        path.mkdir()  # ...and a reopen meets a directory: the fault persists, as on a broken disk
        app.accounts.orders["default"].journal.db.execute("PRAGMA query_only=1")  # writes fail, as on a full disk
        order = sim.submit_order("AAPL", "buy", 5, "limit", 100)
        body = await wait_for_status(app.port, 503)
        assert body["down"] == ["orders"] and body["orders"]["state"] == "fault"
        assert body["upstreams"]["trading"]["ok"] is True and body["upstreams"]["market_data"]["ok"] is True
        assert str(path) in body["orders"]["error"] and body["orders"]["pending_events"] == 1
        path.rmdir()
        aside.rename(path)  # space freed
        body = await wait_for_status(app.port, 200)
        assert body["orders"]["state"] == "ok"
        events = [e for e in app.accounts.orders["default"].journal.since(0) if e.data.get("order_id") == order["id"]]
        assert [e.event for e in events] == ["new"]  # kept in memory through the fault, journaled once
        metrics = (await asyncio.to_thread(lambda: urllib.request.urlopen(
            f"http://127.0.0.1:{app.port}/metrics", timeout=5).read())).decode()
        assert "trade_stream_journal_errors_total" in metrics


DATA = "/v2/iex"


def trade(symbol: str, i: int, price: float = 100.0) -> dict:
    return {"T": "t", "S": symbol, "i": i, "x": "V", "p": price, "s": 10, "c": ["@"],
            "t": "2026-01-02T15:00:00.123456789Z", "z": "C"}


async def test_a_malformed_message_is_skipped_and_the_rest_of_its_frame_still_arrives(sim, tmp_path):
    async with running(relay_config(sim, tmp_path)) as app:
        await wait_until(lambda: app.relay.sources.default.upstream.connected, what="upstream connected")
        async with Browser.connect(app.port) as browser:
            await browser.send({"action": "subscribe", "symbols": ["AAPL", "MSFT"]})
            await browser.expect("subscribed")
            sim.inject_raw(DATA, [{**trade("AAPL", 1), "S": ["AAPL"]}, trade("AAPL", 2), trade("MSFT", 3)])
            sim.inject_raw(DATA, [{**trade("AAPL", 4), "S": {"x": 1}}])  # a frame with only a bad message
            sim.inject_raw(DATA, [trade("AAPL", 5)])
            ids = [(await browser.expect("trade"))["data"]["id"] for _ in range(3)]
            assert ids == [2, 3, 5]
            assert (app.relay.sources.default.upstream.connected
                    and app.relay.sources.default.upstream.status.reconnects == 0)
            assert app.stats.bad_messages == {"market_data": 2}
            code, status = await get_json(app.port, "/api/stream/status")
            assert code == 200 and status["alpaca_connected"] is True


def _malformed(rng, valid_id: int) -> str | bytes:
    """One frame Alpaca should never send: wrong types in every field, wrong shapes, garbage, deep nesting."""
    junk = [None, True, -1, 10**30, 1.5e308, "", "x" * 300, [], [1, [2, [3]]], {}, {"a": {"b": []}},
            "AAPL\u0000", -9223372036854775809]
    kind = rng.randrange(8)
    if kind == 0:  # a trade with one field of the wrong type
        msg = trade("AAPL", -1)
        msg[rng.choice(list(msg))] = rng.choice(junk)
        return json.dumps([msg])
    if kind == 1:  # not an array at the top level
        return orjson.dumps(rng.choice([{"T": "t", "S": "AAPL"}, 42, "text", None, True])).decode()
    if kind == 2:  # binary garbage
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
    if kind == 3:  # nesting deeper than any parser allows
        depth = rng.choice([300, 2000])
        return "[" * depth + "]" * depth
    if kind == 4:  # a field nested deeper than the encoder allows, next to a good trade
        bad = orjson.dumps(trade("AAPL", -2)).decode().replace('["@"]', "[" * 300 + "]" * 300)
        return f"[{bad},{orjson.dumps(trade('AAPL', valid_id)).decode()}]"
    if kind == 5:  # elements that are not objects, mixed with a good trade
        return json.dumps([rng.choice(junk), trade("AAPL", valid_id), rng.choice(junk)], separators=(",", ":"))
    if kind == 6:  # huge numbers as raw text
        return '[{"T":"t","S":"AAPL","i":1' + "0" * 40 + ',"p":1e999}]'
    return "not json at all {"


@pytest.mark.timeout(60)
async def test_fuzz_malformed_upstream_frames_never_stop_the_valid_trades(sim, tmp_path):
    import random

    rng = random.Random(20261121)
    async with running(relay_config(sim, tmp_path)) as app:
        await wait_until(lambda: app.relay.sources.default.upstream.connected, what="upstream connected")
        async with Browser.connect(app.port) as browser:
            await browser.send({"action": "subscribe", "symbol": "AAPL"})
            await browser.expect("subscribed")
            sent: list[int] = []
            next_id = 1_000
            for _ in range(400):
                if rng.random() < 0.5:
                    next_id += 1
                    frame = _malformed(rng, next_id)
                    if isinstance(frame, str) and f'"i":{next_id}' in frame:
                        sent.append(next_id)
                    sim.inject_frame(DATA, frame)
                else:
                    next_id += 1
                    sent.append(next_id)
                    sim.inject_raw(DATA, [trade("AAPL", next_id)])
                if rng.random() < 0.1:
                    await asyncio.sleep(0)  # let the relay read now and then, as a real stream would
            last = sent[-1]
            await browser.expect(lambda m: m.get("type") == "trade" and m["data"]["id"] == last, timeout=20)
            got = {m["data"]["id"] for m in browser.of_type("trade")}
            assert set(sent) <= got
            assert (app.relay.sources.default.upstream.connected
                    and app.relay.sources.default.upstream.status.reconnects == 0)
            assert app.stats.bad_messages["market_data"] > 50
            code, health = await get_json(app.port, "/healthz")
            assert code == 200 and health["upstreams"]["market_data"]["state"] == "connected"
            _, status = await get_json(app.port, "/api/stream/status")
            assert status["alpaca_connected"] is True and "AAPL" in status["active_symbols"]


async def test_the_stall_sweeps_run_under_the_supervisor_and_show_in_health(sim, tmp_path):
    from tests.support.relay import free_port

    async with running(relay_config(sim, tmp_path, sse_port=free_port(), stall_timeout=1.0)) as app:
        _, health = await get_json(app.port, "/healthz")
        assert health["tasks"]["stall-sweep"]["state"] == "running"  # restarted on any exception, not lost
        assert health["tasks"]["stall-sweep-sse"]["state"] == "running"
