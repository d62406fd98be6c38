"""Failed-auth throttling: one mechanism on every path (WebSocket auth, SSE orders, REST orders, the
Alpaca-compatible /stream and /v2/{feed}). Wrong tokens from one source get 429 after a while; the right token
is never refused because of anybody's failures, not even its own source's."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

import orjson
import pytest
from websockets.asyncio.client import connect

from tests.support.relay import TOKEN, Browser
from tests.support.sse import sse_get

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def app(app_sse):
    return app_sse


def rest_events(port: int, token: str) -> tuple[int, dict[str, str], dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/orders/events?since=0")
    req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), orjson.loads(exc.read())


async def ws_auth(port: int, token: str) -> dict:
    async with Browser.connect(port) as c:
        await c.send({"action": "auth", "token": token})
        return await c.expect(lambda m: m.get("type") in ("authenticated", "error"))


async def market_auth(port: int, secret: str) -> list:
    async with connect(f"ws://127.0.0.1:{port}/v2/iex", ping_interval=None, close_timeout=0.5) as ws:
        assert orjson.loads(await ws.recv()) == [{"T": "success", "msg": "connected"}]
        await ws.send(orjson.dumps({"action": "auth", "key": "k", "secret": secret}).decode())
        return orjson.loads(await ws.recv())


async def trading_auth(port: int, secret: str) -> str:
    async with connect(f"ws://127.0.0.1:{port}/stream", ping_interval=None, close_timeout=0.5) as ws:
        await ws.send(orjson.dumps({"action": "auth", "key": "k", "secret": secret}).decode())
        return orjson.loads(await ws.recv())["data"]["status"]


async def sse_orders_status(port: int, token: str) -> tuple[int, dict[str, str]]:
    async with sse_get(port, "/api/stream/orders", {"Authorization": f"Bearer {token}"}) as r:
        return r.status, r.headers


async def test_ten_wrong_tokens_then_the_right_one_from_the_same_ip_is_accepted_on_every_path(sim, app):
    for _ in range(10):
        assert (await ws_auth(app.port, "guess"))["code"] == "unauthorized"
    # The source is now throttled for that wrong token, on every path: 429 with Retry-After.
    assert (await ws_auth(app.port, "guess"))["code"] == "rate_limited"
    status, headers, body = await asyncio.to_thread(rest_events, app.port, "guess")
    assert status == 429 and int(headers["Retry-After"]) > 0 and body["error"] == "Too Many Requests"
    status, headers = await sse_orders_status(app.sse.port, "guess")
    assert status == 429 and int(headers["retry-after"]) > 0
    assert (await market_auth(app.port, "guess"))[0]["code"] == 402
    assert await trading_auth(app.port, "guess") == "unauthorized"
    # The right token from the same address is accepted everywhere.
    assert (await ws_auth(app.port, TOKEN))["type"] == "authenticated"
    status, _, body = await asyncio.to_thread(rest_events, app.port, TOKEN)
    assert status == 200 and "events" in body
    status, _ = await sse_orders_status(app.sse.port, TOKEN)
    assert status == 200
    assert await market_auth(app.port, TOKEN) == [{"T": "success", "msg": "authenticated"}]
    assert await trading_auth(app.port, TOKEN) == "authorized"


async def test_rest_failures_are_counted_per_source_and_token_not_globally(sim, app):
    for _ in range(10):
        status, headers, _ = await asyncio.to_thread(rest_events, app.port, "stale-token")
        assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
    assert (await asyncio.to_thread(rest_events, app.port, "stale-token"))[0] == 429
    # Someone else's typo at the same address is still a plain 401, not locked out by the bot's failures.
    assert (await asyncio.to_thread(rest_events, app.port, "typo"))[0] == 401
    assert (await asyncio.to_thread(rest_events, app.port, TOKEN))[0] == 200
