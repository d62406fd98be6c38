"""The Redis engine: many trade-stream nodes share one Redis (or Valkey) and act as one relay.

Keys, all under ``TRADE_STREAM_REDIS_PREFIX`` (``P``):

- ``P:leader`` — the lease: the node id of the leader, set with ``SET NX PX`` and extended only by its holder
  (compare-and-extend script). The leader renews every third of the lease and cuts its upstream sessions at once
  when a renewal finds the lease gone or another node's, or when it could not renew before the lease runs out
  (less a margin). The lease key alone does not prove the previous holder gone: a ``FLUSHALL``, a Redis restarted
  empty or a failover to a replica that had not yet received the key lets a second node ``SET NX`` while the
  first still holds its sessions. So the fencing rule: a node that gets the lease opens no session until it has
  held it for one full lease period, counted from Redis' reply. Any earlier holder has by then either renewed,
  found the lease not its own and closed its sessions, or passed the end of its last renewal and closed them; the
  next leader never meets its predecessor's session at Alpaca (a 406).
- ``P:handover`` — the proof that makes that wait unnecessary on a clean stop: a leader that closed its sessions
  and releases the lease leaves its id here (one script, with the release); the next node to get the lease takes
  it in the same script as its ``SET NX`` and leads at once. A flushed Redis has none, so it waits.
- ``P:nodes`` — a sorted set: node id, scored by the time its heartbeat runs out. ``P:interest:<node>`` — the
  (channel, symbol) keys that node's clients hold, with the same expiry. A crashed node's interest expires.
- ``P:ctl`` — pub/sub for the cluster's own messages: ``interest`` (a node's set changed: the leader recomputes
  the union), ``status`` (the shared upstream's state, for every client on every node), ``rejected`` (Alpaca or
  the cluster-wide symbol cap refused keys: every node tells its holders).
- ``P:md:<channel>:<symbol>`` — market data: the leader publishes each upstream batch once per key it carries (and
  once on ``P:md:<channel>:*`` while any node holds the wildcard), encoded once with orjson. A node subscribes to
  the keys its clients hold — to the wildcard channel only, for a channel where it holds the wildcard, so no
  message reaches it twice — and fans out through the same Router as a single process.
- ``P:upstream`` — the last shared upstream state, for nodes that start or come back.
- ``P:webhooks:settled:<delivery id>`` — a webhook delivery's outcome (``delivered``, ``failed``), set by the
  leader that sent it, kept a week (far longer than a delivery is retried): every node queues every delivery, and
  a follower lets go of the settled ones while the next leader skips them.
- App channels: ``P:ch:<channel>`` (a Stream per channel) and ``P:chan`` (pub/sub for every event); see
  redis_channels.py.
- ``P:preferences`` — every user's notification preferences, one field per user; changes are announced on
  ``P:ctl`` (``preferences``) so every node's copy in memory follows (redis_prefs.py).
- ``P:addresses`` — the email address each JWT user last presented, one field per user, announced on ``P:ctl``
  (``address``) the same way (redis_addresses.py).
- ``P:alerts`` — every user's price alerts (id → record), ``P:alerts:version`` raised by every write; see
  redis_alerts.py.
- ``P:push-subscriptions`` — the browsers' Web Push subscriptions, one field per subscription id, announced on
  ``P:ctl`` (``push``) the same way (redis_push.py).
- The order logs: ``P:orders:…`` for the default account, ``P:<journal name>:orders:…`` for the others; see
  redis_orders.py.

``Keys`` spells these names; nothing else in the package does (``probe``, for ``trade-stream check``, reads the
lease and the nodes through it).

One class holds leadership, interest and the market bus: they share the lease (only the leader computes the
union of interest, a lost lease resets it and fences the streams), one pub/sub connection and one control
channel, so three objects would each need the other two. The order logs are their own store (redis_orders.py).

Redis is one server, or the master of a Sentinel group (redis_url.py): after a failover every loop below
reconnects to the new master on its own. The lease may or may not have reached the promoted replica; either way
the fencing rule holds, and the old leader, cut off for longer than its lease, has fenced itself.

When Redis is unreachable a node keeps its clients, reports ``redis: "down"`` and tells its clients with a
``status`` message; a leader loses its lease and fences itself. Every loop here retries on its own, every
``retry`` seconds, so the cluster is whole again within seconds of Redis coming back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from trade_stream.config import mask_url
from trade_stream.core.addresses import AddressStore
from trade_stream.core.alert_store import AlertStore
from trade_stream.core.channels import ChannelEvent, Publication, Reset
from trade_stream.core.engine import ClusterProbe, Done, EngineUnavailable, NodeHandler, OrderLog, Stream, Supervise
from trade_stream.core.hub import Change, Key
from trade_stream.core.preferences import PreferenceStore
from trade_stream.core.protocol import CHANNEL_OF
from trade_stream.core.push_subscriptions import PushSubscriptionStore
from trade_stream.engines.redis_addresses import MESSAGE as ADDRESS_MESSAGE
from trade_stream.engines.redis_addresses import RedisAddresses
from trade_stream.engines.redis_alerts import RedisAlertStore
from trade_stream.engines.redis_channels import RedisChannels
from trade_stream.engines.redis_orders import RedisOrderLogs
from trade_stream.engines.redis_prefs import MESSAGE as PREFERENCES_MESSAGE
from trade_stream.engines.redis_prefs import RedisPreferences
from trade_stream.engines.redis_push import MESSAGE as PUSH_MESSAGE
from trade_stream.engines.redis_push import RedisPushSubscriptions
from trade_stream.engines.redis_url import client
from trade_stream.records.redis_url import is_sentinel

#: Alpaca message type -> channel, for every source (stocks, crypto order books, news): the key a message is
#: published under is its source's prefix plus this channel, and its symbol.
TYPE_CHANNELS = {**CHANNEL_OF, "o": "orderbooks", "n": "news"}

log = logging.getLogger("trade_stream.engines.redis")

ERRORS = (RedisError, OSError, TimeoutError)
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if ARGV[2] ~= '' then
    redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
  end
  return 1
end
return 0
"""
CLAIM = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 0
end
if redis.call('GET', KEYS[2]) then
  redis.call('DEL', KEYS[2])
  return 2
end
return 1
"""
HANDED_OVER = 2  # CLAIM's answer when the previous leader released the lease after closing its sessions
SETTLED_TTL = 7 * 86400  # seconds a settled delivery is remembered: far past the longest retry (24 hours)


@dataclass(frozen=True)
class Keys:
    """The cluster's keys under one prefix (the module docstring says what each holds)."""

    prefix: str

    @property
    def leader(self) -> str:
        return f"{self.prefix}:leader"

    @property
    def handover(self) -> str:
        return f"{self.prefix}:handover"

    @property
    def nodes(self) -> str:
        return f"{self.prefix}:nodes"

    @property
    def ctl(self) -> str:
        return f"{self.prefix}:ctl"

    @property
    def upstream(self) -> str:
        return f"{self.prefix}:upstream"

    @property
    def channel_streams(self) -> str:
        """The prefix of the app channels' Streams: ``ch:`` + the channel name."""
        return f"{self.prefix}:ch:"

    @property
    def channel_events(self) -> str:
        """The pub/sub channel every app-channel event is published on."""
        return f"{self.prefix}:chan"

    @property
    def md(self) -> str:
        """The prefix of the market-data channels: ``md`` + ``<channel>:<symbol>``."""
        return f"{self.prefix}:md:"

    @property
    def preferences(self) -> str:
        return f"{self.prefix}:preferences"

    @property
    def addresses(self) -> str:
        return f"{self.prefix}:addresses"

    @property
    def push_subscriptions(self) -> str:
        return f"{self.prefix}:push-subscriptions"

    def interest(self, node_id: str) -> str:
        return f"{self.prefix}:interest:{node_id}"

    def settled(self, delivery_id: str) -> str:
        return f"{self.prefix}:webhooks:settled:{delivery_id}"


async def probe(url: str, prefix: str, timeout: float) -> ClusterProbe:
    """The cluster as ``trade-stream check`` sees it from outside: Redis' round trip, the lease holder and the
    nodes. Raises what the client raises when Redis cannot be reached, or ``TimeoutError``."""
    keys = Keys(prefix)
    r = client(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        started = time.monotonic()
        await asyncio.wait_for(r.ping(), timeout)
        rtt = time.monotonic() - started
        leader = await asyncio.wait_for(r.get(keys.leader), timeout)
        nodes = await asyncio.wait_for(r.zrange(keys.nodes, 0, -1), timeout)
    finally:
        await r.aclose()
    return ClusterProbe(rtt, leader.decode() if leader else None, sorted(n.decode() for n in nodes))


def encode_key(key: Key) -> str:
    return f"{key[0]}:{key[1]}"


def decode_key(raw: bytes | str) -> Key:
    """The channel may carry a source prefix with colons of its own (``crypto:us:trades``); symbols never have
    one (``BTC/USD``, ``AAPL241220C00150000``), so the symbol is what follows the last colon."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    channel, _, symbol = text.rpartition(":")
    return channel, symbol


class RedisEngine:
    """Every seam of core/engine.py for one node of a cluster; the order logs are ``order_logs``."""

    def __init__(self, handler: NodeHandler, url: str, node_id: str, prefix: str, *, lease: float = 5.0,
                 max_symbols: int = 0, retention_days: float = 7.0,
                 on_leader: Callable[[bool], None] = lambda leading: None, channel_history: int = 100,
                 channel_ttl: float = 300.0) -> None:
        self.handler = handler
        self.on_leader = on_leader
        self.url = url
        self.node_id = node_id
        self.prefix = prefix
        self.lease = lease
        self.max_symbols = max_symbols
        self.retry = max(0.05, min(1.0, lease / 5))
        timeout = max(1.0, lease / 2)
        self.r = client(url, socket_timeout=timeout + 2.0, socket_connect_timeout=timeout,
                        retry=Retry(NoBackoff(), 0), health_check_interval=0)
        self.command_timeout = timeout
        # Order events count as written once a replica has them too, behind Sentinel.
        self.order_logs = RedisOrderLogs(self.r, prefix, retention_days, self.retry, replicated=is_sentinel(url))
        self.keys = keys = Keys(prefix)
        self.channels = RedisChannels(self.r, keys.channel_streams, keys.channel_events, handler,
                                      history=channel_history, ttl=channel_ttl, timeout=timeout,
                                      failed=self._redis_failed, errors=ERRORS)
        self._chan_bytes = self.channels.pubsub_bytes
        self.k_leader, self.k_nodes, self.k_ctl = keys.leader, keys.nodes, keys.ctl
        self.k_handover = keys.handover
        self.k_upstream = keys.upstream
        self.k_interest = keys.interest(node_id)
        self.md_prefix = keys.md
        self._md_bytes = self.md_prefix.encode()
        self._renew = self.r.register_script(RENEW)
        self._release = self.r.register_script(RELEASE)
        self._claim = self.r.register_script(CLAIM)
        self._leading = False
        self._stopped = False
        self._leader_event = asyncio.Event()
        self._valid_until = 0.0
        self._claimed: float | None = None  # monotonic time the lease was got, while its first period runs
        self._running: dict[Stream, asyncio.Task[None]] = {}
        self.leader_id: str | None = None
        self.nodes: list[str] = []
        self.redis_up = True
        self.rtt: float | None = None
        self.leader_changes = 0
        self.published = 0
        self.received = 0
        self._union: set[Key] = set()
        self._written: set[Key] | None = None  # the interest last written to Redis; None: write it again
        self._dirty = asyncio.Event()
        self._channels: set[str] = set()  # data channels subscribed
        self._pubsub: Any = None
        self._outbox: deque[tuple[str, bytes]] = deque()
        self._out_event = asyncio.Event()
        self.preferences: RedisPreferences | None = None  # once opened (before connect)
        self.addresses: RedisAddresses | None = None  # once opened (before connect), when email is on
        self.push_subscriptions: RedisPushSubscriptions | None = None  # once opened (before connect), with Web Push

    # --- lifecycle ----------------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Reach Redis and load the shared state, or raise EngineUnavailable (a start-up configuration error)."""
        try:
            await asyncio.wait_for(self.r.ping(), self.command_timeout + 1)
            await self.order_logs.load()
            if self.preferences is not None:
                await self.preferences.load()
            if self.addresses is not None:
                await self.addresses.load()
            if self.push_subscriptions is not None:
                await self.push_subscriptions.load()
            shared = await self.r.get(self.k_upstream)
        except (*ERRORS, RedisError) as exc:
            raise EngineUnavailable(f"TRADE_STREAM_REDIS_URL={mask_url(self.url)}: cannot reach Redis "
                                    f"({type(exc).__name__}: {exc}); start Redis, or fix the URL") from None
        if shared:
            self.handler.on_status(orjson.loads(shared), mirror=True)
        log.info("cluster_joined node=%s redis=%s prefix=%s", self.node_id, mask_url(self.url), self.prefix)

    async def start(self, supervise: Supervise) -> None:
        supervise("cluster-lease", self._lease_loop)
        supervise("cluster-interest", self._interest_loop)
        supervise("cluster-pubsub", self._pubsub_loop)
        supervise("cluster-publish", self._publish_loop)
        self.order_logs.start(supervise, self._redis_failed)
        self.on_leader(False)

    async def stop(self) -> None:
        """Hand over at once: give up the lease (if held) and withdraw this node's interest."""
        was_leading, was_claiming = self._leading, self._claimed is not None
        # Every loop also ends on this flag, not only on cancellation: a cancellation that lands inside a Redis
        # command has been seen to be swallowed there, which would hold up shutdown.
        self._stopped = True
        self.order_logs.close()
        self._out_event.set()
        self._dirty.set()
        self._lose("node shutting down", notify=False)
        with contextlib.suppress(*ERRORS):
            async with asyncio.timeout(self.command_timeout):
                if was_leading or was_claiming:  # a handover only from a leader whose sessions are closed
                    proof = str(int(self.lease * 2000)) if was_leading else ""
                    await self._release(keys=[self.k_leader, self.k_handover], args=[self.node_id, proof])
                pipe = self.r.pipeline(transaction=False)
                pipe.delete(self.k_interest)
                pipe.zrem(self.k_nodes, self.node_id)
                pipe.publish(self.k_ctl, orjson.dumps({"t": "interest", "node": self.node_id}))
                await pipe.execute()
        with contextlib.suppress(Exception):
            await self.r.aclose()

    # --- Redis up and down --------------------------------------------------------------------------------

    def _redis_ok(self) -> None:
        if not self.redis_up:
            self.redis_up = True
            log.warning("cluster_redis_up node=%s", self.node_id)
            self._written = None  # Redis may have come back empty: write our interest again
            self._dirty.set()

    def _redis_failed(self, exc: BaseException) -> None:
        if self.redis_up:
            self.redis_up = False
            log.error("cluster_redis_down node=%s error=%s: clients stay connected; data resumes when Redis is back",
                      self.node_id, f"{type(exc).__name__}: {exc}"[:200])
            if not self._leading:
                self._tell_clients("cluster store (Redis) unreachable: market data paused until it is back")

    def _tell_clients(self, error: str) -> None:
        view = {"state": "disconnected", "error": error, "error_code": None, "since": round(time.time(), 3),
                "reconnects": 0}
        self.handler.on_status({"upstream": view, "held": {}}, mirror=True)

    # --- leadership ---------------------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self._leading

    async def _lease_loop(self) -> None:
        tick = self.lease / 3
        margin = max(0.1, self.lease * 0.2)
        px = int(self.lease * 1000)
        while not self._stopped:
            started = time.monotonic()
            try:
                async with asyncio.timeout(self.command_timeout):
                    if self._leading or self._claimed is not None:
                        if await self._renew(keys=[self.k_leader], args=[self.node_id, px]):
                            self._valid_until = started + self.lease
                        else:
                            self._lose("the lease is gone or another node's (taken over, or Redis lost it)")
                    elif not self._stopped:
                        claim = await self._claim(keys=[self.k_leader, self.k_handover], args=[self.node_id, px])
                        if claim:
                            self._valid_until = started + self.lease
                            self._claim_lease(handed_over=claim == HANDED_OVER)
                    leader = await self.r.get(self.k_leader)
                self.rtt = time.monotonic() - started
                self._redis_ok()
                self._observe_leader(leader.decode() if leader else None)
            except ERRORS as exc:
                self._redis_failed(exc)
            now = time.monotonic()
            if (self._leading or self._claimed is not None) and now >= self._valid_until - margin:
                self._lose("lease could not be renewed in time (Redis unreachable?)")
            if self._claimed is not None and now >= self._claimed + self.lease:
                self._gain()
            wait = tick
            if self._leading or self._claimed is not None:
                wait = min(wait, self._valid_until - margin - now)
            if self._claimed is not None:
                wait = min(wait, self._claimed + self.lease - now)
            await asyncio.sleep(max(0.0, wait))

    def _claim_lease(self, handed_over: bool) -> None:
        """The lease is this node's. Lead at once after a clean handover; otherwise only once it has been held
        for a full lease period (the fencing rule in the module docstring)."""
        if handed_over:
            self._gain()
            return
        self._claimed = time.monotonic()
        log.warning("cluster_lease_claimed node=%s: leading in %.1fs, once any previous holder has stopped",
                    self.node_id, self.lease)

    def _observe_leader(self, leader: str | None) -> None:
        if leader == self.leader_id:
            return
        previous, self.leader_id = self.leader_id, leader
        if leader is not None:
            self.leader_changes += 1
        log.info("cluster_leader node=%s leader=%s previous=%s", self.node_id, leader, previous)
        if leader is None and not self._leading:
            self._tell_clients("no cluster leader holds Alpaca right now: another node is taking over")

    def _gain(self) -> None:
        self._claimed = None
        self._leading = True
        log.warning("cluster_leadership_gained node=%s", self.node_id)
        self._observe_leader(self.node_id)
        self._union = set()  # recomputed before the upstream sessions start
        self._leader_event.set()
        self.on_leader(True)

    def _lose(self, reason: str, notify: bool = True) -> None:
        if self._claimed is not None:
            self._claimed = None
            log.warning("cluster_lease_lost node=%s reason=%s: before leading, no session was opened", self.node_id,
                        reason)
        if not self._leading:
            return
        self._leading = False
        self._leader_event.clear()
        log.warning("cluster_leadership_lost node=%s reason=%s: closing upstream sessions now", self.node_id, reason)
        for stream, task in list(self._running.items()):
            stream.fence(f"this node stopped leading the cluster: {reason}")
            task.cancel()
        if self.leader_id == self.node_id:
            self.leader_id = None
        if notify:
            self.on_leader(False)

    async def while_leader(self, run: Callable[[], Awaitable[None]], stream: Stream) -> None:
        while True:
            await self._leader_event.wait()
            with contextlib.suppress(*ERRORS):
                await self._refresh(timeout=self.command_timeout)
            if not self._leading:
                continue
            task = asyncio.ensure_future(run())
            self._running[stream] = task
            try:
                await asyncio.wait({task})
            except asyncio.CancelledError:
                task.cancel()
                raise
            finally:
                self._running.pop(stream, None)
            if not task.cancelled():
                task.result()  # an exception goes to the supervisor
                return  # the stream was stopped: the node is shutting down

    # --- interest -----------------------------------------------------------------------------------------

    def request(self, change: Change, on_done: Done | None = None) -> bool:
        self._dirty.set()
        return False  # refusals come back to every node as ``rejected`` (see _on_ctl)

    def upstream_wanted(self) -> set[Key]:
        return set(self._union)

    async def _interest_loop(self) -> None:
        heartbeat = self.lease / 3
        while not self._stopped:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), heartbeat)
            self._dirty.clear()
            try:
                async with asyncio.timeout(self.command_timeout):
                    await self._write_interest()
                    await self._sync_channels()
                    await self._refresh()
                self._redis_ok()
            except ERRORS as exc:
                self._written = None
                self._redis_failed(exc)
                await asyncio.sleep(self.retry)

    async def _write_interest(self) -> None:
        wanted = self.handler.local_wanted()
        ttl = int(self.lease * 3000)
        pipe = self.r.pipeline(transaction=True)
        changed = wanted != self._written
        if changed:
            pipe.delete(self.k_interest)
            if wanted:
                pipe.sadd(self.k_interest, *sorted(encode_key(k) for k in wanted))
        pipe.pexpire(self.k_interest, ttl)
        pipe.zadd(self.k_nodes, {self.node_id: time.time() * 1000 + ttl})
        if changed:
            pipe.publish(self.k_ctl, orjson.dumps({"t": "interest", "node": self.node_id}))
        replies = await pipe.execute()
        self._written = wanted
        if wanted and not changed and not replies[0]:  # our set vanished (FLUSHALL, a failover): write it again
            log.warning("cluster_interest_lost node=%s: Redis no longer had it; writing it again", self.node_id)
            self._written = None
            self._dirty.set()

    async def _refresh(self, timeout: float | None = None) -> None:
        """Live nodes, and (leader) the union of their interest: upstream follows every change."""
        now = time.time() * 1000
        pipe = self.r.pipeline(transaction=False)
        pipe.zremrangebyscore(self.k_nodes, "-inf", now)
        pipe.zrange(self.k_nodes, 0, -1)
        _, nodes = await pipe.execute()
        self.nodes = sorted(n.decode() for n in nodes)
        if not self._leading:
            return
        keys = [self.keys.interest(n) for n in self.nodes]
        union = {decode_key(k) for k in await self.r.sunion(keys)} if keys else set()
        if not self._leading:
            return
        union = self._cap(union)
        old, self._union = self._union, union
        change = Change(subscribe=sorted(union - old), unsubscribe=sorted(old - union))
        if change:
            log.info("cluster_interest subscribe=%d unsubscribe=%d total=%d", len(change.subscribe),
                     len(change.unsubscribe), len(union))
            keys_asked = change.subscribe

            def done(ok: bool, code: int | None, msg: str) -> None:
                if not ok:
                    self.refused(keys_asked, code, msg)

            self.handler.upstream_request(change, done)

    def _cap(self, union: set[Key]) -> set[Key]:
        """TRADE_STREAM_MAX_SYMBOLS across the cluster: symbols already held first, newcomers refused."""
        if not self.max_symbols:
            return union
        symbols = {s for _, s in union}
        if len(symbols) <= self.max_symbols:
            return union
        held = {s for _, s in self._union}
        order = sorted(symbols, key=lambda s: (s not in held, s))
        allowed = set(order[: self.max_symbols])
        refused = sorted(k for k in union if k[1] not in allowed)
        self.refused(refused, 405, f"cluster symbol cap {self.max_symbols} reached")
        return {k for k in union if k[1] in allowed}

    def refused(self, keys: list[Key], code: int | None, msg: str) -> None:
        """Upstream (or the cluster cap) refused ``keys``: every node tells its holders."""
        if not keys:
            return
        self._send(self.k_ctl, orjson.dumps({"t": "rejected", "keys": [list(k) for k in keys], "code": code,
                                             "msg": msg}))

    # --- market data and the control channel --------------------------------------------------------------

    def publish(self, batch: list[dict[str, Any]], now: float) -> None:
        """Each batch once per key (and once on a wildcard channel someone holds), encoded once, pipelined."""
        self.publish_source("", batch, now)

    def publish_source(self, prefix: str, batch: list[dict[str, Any]], now: float) -> None:
        """The key of a message is its source's prefix plus its channel, and its symbol; news has no ``S`` but a
        ``symbols`` list: it goes once on the channel of each symbol it names (and on ``*``)."""
        groups: dict[str, list[dict[str, Any]]] = {}
        union = self._union
        md = self.md_prefix
        for m in batch:
            channel = TYPE_CHANNELS.get(m.get("T", ""))
            if channel is None:
                continue
            channel = prefix + channel
            symbols = m.get("symbols") if m.get("T") == "n" else None
            for symbol in (symbols if isinstance(symbols, list) else [m.get("S")]):
                groups.setdefault(f"{md}{channel}:{symbol}", []).append(m)
            if (channel, "*") in union:
                groups.setdefault(f"{md}{channel}:*", []).append(m)
        outbox = self._outbox
        for name, msgs in groups.items():
            outbox.append((name, orjson.dumps(msgs)))
        self._out_event.set()

    def _send(self, channel: str, payload: bytes) -> None:
        self._outbox.append((channel, payload))
        self._out_event.set()

    async def _publish_loop(self) -> None:
        outbox = self._outbox
        while not self._stopped:
            await self._out_event.wait()
            self._out_event.clear()
            if not outbox:
                continue
            pipe = self.r.pipeline(transaction=False)
            count = 0
            while outbox and count < 10_000:
                channel, payload = outbox.popleft()
                pipe.publish(channel, payload)
                count += 1
            if outbox:
                self._out_event.set()
            try:
                await pipe.execute()
                self.published += count
                self._redis_ok()
            except ERRORS as exc:  # market data is live: what Redis could not take is gone, like a dropped frame
                self._redis_failed(exc)
                await asyncio.sleep(self.retry)

    def upstream_state(self, shared: dict[str, Any]) -> None:
        if self._leading and self.redis_up:
            payload = orjson.dumps({"t": "status", **shared})
            self._send(self.k_ctl, payload)
            asyncio.get_running_loop().create_task(self._store_state(payload))
        else:
            self.handler.on_status(shared)

    async def _store_state(self, payload: bytes) -> None:
        with contextlib.suppress(*ERRORS):
            await self.r.set(self.k_upstream, payload, px=int(self.lease * 10_000))

    async def _pubsub_loop(self) -> None:
        while not self._stopped:
            pubsub = self.r.pubsub(ignore_subscribe_messages=True)
            self._channels = set()
            try:
                await pubsub.subscribe(self.k_ctl, self.channels.pubsub_key)
                self._pubsub = pubsub
                await self._sync_channels()
                await self.channels.fill_gaps()  # what the app channels held here missed while cut off
                if self.preferences is not None:  # changes announced before this subscription reached nobody here
                    await self.preferences.load()
                if self.addresses is not None:
                    await self.addresses.load()
                if self.push_subscriptions is not None:
                    await self.push_subscriptions.load()
                was_down = not self.redis_up
                self._redis_ok()
                if was_down or self._written is None:
                    await self._catch_up_state()
                while not self._stopped:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is not None and msg["type"] == "message":
                        self._on_message(msg["channel"], msg["data"])
            except ERRORS as exc:
                self._redis_failed(exc)
            finally:
                self._pubsub = None
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(self.retry)

    async def _catch_up_state(self) -> None:
        shared = await self.r.get(self.k_upstream)
        if shared and not self._leading:
            self.handler.on_status(orjson.loads(shared), mirror=True)

    def _on_message(self, channel: bytes, data: bytes) -> None:
        if channel == self._chan_bytes:
            self.channels.on_message(data)
            return
        if channel.startswith(self._md_bytes):
            self.received += 1
            batch = orjson.loads(data)
            key_channel = channel[len(self._md_bytes):].rpartition(b":")[0]  # crypto:us:trades, or trades
            source = key_channel.rpartition(b":")[0]
            if source:
                self.handler.on_source_data(source.decode() + ":", batch, asyncio.get_running_loop().time())
            else:
                self.handler.on_data(batch, asyncio.get_running_loop().time())
            return
        msg = orjson.loads(data)
        kind = msg.get("t")
        if kind == "interest":
            if self._leading:
                self._dirty.set()
        elif kind == "status":
            self.handler.on_status(msg, mirror=not self._leading)
        elif kind == "rejected":
            self.handler.on_rejected([tuple(k) for k in msg["keys"]], msg.get("code"), msg.get("msg") or "")
        elif kind == PREFERENCES_MESSAGE and self.preferences is not None:
            self.preferences.on_message(msg)
        elif kind == ADDRESS_MESSAGE and self.addresses is not None:
            self.addresses.on_message(msg)
        elif kind == PUSH_MESSAGE and self.push_subscriptions is not None:
            self.push_subscriptions.on_message(msg)

    async def _sync_channels(self) -> None:
        """Subscribe to what this node's clients hold: per symbol, or only the wildcard of a channel held as *."""
        pubsub = self._pubsub
        if pubsub is None:
            return
        wanted = self.handler.local_wanted()
        star = {ch for ch, s in wanted if s == "*"}
        want = {f"{self.md_prefix}{ch}:{s}" for ch, s in wanted if ch not in star or s == "*"}
        add, drop = want - self._channels, self._channels - want
        if add:
            await pubsub.subscribe(*sorted(add))
        if drop:
            await pubsub.unsubscribe(*sorted(drop))
        self._channels = want

    # --- webhook deliveries ---------------------------------------------------------------------------------

    async def settle(self, delivery_id: str, outcome: str) -> bool:
        try:
            async with asyncio.timeout(self.command_timeout):
                await self.r.set(self.keys.settled(delivery_id), outcome, ex=SETTLED_TTL)
        except ERRORS as exc:
            self._redis_failed(exc)
            return False
        return True

    async def settled(self, delivery_ids: list[str]) -> dict[str, str]:
        if not delivery_ids:
            return {}
        try:
            async with asyncio.timeout(self.command_timeout):
                outcomes = await self.r.mget([self.keys.settled(d) for d in delivery_ids])
        except ERRORS as exc:
            self._redis_failed(exc)
            return {}
        return {d: o.decode() for d, o in zip(delivery_ids, outcomes, strict=True) if o is not None}

    # --- app channels -------------------------------------------------------------------------------------

    async def publish_channels(self, pubs: list[Publication]) -> list[str]:
        ids = await self.channels.publish(pubs)
        self._redis_ok()
        return ids

    async def channel_history(self, channel: str, since: str, limit: int) -> list[ChannelEvent] | Reset:
        return await self.channels.history_after(channel, since, limit)

    async def channel_tail(self, channel: str, limit: int) -> list[ChannelEvent]:
        return await self.channels.tail(channel, limit)

    # --- order log and status -----------------------------------------------------------------------------

    def open_order_log(self, path: Path, retention_days: float) -> OrderLog:
        return self.order_logs.open_order_log(path, retention_days)

    def open_preferences(self, path: Path) -> PreferenceStore:
        """Every user's preferences in Redis (``path``, a single process's file, is not used)."""
        if self.preferences is None:
            self.preferences = RedisPreferences(self.r, self.keys.preferences, self.k_ctl, self.command_timeout,
                                                ERRORS)
        return self.preferences

    def open_addresses(self, path: Path) -> AddressStore:
        """The JWT users' addresses in Redis (``path``, a single process's file, is not used)."""
        if self.addresses is None:
            self.addresses = RedisAddresses(self.r, self.keys.addresses, self.k_ctl, self.command_timeout, ERRORS)
        return self.addresses

    def open_alert_store(self, path: Path) -> AlertStore:
        return RedisAlertStore(self.r, self.prefix)

    def open_push_subscriptions(self, path: Path, per_user: int) -> PushSubscriptionStore:
        """The browsers' push subscriptions in Redis (``path``, a single process's file, is not used)."""
        if self.push_subscriptions is None:
            self.push_subscriptions = RedisPushSubscriptions(self.r, self.keys.push_subscriptions, self.k_ctl,
                                                             self.command_timeout, ERRORS, per_user)
        return self.push_subscriptions

    def view(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "leader": self.leader_id, "nodes": list(self.nodes),
                "redis": "up" if self.redis_up else "down"}

    def metrics(self) -> dict[str, float]:
        return {"leader": int(self._leading), "nodes": len(self.nodes), "leader_changes": self.leader_changes,
                "published": self.published, "received": self.received,
                "channel_published": self.channels.published, "channel_received": self.channels.received,
                "rtt_seconds": -1 if self.rtt is None else self.rtt}
