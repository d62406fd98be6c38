"""Order updates: private, journaled, replayable, reconciled after gaps, positions marked to market."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.relay import TOKEN, Browser, fill_journal, http_get, relay_config, running, wait_until

pytestmark = pytest.mark.timeout(30)
STREAM = "/stream"


@pytest.fixture
async def app(sim, tmp_path):
    async with running(relay_config(sim, tmp_path)) as a:
        await wait_until(lambda: a.relay.sources.default.upstream.connected and a.tradings["default"].connected,
                         what="both streams up")
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
    status, body = await asyncio.to_thread(http_get, app.port, "/api/orders/events?since=0")
    assert status == 401 and body["error"] == "Unauthorized"
    status, _ = await asyncio.to_thread(http_get, app.port, "/api/orders/events?since=0", "nope")
    assert status == 401
    status, body = await asyncio.to_thread(http_get, app.port, "/api/orders/events?since=0", TOKEN)
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
        await wait_until(lambda: not app.tradings["default"].connected, what="trading down")
        sim.fill_order(a["id"], price=101)
        sim.fill_order(b["id"], price=202)
        await wait_until(lambda: app.tradings["default"].connected and app.tradings["default"].status.reconnects >= 1,
                         timeout=8,
                         what="trading back")
        got = [await c.expect("order_update"), await c.expect("order_update")]
        assert sorted((g["data"]["order"]["id"], g["event"]) for g in got) == sorted(
            [(a["id"], "fill"), (b["id"], "fill")])
        assert all(g["reconciled"] for g in got)
        assert {g["data"]["qty"] for g in got} == {"3", "2"}
        await app.accounts.orders["default"].reconcile()  # a second pass finds nothing new
        await c.drain(0.3)
        assert len(c.of_type("order_update")) == 4
    finally:
        await cm.__aexit__(None, None, None)


async def test_orders_made_during_an_outage_arrive_with_their_whole_lifecycle_in_order(sim, app):
    """Orders submitted and filled (or partly filled and canceled) while the trading stream is down: REST shows
    only their final state, but every consumer gets the lifecycle it would have seen live, each event once,
    marked reconciled, in order (the partial fill of the canceled order too)."""
    cm, c = await orders_client(app.port)
    try:
        seen = sim.submit_order("AAPL", "buy", 1, type="limit", limit_price=100)
        await c.expect("order_update")  # its ``new`` arrives live
        sim.fail_next_auth(401, times=1, path=STREAM)
        sim.cut_all()
        await wait_until(lambda: not app.tradings["default"].connected, what="trading down")
        filled = sim.submit_order("MSFT", "buy", 2, type="limit", limit_price=500)
        sim.fill_order(filled["id"], price=400)
        partial = sim.submit_order("TSLA", "buy", 5, type="limit", limit_price=300)
        sim.fill_order(partial["id"], qty=2, price=250)
        sim.cancel_order(partial["id"])
        sim.fill_order(seen["id"], price=99)
        await wait_until(lambda: app.tradings["default"].connected and app.tradings["default"].status.reconnects >= 1,
                         timeout=8,
                         what="trading back")
        got = [await c.expect("order_update") for _ in range(6)]
        await app.accounts.orders["default"].reconcile()  # a second pass adds nothing
        await c.drain(0.3)
        assert len(c.of_type("order_update")) == 7
        assert all(g["reconciled"] for g in got)
        lifecycle = {o["id"]: [(g["event"], g["data"].get("qty")) for g in got if g["data"]["order_id"] == o["id"]]
                     for o in (seen, filled, partial)}
        assert lifecycle == {seen["id"]: [("fill", "1")], filled["id"]: [("new", None), ("fill", "2")],
                             partial["id"]: [("new", None), ("partial_fill", "2"), ("canceled", None)]}
        new = next(g for g in got if g["data"]["order_id"] == filled["id"] and g["event"] == "new")
        assert new["data"]["order"]["status"] == "new" and new["data"]["order"]["filled_qty"] == "0"
        assert new["data"]["timestamp"] == filled["submitted_at"]
        assert [g["id"] for g in got] == sorted(g["id"] for g in got)
    finally:
        await cm.__aexit__(None, None, None)


async def test_restart_between_fills_resumes_with_since(sim, tmp_path):
    cfg = relay_config(sim, tmp_path)
    o1 = sim.submit_order("AAPL", "buy", 1)
    o2 = sim.submit_order("AAPL", "buy", 1)
    async with running(cfg) as app:
        await wait_until(lambda: app.tradings["default"].connected)
        cm, c = await orders_client(app.port)
        sim.fill_order(o1["id"], price=150)
        first = await c.expect("order_update")
        assert first["event"] == "fill"
        last_id = first["id"]
        await cm.__aexit__(None, None, None)
    sim.fill_order(o2["id"], price=151)  # while the daemon is down
    async with running(cfg) as app:
        await wait_until(lambda: app.tradings["default"].connected and app.stats.order_events >= 1, what="reconciled")
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


async def test_a_fill_while_the_snapshot_waits_on_alpaca_reaches_the_new_subscriber(sim, app):
    """The snapshot asks Alpaca's REST for the open orders before it is sent; a fill that lands meanwhile is pushed
    to the live subscribers only. The client subscribing then must still learn the position: in the snapshot
    (taken once REST has answered) or in an update right after it, never neither."""
    sim.set_rest_delay("/v2/orders", 2.0)
    cm = Browser.connect(app.port)
    c = await cm.__aenter__()
    try:
        await c.send({"action": "auth", "token": TOKEN})
        await c.expect("authenticated")
        await c.send({"action": "subscribe", "channel": "orders"})
        await c.expect(lambda m: m.get("type") == "subscribed" and m.get("channel") == "orders")
        await wait_until(lambda: "/v2/orders" in [p.split("?")[0] for p in sim.rest_requests], 5, "the orders call")
        sim.fill_order(sim.submit_order("AMD", "buy", 7)["id"], price=150)
        await wait_until(lambda: "AMD" in app.accounts.orders["default"].positions.by_symbol, 10, "the fill applied")
        snapshot = await c.expect("orders_snapshot", timeout=10)
        shown = {p["symbol"]: p["qty"] for p in snapshot["positions"]}
        if shown.get("AMD") != "7":
            update = await c.expect(lambda m: m.get("type") == "position_update" and m["symbol"] == "AMD", timeout=5)
            assert update["qty"] == "7"
    finally:
        sim.set_rest_delay("/v2/orders", 0)
        await cm.__aexit__(None, None, None)


async def test_first_start_does_not_report_existing_orders_as_missed(sim, tmp_path):
    sim.submit_order("AAPL", "buy", 1)
    sim.submit_order("MSFT", "sell", 2)
    async with running(relay_config(sim, tmp_path)) as app:
        await wait_until(lambda: app.tradings["default"].connected)
        # whatever the start-up pass would do, done again deterministically
        await app.accounts.orders["default"].reconcile()
        assert app.stats.order_events == 0 and app.accounts.orders["default"].journal.last_id() == 0


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


HUGE_ID = 2**64 - 1  # past SQLite's signed 64-bit INTEGER (orjson reads it; 2**64 it reads as a float)


async def test_ids_out_of_range_are_unknown_ids_answered_with_a_reset(sim, app):
    order = sim.submit_order("AAPL", "buy", 1)
    await wait_until(lambda: app.stats.order_events == 1)
    for since in (HUGE_ID, "-1", "nonsense"):
        status, body = await asyncio.to_thread(http_get, app.port, f"/api/orders/events?since={since}", TOKEN)
        assert status == 200 and body["reset"] is True, (since, body)
        assert [e["event"] for e in body["events"]] == ["new"]  # the whole journal: the client's id is not ours
    async with Browser.connect(app.port) as c:
        await c.send({"action": "auth", "token": TOKEN})
        await c.expect("authenticated")
        await c.send(f'{{"action":"subscribe","channel":"orders","since":{HUGE_ID}}}')  # orjson cannot write it
        await c.expect("orders_snapshot")
        assert (await c.expect("orders_reset"))["last_id"] == 1
        assert (await c.expect("order_update"))["event"] == "new"
        sim.fill_order(order["id"], price=10)
        assert (await c.expect("order_update"))["event"] == "fill"  # and it went live


async def test_a_recreated_journal_is_told_apart_by_its_epoch(sim, tmp_path):
    cfg = relay_config(sim, tmp_path)
    async with running(cfg) as app:
        await wait_until(lambda: app.tradings["default"].connected)
        for _ in range(3):
            sim.submit_order("AAPL", "buy", 1)
        await wait_until(lambda: app.stats.order_events == 3)
        _, before = await asyncio.to_thread(http_get, app.port, "/api/orders/events?since=0", TOKEN)
    old_epoch = before["epoch"]
    assert before["cursor"] == f"{old_epoch}-3" and before["reset"] is False
    for path in tmp_path.glob("orders.sqlite3*"):  # the journal is lost; ids start again at 1
        path.unlink()
    async with running(cfg) as app:
        await wait_until(lambda: app.tradings["default"].connected)
        sim.submit_order("MSFT", "buy", 1)
        await wait_until(lambda: app.stats.order_events == 1)
        for since in ("3", f"{old_epoch}-3", f"{old_epoch}-1"):  # above the last id, or from the old journal
            _, body = await asyncio.to_thread(http_get, app.port, f"/api/orders/events?since={since}", TOKEN)
            assert body["reset"] is True and body["epoch"] != old_epoch, since
            assert [e["data"]["symbol"] for e in body["events"]] == ["MSFT"]
        _, body = await asyncio.to_thread(http_get, app.port, "/api/orders/events?since=1", TOKEN)
        assert body["reset"] is False and body["events"] == []  # a plain id of this journal still works
        _, body = await asyncio.to_thread(http_get, app.port, f"/api/orders/events?since={body['cursor']}", TOKEN)
        assert body["reset"] is False and body["events"] == []
        cm, c = await orders_client(app.port, since=f"{old_epoch}-1")
        try:
            assert c.of_type("orders_snapshot")[0]["epoch"] == body["epoch"]
            assert "another journal" in (await c.expect("orders_reset"))["message"]
            assert (await c.expect("order_update"))["data"]["symbol"] == "MSFT"
        finally:
            await cm.__aexit__(None, None, None)


async def test_a_journal_deleted_under_the_running_daemon_is_replaced_and_plain_ids_past_it_reset(sim, tmp_path):
    cfg = relay_config(sim, tmp_path)
    async with running(cfg) as app:
        await wait_until(lambda: app.tradings["default"].connected)
        for _ in range(10):
            sim.submit_order("AAPL", "buy", 1)
        await wait_until(lambda: app.stats.order_events == 10)
        old_epoch = app.accounts.orders["default"].epoch
        cm, live = await orders_client(app.port)
        try:
            for path in tmp_path.glob("orders.sqlite3*"):
                path.unlink()
            for _ in range(3):
                sim.submit_order("MSFT", "buy", 1)
            await wait_until(lambda: app.accounts.orders["default"].epoch not in (None, old_epoch),
                             what="a new journal")
            assert "recreated" in (await live.expect("orders_reset"))["message"]  # live clients are told
            await wait_until(lambda: len(app.accounts.orders["default"].journal.since(0)) == 3,
                             what="the 3 events in the new journal")
            for since in ("5", f"{old_epoch}-5"):  # a plain id past the new journal's last id resets too
                _, body = await asyncio.to_thread(http_get, app.port, f"/api/orders/events?since={since}", TOKEN)
                assert body["reset"] is True and body["epoch"] == app.accounts.orders["default"].epoch, (since, body)
                assert [e["data"]["symbol"] for e in body["events"]] == ["MSFT"] * 3
        finally:
            await cm.__aexit__(None, None, None)
    async with running(cfg) as app:  # the events went to the file on disk, not to the unlinked one
        _, body = await asyncio.to_thread(http_get, app.port, "/api/orders/events?since=0", TOKEN)
        assert [e["data"]["symbol"] for e in body["events"]] == ["MSFT"] * 3 and body["epoch"] != old_epoch


@pytest.mark.timeout(60)
async def test_a_long_replay_is_paced_by_the_client_and_live_events_follow_it(sim, tmp_path):
    count = 20_000  # about 20 MB: far past the client's buffer cap if written at once
    fill_journal(tmp_path / "orders.sqlite3", count, pad=900)
    async with running(relay_config(sim, tmp_path, client_buffer_bytes=256 * 1024)) as app:
        await wait_until(lambda: app.tradings["default"].connected)
        cm, c = await orders_client(app.port, since=0)
        try:
            got = [await c.expect("order_update")]
            sim.submit_order("TSLA", "buy", 1)  # live, while the replay is under way
            sim.submit_order("TSLA", "buy", 2)
            got += [await c.expect("order_update") for _ in range(count + 1)]
            await c.drain(0.2)
            assert [m["id"] for m in c.of_type("order_update")] == list(range(1, count + 3))
            assert [m["data"]["order"]["qty"] for m in got[-2:]] == ["1", "2"]  # after the replay, once each
            assert app.stats.slow_client_cutoffs == 0
        finally:
            await cm.__aexit__(None, None, None)


async def test_a_replay_over_the_limit_says_reset_and_goes_live(sim, tmp_path):
    fill_journal(tmp_path / "orders.sqlite3", 300)
    async with running(relay_config(sim, tmp_path)) as app:
        await wait_until(lambda: app.tradings["default"].connected)
        app.accounts.orders["default"].replay_limit = 100
        cm, c = await orders_client(app.port, since=0)
        try:
            assert "more than 100" in (await c.expect("orders_reset"))["message"]
            sim.submit_order("TSLA", "buy", 1)
            live = await c.expect("order_update")
            assert live["id"] == 301 and len(c.of_type("order_update")) == 1
        finally:
            await cm.__aexit__(None, None, None)


def test_journal_faults_are_described_in_one_line_naming_the_file_and_the_fix(tmp_path):
    import sqlite3

    from trade_stream.core.journal import Journal, fault_message

    bad = tmp_path / "orders.sqlite3"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(sqlite3.DatabaseError) as err:
        Journal(bad)
    line = fault_message(bad, err.value)
    assert "\n" not in line and str(bad) in line and "move it aside" in line
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    with pytest.raises(OSError) as err:
        Journal(blocked / "state" / "orders.sqlite3")
    line = fault_message(blocked / "state" / "orders.sqlite3", err.value)
    assert "\n" not in line and "TRADE_STREAM_STATE_DIR" in line and str(blocked / "state") in line


async def test_a_corrupt_journal_at_start_leaves_market_data_up_and_says_so(sim, tmp_path, caplog):
    journal = tmp_path / "orders.sqlite3"
    journal.write_bytes(b"garbage " * 1000)
    async with running(relay_config(sim, tmp_path)) as app:
        await wait_until(lambda: app.relay.sources.default.upstream.connected)
        async with Browser.connect(app.port) as c:
            await c.send({"action": "subscribe", "symbol": "AAPL"})
            await c.expect("subscribed")
            await wait_until(lambda: sim.subscriptions("/v2/iex")["trades"] == ["AAPL"])
            sim.inject_trade("AAPL", price=1.5)
            assert (await c.expect("trade"))["data"]["price"] == 1.5
        _, status = await asyncio.to_thread(http_get, app.port, "/api/stream/status")
        assert status["orders"]["state"] == "fault" and str(journal) in status["orders"]["error"]
        _, health = await asyncio.to_thread(http_get, app.port, "/healthz")
        assert health["orders"]["state"] == "fault"
        faults = [r for r in caplog.records if r.getMessage().startswith("journal_fault")]
        assert len(faults) == 1 and faults[0].exc_info is None and "move it aside" in faults[0].getMessage()
        cm, c = await orders_client(app.port)
        try:
            assert "corrupt" in c.of_type("orders_snapshot")[0]["journal_error"]
            journal.rename(tmp_path / "orders.sqlite3.bad")  # what the line says to do
            await wait_until(lambda: app.accounts.orders["default"].health()["state"] == "ok", what="journal recovered")
            sim.submit_order("AAPL", "buy", 1)
            assert (await c.expect("order_update"))["id"] == 1
        finally:
            await cm.__aexit__(None, None, None)


async def test_a_journal_that_fails_at_runtime_keeps_the_event_and_recovers(sim, app):
    cm, c = await orders_client(app.port)
    try:
        # writes now fail, as on a read-only filesystem
        app.accounts.orders["default"].journal.db.execute("PRAGMA query_only=1")
        sim.submit_order("AAPL", "buy", 1)
        got = await c.expect("order_update")  # once the journal is reopened, the kept event is written and sent
        assert got["event"] == "new" and got["id"] == 1
        assert app.stats.journal_errors >= 1 and app.accounts.orders["default"].health()["state"] == "ok"
        assert app.tradings["default"].connected
        sim.submit_order("AAPL", "buy", 2)
        assert (await c.expect("order_update"))["id"] == 2
        await c.drain(0.2)
        assert len(c.of_type("order_update")) == 2
    finally:
        await cm.__aexit__(None, None, None)
