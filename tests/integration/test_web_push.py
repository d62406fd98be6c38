"""Web Push end to end over real sockets: the daemon against the simulator, a browser's subscription posted over
REST, and a push service on 127.0.0.1 (tests/support/push_service.py) that checks each message's VAPID token and
decrypts its aes128gcm payload with the subscription's own keys, as the vendor's service and the browser do."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import jwt
import orjson
import pytest

from tests.support.docs import REPO_ROOT, block
from tests.support.push_service import PushService
from tests.support.relay import FAST, TOKEN, relay_config, running, wait_until
from trade_stream import cli, config
from trade_stream.core.push_subscriptions import SqlitePushStore
from trade_stream.records import vapid

pytestmark = pytest.mark.timeout(40)
TIMINGS = dataclasses.replace(FAST, webhook_backoff=0.05, webhook_backoff_max=0.2, webhook_wait_min=0.01)
KEYS = vapid.generate("mailto:ops@example.com")
PATH = "/api/push/subscriptions"


@pytest.fixture
async def service():
    s = await PushService(KEYS.public_key).start()
    yield s
    await s.stop()


def push_config(sim, tmp_path: Path, **kw):
    return relay_config(sim, tmp_path, timings=TIMINGS, vapid=KEYS, vapid_public_key=KEYS.public_key, **kw)


def call(port: int, method: str, body: object = None, token: str | None = TOKEN, path: str = PATH
         ) -> tuple[int, dict]:
    data = None if body is None else (body if isinstance(body, bytes) else orjson.dumps(body))
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


async def api(app, method: str, body: object = None, token: str | None = TOKEN, path: str = PATH
              ) -> tuple[int, dict]:
    return await asyncio.to_thread(call, app.port, method, body, token, path)


async def up(app):
    await wait_until(lambda: app.relay.sources.default.upstream.connected and app.tradings["default"].connected,
                     what="both streams up")


def fill(sim, symbol: str = "AAPL", qty: int = 10, price: float = 99.5) -> dict:
    order = sim.submit_order(symbol, "buy", qty, type="limit", limit_price=price + 1)
    sim.fill_order(order["id"], price=price)
    return order


async def test_a_fill_reaches_the_subscription_as_one_verified_decrypted_push(sim, tmp_path, service):
    browser = service.subscribe("alice")
    async with running(push_config(sim, tmp_path)) as app:
        await up(app)
        status, created = await api(app, "POST", browser)
        assert status == 201 and created["push_service"] == service.origin and created["replaced"] == []
        order = fill(sim)
        rejected = sim.submit_order("TSLA", "sell", 1, type="limit", limit_price=900)
        sim.reject_order(rejected["id"])
        await wait_until(lambda: len(service.delivered()) >= 2, timeout=20, what="the fill and the rejection")
        await wait_until(lambda: app.status()["push"]["delivered"] >= 2, what="recorded as delivered")
        assert app.status()["push"]["subscriptions"] == 1
    assert not [p.error for p in service.seen if p.error]  # every message passed the service's checks
    # The default preferences push fills and rejections, not the other order events (accepted, new).
    pushed = {p.payload["type"]: p for p in service.delivered()}
    assert sorted(pushed) == ["order_filled", "order_rejected"] and len(service.seen) == 2
    filled = pushed["order_filled"]
    assert filled.payload["title"] == "Order filled" and filled.payload["body"] == "Buy 10 AAPL filled at $99.50"
    assert filled.payload["trade_id"] == order["id"] and filled.payload["tag"] == f"trade-stream-{filled.payload['id']}"
    assert filled.claims["aud"] == service.origin and filled.claims["sub"] == "mailto:ops@example.com"
    assert filled.headers["urgency"] == "normal" and 86000 < int(filled.headers["ttl"]) <= 86400
    rejection = pushed["order_rejected"]
    assert rejection.payload["level"] == "warning" and rejection.headers["urgency"] == "high"
    assert 3000 < int(rejection.headers["ttl"]) <= 3600


async def test_the_api_checks_the_subscription_and_keeps_a_bounded_number_per_user(sim, tmp_path, service):
    async with running(push_config(sim, tmp_path, push_max_subscriptions=2)) as app:
        good = service.subscribe()
        assert (await api(app, "POST", good, token=None))[0] == 401
        bad_cases = [
            ({**good, "endpoint": "ftp://push.example/x"}, "endpoint"),
            ({**good, "endpoint": "https://user:pw@push.example/x"}, "endpoint"),
            ({**good, "keys": {"auth": good["keys"]["auth"]}}, "keys.p256dh"),
            ({**good, "keys": {**good["keys"], "p256dh": "AAAA"}}, "keys.p256dh"),
            ({**good, "keys": {**good["keys"], "auth": "c2hvcnQ"}}, "keys.auth"),
            ({"endpoint": good["endpoint"]}, "keys"),
        ]
        for body, field in bad_cases:
            status, answer = await api(app, "POST", body)
            assert status == 400 and answer["message"].startswith(field), (body, answer)
        assert (await api(app, "POST", b"{not json"))[0] == 400
        first, second, third = service.subscribe(), service.subscribe(), service.subscribe()
        ids = [(await api(app, "POST", s))[1] for s in (first, second)]
        status, answer = await api(app, "POST", third)
        assert status == 201 and answer["replaced"] == [ids[0]["id"]]  # the oldest made room
        status, listed = await api(app, "GET")
        assert status == 200 and listed["public_key"] == KEYS.public_key
        assert [s["id"] for s in listed["subscriptions"]] == [ids[1]["id"], answer["id"]]
        assert (await api(app, "DELETE", {"endpoint": second["endpoint"]})) == (200, {"removed": True})
        assert (await api(app, "DELETE", {"endpoint": second["endpoint"]}))[0] == 404
        assert [s["id"] for s in (await api(app, "GET"))[1]["subscriptions"]] == [answer["id"]]
    # Kept on disk: a restart has the same one.
    store = SqlitePushStore(tmp_path / "push-subscriptions.sqlite3")
    try:
        assert [s.endpoint for s in store.load()] == [third["endpoint"]]
    finally:
        store.close()


async def test_a_410_removes_the_subscription_and_gives_up_its_deliveries(sim, tmp_path, service):
    browser = service.subscribe()
    service.script = [410]
    async with running(push_config(sim, tmp_path)) as app:
        await up(app)
        assert (await api(app, "POST", browser))[0] == 201
        fill(sim)
        await wait_until(lambda: app.status()["push"]["gone"] == 1, timeout=20, what="the subscription gone")
        await wait_until(lambda: app.status()["push"]["failed"] == 1, what="the delivery given up")
        assert (await api(app, "GET"))[1]["subscriptions"] == []
        fill(sim, "MSFT")  # nothing to send it to any more
        await wait_until(lambda: app.parts.notifier.created >= 4, what="the next fill notified")
        await asyncio.sleep(0.3)
        status = app.status()["push"]
        assert (status["subscriptions"], status["pending"], status["delivered"]) == (0, 0, 0)
    assert [p.status for p in service.seen] == [410]


async def test_a_500_is_retried_and_delivered_once(sim, tmp_path, service):
    browser = service.subscribe()
    service.script = [500, 503]
    async with running(push_config(sim, tmp_path)) as app:
        await up(app)
        await api(app, "POST", browser)
        fill(sim)
        await wait_until(lambda: app.status()["push"]["delivered"] == 1, timeout=20, what="delivered after retries")
        status = app.status()["push"]
        assert status["errors"] == 2 and status["failed"] == 0 and status["pending"] == 0
    assert [p.status for p in service.seen] == [500, 503, 201]
    assert len({p.payload["id"] for p in service.seen}) == 1  # the same notification each time, re-encrypted


async def test_pending_pushes_survive_a_restart(sim, tmp_path, service):
    browser = service.subscribe()
    service.default = 503
    cfg = push_config(sim, tmp_path)
    async with running(cfg) as app:
        await up(app)
        await api(app, "POST", browser)
        fill(sim)
        await wait_until(lambda: app.status()["push"]["errors"] >= 2 and app.status()["push"]["pending"] == 1,
                         timeout=20, what="queued and failing")
    service.default = 201
    async with running(cfg) as app:  # a new daemon on the same state directory: the subscription and the outbox
        await up(app)
        await wait_until(lambda: len(service.delivered()) == 1, timeout=20, what="sent after the restart")
        await wait_until(lambda: app.status()["push"]["pending"] == 0, what="the outbox empty")
    assert service.delivered()[0].payload["type"] == "order_filled"


async def test_preferences_decide_which_kinds_are_pushed(sim, tmp_path, service):
    browser = service.subscribe()
    async with running(push_config(sim, tmp_path)) as app:
        await up(app)
        await api(app, "POST", browser)
        status, saved = await api(app, "PUT", {"fills": ["bell"], "order_events": ["bell", "push"]},
                                  path="/api/notifications/preferences")
        assert status == 200 and saved["preferences"]["fills"] == ["bell"]
        fill(sim)
        await wait_until(lambda: app.parts.notifier.created >= 2, timeout=20, what="accepted and filled notified")
        await wait_until(lambda: app.status()["push"]["delivered"] >= 1, timeout=20, what="a push delivered")
        await asyncio.sleep(0.3)  # a push of the fill, were it queued, would have gone by now
        assert app.status()["push"]["pending"] == 0
    assert [p.payload["type"] for p in service.seen] == ["order_accepted"]


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trade_stream", *args], capture_output=True, text=True, timeout=30,
                          env=env, cwd=cwd)


def test_push_keys_prints_settings_that_load_and_bad_ones_stop_the_start(tmp_path):
    out = run_cli("push", "keys", "--subject", "mailto:ops@example.com")
    assert out.returncode == 0, out.stderr
    lines = dict(line.split("=", 1) for line in out.stdout.splitlines())
    assert sorted(lines) == sorted(vapid.SETTINGS) and lines["TRADE_STREAM_VAPID_SUBJECT"] == "mailto:ops@example.com"
    keys = vapid.load(*(lines[s] for s in vapid.SETTINGS))
    assert len(vapid.b64url_decode(keys.public_key)) == 65
    base = {"PATH": "/usr/bin:/bin", "TRADE_STREAM_STATE_DIR": str(tmp_path), "HOME": str(tmp_path),
            "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "services")}
    other = vapid.env_lines(vapid.generate("mailto:a@example.com"))[1].split("=", 1)[1]
    cases = {
        "TRADE_STREAM_VAPID_PUBLIC_KEY is not set": {k: v for k, v in lines.items() if "PUBLIC" not in k},
        "TRADE_STREAM_VAPID_PUBLIC_KEY is not the public key": {**lines, "TRADE_STREAM_VAPID_PUBLIC_KEY": other},
        "TRADE_STREAM_VAPID_PRIVATE_KEY is 3 bytes": {**lines, "TRADE_STREAM_VAPID_PRIVATE_KEY": "abcd"},
        "TRADE_STREAM_VAPID_SUBJECT must be mailto:": {**lines, "TRADE_STREAM_VAPID_SUBJECT": "ops@example.com"},
    }
    for expected, env in cases.items():
        out = run_cli("--demo", env={**base, **env}, cwd=tmp_path)
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, (expected, out.stderr)
        assert expected in out.stderr, out.stderr
    assert run_cli("push", "keys", "--subject", "nobody").returncode == 2


def test_the_readme_keys_command_writes_an_env_file_the_daemon_loads(tmp_path):
    (tmp_path / ".venv").symlink_to(REPO_ROOT / ".venv")
    subprocess.run(["bash", "-euc", block("README.md", "push-keys")], cwd=tmp_path, check=True, timeout=30)
    args = cli.build_parser().parse_args(["--demo", "--env-file", str(tmp_path / ".env")])
    cfg = config.load(args, environ={})
    assert cfg.vapid is not None and cfg.vapid.subject == "mailto:you@example.com"
    assert cfg.vapid_public_key == cfg.vapid.public_key
    shown = cfg.public_view()
    assert cfg.vapid_private_key not in str(shown) and "vapid" not in shown  # the secret is masked in the logs


async def test_a_jwt_users_subscription_gets_the_fills_of_the_accounts_their_token_named(sim, tmp_path, service):
    """A JWT user is known only while a token of theirs is presented: their subscription remembers the accounts
    the token named, so a fill on one of them reaches them with no tab open."""
    secret = "jwt-secret-for-push-tests-0123456789"
    now = int(time.time())
    token = jwt.encode({"sub": "jay", "accounts": ["default"], "exp": now + 600}, secret, algorithm="HS256")
    elsewhere = jwt.encode({"sub": "kim", "accounts": ["other"], "exp": now + 600}, secret, algorithm="HS256")
    jay, kim = service.subscribe("jay"), service.subscribe("kim")
    async with running(push_config(sim, tmp_path, jwt_secret=secret, token="")) as app:
        await up(app)
        assert (await api(app, "POST", jay, token=token))[0] == 201
        assert (await api(app, "POST", kim, token=elsewhere))[0] == 201
        fill(sim)
        await wait_until(lambda: app.status()["push"]["delivered"] >= 1, timeout=20, what="the fill pushed")
        await asyncio.sleep(0.3)  # a push to kim, were one queued, would have gone by now
        assert app.status()["push"]["pending"] == 0
    assert [(p.path, p.payload["type"]) for p in service.seen] == [("/push/jay", "order_filled")]
