"""App channels in cluster mode: two daemons on one real ``redis-server``. A publish on node A reaches a browser on
node B once each, in publish order; a resume on node B replays what node A published; Redis down answers 503."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.test_channels import KEY, browser, events, publish, users_file
from tests.integration.test_cluster import cluster
from tests.support.redis_server import REDIS_SERVER
from tests.support.relay import wait_until

pytestmark = [pytest.mark.timeout(90),
              pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server not installed (tests/run.sh installs it)")]


def settings(tmp_path) -> dict:
    return {"publish_key": KEY, "users_file": users_file(tmp_path / "users.toml"), "channel_history": 50}


async def reached(a, b_browser, channel: str) -> None:
    """Publish on ``a`` until the browser on the other node hears one: its node's pub/sub is then in place."""
    for _ in range(100):
        resp = await publish(a.port, {"channel": channel, "event": "probe", "data": {}})
        assert resp.status_code == 200
        try:
            await b_browser.expect(lambda m: m.get("event") == "probe", timeout=0.2)
            return
        except (AssertionError, TimeoutError):
            continue
    raise AssertionError("the other node never heard the channel")


async def test_a_publish_on_one_node_reaches_a_subscriber_on_another_once_in_order(sim, tmp_path, redis_server):
    async with cluster(sim, tmp_path, [redis_server.url] * 2, **settings(tmp_path)) as (a, b), \
            browser(b.port, "alice", "strategies:burst") as alice, browser(b.port, "bob", "strategies:burst") as bob:
        await reached(a, alice, "strategies:burst")
        ids = []
        for start in range(0, 200, 20):  # 200 events in batches of 20, some addressed to alice only
            batch = [{"channel": "strategies:burst", "event": "n", "data": {"n": n},
                      **({"users": ["alice"]} if n % 10 == 0 else {})} for n in range(start, start + 20)]
            resp = await publish(a.port, batch)
            assert resp.status_code == 200
            ids += resp.json()["ids"]
        await alice.expect(lambda m: m.get("data") == {"n": 199})
        await bob.expect(lambda m: m.get("data") == {"n": 199})
        got = [e for e in events(alice) if e["event"] == "n"]
        assert [e["data"]["n"] for e in got] == list(range(200))  # once each, in order
        assert [e["id"] for e in got] == ids
        assert [e["data"]["n"] for e in events(bob) if e["event"] == "n"] == [n for n in range(200) if n % 10]

        # A resume on node B from an id node A issued replays what followed, from the shared history.
        async with browser(b.port, "alice", "strategies:burst", since=ids[179]) as late:
            await late.expect(lambda m: m.get("data") == {"n": 199})
            assert [e["data"]["n"] for e in events(late)] == list(range(180, 200))
        async with browser(b.port, "alice", "strategies:burst", since=ids[0]) as old:  # trimmed (history 50)
            await old.expect("reset")


async def test_redis_down_answers_503_and_the_status_says_so(sim, tmp_path, redis_server):
    async with cluster(sim, tmp_path, [redis_server.url], **settings(tmp_path)) as (a,):
        assert (await publish(a.port, {"channel": "agent-status", "event": "e"})).status_code == 200
        redis_server.stop()
        resp = await publish(a.port, {"channel": "agent-status", "event": "e"})
        assert resp.status_code == 503
        assert "Redis" in resp.json()["message"] and resp.headers["Retry-After"] == "1"
        await wait_until(lambda: a.status()["cluster"]["redis"] == "down", what="the status to say Redis is down")
        redis_server.start()
        for _ in range(100):
            resp = await publish(a.port, {"channel": "agent-status", "event": "e"})
            if resp.status_code == 200:
                break
            await asyncio.sleep(0.1)
        assert resp.status_code == 200  # the publisher's retry goes through once Redis is back
