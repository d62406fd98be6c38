"""Where price alerts are kept: the ``AlertStore`` seam (core/engine.py lists it), and its single-process
implementation, SQLite (WAL) in the state directory beside the other stores.

Every node keeps every alert in memory (core/price_alerts.py); the store is what survives a restart and, in a
cluster (engines/redis_alerts.py), what every node reads the others' changes from. ``fire`` is the one
conditional write: an alert becomes ``triggered`` only if it is still armed at the generation that fired, so two
nodes that both believed they led (or a fire racing a re-arm) produce one notification, never two.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Protocol

import orjson

from trade_stream.core.journal import open_durable

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    state TEXT NOT NULL,
    generation INTEGER NOT NULL,
    record BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_user ON alerts(user);
"""
ERRORS = (sqlite3.Error, OSError)  # what a store may raise: the service reports it, the trade path goes on


class AlertStore(Protocol):
    """The alerts of every user, as ``Alert.record()`` dicts (core/alerts.py)."""

    shared: bool  # True: other nodes write it too (``version`` tells when to reload)

    async def load(self) -> list[dict[str, Any]]: ...

    async def put(self, record: dict[str, Any]) -> None:
        """Create or replace one alert (a re-arm is a put of the next generation)."""

    async def delete(self, alert_id: str) -> bool: ...

    async def fire(self, record: dict[str, Any]) -> bool:
        """Store ``record`` (triggered) only if the alert is still armed at ``record["generation"]``: True once."""

    async def version(self) -> str:
        """Changes whenever any node writes (a cluster's nodes reload on a change)."""

    def close(self) -> None: ...


class SqliteAlertStore:
    shared = False

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = open_durable(path, SCHEMA)

    async def load(self) -> list[dict[str, Any]]:
        return [orjson.loads(r[0]) for r in self.db.execute("SELECT record FROM alerts ORDER BY rowid")]

    async def put(self, record: dict[str, Any]) -> None:
        self.db.execute("INSERT OR REPLACE INTO alerts (id, user, state, generation, record) VALUES (?,?,?,?,?)",
                        (record["id"], record["user"], record["state"], record["generation"],
                         orjson.dumps(record)))

    async def delete(self, alert_id: str) -> bool:
        return self.db.execute("DELETE FROM alerts WHERE id = ?", (alert_id,)).rowcount > 0

    async def fire(self, record: dict[str, Any]) -> bool:
        cur = self.db.execute("UPDATE alerts SET state = ?, record = ? WHERE id = ? AND state = 'armed' AND "
                              "generation = ?", (record["state"], orjson.dumps(record), record["id"],
                                                 record["generation"]))
        return cur.rowcount > 0

    async def version(self) -> str:
        return ""

    def close(self) -> None:
        self.db.close()
