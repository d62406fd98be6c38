"""Web Push from a cluster: two nodes in this process on one real ``redis-server``, the push service on loopback.
A browser that subscribes through any node is known to every node, so the leader (the only sender) pushes to it;
a 404/410 the leader gets removes the subscription on every node; a node started later has them all."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.test_cluster import cluster, leader, node_config
from tests.integration.test_web_push import KEYS, TIMINGS, api, fill
from tests.support.push_service import PushService
from tests.support.redis_server import REDIS_SERVER
from tests.support.relay import running, wait_until

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server not installed (tests/run.sh installs it)")]
PUSH = {"timings": TIMINGS, "vapid": KEYS, "vapid_public_key": KEYS.public_key}


@pytest.fixture
async def service():
    s = await PushService(KEYS.public_key).start()
    yield s
    await s.stop()


def subscriptions(app) -> int:
    return app.status()["push"]["subscriptions"]


async def test_a_browser_subscribed_through_the_follower_gets_one_push_from_the_leader(
        sim, tmp_path, redis_server, service):
    async with cluster(sim, tmp_path, [redis_server.url] * 2, **PUSH) as apps:
        sender = leader(apps)
        assert sender is not None
        follower = next(a for a in apps if a is not sender)
        status, created = await api(follower, "POST", service.subscribe("alice"))
        assert status == 201
        await wait_until(lambda: all(subscriptions(a) == 1 for a in apps), timeout=10,
                         what="the subscription on both nodes")
        assert [s["id"] for s in (await api(sender, "GET"))[1]["subscriptions"]] == [created["id"]]
        fill(sim)
        await wait_until(lambda: sender.status()["push"]["delivered"] == 1, timeout=20, what="pushed by the leader")
        await wait_until(lambda: follower.status()["push"]["pending"] == 0, timeout=10,
                         what="the follower let its copy go")
        await asyncio.sleep(0.3)  # a second push, if any node were to send one, would be on its way by now
        assert follower.status()["push"]["delivered"] == 0 and follower.status()["push"]["errors"] == 0
    assert len(service.seen) == 1 and len(service.delivered()) == 1
    assert not [p.error for p in service.seen if p.error]
    assert service.delivered()[0].payload["type"] == "order_filled"


async def test_a_410_at_the_leader_removes_the_subscription_on_every_node(sim, tmp_path, redis_server, service):
    service.script = [410]
    async with cluster(sim, tmp_path, [redis_server.url] * 2, **PUSH) as apps:
        sender = leader(apps)
        follower = next(a for a in apps if a is not sender)
        assert (await api(follower, "POST", service.subscribe()))[0] == 201
        await wait_until(lambda: all(subscriptions(a) == 1 for a in apps), timeout=10,
                         what="the subscription on both nodes")
        fill(sim)
        await wait_until(lambda: sender.status()["push"]["gone"] == 1, timeout=20, what="the leader saw the 410")
        await wait_until(lambda: all(subscriptions(a) == 0 for a in apps), timeout=10,
                         what="removed on every node")
        assert (await api(follower, "GET"))[1]["subscriptions"] == []
        async with running(node_config(sim, tmp_path, redis_server.url, "node2", **PUSH)) as later:
            assert subscriptions(later) == 0  # not brought back from anywhere
    assert [p.status for p in service.seen] == [410]


async def test_a_node_started_later_has_the_cluster_s_subscriptions(sim, tmp_path, redis_server, service):
    async with cluster(sim, tmp_path, [redis_server.url] * 2, **PUSH) as apps:
        first, second = service.subscribe("alice"), service.subscribe("bob")
        assert (await api(apps[0], "POST", first))[0] == 201
        assert (await api(apps[1], "POST", second))[0] == 201
        assert (await api(apps[1], "DELETE", {"endpoint": first["endpoint"]})) == (200, {"removed": True})
        async with running(node_config(sim, tmp_path, redis_server.url, "node2", **PUSH)) as later:
            # Read at connect: there before the node serves anything.
            listed = (await api(later, "GET"))[1]["subscriptions"]
            assert [s["push_service"] for s in listed] == [service.origin] and subscriptions(later) == 1
        await wait_until(lambda: all(subscriptions(a) == 1 for a in apps), timeout=10, what="both nodes agree")


async def test_a_subscription_redis_cannot_take_is_refused_and_kept_nowhere(sim, tmp_path, redis_server, service):
    async with cluster(sim, tmp_path, [redis_server.url] * 2, **PUSH) as apps:
        redis_server.stop()
        await wait_until(lambda: all(a.status()["cluster"]["redis"] == "down" for a in apps), timeout=15,
                         what="both see redis down")
        browser = service.subscribe()
        status, answer = await api(apps[1], "POST", browser)
        assert status == 503 and "Redis" in answer["message"], answer
        assert (await api(apps[1], "GET"))[1]["subscriptions"] == [] and subscriptions(apps[1]) == 0
        redis_server.start()
        await wait_until(lambda: all(a.status()["cluster"]["redis"] == "up" for a in apps), timeout=20,
                         what="both see redis back")
        assert (await api(apps[1], "POST", browser))[0] == 201  # the browser's retry
        await wait_until(lambda: all(subscriptions(a) == 1 for a in apps), timeout=10, what="kept on both nodes")
