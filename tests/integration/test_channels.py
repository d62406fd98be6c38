"""App channels end to end on one process: POST /api/publish on both ports → browser WebSocket subscribers, with
user scoping, batches, every refusal, replay by ``since`` and resets, access rules. Real daemon, real sockets."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.relay import Browser, free_port, relay_config, running, wait_until
from trade_stream.edges.identity import UserRecord, hash_token, new_token, write_users

pytestmark = pytest.mark.timeout(60)
KEY = "publish-key-0123456789abcdef"
TOKENS = {name: new_token() for name in ("alice", "bob", "carol", "root")}


def tok(name: str) -> str:
    return TOKENS[name][1]


def users_file(path) -> str:
    records = [
        UserRecord("alice", hash_token(tok("alice")), ("*",), False, TOKENS["alice"][0]),
        UserRecord("bob", hash_token(tok("bob")), ("*",), False, TOKENS["bob"][0]),
        UserRecord("carol", hash_token(tok("carol")), ("*",), False, TOKENS["carol"][0], ("app:*",)),
        UserRecord("root", hash_token(tok("root")), ("*",), True, TOKENS["root"][0]),
    ]
    write_users(str(path), records)
    return str(path)


@asynccontextmanager
async def daemon(sim, tmp_path, **overrides: Any):
    cfg = relay_config(sim, tmp_path, sse_port=free_port(), publish_key=KEY,
                       users_file=users_file(tmp_path / "users.toml"), **overrides)
    async with running(cfg) as app:
        yield app


@pytest.fixture
async def app(sim, tmp_path):
    async with daemon(sim, tmp_path) as a:
        yield a


async def publish(port: int, body: Any, key: str | None = KEY, raw: bytes | None = None,
                  headers: dict[str, str] | None = None) -> httpx.Response:
    sent = {"Authorization": f"Bearer {key}"} if key else {}
    sent.update(headers or {})
    async with httpx.AsyncClient(timeout=5) as client:
        if raw is not None:
            return await client.post(f"http://127.0.0.1:{port}/api/publish", content=raw, headers=sent)
        return await client.post(f"http://127.0.0.1:{port}/api/publish", json=body, headers=sent)


@asynccontextmanager
async def browser(port: int, user: str | None = None, channel: str | None = None, since: str | None = None):
    async with Browser.connect(port) as b:
        await b.expect("welcome")
        if user is not None:
            await b.send({"action": "auth", "token": tok(user)})
            await b.expect("authenticated")
        if channel is not None:
            await subscribe(b, channel, since)
        yield b


async def subscribe(b: Browser, channel: str, since: str | None = None) -> None:
    msg: dict[str, Any] = {"action": "subscribe", "channel": channel}
    if since is not None:
        msg["since"] = since
    await b.send(msg)
    await b.expect(lambda m: m.get("type") == "subscribed" and m.get("channel") == channel)


def events(b: Browser, channel: str | None = None) -> list[dict[str, Any]]:
    return [m for m in b.seen if m.get("type") == "event" and (channel is None or m["channel"] == channel)]


async def test_publish_on_either_port_reaches_a_websocket_subscriber(app):
    async with browser(app.port, "alice", "strategies:abc") as b:
        resp = await publish(app.port, {"channel": "strategies:abc", "event": "strategy:update",
                                        "data": {"pnl": 12.5}})
        assert resp.status_code == 200
        first = resp.json()["id"]
        got = await b.expect("event")
        assert got == {"type": "event", "channel": "strategies:abc", "event": "strategy:update", "id": first,
                       "data": {"pnl": 12.5}}
        resp = await publish(app.sse.port, {"channel": "strategies:abc", "event": "strategy:update", "data": {}})
        assert resp.status_code == 200
        got = await b.expect("event")
        assert got["id"] == resp.json()["id"] and got["id"] != first
        await b.send({"action": "unsubscribe", "channel": "strategies:abc"})
        await b.expect(lambda m: m.get("type") == "unsubscribed" and m.get("channel") == "strategies:abc")
        await publish(app.port, {"channel": "strategies:abc", "event": "after", "data": {}})
        await subscribe(b, "alerts")  # a fence: anything sent before this reply would be here by now
        assert [e["event"] for e in events(b)] == ["strategy:update", "strategy:update"]
    await wait_until(lambda: not app.relay.channels.subs, what="the disconnect to drop every subscription")


async def test_an_addressed_event_reaches_only_its_users(app):
    async with browser(app.port, "alice", "agent-status") as alice, browser(app.port, "bob", "agent-status") as bob, \
            browser(app.port, "root", "agent-status") as root:
        assert (await publish(app.port, {"channel": "agent-status", "event": "margin", "data": {"for": "alice"},
                                         "users": ["alice"]})).status_code == 200
        assert (await publish(app.sse.port, {"channel": "agent-status", "event": "margin", "data": {"for": "bob"},
                                             "users": ["bob"]})).status_code == 200
        await publish(app.port, {"channel": "agent-status", "event": "everyone", "data": {}})
        for b in (alice, bob, root):
            await b.expect(lambda m: m.get("event") == "everyone")
        assert [e["data"] for e in events(alice)] == [{"for": "alice"}, {}]
        assert [e["data"] for e in events(bob)] == [{"for": "bob"}, {}]
        assert [e["data"] for e in events(root)] == [{}]  # an admin sees every channel, not others' events


async def test_a_batch_is_published_in_order(app):
    async with browser(app.port, "alice", "app:dash") as b:
        batch = [{"channel": "app:dash", "event": "tick", "data": {"n": n}} for n in range(50)]
        resp = await publish(app.port, batch)
        assert resp.status_code == 200
        ids = resp.json()["ids"]
        assert len(ids) == 50 and len(set(ids)) == 50
        assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
        await b.expect(lambda m: m.get("data") == {"n": 49})
        assert [(e["id"], e["data"]["n"]) for e in events(b)] == list(zip(ids, range(50), strict=True))


@pytest.mark.parametrize("port", ["main", "sse"])
async def test_every_refusal_has_its_status_and_one_line(app, port):
    p = app.port if port == "main" else app.sse.port
    good = {"channel": "app:x", "event": "e", "data": {}}
    cases = [
        (await publish(p, None, raw=b"{not json"), 400, "not JSON"),
        (await publish(p, {"channel": "nope", "event": "e", "data": {}}), 400, "unknown channel"),
        (await publish(p, {"channel": "app:" + "x" * 65, "event": "e"}), 400, "unknown channel"),
        (await publish(p, {"channel": "app:x", "data": {}}), 400, '"event" is missing'),
        (await publish(p, {"channel": "app:x", "event": "e", "data": [1]}), 400, '"data" must be'),
        (await publish(p, [good, {"channel": "app:x"}]), 400, "event 1:"),
        (await publish(p, {**good, "users": []}), 400, '"users"'),
        (await publish(p, None, raw=b'{"channel": "app:x", "event": "e", "data": {"pad": "'
                       + b"x" * 70_000 + b'"}}'), 413, "TRADE_STREAM_PUBLISH_MAX_BYTES"),
        (await publish(p, good, key="wrong-key"), 401, "wrong publish key"),
        (await publish(p, good, key=None), 401, "missing Authorization"),
        (await publish(p, good, key=tok("alice")), 403, "not an admin"),
    ]
    for resp, status, words in cases:
        assert resp.status_code == status, resp.text
        message = resp.json()["message"]
        assert words in message and "\n" not in message
    assert (await publish(p, good, key=tok("root"))).status_code == 200  # an admin user may publish
    async with httpx.AsyncClient(timeout=5) as client:
        got = await client.get(f"http://127.0.0.1:{p}/api/publish")
        assert got.status_code == 405


async def test_a_key_presented_wrong_again_and_again_is_throttled(app):
    statuses = [(await publish(app.port, {"channel": "agent-status", "event": "e"}, key="stale-key")).status_code
                for _ in range(12)]
    assert statuses[:10] == [401] * 10 and statuses[10:] == [429, 429]
    resp = await publish(app.sse.port, {"channel": "agent-status", "event": "e"}, key="stale-key")
    assert resp.status_code == 429 and int(resp.headers["Retry-After"]) > 0
    assert (await publish(app.port, {"channel": "agent-status", "event": "e"})).status_code == 200  # the right key


async def test_since_replays_without_gap_and_resets_when_too_old(sim, tmp_path):
    async with daemon(sim, tmp_path, channel_history=5) as app:
        ids = (await publish(app.port, [{"channel": "app:r", "event": "n", "data": {"n": n}}
                                        for n in range(8)])).json()["ids"]
        async with browser(app.port, "alice", "app:r", since=ids[4]) as b:
            await b.expect(lambda m: m.get("data") == {"n": 7})
            live = (await publish(app.port, {"channel": "app:r", "event": "n", "data": {"n": 8}})).json()["id"]
            await b.expect(lambda m: m.get("id") == live)
            assert [e["data"]["n"] for e in events(b)] == [5, 6, 7, 8]
            assert not b.of_type("reset")
        for since in (ids[1], "1-0", "garbled", ids[-1] + "0"):  # trimmed, too old, not an id, never issued
            async with browser(app.port, "alice", "app:r", since=since) as b:
                await b.expect(lambda m: m.get("type") == "reset" and m.get("channel") == "app:r")
                live = (await publish(app.port, {"channel": "app:r", "event": "n", "data": {}})).json()["id"]
                await b.expect(lambda m, live=live: m.get("id") == live)
                assert [e["id"] for e in events(b)] == [live]
        async with browser(app.port, "alice", "app:r", since=live) as b:  # up to date: nothing to replay
            nxt = (await publish(app.port, {"channel": "app:r", "event": "n", "data": {}})).json()["id"]
            await b.expect(lambda m: m.get("id") == nxt)
            assert [e["id"] for e in events(b)] == [nxt] and not b.of_type("reset")


async def test_replay_keeps_addressed_events_to_their_users(app):
    first = (await publish(app.port, {"channel": "agent-status", "event": "start", "data": {}})).json()["id"]
    await publish(app.port, [{"channel": "agent-status", "event": "x", "data": {"for": u}, "users": [u]}
                             for u in ("alice", "bob", "alice")])
    for user, want in (("alice", ["alice", "alice"]), ("bob", ["bob"])):
        async with browser(app.port, user, "agent-status", since=first) as b:
            fence = (await publish(app.port, {"channel": "agent-status", "event": "fence", "data": {}})).json()["id"]
            await b.expect(lambda m, f=fence: m.get("id") == f)
            assert [e["data"].get("for") for e in events(b) if e["event"] == "x"] == want


async def test_channel_access_rules(sim, tmp_path):
    async with daemon(sim, tmp_path, public_channels=("app:status",)) as app:
        async with browser(app.port) as anon:
            await anon.send({"action": "subscribe", "channel": "strategies:abc"})
            err = await anon.expect("error")
            assert (err["code"], err["channel"]) == ("unauthorized", "strategies:abc")  # which request it refuses
            await subscribe(anon, "app:status")  # public: no login needed
            await anon.send({"action": "subscribe", "channel": "app:bad name"})
            err = await anon.expect("error")
            assert (err["code"], err["channel"]) == ("invalid_channel", "app:bad name")
            await publish(app.port, {"channel": "app:status", "event": "up", "data": {}})
            await anon.expect("event")
            await publish(app.port, {"channel": "app:status", "event": "mine", "data": {}, "users": ["alice"]})
            await publish(app.port, {"channel": "app:status", "event": "fence", "data": {}})
            await anon.expect(lambda m: m.get("event") == "fence")
            assert [e["event"] for e in events(anon)] == ["up", "fence"]  # an addressed event needs its user
        async with browser(app.port, "carol") as carol:  # channels = ["app:*"]
            await subscribe(carol, "app:anything")
            await carol.send({"action": "subscribe", "channel": "strategies:abc"})
            assert (await carol.expect("error"))["code"] == "unauthorized"
        async with browser(app.port, "alice") as alice:  # no channels field: every channel
            await subscribe(alice, "strategies:abc")
            await alice.send({"action": "subscribe", "channel": "strategies:abc"})
            err = await alice.expect("error")
            assert (err["code"], err["channel"]) == ("already_subscribed", "strategies:abc")
    async with daemon(sim, tmp_path) as app, browser(app.port) as anon:  # no public channels by default
        await anon.send({"action": "subscribe", "channel": "app:status"})
        assert (await anon.expect("error"))["code"] == "unauthorized"


async def test_market_subscriptions_keep_working_beside_channels(app):
    async with browser(app.port, "alice", "app:x") as b:
        await b.send({"action": "subscribe", "symbols": ["AAPL"], "channels": ["trades"]})
        await b.expect(lambda m: m.get("type") == "subscribed" and m.get("symbol") == "AAPL")
        await b.send({"action": "subscribe", "channel": "orders"})
        await b.expect(lambda m: m.get("type") == "subscribed" and m.get("channel") == "orders")


JWT_SECRET = "jwt-secret-for-channel-tests-0123456789"


def mint(claims: dict[str, Any]) -> str:
    import jwt

    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


async def test_a_jwt_channels_claim_narrows_and_an_expired_login_keeps_only_public_channels(sim, tmp_path):
    async with daemon(sim, tmp_path, jwt_secret=JWT_SECRET, public_channels=("app:status",)) as app:
        async with browser(app.port) as b:
            soon = int(time.time()) + 2
            await b.send({"action": "auth", "token": mint({"sub": "erin", "accounts": ["default"], "exp": soon,
                                                           "channels": ["app:*"]})})
            await b.expect("authenticated")
            await b.send({"action": "subscribe", "channel": "alerts"})
            assert (await b.expect("error"))["code"] == "unauthorized"  # outside the claim's globs
            await subscribe(b, "app:private")
            await subscribe(b, "app:status")
            await publish(app.port, {"channel": "app:status", "event": "yours", "data": {}, "users": ["erin"]})
            await b.expect(lambda m: m.get("event") == "yours")
            await b.expect(lambda m: m.get("code") == "token_expired", timeout=10)
            await publish(app.port, [{"channel": "app:private", "event": "gone", "data": {}},
                                     {"channel": "app:status", "event": "yours", "data": {}, "users": ["erin"]},
                                     {"channel": "app:status", "event": "public", "data": {}}])
            await b.expect(lambda m: m.get("event") == "public")
            assert [e["event"] for e in events(b)] == ["yours", "public"]
            assert app.relay.channels.channels_of(b_holder(app)) == {"app:status"}
        bad = mint({"sub": "erin", "accounts": ["default"], "exp": int(time.time()) + 60, "channels": "app:*"})
        async with browser(app.port) as b:
            await b.send({"action": "auth", "token": bad})
            assert "channels" in (await b.expect("error"))["message"]


def b_holder(app):
    """The one WebSocket client of the daemon."""
    (client,) = app.relay.clients
    return client


async def cli(*args: str, env: dict[str, str] | None = None, cwd=None) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "trade_stream", "publish", "--env-file", "/dev/null", *args],
        capture_output=True, text=True, timeout=30, cwd=cwd,
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **(env or {})})


async def test_the_publish_command(app, tmp_path):
    url = f"http://127.0.0.1:{app.port}"
    async with browser(app.port, "alice", "agent-status") as alice, browser(app.port, "bob", "agent-status") as bob:
        done = await cli("--url", url, "--channel", "agent-status", "--event", "agent:up", "--data", '{"cpu": 3}',
                         env={"TRADE_STREAM_PUBLISH_KEY": KEY})
        assert done.returncode == 0, done.stderr
        got = await alice.expect("event")
        assert got["id"] == done.stdout.strip() and got["data"] == {"cpu": 3} and got["event"] == "agent:up"
        mine = await cli("--url", url, "--key", KEY, "--channel", "agent-status", "--event", "mine", "--user",
                         "alice")
        assert mine.returncode == 0, mine.stderr
        await alice.expect(lambda m: m.get("event") == "mine")
        env_file = tmp_path / "publish.env"  # the port and the key from a .env file, as the daemon reads them
        env_file.write_text(f"TRADE_STREAM_PORT={app.port}\nTRADE_STREAM_PUBLISH_KEY={KEY}\n")
        fence = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "trade_stream", "publish", "--env-file", str(env_file),
                             "--channel", "agent-status", "--event", "fence"],
            capture_output=True, text=True, timeout=30, env={"PATH": os.environ["PATH"]})
        assert fence.returncode == 0, fence.stderr
        await bob.expect(lambda m: m.get("event") == "fence")
        assert [e["event"] for e in events(bob)] == ["agent:up", "fence"]
    failures = [
        (await cli("--url", url, "--key", "wrong", "--channel", "alerts", "--event", "e"), 1, "401 wrong publish key"),
        (await cli("--url", url, "--key", KEY, "--channel", "nope", "--event", "e"), 1, "400 unknown channel"),
        (await cli("--url", url, "--key", KEY, "--channel", "alerts", "--event", "e", "--data", "{x"), 2,
         "--data is not JSON"),
        (await cli("--url", url, "--channel", "alerts", "--event", "e"), 2, "TRADE_STREAM_PUBLISH_KEY"),
        (await cli("--url", f"http://127.0.0.1:{free_port()}", "--key", KEY, "--channel", "alerts", "--event", "e"),
         1, "cannot reach"),
    ]
    for done, code, words in failures:
        lines = done.stderr.strip().splitlines()
        assert done.returncode == code and len(lines) == 1 and words in lines[0], (code, done.stderr)
        assert lines[0].startswith("trade-stream publish: ")


def test_user_add_with_channels_writes_them_and_list_shows_them(tmp_path, capsys):
    from trade_stream.edges import identity
    from trade_stream.records.users import load_users

    path = str(tmp_path / "users.toml")
    assert identity.main(["--users-file", path, "add", "dora", "--accounts", "*", "--channels",
                          "strategies:*, alerts"]) == 0
    assert identity.main(["--users-file", path, "add", "eve", "--accounts", "*"]) == 0
    assert identity.main(["--users-file", path, "add", "fay", "--accounts", "*", "--channels", "a b"]) == 2
    users = {u.name: u for u in load_users(path)}
    assert users["dora"].channels == ("strategies:*", "alerts") and users["eve"].channels is None
    capsys.readouterr()
    assert identity.main(["--users-file", path, "list"]) == 0
    listed = dict(line.split("\t", 1) for line in capsys.readouterr().out.splitlines())
    assert listed == {"dora": "accounts=*\tadmin=no\tchannels=strategies:*,alerts", "eve": "accounts=*\tadmin=no"}
    identity.main(["--users-file", path, "remove", "eve"])  # a rewrite keeps the others' channels
    assert [u.channels for u in load_users(path)] == [("strategies:*", "alerts")]


README = "README.md"


def doc_block(doc: str, block_id: str) -> str:
    """A marked block of any language (the Python and JavaScript examples)."""
    from tests.support.docs import blocks

    (found,) = [b.text for b in blocks(doc) if b.id == block_id]
    return found


async def test_the_readme_publish_examples_run_as_written(app):
    from tests.support.docs import block, commands

    port = str(app.port)
    env = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "TRADE_STREAM_PUBLISH_KEY": KEY,
           "TRADE_STREAM_PORT": port, "HOME": os.environ.get("HOME", "/tmp")}
    async with browser(app.port, "alice", "strategies:abc") as alice:
        await subscribe(alice, "alerts")
        ran = []
        for command in commands(block(README, "publish-cli")):
            ran.append(await asyncio.to_thread(subprocess.run, ["bash", "-c", command.replace("8765", port)],
                                               capture_output=True, text=True, timeout=30, env=env))
        python = doc_block(README, "publish-python").replace("8765", port)
        ran.append(await asyncio.to_thread(subprocess.run, [sys.executable, "-c", python], capture_output=True,
                                           text=True, timeout=30, env=env))
        js = doc_block(README, "publish-js").replace("8765", port)
        ran.append(await asyncio.to_thread(subprocess.run, ["node", "--input-type=module", "-e", js],
                                           capture_output=True, text=True, timeout=30, env=env))
        for done in ran:
            assert done.returncode == 0, done.stderr
        await alice.expect(lambda m: m.get("event") == "alert:new")
        got = [(e["channel"], e["event"]) for e in events(alice)]
        assert got == [("strategies:abc", "strategy:update"), ("alerts", "margin"),
                       ("strategies:abc", "strategy:update"), ("alerts", "alert:new")]
        ids = [e["id"] for e in events(alice)]
        assert ran[0].stdout.strip() == ids[0] and ran[2].stdout.strip() == ids[2] and ran[3].stdout.strip() == ids[3]


async def test_cors_metrics_and_the_key_kept_secret(sim, tmp_path, caplog):
    caplog.set_level("INFO")
    async with daemon(sim, tmp_path, allowed_origins=("https://app.example",), max_channels_per_client=2) as app:
        origin = {"Origin": "https://app.example"}
        async with httpx.AsyncClient(timeout=5) as client:
            for port in (app.port, app.sse.port):
                pre = await client.options(f"http://127.0.0.1:{port}/api/publish",
                                           headers={**origin, "Access-Control-Request-Method": "POST"})
                assert pre.status_code == 204 and "POST" in pre.headers["Access-Control-Allow-Methods"]
                assert pre.headers.get_list("Access-Control-Allow-Origin") == ["https://app.example"]
                done = await publish(port, {"channel": "agent-status", "event": "e"}, headers=origin)
                assert done.status_code == 200
                assert done.headers.get_list("Access-Control-Allow-Origin") == ["https://app.example"]
            metrics = (await client.get(f"http://127.0.0.1:{app.port}/metrics")).text
            status = (await client.get(f"http://127.0.0.1:{app.port}/api/stream/status")).text
        assert "trade_stream_channel_published_total 2.0" in metrics
        assert KEY not in status and KEY not in caplog.text and KEY[-4:] in str(app.cfg.public_view())
        async with browser(app.port, "alice") as b:  # at most 2 channels per connection
            await subscribe(b, "app:one")
            await subscribe(b, "app:two")
            await b.send({"action": "subscribe", "channel": "app:three"})
            err = await b.expect("error")
            assert (err["code"], err["channel"]) == ("channel_limit", "app:three")
            await b.send({"action": "unsubscribe", "channel": "app:one"})
            await b.expect("unsubscribed")
            await subscribe(b, "app:three")


async def test_another_login_on_the_connection_keeps_what_the_new_user_may_see(app):
    async with browser(app.port, "alice") as b:
        await subscribe(b, "agent-status")
        await subscribe(b, "app:x")
        await b.send({"action": "auth", "token": tok("carol")})  # channels = ["app:*"]
        await b.expect("authenticated")
        await publish(app.port, [{"channel": "agent-status", "event": "gone", "data": {}},
                                 {"channel": "app:x", "event": "for-alice", "data": {}, "users": ["alice"]},
                                 {"channel": "app:x", "event": "for-carol", "data": {}, "users": ["carol"]}])
        await b.expect(lambda m: m.get("event") == "for-carol")
        assert [e["event"] for e in events(b)] == ["for-carol"]
        assert app.relay.channels.channels_of(b_holder(app)) == {"app:x"}
        await b.send({"action": "auth", "token": "wrong"})  # a failed login changes nothing
        await b.expect("error")
        assert app.relay.channels.channels_of(b_holder(app)) == {"app:x"}


async def test_the_session_cookie_does_not_publish(sim, tmp_path):
    """An admin's session cookie, which any site's page can make the browser send, is no publish credential."""
    async with daemon(sim, tmp_path, auth_cookie="ts_session") as app:
        for port in (app.port, app.sse.port):
            resp = await publish(port, {"channel": "agent-status", "event": "e"}, key=None,
                                 headers={"Cookie": f"ts_session={tok('root')}"})
            assert resp.status_code == 401, resp.text
        assert (await publish(app.port, {"channel": "agent-status", "event": "e"}, key=tok("root"))).status_code == 200
