"""Every user's notification preferences for a cluster: one Redis hash, mirrored in each node's memory.

``P:preferences`` holds one field per user (the JSON of the kinds they changed). Each node reads the whole hash
when it connects, and again whenever its pub/sub connection comes back (it may have missed changes meanwhile),
so ``get`` answers from memory on the notification path. A save writes the field and publishes
``{"t":"preferences","user":…,"prefs":…}`` on ``P:ctl`` in one transaction; every node applies it, the saving
node at once. A save that cannot reach Redis changes nothing anywhere and says so (``PreferencesUnavailable``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from trade_stream.core.preferences import PreferencesUnavailable, Prefs, decode, encode

MESSAGE = "preferences"  # the ``t`` of its control messages


class RedisPreferences:
    def __init__(self, r: Any, key: str, ctl: str, timeout: float, errors: tuple[type[BaseException], ...]) -> None:
        self.r = r
        self.key = key
        self.ctl = ctl
        self.timeout = timeout
        self.errors = errors
        self.by_user: dict[str, dict[str, frozenset[str]]] = {}

    async def load(self) -> None:
        """Read every user's preferences (at connect, and when the pub/sub connection is back); raises the Redis
        error when it cannot."""
        async with asyncio.timeout(self.timeout):
            raw = await self.r.hgetall(self.key)
        self.by_user = {user.decode() if isinstance(user, bytes) else user: decode(payload)
                        for user, payload in raw.items()}

    def get(self, user: str) -> Prefs | None:
        return self.by_user.get(user)

    async def save(self, user: str, prefs: Prefs) -> None:
        payload = encode(prefs)
        message = orjson.dumps({"t": MESSAGE, "user": user, "prefs": orjson.Fragment(payload)})
        try:
            async with asyncio.timeout(self.timeout):
                pipe = self.r.pipeline(transaction=True)
                pipe.hset(self.key, user, payload)
                pipe.publish(self.ctl, message)
                await pipe.execute()
        except self.errors as exc:
            raise PreferencesUnavailable(f"the cluster store (Redis) cannot take preferences now "
                                         f"({type(exc).__name__}: {exc}); try again when it is back") from exc
        self.by_user[user] = dict(prefs)

    def on_message(self, msg: dict[str, Any]) -> None:
        """Another node (or this one) saved a user's preferences."""
        user = msg.get("user")
        if isinstance(user, str):
            self.by_user[user] = decode(orjson.dumps(msg.get("prefs")))

    def close(self) -> None:
        """The connection is the engine's."""
