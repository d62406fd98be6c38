"""The cluster's price alerts: one Redis hash, ``P:alerts`` (alert id → the alert's record as JSON), and a
counter, ``P:alerts:version``, raised by every write, which is how the other nodes learn they should reload.

``fire`` is a Lua script, so it is atomic: the record becomes the triggered one only while the stored alert is
still armed at the generation that fired (cjson reads it inside Redis). A leader that lost its lease without
knowing it yet, and the next leader, can both evaluate the same trade; one of them stores the fire, the other is
told no and notifies nobody.
"""

from __future__ import annotations

from typing import Any

import orjson

FIRE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then
  return 0
end
local current = cjson.decode(raw)
if current['state'] ~= 'armed' or tonumber(current['generation']) ~= tonumber(ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('INCR', KEYS[2])
return 1
"""


class RedisAlertStore:
    """core/alert_store.py's ``AlertStore`` on the cluster's Redis (the engine's client and key prefix)."""

    shared = True

    def __init__(self, r: Any, prefix: str) -> None:
        self.r = r
        self.k_alerts = f"{prefix}:alerts"
        self.k_version = f"{prefix}:alerts:version"
        self._fire = r.register_script(FIRE)

    async def load(self) -> list[dict[str, Any]]:
        rows = await self.r.hvals(self.k_alerts)
        return [orjson.loads(raw) for raw in rows]

    async def put(self, record: dict[str, Any]) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.k_alerts, record["id"], orjson.dumps(record))
        pipe.incr(self.k_version)
        await pipe.execute()

    async def delete(self, alert_id: str) -> bool:
        pipe = self.r.pipeline(transaction=True)
        pipe.hdel(self.k_alerts, alert_id)
        pipe.incr(self.k_version)
        removed, _ = await pipe.execute()
        return bool(removed)

    async def fire(self, record: dict[str, Any]) -> bool:
        done = await self._fire(keys=[self.k_alerts, self.k_version],
                                args=[record["id"], record["generation"], orjson.dumps(record)])
        return bool(done)

    async def version(self) -> str:
        raw = await self.r.get(self.k_version)
        return raw.decode() if raw else ""

    def close(self) -> None:
        """The engine's client is closed by the engine."""
