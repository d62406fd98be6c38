"""App channels on the SSE side-port of a cluster: two daemons on one real ``redis-server``. A publish on node A
reaches an SSE stream on node B, and a stream on node B resumes (or starts) from the history node A wrote."""

from __future__ import annotations

import contextlib

import pytest

from tests.integration.test_cluster import DATA, leader, listening, node_config
from tests.integration.test_sse_channels import KEY, alert, auth, post, users_file
from tests.support.redis_server import REDIS_SERVER
from tests.support.relay import free_port, running, wait_until
from tests.support.sse import sse_get
from trade_stream.core.event_ids import channel_positions

pytestmark = [pytest.mark.timeout(90),
              pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server not installed (tests/run.sh installs it)")]


@contextlib.asynccontextmanager
async def two_nodes(sim, tmp_path, url):
    users = users_file(tmp_path / "users.toml")
    async with contextlib.AsyncExitStack() as stack:
        apps = [await stack.enter_async_context(running(node_config(
            sim, tmp_path, url, f"node{i}", sse_port=free_port(), publish_key=KEY, users_file=users)))
            for i in range(2)]
        await wait_until(lambda: leader(apps) is not None and sim.sessions(DATA) == 1 and listening(sim) == 1,
                         timeout=15, what="one leader holding both streams")
        yield apps


async def publish_on(app, channel: str, event: str, data: dict) -> str:
    resp = await post(app.port, "/api/publish", {"channel": channel, "event": event, "data": data})
    assert resp.status_code == 200, resp.text
    return resp.json()["id"]


async def test_a_publish_on_one_node_reaches_an_sse_stream_on_the_other_and_resumes_there(sim, tmp_path,
                                                                                          redis_server):
    async with two_nodes(sim, tmp_path, redis_server.url) as (a, b):
        async with sse_get(b.sse.port, "/api/stream/ai-decisions", auth("alice")) as r:
            await r.until("connected")
            await wait_until(lambda: b.relay.channels.subs.get("ai-decisions"), what="subscribed on node B")
            for _ in range(100):  # until node B's pub/sub hears the channel
                await publish_on(a, "ai-decisions", "probe", {})
                with contextlib.suppress(TimeoutError):
                    await r.until("probe", timeout=0.2)
                    break
            else:
                raise AssertionError("node B never heard the channel")
            sent = await publish_on(a, "ai-decisions", "ai:decision", {"n": 1})
            got = await r.until("ai:decision")
            assert got.id == sent and got.json() == {"n": 1, "channel": "ai-decisions"}
        missed = await publish_on(a, "ai-decisions", "ai:decision", {"n": 2})
        async with sse_get(b.sse.port, "/api/stream/ai-decisions", auth("alice", **{"Last-Event-ID": sent})) as r:
            assert (await r.until("ai:decision")).id == missed  # from the history node A wrote
        # a stream of several sources starts each channel where node A's history ends (the Redis tail)
        status = await publish_on(a, "agent-status", "agent:status", {"state": "up"})
        async with sse_get(b.sse.port, "/api/stream/alerts", auth("alice")) as r:
            await r.until("connected")
            await wait_until(lambda: b.relay.channels.subs.get("alerts"), what="alerts followed on node B")
            await publish_on(a, "alerts", "alert:new", alert(1))
            got = await r.until("alert:new")
            assert got.json()["alertId"] == "a1" and channel_positions(got.id)["agent-status"] == status
