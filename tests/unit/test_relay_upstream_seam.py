"""The relay reaches its upstream only through core/upstream.py's protocols: it runs against any upstream built
by the factory it is given (here a fake recording what it is asked), with the real memory engine between them."""

from __future__ import annotations

from typing import Any

import pytest

from trade_stream.config import Config
from trade_stream.core.fanout import Router
from trade_stream.core.hub import Change, Hub, Key
from trade_stream.core.protocol import ClientError
from trade_stream.core.relay import Relay
from trade_stream.core.stats import Stats
from trade_stream.core.upstream import FeedState
from trade_stream.core.upstream_state import LinkState, UpstreamState
from trade_stream.engines.memory import MemoryEngine

pytestmark = pytest.mark.timeout(10)


class FakeLink:
    def __init__(self) -> None:
        self.status = UpstreamState()
        self.held: dict[str, set[str]] = {}

    @property
    def connected(self) -> bool:
        return self.status.state is LinkState.CONNECTED

    def last_message_age(self) -> float | None:
        return None


class FakeFeed:
    name, default = "stocks:iex", True

    def __init__(self, hub: Hub, stats: Stats) -> None:
        self.upstream = FakeLink()
        self.router = Router(hub.holders, stats, {"t": "trades"})

    def view(self, visible: set[Key]) -> dict[str, Any]:
        return {"state": self.upstream.status.state.value}


class FakeUpstream:
    """What the relay may call, and the hub, state callback and engine it handed over when building it."""

    def __init__(self, hub: Hub, on_state: FeedState, engine: Any, stats: Stats) -> None:
        self.hub, self.on_state, self.engine = hub, on_state, engine
        self.default = FakeFeed(hub, stats)
        self.requests: list[tuple[Change, Any]] = []
        self.pruned = 0

    def request(self, change: Change, on_done: Any = None) -> bool:
        self.requests.append((change, on_done))
        return on_done is not None and bool(change.subscribe)

    def deliver(self, prefix: str, batch: list[dict[str, Any]], now: float) -> None:
        raise AssertionError("only the default feed is used here")

    def prune(self) -> None:
        self.pruned += 1

    def views(self, visible: set[Key]) -> dict[str, dict[str, Any]]:
        return {self.default.name: self.default.view(visible)}


def build() -> tuple[Relay[FakeUpstream], FakeUpstream]:
    stats = Stats()
    relay = Relay(Config(), stats, lambda handler: MemoryEngine(handler, "node-1"),
                  lambda hub, on_state, engine: FakeUpstream(hub, on_state, engine, stats))
    return relay, relay.sources


async def test_the_relay_builds_its_upstream_through_the_factory_with_its_own_hub_and_engine():
    relay, upstream = build()
    assert upstream.hub is relay.hub and upstream.engine is relay.engine


async def test_a_subscribe_reaches_the_upstream_and_its_answer_reaches_the_client():
    relay, upstream = build()
    client, replies = object(), []
    relay.subscribe(client, [("trades", "AAPL")], replies.append)
    (change, on_done), = upstream.requests
    assert change.subscribe == [("trades", "AAPL")] and replies == []
    on_done(True, None, "")
    assert replies == [None]
    assert relay.hub.is_wanted(("trades", "AAPL"))
    relay.close()


async def test_a_refused_subscribe_is_rolled_back_and_the_client_told_why():
    relay, upstream = build()
    client, replies = object(), []
    relay.subscribe(client, [("trades", "AAPL")], replies.append)
    (_, on_done), = upstream.requests
    on_done(False, 405, "symbol limit exceeded")
    assert len(replies) == 1 and isinstance(replies[0], ClientError) and replies[0].code == "symbol_limit"
    assert not relay.hub.is_wanted(("trades", "AAPL")) and upstream.pruned >= 1
    relay.close()


async def test_the_default_feeds_batches_reach_its_router_and_its_state_the_status():
    relay, upstream = build()
    relay.engine.publish([{"T": "t", "S": "AAPL", "p": 1.5}], 10.0)  # the memory engine: straight to this node
    assert upstream.default.router.last_seen == {"AAPL": 10.0}
    state = upstream.default.upstream.status
    state.state = LinkState.CONNECTED
    upstream.on_state(upstream.default, state)
    assert relay.status()["alpaca_connected"] is True
    assert relay.status()["upstreams"] == {"stocks:iex": {"state": "connected"}}
    relay.close()
