"""Demo mode: the real upstream path against the in-process simulator, simulated trades and orders."""

from __future__ import annotations

import asyncio
from datetime import UTC, timedelta

import pytest

from tests.support.clocks import MONDAY_PRE, NIGHT
from tests.support.relay import FAST, TOKEN, Browser, http_get, running, wait_until
from trade_stream import demo
from trade_stream.config import Config

pytestmark = pytest.mark.timeout(30)


async def test_demo_mode_flows_trades_and_tells_every_client(tmp_path):
    cfg = Config(demo=True, host="127.0.0.1", port=0, state_dir=str(tmp_path), token=TOKEN, timings=FAST,
                 ping_interval=0, demo_session="open")  # stock trades at any real hour
    async with running(cfg) as app:
        assert app.simulator is not None and app.cfg.data_stream_url.startswith("ws://127.0.0.1:")
        await wait_until(lambda: app.relay.sources.default.upstream.connected and app.tradings["default"].connected)
        async with Browser.connect(app.port) as c:
            welcome = await c.expect("welcome")
            assert welcome["demo"] is True
            await c.send({"action": "subscribe", "symbol": "AAPL"})
            trade = await c.expect("trade", timeout=10)  # the simulator's own random walk
            assert trade["symbol"] == "AAPL" and trade["data"]["price"] > 0

            await c.send({"action": "auth", "token": TOKEN})
            await c.expect("authenticated")
            await c.send({"action": "subscribe", "channel": "orders"})
            await c.expect("orders_snapshot")
            task = asyncio.create_task(demo.trader(app.simulator, interval=0.05))
            try:
                events = [(await c.expect("order_update", timeout=10))["event"] for _ in range(3)]
                assert events == ["new", "partial_fill", "fill"]
            finally:
                task.cancel()
    assert (tmp_path / "orders-demo.sqlite3").exists()  # simulated fills never land in the real journal


async def test_demo_broker_mode_shows_each_customer_only_their_account(tmp_path, capsys):
    cfg = Config(demo=True, broker_demo=True, host="127.0.0.1", port=0, state_dir=str(tmp_path), token=TOKEN,
                 timings=FAST, ping_interval=0)
    async with running(cfg) as app:
        assert app.broker is not None and app.broker_simulator is not None
        bsim = app.broker_simulator
        assert len(app.demo_customers) == len(bsim.accounts) >= 2
        printed = capsys.readouterr().out
        for _name, (account, jwt_token) in app.demo_customers.items():
            assert f"#token={jwt_token}" in printed and account in printed
        await wait_until(lambda: bsim.listening("trades") == 1, what="the Broker trades stream up")
        alice_account, alice_token = app.demo_customers["alice"]
        async with Browser.connect(app.port) as c:
            await c.send({"action": "auth", "token": alice_token})
            await c.expect("authenticated")
            await c.send({"action": "subscribe", "channel": "orders"})
            await wait_until(lambda: app.broker.clients, what="alice watching")
            # One trader on alice's account (a random customer each round could take many rounds to pick her)
            # and one on everyone else's at the same time: she must see only hers.
            others = [a for name, (a, _) in app.demo_customers.items() if name != "alice"]
            tasks = [asyncio.create_task(demo.broker_trader(bsim, app.simulator, interval=0.05, accounts=accounts))
                     for accounts in ([alice_account], others)]
            try:
                got = [await c.expect("order_update", timeout=10) for _ in range(3)]
            finally:
                for task in tasks:
                    task.cancel()
            assert [m["event"] for m in got] == ["new", "partial_fill", "fill"]
            assert {m["account"] for m in got} == {alice_account}
    assert (tmp_path / "broker-demo.sqlite3").exists()


async def test_demo_at_night_streams_crypto_and_rests_stocks_at_their_last_price(tmp_path):
    """The default demo keeps real market hours: at 21:00 New York time (pinned) the clock says closed with the
    next open, BTC/USD trades, AAPL sends none but its snapshot has the last session's price and day; a made-up
    ticker gets neither a snapshot nor trades."""
    night = NIGHT
    cfg = Config(demo=True, host="127.0.0.1", port=0, state_dir=str(tmp_path), token=TOKEN, timings=FAST,
                 ping_interval=0, demo_session=night.isoformat())
    async with running(cfg) as app:
        await wait_until(lambda: app.relay.sources.default.upstream.connected)
        status, clock = await asyncio.to_thread(http_get, app.port, "/api/clock", TOKEN)
        assert status == 200 and clock["is_open"] is False and clock["timestamp"].startswith(night.date().isoformat())
        assert clock["next_open"] > clock["timestamp"] and "T09:30:00" in clock["next_open"]
        async with Browser.connect(app.port) as c:
            await c.expect("welcome")
            for symbol in ("AAPL", "ZZZZQ", "BTC/USD"):
                await c.send({"action": "subscribe", "symbol": symbol})
            snap = await c.expect(lambda m: m.get("type") == "snapshot" and m.get("symbol") == "AAPL", timeout=10)
            assert snap["data"]["latest_trade"]["price"] > 0 and snap["data"]["daily"]["volume"] > 1_000_000
            for _ in range(10):
                await c.expect(lambda m: m.get("type") == "trade" and m.get("symbol") == "BTC/USD", timeout=10)
            await c.drain(0.5)
            stocks = [m for m in c.seen if m.get("symbol") in ("AAPL", "ZZZZQ") and m.get("type") == "trade"]
            assert stocks == []
            assert not [m for m in c.seen if m.get("type") == "snapshot" and m.get("symbol") == "ZZZZQ"]


async def test_bars_rest_serves_the_latest_bars_of_a_window_in_the_past_oldest_first(tmp_path):
    """The chart's backfill on the Monday after Thanksgiving (pinned, whatever today is): a window of six days up
    to 07:00 holds Friday's short session and is bounded by its own length, not by today's date; bars come oldest
    first; a window that ends before it starts is refused with the reason."""
    cfg = Config(demo=True, host="127.0.0.1", port=0, state_dir=str(tmp_path), token=TOKEN, timings=FAST,
                 ping_interval=0, demo_session=MONDAY_PRE.isoformat())
    end = MONDAY_PRE.astimezone(UTC)
    window = f"start={(end - timedelta(days=6)):%Y-%m-%dT%H:%M:%SZ}&end={end:%Y-%m-%dT%H:%M:%SZ}"
    async with running(cfg) as app:
        status, body = await asyncio.to_thread(http_get, app.port, f"/api/bars?symbol=AAPL&timeframe=1Min&{window}",
                                               TOKEN)
        assert status == 200, body
        stamps = [b["t"] for b in body["bars"]]
        assert stamps == sorted(stamps) and len(stamps) >= 210
        friday = [t for t in stamps if t.startswith("2026-11-27")]
        assert (friday[0], friday[-1]) == ("2026-11-27T14:30:00Z", "2026-11-27T17:59:00Z")  # 09:30 to 12:59 ET
        assert stamps[-1] <= f"{end:%Y-%m-%dT%H:%M:%SZ}"
        backwards = f"start={end:%Y-%m-%dT%H:%M:%SZ}&end={(end - timedelta(hours=1)):%Y-%m-%dT%H:%M:%SZ}"
        status, body = await asyncio.to_thread(http_get, app.port, f"/api/bars?symbol=AAPL&timeframe=1Min&{backwards}",
                                               TOKEN)
        assert status == 400 and body["message"] == "start must not be after end"
