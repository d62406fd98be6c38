"""The session cookie (TRADE_STREAM_AUTH_COOKIE) as a credential on the SSE side-port, the browser WebSocket and
REST, over real sockets against the daemon and the simulator: a JWT or a users-file token in the cookie opens
what a Bearer token opens; an explicit credential wins over the cookie; a wrong cookie is a failed credential
(401, then 429); CORS grants credentials only to an allowed origin, echoed exactly; a foreign page's cookie is
refused (403) on a WebSocket handshake and a POST, even with ``*`` in the allowed origins."""

from __future__ import annotations

import logging
import time

import jwt
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.support.relay import TOKEN, Browser, free_port, relay_config, running, wait_until
from tests.support.sse import sse_get
from trade_stream.edges.identity import UserRecord, hash_token, new_token, write_users

pytestmark = pytest.mark.timeout(60)

COOKIE = "ts_session"
JWT_SECRET = "cookie-jwt-secret-0123456789abcdef0123"
APP_ORIGIN = "https://app.example.com"  # the web app, listed in TRADE_STREAM_ALLOWED_ORIGINS
FOREIGN = "https://evil.example"


def mint(sub: str = "carol", lifetime: float = 600) -> str:
    return jwt.encode({"sub": sub, "accounts": ["default"], "exp": int(time.time() + lifetime)}, JWT_SECRET,
                      algorithm="HS256")


@pytest.fixture
def alice_token(tmp_path) -> str:
    token_id, token = new_token()
    write_users(str(tmp_path / "users.toml"), [UserRecord("alice", hash_token(token), ("default",), False, token_id)])
    return token


async def start(sim, tmp_path, allowed: tuple[str, ...]):
    cfg = relay_config(sim, tmp_path / "state", sse_port=free_port(), auth_cookie=COOKIE, jwt_secret=JWT_SECRET,
                       users_file=str(tmp_path / "users.toml"), allowed_origins=allowed)
    cm = running(cfg)
    app = await cm.__aenter__()
    await wait_until(lambda: app.relay.sources.default.upstream.connected and app.tradings["default"].connected,
                     what="both streams up")
    return cm, app


@pytest.fixture
async def app(sim, tmp_path, alice_token):
    """The daemon with the cookie on, the web app's origin listed (no ``*``)."""
    cm, a = await start(sim, tmp_path, (APP_ORIGIN,))
    try:
        yield a
    finally:
        await cm.__aexit__(None, None, None)


@pytest.fixture
async def wildcard(sim, tmp_path, alice_token):
    """The same with ``*`` in the allowed origins too: any page may read public data."""
    cm, a = await start(sim, tmp_path, (APP_ORIGIN, "*"))
    try:
        yield a
    finally:
        await cm.__aexit__(None, None, None)


def cookie(value: str) -> tuple[str, str]:
    return ("Cookie", f"theme=dark; {COOKIE}={value}; lang=en")


async def connected_user(port: int, path: str, headers: list[tuple[str, str]]) -> tuple[int, str]:
    """(status, user) of an SSE stream: the user is the first part of the ``connected`` event's client id."""
    async with sse_get(port, path, headers) as r:
        if r.status != 200:
            return r.status, orjson.loads(r.body)["message"]
        ev = await r.until("connected")
        return 200, ev.json()["client_id"].rsplit("-", 2)[0]


async def test_sse_streams_take_a_jwt_or_a_users_file_token_from_the_cookie(sim, app, alice_token):
    port = app.sse.port
    async with sse_get(port, "/api/stream/orders", [cookie(mint("carol"))]) as r:
        assert r.status == 200
        assert (await r.until("connected")).json()["client_id"].startswith("carol-orders-")
        sim.submit_order("AAPL", "buy", 1)
        update = (await r.until("order:update", timeout=10)).json()
        assert update["symbol"] == "AAPL" and update["account"] == "default"
    # the cookie in quotes, split from the others over two Cookie header lines
    split = [("Cookie", "theme=dark"), ("Cookie", f'{COOKIE}="{alice_token}"; lang=en')]
    assert await connected_user(port, "/api/stream/alerts", split) == (200, "alice")
    assert await connected_user(port, "/api/stream/trading", [cookie(alice_token)]) == (200, "alice")
    # no credential at all: 401 naming every way to send one
    status, message = await connected_user(port, "/api/stream/orders", [("Cookie", "theme=dark")])
    assert status == 401 and f"the {COOKIE} cookie" in message and "?token=" in message


async def test_an_explicit_credential_wins_over_the_cookie_and_is_never_swapped_for_it(app, alice_token):
    port = app.sse.port
    assert await connected_user(port, "/api/stream/orders",
                                [("Authorization", f"Bearer {alice_token}"), cookie(mint("carol"))]) == (200, "alice")
    assert await connected_user(port, f"/api/stream/orders?token={TOKEN}", [cookie(alice_token)]) == (200, "default")
    status, _ = await connected_user(port, "/api/stream/orders",
                                     [("Authorization", "Bearer wrong-token"), cookie(alice_token)])
    assert status == 401  # the wrong header is answered, not replaced by the good cookie
    async with sse_get(app.port, "/api/orders/events?since=0",
                       [("Authorization", "Bearer wrong-token"), cookie(alice_token)]) as r:
        assert r.status == 401


async def test_rest_takes_the_cookie_and_a_foreign_page_cannot_post_with_it(app, alice_token):
    port = app.port
    async with sse_get(port, "/api/orders/events?since=0", [cookie(mint())]) as r:
        assert r.status == 200 and "events" in orjson.loads(r.body)
    async with sse_get(port, "/api/notifications/trades", [cookie(alice_token), ("Origin", APP_ORIGIN)]) as r:
        assert r.status == 200 and orjson.loads(r.body)["notifications"] == []
        assert r.headers["access-control-allow-origin"] == APP_ORIGIN
        assert r.headers["access-control-allow-credentials"] == "true"
    body = b'{"all":true}'
    headers = [cookie(alice_token), ("Content-Type", "text/plain")]
    async with sse_get(port, "/api/notifications/trades/read", [*headers, ("Origin", APP_ORIGIN)], "POST",
                       body=body) as r:
        assert r.status == 200
    # A cross-site "simple" POST (no preflight) that the browser sends with the visitor's cookie: refused.
    async with sse_get(port, "/api/notifications/trades/read", [*headers, ("Origin", FOREIGN)], "POST",
                       body=body) as r:
        answer = orjson.loads(r.body)
        assert r.status == 403 and FOREIGN in answer["message"] and "TRADE_STREAM_ALLOWED_ORIGINS" in answer["message"]
        assert "access-control-allow-origin" not in r.headers


async def test_a_wrong_cookie_is_a_failed_credential_401_then_throttled_on_every_path(app):
    for _ in range(5):
        status, _ = await connected_user(app.sse.port, "/api/stream/orders", [cookie("stale-session")])
        assert status == 401
    for _ in range(5):
        async with sse_get(app.port, "/api/orders/events?since=0", [cookie("stale-session")]) as r:
            assert r.status == 401 and r.headers["www-authenticate"] == "Bearer"
    # ten failures of that credential from this address: 429 everywhere, the WebSocket included
    async with sse_get(app.port, "/api/orders/events?since=0", [cookie("stale-session")]) as r:
        assert r.status == 429 and int(r.headers["retry-after"]) > 0
    async with sse_get(app.sse.port, "/api/stream/alerts", [cookie("stale-session")]) as r:
        assert r.status == 429
    async with Browser.connect(app.port, additional_headers=[cookie("stale-session")]) as c:
        await c.expect("welcome")
        refused = await c.expect("error")
        assert (refused["code"], refused["via"]) == ("rate_limited", "cookie")
        await c.send({"action": "subscribe", "symbols": ["AAPL"], "channels": ["trades"]})
        await c.expect("subscribed")  # the connection stays for public data


async def test_the_websocket_is_authenticated_by_the_handshake_cookie_and_an_auth_action_replaces_it(app,
                                                                                                     alice_token):
    headers = [cookie(alice_token)]
    async with Browser.connect(app.port, additional_headers=headers, origin=APP_ORIGIN) as c:
        await c.expect("welcome")
        assert await c.expect("authenticated") == {"type": "authenticated", "via": "cookie"}
        await c.send({"action": "subscribe", "channel": "orders"})
        assert (await c.expect("orders_snapshot"))["account"] == "default"
        assert len(app.accounts.clients_of("alice")) == 1
        await c.send({"action": "auth", "token": mint("carol")})  # what the client sends wins
        assert await c.expect("authenticated") == {"type": "authenticated"}
        assert app.accounts.clients_of("alice") == [] and len(app.accounts.clients_of("carol")) == 1
    async with Browser.connect(app.port, additional_headers=[cookie(mint("carol", lifetime=-60))]) as c:
        await c.expect("welcome")
        refused = await c.expect("error")
        assert (refused["code"], refused["via"]) == ("unauthorized", "cookie") and "expired" in refused["message"]
    async with Browser.connect(app.port) as c:  # no cookie: nothing but the welcome
        await c.expect("welcome")
        await c.drain(0.3)
        assert [m["type"] for m in c.seen] == ["welcome"]


async def test_cors_grants_credentials_to_an_allowed_origin_exactly_and_nothing_to_a_foreign_one(app):
    for port, path in ((app.sse.port, "/api/stream/orders"), (app.port, "/api/notifications/trades")):
        for method in ("OPTIONS", "GET"):
            async with sse_get(port, path, [("Origin", APP_ORIGIN)], method) as r:
                assert r.headers["access-control-allow-origin"] == APP_ORIGIN, (port, method)
                assert r.headers["access-control-allow-credentials"] == "true", (port, method)
                assert r.headers["vary"] == "Origin"
            async with sse_get(port, path, [("Origin", FOREIGN)], method) as r:
                assert "access-control-allow-origin" not in r.headers, (port, method)
                assert "access-control-allow-credentials" not in r.headers, (port, method)
        async with sse_get(port, path, [("Origin", APP_ORIGIN)], "OPTIONS") as r:
            assert r.status == 204 and "GET" in r.headers["access-control-allow-methods"]


async def test_with_a_wildcard_a_foreign_page_reads_public_data_but_never_gets_credentials(wildcard):
    async with sse_get(wildcard.sse.port, "/api/stream/status", [("Origin", FOREIGN)]) as r:
        assert r.status == 200 and r.headers["access-control-allow-origin"] == FOREIGN
        assert "access-control-allow-credentials" not in r.headers
    async with sse_get(wildcard.sse.port, "/api/stream/status", [("Origin", APP_ORIGIN)]) as r:
        assert r.headers["access-control-allow-credentials"] == "true"
    async with sse_get(wildcard.sse.port, "/api/stream/status", []) as r:  # no Origin: * and no credentials
        assert r.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in r.headers


async def test_a_websocket_carrying_the_cookie_from_a_foreign_origin_is_refused(wildcard, alice_token, caplog):
    url = f"ws://127.0.0.1:{wildcard.port}/"
    caplog.set_level(logging.WARNING, "trade_stream.ws")
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, origin=FOREIGN, additional_headers=[cookie(alice_token)]):
            pass
    refused = info.value.response
    assert refused.status_code == 403 and refused.headers["X-Trade-Stream-Refused"] == "cookie-origin"
    message = orjson.loads(refused.body)["message"]
    assert "\n" not in message and FOREIGN in message and "TRADE_STREAM_ALLOWED_ORIGINS" in message
    logged = [r.getMessage() for r in caplog.records if "cookie_origin_refused" in r.getMessage()]
    assert len(logged) == 1 and FOREIGN in logged[0]
    # The Alpaca-compatible paths on the same port are guarded alike.
    with pytest.raises(InvalidStatus) as info:
        async with connect(f"{url}stream", origin=FOREIGN, additional_headers=[cookie(alice_token)]):
            pass
    assert info.value.response.status_code == 403
    # Without the cookie the same page connects, as * says; with it, the web app's own page and a client
    # without Origin (not a page) are authenticated by it.
    async with Browser.connect(wildcard.port, origin=FOREIGN) as c:
        await c.expect("welcome")
    for origin in (APP_ORIGIN, None):
        async with Browser.connect(wildcard.port, origin=origin, additional_headers=[cookie(alice_token)]) as c:
            await c.expect("welcome")
            assert (await c.expect("authenticated"))["via"] == "cookie"
