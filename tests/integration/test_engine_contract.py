"""One behaviour suite for every engine (core/engine.py), run against the memory engine and against Redis engines
sharing a real ``redis-server``: leadership and fencing, interest, refusals, the market bus per source, the
shared upstream state, the order log's dedupe, ids and epoch, the settled webhook deliveries, and every user's
notification preferences.

Each test is written for a cluster of ``size`` nodes: the memory engine is a cluster of one (the process is the
whole cluster), Redis runs two. Engines get a recording ``NodeHandler`` as the relay would give them; nothing of
the engine under test is replaced. What only a cluster of several can do (hand over, be fenced, be probed from
outside) is skipped for the memory engine, with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.redis_server import REDIS_SERVER, RedisServer
from tests.support.relay import wait_until
from trade_stream.core.engine import Done, Engine, OrderLog
from trade_stream.core.hub import Change, Key
from trade_stream.core.journal import Entry
from trade_stream.core.preferences import PreferenceStore

pytestmark = pytest.mark.timeout(60)
LEASE = 1.0
ORDER = {"id": "order-1", "symbol": "AAPL", "status": "filled", "filled_qty": "1"}
FILL = {"event": "fill", "order": ORDER, "execution_id": "x-1", "qty": "1"}
NEW = {"event": "new", "order": {**ORDER, "id": "order-2", "status": "new", "filled_qty": "0"},
       "timestamp": "2026-12-01T10:00:00Z"}
_prefixes = itertools.count()


class Node:
    """A NodeHandler that records what its engine calls back, and holds what the test says it holds."""

    def __init__(self) -> None:
        self.wanted: set[Key] = set()
        self.requests: list[Change] = []
        self.data: list[dict[str, Any]] = []
        self.source_data: list[tuple[str, dict[str, Any]]] = []
        self.statuses: list[tuple[dict[str, Any], bool]] = []
        self.rejected: list[tuple[tuple[Key, ...], int | None, str]] = []

    def local_wanted(self) -> set[Key]:
        return set(self.wanted)

    def upstream_request(self, change: Change, on_done: Done | None) -> bool:
        self.requests.append(change)
        return False

    def on_data(self, batch: list[dict[str, Any]], now: float) -> None:
        self.data += batch

    def on_source_data(self, prefix: str, batch: list[dict[str, Any]], now: float) -> None:
        self.source_data += [(prefix, m) for m in batch]

    def on_status(self, shared: dict[str, Any], mirror: bool = False) -> None:
        self.statuses.append((shared, mirror))

    def on_rejected(self, keys: list[Key], code: int | None, msg: str) -> None:
        self.rejected.append((tuple(keys), code, msg))


class Stream:
    """An upstream stream as while_leader sees it: it only needs to be fenced."""

    def __init__(self, name: str, events: list[tuple[str, str]]) -> None:
        self.name, self.events = name, events
        self.fenced: list[str] = []

    def fence(self, reason: str) -> None:
        self.fenced.append(reason)
        self.events.append(("fenced", self.name))


@dataclass
class Member:
    name: str
    engine: Engine
    node: Node
    log: OrderLog
    journal: Path
    leading: list[bool] = field(default_factory=list)  # what the leadership listener heard
    entries: list[Entry] = field(default_factory=list)  # what the order side was handed (append or on_entry)
    resets: list[str] = field(default_factory=list)
    prefs: PreferenceStore | None = None

    def attach(self, log: OrderLog) -> None:
        self.log = log
        log.on_entry = self.entries.append
        log.on_reset = self.resets.append

    def append(self, data: dict[str, Any]) -> None:
        entry = self.log.append(data)
        if entry is not None:
            self.entries.append(entry)


class Harness:
    """Builds a cluster of ``size`` nodes of one engine; ``kind`` names it."""

    kind = ""
    size = 1

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.members: list[Member] = []
        self.tasks: list[asyncio.Task[Any]] = []

    def build(self, node: Node, name: str, on_leader: Callable[[bool], None]) -> Engine:
        raise NotImplementedError

    async def start(self) -> list[Member]:
        for i in range(self.size):
            node, name = Node(), f"node{i}"
            leading: list[bool] = []
            engine = self.build(node, name, leading.append)
            journal = self.tmp_path / name / "orders.sqlite3"
            journal.parent.mkdir(parents=True)
            member = Member(name, engine, node, engine.open_order_log(journal, 7.0), journal, leading)
            member.attach(member.log)
            member.prefs = engine.open_preferences(journal.parent / "preferences.sqlite3")
            await engine.connect()
            await engine.start(self.supervise)
            self.members.append(member)
        return self.members

    def supervise(self, name: str, factory: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        self.tasks.append(asyncio.ensure_future(factory()))

    def leaders(self) -> list[Member]:
        return [m for m in self.members if m.engine.is_leader]

    async def leader(self) -> Member:
        await wait_until(lambda: len(self.leaders()) == 1, timeout=15, what="one leader")
        return self.leaders()[0]

    async def lose_order_log(self) -> None:
        """The order log's store is lost under the running nodes."""
        raise NotImplementedError

    async def reopened(self, member: Member) -> None:
        """Wait until ``member``'s order side has learnt of the lost log, and hold the log it goes on with."""
        raise NotImplementedError

    async def later_preferences(self) -> tuple[PreferenceStore, Callable[[], Coroutine[Any, Any, Any]]]:
        """The preferences as a node that starts now finds them (memory: the process started again on its
        state directory), and how to stop that node."""
        raise NotImplementedError

    async def stop(self) -> None:
        for member in self.members:
            await member.engine.stop()
            member.log.close()
            if member.prefs is not None:
                member.prefs.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class MemoryHarness(Harness):
    kind = "memory"

    def build(self, node: Node, name: str, on_leader: Callable[[bool], None]) -> Engine:
        from trade_stream.engines.memory import MemoryEngine

        return MemoryEngine(node, name, on_leader=on_leader)

    async def lose_order_log(self) -> None:
        for member in self.members:
            for path in member.journal.parent.glob(member.journal.name + "*"):
                path.unlink()

    async def reopened(self, member: Member) -> None:
        """A single process finds the loss when it checks its journal, and opens a new one in its place."""
        with pytest.raises(OSError):
            member.log.check()
        member.log.close()
        member.attach(member.engine.open_order_log(member.journal, 7.0))

    async def later_preferences(self) -> tuple[PreferenceStore, Callable[[], Coroutine[Any, Any, Any]]]:
        first = self.members[0]
        store = first.engine.open_preferences(first.journal.parent / "preferences.sqlite3")

        async def stop() -> None:
            store.close()

        return store, stop


class RedisHarness(Harness):
    kind = "redis"
    size = 2
    server: RedisServer

    def __init__(self, tmp_path: Path, server: RedisServer) -> None:
        super().__init__(tmp_path)
        self.server = server
        self.prefix = f"contract{next(_prefixes)}"

    def build(self, node: Node, name: str, on_leader: Callable[[bool], None]) -> Engine:
        from trade_stream.engines.redis import RedisEngine

        return RedisEngine(node, self.server.url, name, self.prefix, lease=LEASE, on_leader=on_leader)

    async def lose_order_log(self) -> None:
        """As a Redis restarted without persistence does to the log: its keys are gone."""
        import redis.asyncio as aioredis

        r = aioredis.Redis.from_url(self.server.url)
        try:
            keys = [k async for k in r.scan_iter(f"{self.prefix}:orders:*")]
            await r.delete(*keys)
        finally:
            await r.aclose()

    async def reopened(self, member: Member) -> None:
        """Every node notices the new epoch in Redis and tells its order side; the log object goes on."""
        await wait_until(lambda: member.resets, timeout=10, what=f"{member.name} told of the reset")

    async def later_preferences(self) -> tuple[PreferenceStore, Callable[[], Coroutine[Any, Any, Any]]]:
        engine = self.build(Node(), "later", lambda leading: None)
        store = engine.open_preferences(self.tmp_path / "later.sqlite3")
        await engine.connect()
        return store, engine.stop


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if REDIS_SERVER is None:
        pytest.skip("redis-server not installed (tests/run.sh installs it)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["memory", "redis"])
async def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    harness: Harness
    if request.param == "memory":
        harness = MemoryHarness(tmp_path)
    else:
        harness = RedisHarness(tmp_path, request.getfixturevalue("redis_server"))
    try:
        yield harness
    finally:
        await harness.stop()


def several_nodes(cluster: Harness, why: str) -> None:
    if cluster.size < 2:
        pytest.skip(f"the {cluster.kind} engine is a cluster of one: {why}")


async def until(action: Callable[[], None], cond: Callable[[], Any], what: str, attempts: int = 100) -> None:
    """Do ``action`` until ``cond`` holds: what a node subscribes to reaches it once its subscription is in."""
    for _ in range(attempts):
        action()
        with contextlib.suppress(AssertionError):
            await wait_until(cond, timeout=0.1, what=what)
            return
    raise AssertionError(f"never: {what}")


# --- leadership ---------------------------------------------------------------------------------------------


async def test_exactly_one_node_leads_and_only_the_leader_runs_the_upstream(cluster):
    members = await cluster.start()
    leader = await cluster.leader()
    assert leader.leading[-1] is True
    assert all(not m.leading or m.leading == [False] for m in members if m is not leader)
    started: dict[str, asyncio.Event] = {m.name: asyncio.Event() for m in members}
    release = asyncio.Event()

    def run_for(name: str) -> Callable[[], Coroutine[Any, Any, None]]:
        async def run() -> None:
            started[name].set()
            await release.wait()
        return run

    events: list[tuple[str, str]] = []
    runs = {m.name: asyncio.ensure_future(m.engine.while_leader(run_for(m.name), Stream(m.name, events)))
            for m in members}
    await asyncio.wait_for(started[leader.name].wait(), 10)
    assert [name for name, event in started.items() if event.is_set()] == [leader.name]
    release.set()
    await asyncio.wait_for(runs.pop(leader.name), 5)  # run() returned: the stream was stopped
    assert events == []  # nobody was fenced
    for task in runs.values():
        task.cancel()
    await asyncio.gather(*runs.values(), return_exceptions=True)


async def test_a_leader_that_stops_fences_its_streams_and_hands_over(cluster):
    several_nodes(cluster, "there is no other node to hand over to")
    members = await cluster.start()
    first = await cluster.leader()
    events: list[tuple[str, str]] = []

    def run_for(name: str) -> Callable[[], Coroutine[Any, Any, None]]:
        async def run() -> None:
            events.append(("run", name))
            await asyncio.Event().wait()
        return run

    runs = [asyncio.ensure_future(m.engine.while_leader(run_for(m.name), Stream(m.name, events))) for m in members]
    await wait_until(lambda: ("run", first.name) in events, timeout=10, what="the first leader's run")
    await first.engine.stop()
    cluster.members.remove(first)
    second = await cluster.leader()
    await wait_until(lambda: ("run", second.name) in events, timeout=10, what="the next leader's run")
    assert events == [("run", first.name), ("fenced", first.name), ("run", second.name)]
    for task in runs:
        task.cancel()
    await asyncio.gather(*runs, return_exceptions=True)
    first.log.close()


async def test_a_leader_whose_lease_is_taken_fences_its_stream_at_once(cluster):
    several_nodes(cluster, "it has no lease to lose")
    assert isinstance(cluster, RedisHarness)
    import redis.asyncio as aioredis

    await cluster.start()
    leader = await cluster.leader()
    events: list[tuple[str, str]] = []
    stream = Stream(leader.name, events)
    cancelled = asyncio.Event()

    async def run() -> None:
        events.append(("run", leader.name))
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    running = asyncio.ensure_future(leader.engine.while_leader(run, stream))
    await wait_until(lambda: events, timeout=10, what="the leader's run")
    r = aioredis.Redis.from_url(cluster.server.url)
    try:
        await r.set(f"{cluster.prefix}:leader", "intruder", px=60_000)
        await wait_until(lambda: stream.fenced, timeout=10, what="the stream fenced")
        await asyncio.wait_for(cancelled.wait(), 5)
        assert not leader.engine.is_leader and leader.leading[-1] is False
        assert all(not m.engine.is_leader for m in cluster.members)  # nobody leads while another holds the lease
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await r.delete(f"{cluster.prefix}:leader")
        await r.aclose()


# --- interest and refusals ----------------------------------------------------------------------------------


async def test_the_leader_asks_upstream_for_what_every_node_holds(cluster):
    members = await cluster.start()
    leader = await cluster.leader()
    keys = [("trades", f"SYM{i}") for i in range(len(members))]
    for member, key in zip(members, keys, strict=True):
        member.node.wanted.add(key)
        member.engine.request(Change(subscribe=[key]))
    await wait_until(lambda: leader.engine.upstream_wanted() == set(keys), timeout=10, what="the union")
    asked = {k for c in leader.node.requests for k in c.subscribe}
    assert asked == set(keys)
    assert all(not m.node.requests for m in members if m is not leader)  # only the leader's upstream is asked

    dropped = members[-1]
    dropped.node.wanted.clear()
    dropped.engine.request(Change(unsubscribe=[keys[-1]]))
    await wait_until(lambda: leader.engine.upstream_wanted() == set(keys[:-1]), timeout=10, what="the smaller union")
    assert [k for c in leader.node.requests for k in c.unsubscribe] == [keys[-1]]


async def test_a_refusal_reaches_the_node_that_holds_the_key(cluster):
    members = await cluster.start()
    leader = await cluster.leader()
    holder = members[-1]
    key = ("trades", "NOPE")
    holder.node.wanted.add(key)
    holder.engine.request(Change(subscribe=[key]))
    await until(lambda: leader.engine.refused([key], 405, "symbol limit exceeded"), lambda: holder.node.rejected,
                what="the refusal at the holder")
    assert set(holder.node.rejected) == {((key,), 405, "symbol limit exceeded")}


# --- the market bus -----------------------------------------------------------------------------------------


async def test_each_batch_reaches_the_nodes_that_hold_its_keys_for_every_source(cluster):
    members = await cluster.start()
    leader = await cluster.leader()
    for i, member in enumerate(members):
        member.node.wanted |= {("trades", f"S{i}"), ("crypto:us:trades", f"C{i}/USD")}
        member.engine.request(Change(subscribe=sorted(member.node.wanted)))
    stocks = [{"T": "t", "S": f"S{i}", "p": 1.0 + i} for i in range(len(members))]
    crypto = [{"T": "t", "S": f"C{i}/USD", "p": 2.0 + i} for i in range(len(members))]

    def publish() -> None:
        leader.engine.publish(stocks, 0.0)
        leader.engine.publish_source("crypto:us:", crypto, 0.0)

    await until(publish, lambda: all(m.node.data and m.node.source_data for m in members), what="every node's data")
    for i, member in enumerate(members):
        assert {m["S"] for m in member.node.data} == {f"S{i}"}
        assert {(prefix, m["S"]) for prefix, m in member.node.source_data} == {("crypto:us:", f"C{i}/USD")}


async def test_the_shared_upstream_state_reaches_every_node(cluster):
    members = await cluster.start()
    leader = await cluster.leader()
    shared = {"upstream": {"state": "connected", "error": None, "reconnects": 3}, "held": {"trades": ["S0"]}}
    await until(lambda: leader.engine.upstream_state(shared), lambda: all(m.node.statuses for m in members),
                what="the state on every node")
    for member in members:
        assert {(s["upstream"]["reconnects"], mirror) for s, mirror in member.node.statuses} == {
            (3, member is not leader)}  # the leader's own is not a mirror


# --- the order log ------------------------------------------------------------------------------------------


async def test_an_order_event_is_recorded_once_under_the_same_id_on_every_node(cluster):
    members = await cluster.start()
    leader = await cluster.leader()
    leader.append(FILL)
    leader.append(FILL)  # the same execution, again
    members[-1].append(FILL)  # and from another node
    leader.append(NEW)
    await wait_until(lambda: all([e.event for e in m.log.since(0)] == ["fill", "new"] for m in members), timeout=10,
                     what="both events everywhere")
    ids = [e.id for e in leader.log.since(0)]
    assert ids[0] == 1 and ids[0] < ids[1] == leader.log.last_id()  # a duplicate may use up an id, never reuse one
    for member in members:
        assert [(e.id, e.event) for e in member.log.since(0)] == list(zip(ids, ["fill", "new"], strict=True))
        assert [(e.id, e.event) for e in member.entries] == list(zip(ids, ["fill", "new"], strict=True))  # once each
        assert member.log.epoch == leader.log.epoch


async def test_a_lost_order_log_starts_a_new_epoch_from_id_one_and_the_order_side_is_told(cluster):
    members = await cluster.start()
    leader = await cluster.leader()
    leader.append(FILL)
    await wait_until(lambda: all(m.log.last_id() == 1 for m in members), timeout=10, what="the event everywhere")
    old = leader.log.epoch
    await cluster.lose_order_log()
    for member in members:
        await cluster.reopened(member)
    assert len({m.log.epoch for m in members}) == 1 and leader.log.epoch != old
    assert all(m.log.last_id() == 0 for m in members)
    for member in members:
        member.entries.clear()
    leader.append(NEW)
    await wait_until(lambda: all(m.log.last_id() == 1 for m in members), timeout=10, what="the next event")
    assert all([(e.id, e.event) for e in m.entries] == [(1, "new")] for m in members)


# --- webhook deliveries -------------------------------------------------------------------------------------


async def test_no_delivery_is_settled_that_no_node_settled(cluster):
    members = await cluster.start()
    leader = await cluster.leader()
    assert await leader.engine.settle("delivery-1", "delivered")
    for member in members:
        assert await member.engine.settled([]) == {}
        assert "delivery-2" not in await member.engine.settled(["delivery-2"])


async def test_a_delivery_the_leader_settled_is_settled_for_every_other_node(cluster):
    several_nodes(cluster, "its own outbox is the only record of what it sent: nothing is settled elsewhere")
    members = await cluster.start()
    leader = await cluster.leader()
    assert await leader.engine.settle("delivery-1", "delivered")
    assert await leader.engine.settle("delivery-2", "failed")
    for member in members:
        assert await member.engine.settled(["delivery-1", "delivery-2", "delivery-3"]) == {
            "delivery-1": "delivered", "delivery-2": "failed"}


# --- notification preferences -------------------------------------------------------------------------------


async def test_preferences_saved_on_any_node_are_read_on_every_node(cluster):
    members = await cluster.start()
    first, last = members[0].prefs, members[-1].prefs
    assert first is not None and last is not None
    await first.save("alice", {"fills": frozenset({"bell"})})
    assert first.get("alice") == {"fills": frozenset({"bell"})}  # the saving node at once
    await wait_until(lambda: all(m.prefs.get("alice") == {"fills": frozenset({"bell"})} for m in members),
                     timeout=10, what="alice's preferences on every node")
    await last.save("alice", {"fills": frozenset(), "activities": frozenset({"email", "push"})})
    changed = {"fills": frozenset(), "activities": frozenset({"email", "push"})}
    await wait_until(lambda: all(m.prefs.get("alice") == changed for m in members), timeout=10,
                     what="the change on every node")
    assert all(m.prefs.get("bob") is None for m in members)


async def test_preferences_are_there_for_a_node_that_starts_later(cluster):
    members = await cluster.start()
    assert members[0].prefs is not None
    await members[0].prefs.save("alice", {"price_alerts": frozenset({"push"})})
    store, stop = await cluster.later_preferences()
    try:
        assert store.get("alice") == {"price_alerts": frozenset({"push"})}
    finally:
        await stop()


# --- seen from outside --------------------------------------------------------------------------------------


async def test_the_probe_sees_the_leader_and_the_nodes_the_engines_wrote(cluster):
    several_nodes(cluster, "there is no cluster to probe from outside")
    assert isinstance(cluster, RedisHarness)
    from redis.exceptions import ConnectionError as RedisConnectionError

    from trade_stream.engines.redis import probe

    members = await cluster.start()
    leader = await cluster.leader()
    await wait_until(lambda: all(len(m.engine.view()["nodes"]) == len(members) for m in members), timeout=10,
                     what="every node's heartbeat")
    seen = await probe(cluster.server.url, cluster.prefix, 2.0)
    assert (seen.leader, seen.nodes) == (leader.name, sorted(m.name for m in members))
    with pytest.raises(RedisConnectionError):  # nothing listens there
        await probe("redis://127.0.0.1:1/0", cluster.prefix, 1.0)
