"""The cluster's order log: a Redis Stream, with ids every node hands out the same, and a replica on each node.

Appending is one Lua script, so it is atomic: skip the event if its dedupe key (execution id, or order + status)
or its state key (order, event, the order's status and filled quantity) was seen within the retention, else
take the next id from a counter (``INCR``) and ``XADD`` the event with it, trimming entries past the retention
(``MINID``). So an id means the same event on every node, and a client that
reconnects to another node behind a load balancer resumes from its ``since`` with no gap and no duplicate. The
state key is what a live event and the same event derived by REST reconciliation have in common: a new leader
reconciles from its replica, which may not yet have what another node (or its own queue) is still appending,
and the shared check keeps the one that lands second out. The log's epoch lives in Redis too.

Every node tails the stream (``XREAD BLOCK``) into a local replica, in id order, and hands each new entry to the
order side (``on_entry``), which relays it to its authenticated clients and applies fills to positions. Reads
(replays, ``since``, REST) are served from the replica, synchronously, as the SQLite journal serves them on one
process. Appends and the "last seen" marker are written in order by one task that retries while Redis is away,
so an event the leader received is never dropped for a Redis hiccup. Behind Sentinel, an event counts as written
only once a replica has it (``WAIT``), so a failover does not take it away.

A Redis that restarts without persistence comes back empty: a new epoch, ids from 1 again. The tail reads the
epoch before every ``XREAD``; when it is gone or different, the first node to notice sets a new one (``SET NX``,
so all agree), and every node drops its replica, reads the new stream from its start and calls ``on_reset``: the
order side tells its clients ``orders_reset`` (as when a SQLite journal is recreated), a client resuming with an
id of the old epoch is told to refetch, and the leader reconciles the new log over REST.

``RedisOrderLogs`` is the store: one such log per account, under keys of its own.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from redis.exceptions import RedisError

from trade_stream.core.engine import Supervise
from trade_stream.core.journal import Entry, dedupe_key, state_key

log = logging.getLogger("trade_stream.engines.redis_orders")

ERRORS = (RedisError, OSError, TimeoutError)
APPEND = """
if redis.call('EXISTS', KEYS[4]) == 1 or not redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[1]) then
  return 0
end
redis.call('SET', KEYS[4], '1', 'EX', ARGV[1])
local id = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], 'MINID', '~', ARGV[2], '*', 'id', id, 'e', ARGV[3])
return id
"""
FINAL = ("filled", "canceled", "expired", "rejected", "replaced")
BACKLOG_LIMIT = 10_000  # events kept in memory while Redis is away; beyond that, REST reconciliation
DEFAULT_LOG = "orders"


class RedisOrderLog:
    def __init__(self, r: Any, prefix: str, retention_days: float, retry: float, replicated: bool = False) -> None:
        self.r = r
        self.replicated = replicated
        self._unreplicated = False  # logged once per episode
        self.retention = retention_days * 86400
        self.retry = retry
        self.k_seq, self.k_stream = f"{prefix}:orders:seq", f"{prefix}:orders:stream"
        self.k_epoch, self.k_meta = f"{prefix}:orders:epoch", f"{prefix}:orders:meta"
        self.k_dedupe = f"{prefix}:orders:dedupe:"
        self._append = r.register_script(APPEND)
        self.epoch = ""
        self.on_entry: Callable[[Entry], None] | None = None
        self.on_reset: Callable[[str], None] | None = None
        self.on_error: Callable[[BaseException], None] = lambda exc: None
        self._ids: list[int] = []
        self._entries: list[Entry] = []
        self._recorded: list[float] = []
        self._orders: dict[str, tuple[str | None, str | None, str | None]] = {}
        self._meta: dict[str, str] = {}
        self._last_sid = "0-0"
        self._ops: deque[tuple[Any, ...]] = deque()
        self._wake = asyncio.Event()
        self._closed = False

    # --- loading and following the stream -----------------------------------------------------------------

    async def load(self) -> None:
        self.epoch = await self._shared_epoch()
        await self._read_new(deliver=False)
        self._meta = {k.decode(): v.decode() for k, v in (await self.r.hgetall(self.k_meta)).items()}

    async def _shared_epoch(self) -> str:
        """The log's epoch in Redis; the first node to find none (a new or emptied Redis) sets one for all."""
        epoch = await self.r.get(self.k_epoch)
        if epoch is None:
            await self.r.set(self.k_epoch, secrets.token_hex(6), nx=True)
            epoch = await self.r.get(self.k_epoch)
        return epoch.decode()

    async def _check_epoch(self) -> None:
        """A different epoch in Redis: it restarted empty (or the log was reset). Start over from its stream."""
        epoch = await self._shared_epoch()
        if epoch == self.epoch:
            return
        old, self.epoch = self.epoch, epoch
        self._ids, self._entries, self._recorded = [], [], []
        self._orders.clear()
        self._last_sid = "0-0"
        self._meta = {k.decode(): v.decode() for k, v in (await self.r.hgetall(self.k_meta)).items()}
        log.warning("order_log_reset epoch=%s previous=%s: Redis lost the shared order log (restarted without "
                    "persistence?); clients are told to refetch", epoch, old)
        if self.on_reset is not None:
            self.on_reset(f"the shared order log was recreated (epoch {epoch}); refetch state")

    async def sync(self) -> None:
        """Catch up with the stream and the shared marker (a new leader does this before reconciling)."""
        await self._check_epoch()
        await self._read_new(deliver=True)
        self._meta.update({k.decode(): v.decode() for k, v in (await self.r.hgetall(self.k_meta)).items()})

    async def _read_new(self, deliver: bool) -> None:
        while True:
            start = "-" if self._last_sid == "0-0" else f"({self._last_sid}"
            rows = await self.r.xrange(self.k_stream, min=start, max="+", count=1000)
            for sid, fields in rows:
                self._add(sid, fields, deliver)
            if len(rows) < 1000:
                return

    async def tail_loop(self) -> None:
        while not self._closed:
            try:
                await self._check_epoch()
                reply = await self.r.xread({self.k_stream: self._last_sid}, count=1000, block=1000)
            except ERRORS as exc:
                self.on_error(exc)
                await asyncio.sleep(self.retry)
                continue
            for _, rows in reply or ():
                for sid, fields in rows:
                    self._add(sid, fields, True)

    def _add(self, sid: bytes, fields: dict[bytes, bytes], deliver: bool) -> None:
        self._last_sid = sid.decode() if isinstance(sid, bytes) else sid
        n = int(fields[b"id"])
        if self._ids and n <= self._ids[-1]:
            return  # already have it (sync and the tail both read it)
        body = orjson.loads(fields[b"e"])
        entry = Entry(n, body["event"], body["data"], bool(body.get("reconciled")))
        self._ids.append(n)
        self._entries.append(entry)
        self._recorded.append(float(body.get("recorded") or time.time()))
        self.remember(entry.data.get("order") or {})
        if deliver and self.on_entry is not None:
            self.on_entry(entry)

    # --- writing ------------------------------------------------------------------------------------------

    def append(self, data: dict[str, Any], reconciled: bool = False, dedupe: str | None = None) -> Entry | None:
        """Queued for the shared log; the entry comes back through ``on_entry`` on every node (this one too)."""
        if len(self._ops) >= BACKLOG_LIMIT:
            log.error("order_log_backlog_full kept=%d: later events come back by REST reconciliation", BACKLOG_LIMIT)
            return None
        self._ops.append(("append", data, reconciled, dedupe or dedupe_key(data)))
        self._wake.set()
        return None

    def set_meta(self, key: str, value: str) -> None:
        self._meta[key] = value
        self._ops.append(("meta", key, value))
        self._wake.set()

    def close(self) -> None:
        """Stop the append loop (it also ends on cancellation; this does not depend on it)."""
        self._closed = True
        self._wake.set()

    async def append_loop(self) -> None:
        ops = self._ops
        while not self._closed:
            if not ops:
                self._wake.clear()
                await self._wake.wait()
                continue
            op = ops[0]
            try:
                await self._run(op)
                if self.replicated and not await self._on_a_replica():
                    await asyncio.sleep(self.retry)
                    continue  # again, idempotent: a duplicate now, and nothing behind it goes first
            except ERRORS as exc:
                self.on_error(exc)
                await asyncio.sleep(self.retry)
                continue
            ops.popleft()

    async def _on_a_replica(self) -> bool:
        """Behind Sentinel: has a replica got what this node wrote? Replication is asynchronous, so a master that
        dies right after an append can take the event with it, and the promoted replica would hand its id to the
        next event: nodes that had read it would drop that one as already seen. So an append is done only once
        ``WAIT`` says a replica has it, or when the master has no replica to wait for."""
        if await self.r.wait(1, int(self.retry * 1000)) >= 1:
            self._unreplicated = False
            return True
        replicas = int((await self.r.info("replication")).get("connected_slaves", 0))
        if replicas and not self._unreplicated:
            self._unreplicated = True
            log.warning("order_log_unreplicated replicas=%d: no replica confirmed the last order event; retrying "
                        "before the next", replicas)
        return not replicas

    async def _run(self, op: tuple[Any, ...]) -> None:
        if op[0] == "meta":
            await self.r.hset(self.k_meta, op[1], op[2])
            return
        _, data, reconciled, dedupe = op
        now = time.time()
        body = orjson.dumps({"event": str(data.get("event")), "data": data, "reconciled": reconciled,
                             "recorded": now})
        min_id = f"{int((now - self.retention) * 1000)}-0"
        state = state_key(data)
        n = await self._append(keys=[self.k_seq, self.k_stream, self.k_dedupe + dedupe,
                                     self.k_dedupe + (state or f"none:{dedupe}")],
                               args=[max(1, int(self.retention)), min_id, body])
        if not n:
            log.info("order_event_duplicate dedupe=%s", dedupe)

    # --- reads, from the replica --------------------------------------------------------------------------

    def since(self, after_id: int, limit: int = 10_000) -> list[Entry]:
        start = bisect.bisect_right(self._ids, after_id)
        return self._entries[start:start + limit]

    def count_after(self, after_id: int, limit: int) -> int:
        return min(limit, len(self._ids) - bisect.bisect_right(self._ids, after_id))

    def last_id(self) -> int:
        return self._ids[-1] if self._ids else 0

    def first_id(self) -> int:
        return self._ids[0] if self._ids else 0

    def remember(self, order: dict[str, Any]) -> None:
        if order.get("id"):
            self._orders[order["id"]] = (order.get("status"), str(order.get("filled_qty")), order.get("updated_at"))

    def order_state(self, order_id: str) -> tuple[str | None, str | None, str | None]:
        return self._orders.get(order_id, (None, None, None))

    def open_orders(self) -> list[str]:
        return [k for k, (status, _, _) in self._orders.items() if status not in FINAL]

    def get_meta(self, key: str) -> str | None:
        return self._meta.get(key)

    def check(self) -> None:
        """Nothing to check here: a recreated shared log shows as a new epoch (``on_reset``)."""

    def prune(self, now: float | None = None) -> int:
        """Drop replica entries past the retention (Redis trims the stream itself on append)."""
        cutoff = (now or time.time()) - self.retention
        cut = bisect.bisect_left(self._recorded, cutoff)
        if cut:
            del self._ids[:cut], self._entries[:cut], self._recorded[:cut]
        return cut


class RedisOrderLogs:
    """The cluster's order-log store: one shared log per account, named by its journal file. ``orders`` (or
    ``orders-demo``) is the default account's, under ``<prefix>:orders:…``; ``orders-<account>`` gets keys of its
    own, ``<prefix>:orders-<account>:orders:…``. Every log keeps the store's retention. Logs are loaded by
    ``load`` (the engine's ``connect``): open them all before it."""

    def __init__(self, r: Any, prefix: str, retention_days: float, retry: float, replicated: bool = False) -> None:
        self.r = r
        self.prefix = prefix
        self.retention_days = retention_days
        self.retry = retry
        self.replicated = replicated
        self.logs: dict[str, RedisOrderLog] = {}  # by log name
        self.default = self._log(DEFAULT_LOG)

    def open_order_log(self, path: Path, retention_days: float) -> RedisOrderLog:
        name = path.stem
        return self._log(DEFAULT_LOG if name in ("orders", "orders-demo") else name)

    def _log(self, name: str) -> RedisOrderLog:
        order_log = self.logs.get(name)
        if order_log is None:
            prefix = self.prefix if name == DEFAULT_LOG else f"{self.prefix}:{name}"
            order_log = RedisOrderLog(self.r, prefix, self.retention_days, self.retry, replicated=self.replicated)
            self.logs[name] = order_log
        return order_log

    async def load(self) -> None:
        for order_log in self.logs.values():
            await order_log.load()

    def start(self, supervise: Supervise, on_error: Callable[[BaseException], None]) -> None:
        """Tail and append loops of every log; ``on_error`` hears when Redis fails under them."""
        for name, order_log in self.logs.items():
            order_log.on_error = on_error
            suffix = "" if name == DEFAULT_LOG else f"-{name}"
            supervise(f"cluster-orders-tail{suffix}", order_log.tail_loop)
            supervise(f"cluster-orders-append{suffix}", order_log.append_loop)

    def close(self) -> None:
        for order_log in self.logs.values():
            order_log.close()
