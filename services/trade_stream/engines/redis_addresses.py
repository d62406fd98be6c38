"""The remembered JWT users' email addresses for a cluster: one Redis hash, mirrored in each node's memory.

``P:addresses`` holds one field per user (``{"address","accounts","seen"}``). Each node reads the whole hash
when it connects, and again whenever its pub/sub connection comes back (it may have missed changes meanwhile),
so the recipients of a notification are found in memory. A node that sees a token with a new address (or
accounts, or an hour after it last wrote) writes the field and publishes ``{"t":"address",…}`` on ``P:ctl`` in
one transaction, in the background: a login never waits on Redis. Every node applies it; the bound is kept by
each node in memory and by the writer in Redis (the users it forgot are deleted with its write). A write that
cannot reach Redis is logged; this node keeps the address, and the user's next token writes it again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from trade_stream.core.addresses import BOUND, Addresses, Remembered, accounts_of, accounts_text

log = logging.getLogger("trade_stream.engines.redis_addresses")

MESSAGE = "address"  # the ``t`` of its control messages


class RedisAddresses(Addresses):
    def __init__(self, r: Any, key: str, ctl: str, timeout: float, errors: tuple[type[BaseException], ...],
                 bound: int = BOUND) -> None:
        super().__init__(bound)
        self.r = r
        self.key = key
        self.ctl = ctl
        self.timeout = timeout
        self.errors = errors
        self._writes: set[asyncio.Task[None]] = set()

    async def load(self) -> None:
        """Read every remembered user (at connect, and when the pub/sub connection is back); raises the Redis
        error when it cannot."""
        async with asyncio.timeout(self.timeout):
            raw = await self.r.hgetall(self.key)
        rows = []
        for user, payload in raw.items():
            data = orjson.loads(payload)
            rows.append((float(data["seen"]), user.decode() if isinstance(user, bytes) else user, data))
        self.entries.clear()
        for seen, user, data in sorted(rows, key=lambda r: r[0])[-self.bound:]:
            self.entries[user] = Remembered(str(data["address"]), accounts_of(str(data["accounts"])), seen)

    def remember(self, user: str, address: str, accounts: frozenset[str]) -> None:
        now = time.time()
        if self.fresh(user, address, accounts, now):
            return
        gone = self.put(user, Remembered(address, accounts, now))
        task = asyncio.get_running_loop().create_task(self._write(user, address, accounts, now, gone))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, user: str, address: str, accounts: frozenset[str], seen: float, gone: list[str]) -> None:
        payload = orjson.dumps({"address": address, "accounts": accounts_text(accounts), "seen": seen})
        message = orjson.dumps({"t": MESSAGE, "user": user, "entry": orjson.Fragment(payload)})
        try:
            async with asyncio.timeout(self.timeout):
                pipe = self.r.pipeline(transaction=True)
                pipe.hset(self.key, user, payload)
                if gone:
                    pipe.hdel(self.key, *gone)
                pipe.publish(self.ctl, message)
                await pipe.execute()
        except self.errors as exc:
            log.warning("address_not_shared user=%s error=%s: this node keeps it; the user's next token shares it",
                        user, f"{type(exc).__name__}: {exc}"[:200])

    def on_message(self, msg: dict[str, Any]) -> None:
        """Another node (or this one) remembered a user's address."""
        user, entry = msg.get("user"), msg.get("entry")
        if isinstance(user, str) and isinstance(entry, dict):
            self.put(user, Remembered(str(entry.get("address")), accounts_of(str(entry.get("accounts") or "")),
                                      float(entry.get("seen") or 0)))

    def close(self) -> None:
        """The connection is the engine's; a write still on its way is let go."""
        for task in self._writes:
            task.cancel()
