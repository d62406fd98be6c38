"""Webhooks from a cluster: two daemons (in this process, or real ones) on one real ``redis-server``, one real
HTTP receiver. Every node derives the same deliveries from the shared order log, under the same ids; only the
leader sends, and a node that takes over sends what its predecessor had not settled, under those ids; a user's
preferences, saved through any node, govern what the leader sends."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import pytest

from tests.integration.test_cluster import DATA, cluster, daemon_env, leader, listening, node_config, stop_all
from tests.integration.test_ops import TS, Proc, empty_env_file
from tests.integration.test_webhooks import TIMINGS, targets, verify
from tests.support.receiver import Receiver
from tests.support.redis_server import REDIS_SERVER
from tests.support.relay import http_get, running, wait_until
from trade_stream.app import App

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server not installed (tests/run.sh installs it)")]


@pytest.fixture
async def receiver():
    r = await Receiver().start()
    yield r
    await r.stop()


def outbox(app: App) -> dict[str, str]:
    """This node's outbox: delivery id -> state (pending, delivered, failed)."""
    hooks = app.webhooks
    assert hooks is not None
    if hooks.outbox is None:
        return {}
    return dict(hooks.outbox.db.execute("SELECT delivery_id, state FROM deliveries").fetchall())


def finished(app: App, count: int) -> bool:
    """``count`` deliveries queued on this node, and none of them still pending."""
    rows = outbox(app)
    return len(rows) == count and "pending" not in rows.values()


def ids_seen(receiver: Receiver) -> list[str]:
    return [r.headers["webhook-id"] for r in receiver.seen]


async def test_a_two_node_cluster_sends_each_webhook_once_under_one_id(sim, tmp_path, redis_server, receiver):
    hooks = targets(("desk", receiver))
    async with cluster(sim, tmp_path, [redis_server.url] * 2, timings=TIMINGS, webhooks=hooks) as apps:
        order = sim.submit_order("AAPL", "buy", 1)
        sim.fill_order(order["id"], price=10)
        # Both nodes queue both events (accepted, filled) and are done with them: the leader by sending, the
        # other by learning that they were settled. A node that sent them itself would be done too, so what the
        # receiver holds at this point is all it will ever get.
        await wait_until(lambda: all(finished(a, 2) for a in apps), timeout=20, what="both nodes done")
        sender = leader(apps)
        assert sender is not None
        other = next(a for a in apps if a is not sender)
        assert other.status()["webhooks"]["desk"]["delivered"] == 0  # it sent nothing
        ids = set(outbox(other))
        assert set(outbox(sender)) == ids  # the same ids on both nodes
    acked = [verify(r) for r in receiver.acked()]
    assert [b["event"] for b in acked] == ["order_accepted", "order_filled"]
    assert len(receiver.seen) == 2 and set(ids_seen(receiver)) == ids
    assert sim.session_refusals == 0


@pytest.mark.parametrize("failing", [500, "hang"])  # the target refuses, or never answers, while node0 tries
async def test_the_next_leader_sends_what_the_last_one_had_not_delivered_under_the_same_id(
        sim, tmp_path, redis_server, receiver, failing):
    receiver.default = failing
    hooks = targets(("desk", receiver))
    first = contextlib.AsyncExitStack()
    try:
        n0 = await first.enter_async_context(running(node_config(sim, tmp_path, redis_server.url, "node0",
                                                                 timings=TIMINGS, webhooks=hooks)))
        await wait_until(lambda: n0.engine.is_leader and sim.sessions(DATA) == 1 and listening(sim) == 1,
                         timeout=15, what="node0 leads")
        async with running(node_config(sim, tmp_path, redis_server.url, "node1", timings=TIMINGS,
                                       webhooks=hooks)) as n1:
            await wait_until(lambda: len(n1.status()["cluster"]["nodes"]) == 2, what="node1 joined")
            order = sim.submit_order("AAPL", "buy", 1)
            sim.fill_order(order["id"], price=10)
            # The order's second event waits behind its first, which node0 keeps trying.
            await wait_until(lambda: len(receiver.seen) >= 2 and len(outbox(n1)) == 2, timeout=20,
                             what="node0 retrying, node1 holding both events")
            tried = set(ids_seen(receiver))
            ids = set(outbox(n1))
            assert len(tried) == 1 and tried < ids
            assert n1.status()["webhooks"]["desk"]["errors"] == 0  # node1 has not sent while it follows
            await first.aclose()  # the leader stops with both deliveries unconfirmed
            attempts = len(receiver.seen)
            receiver.default = 200
            await wait_until(lambda: n1.engine.is_leader, timeout=15, what="node1 leads")
            await wait_until(lambda: finished(n1, 2) and len(receiver.acked()) == 2, timeout=20,
                             what="node1 delivered both")
            assert n1.status()["webhooks"]["desk"]["delivered"] == 2
    finally:
        await first.aclose()
    acked = [verify(r) for r in receiver.acked()]
    assert [b["event"] for b in acked] == ["order_accepted", "order_filled"]
    # node1 sent the event node0 had tried under node0's id, and each event once: no second id for either.
    assert set(ids_seen(receiver)) == ids == {b["delivery_id"] for b in acked}
    assert len(receiver.seen) == attempts + 2
    assert sim.session_refusals == 0


async def test_a_leader_killed_with_deliveries_unconfirmed_leaves_them_to_the_next_under_the_same_ids(
        sim, tmp_path, redis_server, receiver):
    """Real daemons, and the leader SIGKILLed: no handover, so the next leader waits out the lease first."""
    receiver.default = 500
    hooks = tmp_path / "webhooks.toml"
    hooks.write_text(f'[[target]]\nname = "desk"\nurl = "{receiver.url}"\nsecret = "whsec-test-1234"\ntimeout = 2\n')
    env_file = empty_env_file(tmp_path)
    procs: dict[str, Proc] = {}
    try:
        for name in ("node0", "node1"):
            env = daemon_env(tmp_path / name, sim, redis_server, name, TRADE_STREAM_WEBHOOKS_FILE=str(hooks))
            procs[name] = Proc([str(TS), "--env-file", env_file], cwd=tmp_path, env=env)
        ports = {name: await asyncio.to_thread(p.port) for name, p in procs.items()}

        def status(name: str) -> dict:
            return http_get(ports[name], "/api/stream/status")[1]

        await wait_until(lambda: sim.sessions(DATA) == 1 and listening(sim) == 1
                         and status("node0")["cluster"]["nodes"] == sorted(procs), timeout=20,
                         what="one leader holding both streams, both nodes seen")
        lead = status("node0")["cluster"]["leader"]
        survivor = next(n for n in procs if n != lead)
        order = sim.submit_order("AAPL", "buy", 1)
        sim.fill_order(order["id"], price=10)
        await wait_until(lambda: receiver.seen and status(survivor)["webhooks"]["desk"]["pending"] == 2, timeout=20,
                         what="the leader trying, the survivor holding both events")
        tried = set(ids_seen(receiver))
        procs[lead].popen.send_signal(signal.SIGKILL)
        await asyncio.to_thread(procs[lead].popen.wait, 10)
        attempts = len(receiver.seen)
        receiver.default = 200
        await wait_until(lambda: status(survivor)["webhooks"]["desk"]["delivered"] == 2, timeout=20,
                         what="the survivor delivered both")
        assert status(survivor)["cluster"]["leader"] == survivor
    finally:
        await stop_all(procs.values())
    acked = [verify(r) for r in receiver.acked()]
    assert [b["event"] for b in acked] == ["order_accepted", "order_filled"]
    assert len(tried) == 1 and tried < set(ids_seen(receiver)) == {b["delivery_id"] for b in acked}
    assert len(receiver.seen) == attempts + 2
    assert sim.session_refusals == 0


async def test_a_preference_saved_through_a_follower_governs_the_leaders_webhooks(sim, tmp_path, redis_server,
                                                                                 receiver):
    """Preferences are shared through Redis: fills turned off for webhooks through the node that does not send,
    the leader sends the order's acceptance and not its fill, and the follower's own page list follows too."""
    from tests.integration.test_notifications import call
    from tests.support.relay import TOKEN

    async with cluster(sim, tmp_path, [redis_server.url] * 2, timings=TIMINGS,
                       webhooks=targets(("desk", receiver))) as apps:
        sender = leader(apps)
        assert sender is not None
        other = next(a for a in apps if a is not sender)
        status, body, _ = await asyncio.to_thread(call, other.port, "/api/notifications/preferences", "PUT",
                                                  b'{"fills":["bell"]}', TOKEN)
        assert status == 200 and body["preferences"]["fills"] == ["bell"]
        assert sender.parts is not None
        await wait_until(lambda: sender.parts.preferences.channels("default", "fills") == frozenset({"bell"}),
                         timeout=10, what="the leader's copy of the change")
        order = sim.submit_order("AAPL", "buy", 1)
        sim.fill_order(order["id"], price=10)
        await wait_until(lambda: all(finished(a, 1) for a in apps), timeout=20, what="both nodes done")
        assert [verify(r)["event"] for r in receiver.acked()] == ["order_accepted"] and len(receiver.seen) == 1
