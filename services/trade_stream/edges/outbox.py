"""The durable webhook outbox (SQLite, WAL) in the state directory: every delivery is a row before its first attempt.

Rows are queued from the notification store by a cursor (the last notification id queued), in the same
transaction that writes them, so a crash between storing a notification and queueing its deliveries loses
nothing: on start the worker picks up after the cursor. A delivery keeps its id (``delivery_id``) and body for
every retry, so a receiver can deduplicate. ``heads`` gives the oldest pending delivery of each order per target:
deliveries of one order go out in order, different orders do not wait for each other.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trade_stream.core.journal import open_durable

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id TEXT NOT NULL UNIQUE,
    target TEXT NOT NULL,
    order_key TEXT NOT NULL,
    event TEXT NOT NULL,
    body BLOB NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    last_status INTEGER,
    last_error TEXT,
    done_at REAL
);
CREATE INDEX IF NOT EXISTS deliveries_lane ON deliveries(target, state, order_key, id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
CURSOR_KEY = "notification_cursor"
KEEP_DELIVERED = 86400.0  # delivered rows are kept a day (for inspection), given-up ones a week
KEEP_FAILED = 7 * 86400.0


@dataclass(frozen=True)
class Delivery:
    id: int
    delivery_id: str
    target: str
    order_key: str
    event: str
    body: bytes
    created: float
    attempts: int
    next_at: float


class Outbox:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = open_durable(path, SCHEMA)

    def close(self) -> None:
        self.db.close()

    def cursor(self) -> int | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (CURSOR_KEY,)).fetchone()
        return int(row[0]) if row else None

    def set_cursor(self, value: int) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (CURSOR_KEY, str(value)))

    def enqueue(self, notifications: Iterable[dict[str, Any]],
                rows_of: Callable[[dict[str, Any]], list[tuple[str, str, str, str, bytes]]], cursor: int) -> int:
        """Queue the deliveries ``rows_of`` each notification gives ((delivery_id, target, order_key, event, body)
        each) and
        move the cursor, in one transaction. Returns how many deliveries were queued."""
        now = time.time()
        count = 0
        self.db.execute("BEGIN")
        try:
            for n in notifications:
                for delivery_id, target, order_key, event, body in rows_of(n):
                    self.db.execute("INSERT INTO deliveries(delivery_id, target, order_key, event, body, created, "
                                    "next_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                    (delivery_id, target, order_key, event, body, now, now))
                    count += 1
            self.set_cursor(cursor)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return count

    def heads(self, target: str, exclude: set[str], limit: int = 100) -> list[Delivery]:
        """The oldest pending delivery of each order for ``target`` (orders in ``exclude`` are in flight)."""
        rows = self.db.execute(
            "SELECT id, delivery_id, target, order_key, event, body, created, attempts, next_at FROM deliveries d "
            "WHERE target = ? AND state = 'pending' AND id = (SELECT MIN(id) FROM deliveries e WHERE "
            "e.target = d.target AND e.state = 'pending' AND e.order_key = d.order_key) ORDER BY id LIMIT ?",
            (target, limit + len(exclude))).fetchall()
        return [Delivery(*r) for r in rows if r[3] not in exclude][:limit]

    def delivered(self, row: Delivery, status: int) -> None:
        self.db.execute("UPDATE deliveries SET state = 'delivered', attempts = attempts + 1, last_status = ?, "
                        "done_at = ? WHERE id = ?", (status, time.time(), row.id))

    def retry(self, row: Delivery, next_at: float, status: int | None, error: str) -> None:
        self.db.execute("UPDATE deliveries SET attempts = attempts + 1, next_at = ?, last_status = ?, last_error = ? "
                        "WHERE id = ?", (next_at, status, error, row.id))

    def give_up(self, row: Delivery, status: int | None, error: str) -> None:
        self.db.execute("UPDATE deliveries SET state = 'failed', attempts = attempts + 1, last_status = ?, "
                        "last_error = ?, done_at = ? WHERE id = ?", (status, error, time.time(), row.id))

    def pending(self) -> dict[str, int]:
        rows = self.db.execute("SELECT target, COUNT(*) FROM deliveries WHERE state = 'pending' GROUP BY target")
        return {r[0]: int(r[1]) for r in rows.fetchall()}

    def prune(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        return self.db.execute("DELETE FROM deliveries WHERE (state = 'delivered' AND done_at < ?) OR "
                               "(state = 'failed' AND done_at < ?)", (now - KEEP_DELIVERED, now - KEEP_FAILED)).rowcount
