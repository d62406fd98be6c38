"""Webhooks over real sockets: receivers on 127.0.0.1 that fail, hang, throttle, drip, flood and recover;
restarts; give-ups; signatures checked with the standardwebhooks library in Python and in JS."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import orjson
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from tests.support.receiver import Receiver
from tests.support.relay import FAST, relay_config, running, wait_until
from trade_stream import config
from trade_stream.edges.outbox import Outbox
from trade_stream.records.webhook_targets import WebhookTarget

pytestmark = pytest.mark.timeout(40)
SECRET = "whsec-test-1234"  # not whsec_<base64>: its bytes are the key
STANDARD_SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
TIMINGS = dataclasses.replace(FAST, webhook_backoff=0.05, webhook_backoff_max=0.2, webhook_wait_min=0.01)
JS = Path(__file__).resolve().parent.parent / "js"
NODE = shutil.which("node")


def targets(*receivers: tuple[str, Receiver], **kw) -> tuple[WebhookTarget, ...]:
    return tuple(WebhookTarget(name, r.url, secret=kw.get("secret", SECRET), timeout=kw.get("timeout", 0.5),
                               format=kw.get("format", "json"), legacy_signature=kw.get("legacy", False))
                 for name, r in receivers)


@pytest.fixture
async def receiver():
    r = await Receiver().start()
    yield r
    await r.stop()


def verify(received, secret: str = SECRET) -> dict:
    """What a receiver does: one call of the standardwebhooks library over the raw body and the headers."""
    hook = Webhook(secret) if secret.startswith("whsec_") else Webhook(secret.encode())
    body = hook.verify(received.body, received.headers)
    assert received.headers["webhook-id"] == received.headers["x-trade-stream-delivery"] == body["delivery_id"]
    assert received.headers["x-trade-stream-event"] == body["event"] == body["notification"]["type"]
    return body


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


async def up(app):
    await wait_until(lambda: app.relay.sources.default.upstream.connected and app.tradings["default"].connected,
                     what="both streams up")


async def test_failing_then_recovering_receiver_gets_each_event_once_in_order(sim, tmp_path, receiver):
    receiver.script = [500, "hang", ("429", 1), 503]
    cfg = relay_config(sim, tmp_path, timings=TIMINGS, webhooks=targets(("desk", receiver)))
    async with running(cfg) as app:
        await up(app)
        a = sim.submit_order("AAPL", "buy", 10, type="limit", limit_price=100)
        sim.fill_order(a["id"], qty=4, price=99.5)
        sim.fill_order(a["id"], price=99.75)
        b = sim.submit_order("TSLA", "sell", 1, type="limit", limit_price=900)
        sim.reject_order(b["id"])
        await wait_until(lambda: len(receiver.acked()) >= 5, timeout=20, what="all five delivered")
        # The receiver acks before the daemon has read its answer: wait for the daemon's side too.
        await wait_until(lambda: app.status()["webhooks"]["desk"]["delivered"] >= 5, what="all five recorded")
        status = app.status()["webhooks"]["desk"]
        assert (status["delivered"], status["failed"], status["pending"]) == (5, 0, 0)
        assert status["url"] == receiver.url  # with its port
        assert status["errors"] >= 4  # 500, the timeout, 429, 503
        metrics = await asyncio.to_thread(scrape, app.port)
        assert 'trade_stream_webhook_deliveries_total{target="desk"} 5.0' in metrics
        assert 'trade_stream_webhook_outbox_pending{target="desk"} 0.0' in metrics
    bodies = {}
    for r in receiver.seen:  # every attempt, failed or not, is signed, and a retry is the same delivery
        body = verify(r)
        assert bodies.setdefault(body["delivery_id"], r.body) == r.body
    acked = [verify(r) for r in receiver.acked()]
    ids = [b["delivery_id"] for b in acked]
    assert len(ids) == len(set(ids)) == 5 == len(bodies)  # each event exactly once by delivery id
    per_order: dict[str, list[str]] = {}
    for body in acked:
        per_order.setdefault(body["notification"]["trade_id"], []).append(body["event"])
    assert per_order == {a["id"]: ["order_accepted", "order_partial_fill", "order_filled"],
                         b["id"]: ["order_accepted", "order_rejected"]}
    note = next(b["notification"] for b in acked if b["event"] == "order_filled")
    assert note["message"] == "Buy 10 AAPL filled at $99.65" and note["symbol"] == "AAPL" and "read" not in note


async def test_pending_deliveries_survive_a_restart(sim, tmp_path, receiver):
    receiver.default = 503  # down for now
    cfg = relay_config(sim, tmp_path, timings=TIMINGS, webhooks=targets(("desk", receiver)))
    async with running(cfg) as app:
        await up(app)
        o = sim.submit_order("AAPL", "buy", 1)
        sim.fill_order(o["id"], price=10)
        await wait_until(lambda: app.status()["webhooks"]["desk"]["pending"] == 2
                         and app.status()["webhooks"]["desk"]["errors"] >= 2, what="queued and failing")
    tried = {orjson.loads(r.body)["delivery_id"] for r in receiver.seen}
    receiver.default = 200
    async with running(cfg) as app:  # a new daemon on the same state directory
        await up(app)
        await wait_until(lambda: len(receiver.acked()) >= 2, what="the pending two delivered after the restart")
        await wait_until(lambda: app.status()["webhooks"]["desk"]["pending"] == 0, what="the outbox empty")
    acked = [orjson.loads(r.body) for r in receiver.acked()]
    assert [b["event"] for b in acked] == ["order_accepted", "order_filled"]
    # the order's second event waited behind its first; the one tried before the restart kept its delivery id
    assert len(tried) == 1 and tried <= {b["delivery_id"] for b in acked}


async def test_a_400_is_given_up_and_reported_and_others_still_flow(sim, tmp_path, receiver):
    other = await Receiver().start()
    try:
        receiver.script = [400]
        hooks = (*targets(("strict", receiver)), *targets(("chat", other), format="slack"))
        async with running(relay_config(sim, tmp_path, timings=TIMINGS, webhooks=hooks)) as app:
            await up(app)
            o = sim.submit_order("AAPL", "buy", 2)
            sim.fill_order(o["id"], price=10)
            await wait_until(lambda: app.status()["webhooks"]["strict"]["failed"] == 1, what="given up")
            await wait_until(lambda: len(other.acked()) == 2 and len(receiver.acked()) == 1, what="the rest")
            await wait_until(lambda: app.status()["webhooks"]["strict"]["delivered"] == 1, what="recorded")
            status = app.status()["webhooks"]["strict"]
            assert "HTTP 400" in status["last_error"] and status["delivered"] == 1 and status["pending"] == 0
            assert len(receiver.seen) == 2  # the 400 was not retried
            metrics = await asyncio.to_thread(scrape, app.port)
            assert 'trade_stream_webhook_failures_total{target="strict"} 1.0' in metrics
        assert [orjson.loads(r.body) for r in other.acked()] == [{"text": "Buy 2 AAPL accepted"},
                                                                 {"text": "Buy 2 AAPL filled at $10.00"}]
    finally:
        await other.stop()


async def test_webhook_test_command_prints_the_answer_and_bad_files_exit_2(tmp_path, receiver):
    hooks = tmp_path / "hooks.toml"
    hooks.write_text(f'[[target]]\nname = "desk"\nurl = "{receiver.url}"\nsecret_env = "DESK_SECRET"\n')
    env = {"PATH": "/usr/bin:/bin", "TRADE_STREAM_WEBHOOKS_FILE": str(hooks), "DESK_SECRET": SECRET,
           "HOME": str(tmp_path)}
    run = lambda *args: subprocess.run([sys.executable, "-m", "trade_stream", "webhook", *args],  # noqa: E731
                                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=30)
    done = await asyncio.to_thread(run, "test", "desk")
    assert done.returncode == 0, done.stderr
    assert "OK   HTTP 200" in done.stdout and '{"status":200}' in done.stdout
    assert done.stdout.startswith(f"POST {receiver.url} (format json, signed: yes)"), done.stdout
    body = verify(receiver.seen[-1])
    assert body["event"] == "test" and "filled" in body["notification"]["message"]
    receiver.script = [500]
    done = await asyncio.to_thread(run, "test", "desk")
    assert done.returncode == 1 and "FAIL HTTP 500" in done.stdout
    done = await asyncio.to_thread(run, "test", "nobody")
    assert done.returncode == 2 and "no target named 'nobody'; targets: desk" in done.stderr
    env_file = tmp_path / "hooks.env"
    env_file.write_text(f"TRADE_STREAM_WEBHOOKS_FILE={hooks}\n")
    del env["TRADE_STREAM_WEBHOOKS_FILE"]
    for args in (("--env-file", str(env_file), "test", "desk"), ("test", "desk", "--env-file", str(env_file))):
        done = await asyncio.to_thread(run, *args)  # the file named before or after the target
        assert done.returncode == 0 and "OK   HTTP 200" in done.stdout, (args, done.stderr)
    before = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "trade_stream", "--env-file",
                                     str(env_file), "webhook", "test", "desk"], capture_output=True, text=True,
                                     env=env, cwd=tmp_path, timeout=30)  # ...or before the subcommand
    assert before.returncode == 0 and "OK   HTTP 200" in before.stdout, before.stderr
    env["TRADE_STREAM_WEBHOOKS_FILE"] = str(hooks)
    hooks.write_text('[[target]]\nname = "desk"\nurl = "ftp://x"\n')
    daemon = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "trade_stream", "--demo"],
                                     capture_output=True, text=True, env=env, cwd=tmp_path, timeout=30)
    assert daemon.returncode == 2
    assert daemon.stderr.strip().splitlines() == [
        f"trade-stream: TRADE_STREAM_WEBHOOKS_FILE={hooks}: target #1 ('desk'): url must be an http:// or https:// URL"]
    hooks.write_text('[[target]]\nname = "desk"\nurl = "http://127.0.0.1:9/"\nsecret = "whsec_not base64!"\n')
    daemon = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "trade_stream", "--demo"],
                                     capture_output=True, text=True, env=env, cwd=tmp_path, timeout=30)
    assert daemon.returncode == 2
    assert daemon.stderr.strip().splitlines() == [
        f"trade-stream: TRADE_STREAM_WEBHOOKS_FILE={hooks}: target #1 ('desk'): secret: after whsec_ must come the "
        "key in base64 (padded), e.g. whsec_$(openssl rand -base64 32)"]
    assert config.Config().webhooks == ()


# -- hostile targets ----------------------------------------------------------------------------------------


async def test_a_delivery_past_attempt_1024_is_retried_later_and_one_past_its_deadline_given_up(sim, tmp_path,
                                                                                             receiver, caplog):
    """2 ** 1023 seconds overflows a float: the row must still be updated (no hot loop) and the give-up honoured."""
    receiver.default = 503
    hooks = targets(("desk", receiver))
    outbox = Outbox(tmp_path / "webhooks.sqlite3")
    note = lambda i: {"id": i, "type": "order_filled", "trade_id": f"order-{i}", "message": "m"}  # noqa: E731
    outbox.enqueue([note(1), note(2)], lambda n: [(str(uuid.uuid4()), "desk", n["trade_id"], n["type"], b"{}")], 0)
    now = time.time()
    outbox.db.execute("UPDATE deliveries SET attempts = 1100 WHERE order_key = 'order-1'")
    outbox.db.execute("UPDATE deliveries SET attempts = 5000, created = ? WHERE order_key = 'order-2'",
                      (now - TIMINGS.webhook_give_up - 1,))
    outbox.close()
    async with running(relay_config(sim, tmp_path, timings=TIMINGS, webhooks=hooks)) as app:
        await wait_until(lambda: app.status()["webhooks"]["desk"]["failed"] == 1, what="the late one given up")
        rows = lambda: {r[0]: r[1:] for r in app.webhooks.outbox.db.execute(  # noqa: E731
            "SELECT order_key, attempts, state, next_at FROM deliveries").fetchall()}
        await wait_until(lambda: rows()["order-1"][0] >= 1102, what="the other retried, its row updated each time")
        assert rows()["order-2"][:2] == (5001, "failed")
        attempts, state, next_at = rows()["order-1"]
        assert state == "pending" and next_at <= time.time() + TIMINGS.webhook_backoff_max + 1
        seen_first = sum(1 for r in receiver.seen if r.body == b"{}")
        assert seen_first >= attempts - 1100  # every attempt counted once in the row (one may be in flight)
    logged = caplog.text
    assert "OverflowError" not in logged and "Task exception was never retrieved" not in logged


async def test_retry_after_zero_still_waits_the_floor(sim, tmp_path, receiver):
    """503 with Retry-After: 0 must not be retried at once: every wait is at least webhook_wait_min."""
    receiver.script = [("503", 0)] * 3
    timings = dataclasses.replace(TIMINGS, webhook_wait_min=0.4, webhook_backoff_max=2.0)
    async with running(relay_config(sim, tmp_path, timings=timings, webhooks=targets(("desk", receiver)))) as app:
        await up(app)
        sim.submit_order("AAPL", "buy", 1)
        await wait_until(lambda: app.status()["webhooks"]["desk"]["delivered"] == 1, timeout=15, what="delivered")
    assert [r.status for r in receiver.seen] == [503, 503, 503, 200]
    gaps = [b.at - a.at for a, b in zip(receiver.seen, receiver.seen[1:], strict=False)]
    assert min(gaps) >= 0.4, gaps  # a lower bound only: a busy machine can only make the gaps longer


async def test_a_retry_after_beyond_the_ceiling_is_capped_not_given_up(sim, tmp_path, receiver):
    receiver.script = [("429", 99999999), ("503", 99999999)]
    async with running(relay_config(sim, tmp_path, timings=TIMINGS, webhooks=targets(("desk", receiver)))) as app:
        await up(app)
        sim.submit_order("AAPL", "buy", 1)
        await wait_until(lambda: app.status()["webhooks"]["desk"]["delivered"] == 1, timeout=10, what="delivered")
        status = app.status()["webhooks"]["desk"]
        assert (status["failed"], status["errors"]) == (0, 2)
    assert [r.status for r in receiver.seen] == [429, 503, 200]


async def test_a_huge_response_body_is_not_read(sim, tmp_path, receiver):
    """A target answering 200 with 256 MiB: the daemon reads a snippet, closes, and records the delivery."""
    size = 256 << 20
    receiver.script = [("big", size), ("big", size)]
    async with running(relay_config(sim, tmp_path, timings=TIMINGS, webhooks=targets(("desk", receiver),
                                                                                    timeout=20))) as app:
        await up(app)
        o = sim.submit_order("AAPL", "buy", 1)
        sim.fill_order(o["id"], price=10)
        await wait_until(lambda: app.status()["webhooks"]["desk"]["delivered"] == 2, timeout=30, what="delivered")
        await wait_until(lambda: all(r.finished for r in receiver.seen), timeout=10, what="the answers cut off")
    assert len(receiver.seen) == 2
    for r in receiver.seen:  # what the kernel buffers took before the daemon closed: far from the whole body
        assert r.sent < 32 << 20, r.sent


async def test_a_dripping_target_is_cut_off_at_the_attempt_deadline(sim, tmp_path, receiver):
    """One byte of the answer every 0.1 s never trips a per-read timeout; the attempt's own deadline must."""
    receiver.script = [("drip", 0.1)]
    hooks = targets(("desk", receiver), timeout=1.0)
    async with running(relay_config(sim, tmp_path, timings=TIMINGS, webhooks=hooks)) as app:
        await up(app)
        sim.submit_order("AAPL", "buy", 1)
        await wait_until(lambda: app.status()["webhooks"]["desk"]["delivered"] == 1, timeout=15,
                         what="the retry after the cut-off delivered")
        status = app.status()["webhooks"]["desk"]
        assert status["errors"] == 1 and "timeout after 1 s" in status["last_error"]
    assert [r.status for r in receiver.seen] == [None, 200]


async def test_the_outbox_keeps_at_most_its_bound_per_target_and_metrics_show_the_sizes(sim, tmp_path, receiver):
    """A dead target: beyond webhook_max_pending its oldest deliveries are given up and counted as dropped."""
    receiver.default = 503
    cfg = relay_config(sim, tmp_path, timings=TIMINGS, webhooks=targets(("desk", receiver)), webhook_max_pending=3)
    async with running(cfg) as app:
        await up(app)
        orders = [sim.submit_order(s, "buy", 1) for s in ("AAPL", "MSFT", "TSLA")]
        for o in orders:
            sim.fill_order(o["id"], price=10)
        await wait_until(lambda: app.status()["webhooks"]["desk"]["dropped"] == 3, timeout=10, what="3 dropped")
        status = app.status()["webhooks"]["desk"]
        assert (status["pending"], status["failed"], status["delivered"]) == (3, 3, 0)
        left = {r[0] for r in app.webhooks.outbox.db.execute(
            "SELECT event FROM deliveries WHERE state = 'pending'").fetchall()}
        assert left == {"order_filled"}  # the newest three: each order's fill
        metrics = await asyncio.to_thread(scrape, app.port)
        assert 'trade_stream_webhook_dropped_total{target="desk"} 3.0' in metrics
        sizes = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
                 if line.startswith(("trade_stream_webhook_outbox_bytes", "trade_stream_notification_store_bytes"))}
        assert sizes["trade_stream_webhook_outbox_bytes"] > 0
        assert sizes["trade_stream_notification_store_bytes"] > 0


# -- signatures: Standard Webhooks ----------------------------------------------------------------------------


async def test_deliveries_verify_with_standardwebhooks_in_python_and_js(sim, tmp_path, receiver):
    """One call of the library verifies a delivery; the id and the timestamp are signed with the body, so a
    captured delivery replayed later, or under another id, is refused."""
    other = await Receiver().start()
    try:
        hooks = (*targets(("standard", receiver), secret=STANDARD_SECRET),
                 *targets(("legacy", other), legacy=True))
        async with running(relay_config(sim, tmp_path, timings=TIMINGS, webhooks=hooks)) as app:
            await up(app)
            sim.submit_order("AAPL", "buy", 1)
            await wait_until(lambda: len(receiver.acked()) == 1 == len(other.acked()), what="both delivered")
        got, legacy = receiver.seen[0], other.seen[0]
        assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 60
        assert got.headers["webhook-signature"].startswith("v1,")
        assert "x-trade-stream-signature" not in got.headers  # only where a target asks for it
        assert verify(got, STANDARD_SECRET)["event"] == "order_accepted"
        assert verify(legacy)["event"] == "order_accepted"
        expected = "sha256=" + hmac.new(SECRET.encode(), legacy.body, hashlib.sha256).hexdigest()
        assert legacy.headers["x-trade-stream-signature"] == expected
        hook = Webhook(STANDARD_SECRET)
        old = str(int(got.headers["webhook-timestamp"]) - 600)
        for tampered in ({"webhook-id": "another"}, {"webhook-timestamp": old}):
            with pytest.raises(WebhookVerificationError):
                hook.verify(got.body, {**got.headers, **tampered})
        if NODE is None or not (JS / "node_modules" / "standardwebhooks").is_dir():
            pytest.skip("node or the standardwebhooks npm package is missing (tests/run.sh installs it)")
        cases = [(STANDARD_SECRET, False, got.headers), (SECRET, True, legacy.headers),
                 (STANDARD_SECRET, False, {**got.headers, "webhook-id": "another"}),
                 (STANDARD_SECRET, False, {**got.headers, "webhook-timestamp": old})]
        bodies = [got.body, legacy.body, got.body, got.body]
        lines = b"".join(orjson.dumps({"secret": s, "raw": raw, "headers": h, "body": b.decode()}) + b"\n"
                         for (s, raw, h), b in zip(cases, bodies, strict=True))
        done = await asyncio.to_thread(subprocess.run, [NODE, str(JS / "verify_webhook.js")], input=lines,
                                       capture_output=True, cwd=JS, timeout=20)
        assert done.returncode == 0, done.stderr
        results = [orjson.loads(line) for line in done.stdout.splitlines()]
        assert [r["ok"] for r in results] == [True, True, False, False], results
        assert results[0]["payload"]["event"] == results[1]["payload"]["event"] == "order_accepted"
    finally:
        await other.stop()
