"""Public views (status on both ports, metrics) show only what public clients hold: the orders side's price
subscriptions for open positions are private, and per-symbol tables are pruned when a symbol is dropped."""

from __future__ import annotations

import asyncio
import urllib.request

import orjson
import pytest

from tests.support.relay import TOKEN, Browser, wait_until

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def app(app_sse):
    return app_sse


def fetch(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return resp.read().decode()


async def public_views(app) -> dict[str, str]:
    return {
        "status": await asyncio.to_thread(fetch, app.port, "/api/stream/status"),
        "sse status": await asyncio.to_thread(fetch, app.sse.port, "/api/stream/status"),
        "metrics": await asyncio.to_thread(fetch, app.port, "/metrics"),
    }


def metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


async def test_position_symbols_of_an_open_orders_panel_are_not_in_public_status_or_metrics(sim, app):
    async with Browser.connect(app.port) as owner, Browser.connect(app.port) as public:
        await owner.send({"action": "auth", "token": TOKEN})
        await owner.expect("authenticated")
        await owner.send({"action": "subscribe", "channel": "orders"})
        await owner.expect("orders_snapshot")
        order = sim.submit_order("NVDA", "buy", 3)
        sim.fill_order(order["id"], price=100)
        await owner.expect(lambda m: m.get("type") == "position_update" and m["symbol"] == "NVDA")
        await wait_until(lambda: sim.subscriptions("/v2/iex")["trades"] == ["NVDA"], what="price subscription")
        sim.inject_trade("NVDA", price=101.0)
        await owner.expect(lambda m: m.get("type") == "position_update" and m["current_price"] == 101.0)

        views = await public_views(app)
        for name, text in views.items():
            assert "NVDA" not in text, name
        status = orjson.loads(views["status"])
        assert status["holders"] == {} and status["wanted_symbols"] == [] and status["active_symbols"] == []
        assert status["upstream_subscriptions"] == {} and status["last_message_age"] == {}
        assert metric(views["metrics"], "trade_stream_subscriptions{") == 0
        assert metric(views["metrics"], "trade_stream_upstream_symbols ") == 0

        # A public holder of the same symbol is shown (counting only itself), and after it leaves the symbol
        # lingers in view exactly as it would without the private holder, then disappears.
        await public.send({"action": "subscribe", "symbols": ["NVDA", "AAPL"]})
        await public.expect("subscribed")
        await wait_until(lambda: sim.subscriptions("/v2/iex")["trades"] == ["AAPL", "NVDA"], what="AAPL upstream")
        status = orjson.loads(await asyncio.to_thread(fetch, app.port, "/api/stream/status"))
        assert status["holders"] == {"AAPL": {"trades": 1}, "NVDA": {"trades": 1}}
        assert status["active_symbols"] == ["AAPL", "NVDA"]
        await public.send({"action": "unsubscribe", "symbols": ["NVDA"]})
        await public.expect("unsubscribed")
        status = orjson.loads(await asyncio.to_thread(fetch, app.port, "/api/stream/status"))
        assert "NVDA" in status["wanted_symbols"] and "NVDA" not in status["holders"]  # lingering, as usual

        async def nvda_gone() -> bool:
            views = await public_views(app)
            return all("NVDA" not in text for text in views.values())

        deadline = asyncio.get_running_loop().time() + 5
        while not await nvda_gone():
            assert asyncio.get_running_loop().time() < deadline, "NVDA still shown after the linger"
            await asyncio.sleep(0.05)
        assert sim.subscriptions("/v2/iex")["trades"] == ["AAPL", "NVDA"]  # still held, privately
