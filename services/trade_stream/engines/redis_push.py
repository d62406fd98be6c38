"""Web Push subscriptions for a cluster: one Redis hash, mirrored in each node's memory.

``P:push-subscriptions`` holds one field per subscription id (the JSON of ``Subscription.record``). Each node
reads the whole hash when it connects, and again whenever its pub/sub connection comes back (it may have missed
changes meanwhile), so a notification's deliveries find every subscription in memory. A change (a browser
subscribed, with the user's oldest it replaces; one removed by its user; one the push service said is gone)
writes the hash and publishes ``{"t":"push","put":[…],"removed":[…]}`` on ``P:ctl`` in one transaction; every
node applies it, the changing node at once. A change that cannot reach Redis changes nothing anywhere and says
so (``PushStoreUnavailable``): the browser is told to try again, a gone subscription is removed at its next 404.

The per-user bound is kept by the node that takes a subscription, from what it holds: two browsers of one user
subscribing through two nodes at the same instant may leave one more than the bound until the user's next one.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from trade_stream.core.push_subscriptions import PushStoreUnavailable, PushTable, Subscription, from_record

MESSAGE = "push"  # the ``t`` of its control messages


class RedisPushSubscriptions(PushTable):
    def __init__(self, r: Any, key: str, ctl: str, timeout: float, errors: tuple[type[BaseException], ...],
                 per_user: int) -> None:
        super().__init__(per_user)
        self.r = r
        self.key = key
        self.ctl = ctl
        self.timeout = timeout
        self.errors = errors

    async def load(self) -> None:
        """Read every subscription (at connect, and when the pub/sub connection is back); raises the Redis error
        when it cannot."""
        async with asyncio.timeout(self.timeout):
            raw = await self.r.hgetall(self.key)
        self.by_id = {}
        self.apply([from_record(orjson.loads(payload)) for payload in raw.values()], [])

    async def _write(self, put: list[Subscription], removed: list[str]) -> None:
        """The change in Redis and announced, then here."""
        records = [s.record() for s in put]
        message = orjson.dumps({"t": MESSAGE, "put": records, "removed": removed})
        try:
            async with asyncio.timeout(self.timeout):
                pipe = self.r.pipeline(transaction=True)
                if removed:
                    pipe.hdel(self.key, *removed)
                for record in records:
                    pipe.hset(self.key, record["id"], orjson.dumps(record))
                pipe.publish(self.ctl, message)
                await pipe.execute()
        except self.errors as exc:
            raise PushStoreUnavailable(f"the cluster store (Redis) cannot take push subscriptions now "
                                       f"({type(exc).__name__}: {exc}); try again when it is back") from exc
        self.apply(put, removed)

    async def add(self, user: str, endpoint: str, p256dh: str, auth: str,
                  accounts: frozenset[str] | None = None) -> tuple[Subscription, list[str]]:
        sub, replaced = self.plan(user, endpoint, p256dh, auth, accounts, time.time())
        await self._write([sub], replaced)
        return sub, replaced

    async def remove(self, user: str, endpoint: str) -> bool:
        sub = self.owned(user, endpoint)
        if sub is None:
            return False
        await self._write([], [sub.id])
        return True

    async def gone(self, sub_id: str) -> bool:
        if sub_id not in self.by_id:
            return False
        await self._write([], [sub_id])
        self.removed_gone += 1
        return True

    def on_message(self, msg: dict[str, Any]) -> None:
        """Another node (or this one) changed the subscriptions."""
        put, removed = msg.get("put"), msg.get("removed")
        if isinstance(put, list) and isinstance(removed, list):
            self.apply([from_record(r) for r in put if isinstance(r, dict)],
                       [i for i in removed if isinstance(i, str)])

    def close(self) -> None:
        """The connection is the engine's."""
