"""The durable webhook outbox (SQLite, WAL) in the state directory: every delivery is a row before its first attempt.

Rows are queued from the notification store by a cursor (the last notification id queued), in the same
transaction that writes them, so a crash between storing a notification and queueing its deliveries loses
nothing: on start the worker picks up after the cursor. A delivery keeps its id (``delivery_id``) and body for
every retry, so a receiver can deduplicate. The id is derived from the event and the target, so queueing an
event's delivery a second time keeps the one row there is rather than failing or sending it twice.

Deliveries of one order go out in order, different orders do not wait for each other: only the oldest pending
delivery of each (target, order) is a *head* (``head = 1``), and only heads are sent. The flag is kept as rows
are queued and finished, so ``heads`` reads the first few heads by due time from a partial index: its cost does
not grow with the backlog (a dead target piles up a row per event, hundreds of thousands in a few hours). The
backlog is bounded per target: beyond ``max_pending`` the oldest pending deliveries are given up as ``dropped``.
Pending counts are kept in memory, loaded once at open, so status and metrics do not count rows either.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trade_stream.core.journal import durable_size, open_durable

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
    done_at REAL,
    head INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS deliveries_lane ON deliveries(target, state, order_key, id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# After the column exists (a file from before heads were kept gets it at open): the due heads of a target, and
# its pending rows oldest first (what the bound gives up).
INDEXES = """
CREATE INDEX IF NOT EXISTS deliveries_heads ON deliveries(target, next_at, id) WHERE state = 'pending' AND head = 1;
CREATE INDEX IF NOT EXISTS deliveries_queue ON deliveries(target, id) WHERE state = 'pending';
"""
COLUMNS = "id, delivery_id, target, order_key, event, body, created, attempts, next_at"
CURSOR_KEY = "notification_cursor"
KEEP_DELIVERED = 86400.0  # delivered rows are kept a day (for inspection), given-up ones a week
KEEP_FAILED = 7 * 86400.0
DROPPED = "dropped: more than {bound} deliveries pending for this target (TRADE_STREAM_WEBHOOK_MAX_PENDING)"


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
    def __init__(self, path: Path, max_pending: int | None = None) -> None:
        self.path = path
        self.max_pending = max_pending  # per target; None: unbounded
        self.db = open_durable(path, SCHEMA)
        try:
            self._add_heads()
            self.db.executescript(INDEXES)
            rows = self.db.execute("SELECT target, COUNT(*) FROM deliveries WHERE state = 'pending' GROUP BY target")
            self._pending = {r[0]: int(r[1]) for r in rows.fetchall()}
        except BaseException:
            self.db.close()
            raise

    def _add_heads(self) -> None:
        """A file written before heads were kept: add the column and mark each order's oldest pending row."""
        if any(col[1] == "head" for col in self.db.execute("PRAGMA table_info(deliveries)").fetchall()):
            return
        with self._transaction():
            self.db.execute("ALTER TABLE deliveries ADD COLUMN head INTEGER NOT NULL DEFAULT 0")
            self.db.execute("UPDATE deliveries SET head = 1 WHERE id IN (SELECT MIN(id) FROM deliveries "
                            "WHERE state = 'pending' GROUP BY target, order_key)")

    def close(self) -> None:
        self.db.close()

    def cursor(self) -> int | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (CURSOR_KEY,)).fetchone()
        return int(row[0]) if row else None

    def set_cursor(self, value: int) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (CURSOR_KEY, str(value)))

    def enqueue(self, notifications: Iterable[dict[str, Any]],
                rows_of: Callable[[dict[str, Any]], list[tuple[str, str, str, str, bytes]]],
                cursor: int) -> tuple[int, dict[str, int]]:
        """Queue the deliveries ``rows_of`` each notification gives ((delivery_id, target, order_key, event, body)
        each), drop what the bound no longer allows, and move the cursor, in one transaction. Returns how many
        deliveries were queued, and how many were dropped per target."""
        now = time.time()
        count = 0
        queued: dict[str, int] = {}
        with self._transaction():
            for n in notifications:
                for delivery_id, target, order_key, event, body in rows_of(n):
                    inserted = self.db.execute(
                        "INSERT OR IGNORE INTO deliveries(delivery_id, target, order_key, event, body, created, "
                        "next_at, head) VALUES (?, ?, ?, ?, ?, ?, ?, NOT EXISTS (SELECT 1 FROM deliveries WHERE "
                        "target = ? AND state = 'pending' AND order_key = ?))",
                        (delivery_id, target, order_key, event, body, now, now, target, order_key)).rowcount
                    if inserted:
                        queued[target] = queued.get(target, 0) + 1
                        count += 1
            dropped: dict[str, int] = {}
            for target, added in queued.items():
                excess = self._pending.get(target, 0) + added - (self.max_pending or 0)
                if self.max_pending is not None and excess > 0:
                    dropped[target] = self._drop_oldest(target, excess, self.max_pending)
            self.set_cursor(cursor)
        for target, added in queued.items():
            self._pending[target] = self._pending.get(target, 0) + added - dropped.get(target, 0)
        return count, dropped

    def trim(self, target: str, bound: int) -> int:
        """Give up ``target``'s oldest pending deliveries beyond ``bound``; returns how many."""
        excess = self._pending.get(target, 0) - bound
        if excess <= 0:
            return 0
        with self._transaction():
            dropped = self._drop_oldest(target, excess, bound)
        self._pending[target] -= dropped
        return dropped

    def _drop_oldest(self, target: str, count: int, bound: int) -> int:
        rows = self.db.execute("SELECT id, order_key FROM deliveries WHERE target = ? AND state = 'pending' "
                               "ORDER BY id LIMIT ?", (target, count)).fetchall()
        now, error = time.time(), DROPPED.format(bound=bound)
        self.db.executemany("UPDATE deliveries SET state = 'failed', head = 0, last_error = ?, done_at = ? "
                            "WHERE id = ?", [(error, now, r[0]) for r in rows])
        for order_key in {r[1] for r in rows}:
            self._promote(target, order_key)
        return len(rows)

    def heads(self, target: str, exclude: set[str], limit: int = 100) -> list[Delivery]:
        """``target``'s heads, soonest due first (orders in ``exclude`` are in flight)."""
        rows = self.db.execute(
            f"SELECT {COLUMNS} FROM deliveries WHERE target = ? AND state = 'pending' AND head = 1 "
            "ORDER BY next_at, id LIMIT ?", (target, limit + len(exclude))).fetchall()
        return [Delivery(*r) for r in rows if r[3] not in exclude][:limit]

    def pending_ids(self, target: str, after: int = 0, limit: int = 500) -> list[tuple[int, str]]:
        """(row id, delivery id) of ``target``'s pending deliveries after row ``after``, oldest first."""
        return [(int(r[0]), str(r[1])) for r in self.db.execute(
            "SELECT id, delivery_id FROM deliveries WHERE target = ? AND state = 'pending' AND id > ? ORDER BY id "
            "LIMIT ?", (target, after, limit)).fetchall()]

    def settled_elsewhere(self, target: str, outcomes: dict[str, str]) -> int:
        """Another node settled these deliveries of ``target`` (delivery id -> ``delivered`` or ``failed``): leave
        them unsent in that state and pass each order's head on. Returns how many left the pending state."""
        now, left, orders = time.time(), 0, set()
        with self._transaction():
            for delivery_id, outcome in outcomes.items():
                row = self.db.execute("UPDATE deliveries SET state = ?, head = 0, last_error = ?, done_at = ? "
                                      "WHERE delivery_id = ? AND target = ? AND state = 'pending' RETURNING order_key",
                                      ("delivered" if outcome == "delivered" else "failed",
                                       f"settled by another node: {outcome}", now, delivery_id, target)).fetchone()
                if row is not None:
                    left += 1
                    orders.add(row[0])
            for order_key in orders:
                self._promote(target, order_key)
        self._pending[target] = self._pending.get(target, left) - left
        return left

    def delivered(self, row: Delivery, status: int) -> None:
        self._finish(row, "UPDATE deliveries SET state = 'delivered', head = 0, attempts = attempts + 1, "
                          "last_status = ?, done_at = ? WHERE id = ? AND state = 'pending'", (status, time.time()))

    def retry(self, row: Delivery, next_at: float, status: int | None, error: str) -> None:
        self.db.execute("UPDATE deliveries SET attempts = attempts + 1, next_at = ?, last_status = ?, last_error = ? "
                        "WHERE id = ? AND state = 'pending'", (next_at, status, error, row.id))

    def give_up(self, row: Delivery, status: int | None, error: str) -> None:
        self._finish(row, "UPDATE deliveries SET state = 'failed', head = 0, attempts = attempts + 1, "
                          "last_status = ?, last_error = ?, done_at = ? WHERE id = ? AND state = 'pending'",
                     (status, error, time.time()))

    def _finish(self, row: Delivery, sql: str, args: tuple[Any, ...]) -> None:
        """Leave the pending state (once: a row the bound dropped meanwhile stays dropped) and pass the head on."""
        with self._transaction():
            left = self.db.execute(sql, (*args, row.id)).rowcount
            if left:
                self._promote(row.target, row.order_key)
        if left:
            self._pending[row.target] = self._pending.get(row.target, 1) - 1

    def _promote(self, target: str, order_key: str) -> None:
        self.db.execute("UPDATE deliveries SET head = 1 WHERE id = (SELECT MIN(id) FROM deliveries WHERE "
                        "target = ? AND state = 'pending' AND order_key = ?)", (target, order_key))

    def pending(self) -> dict[str, int]:
        return {t: n for t, n in self._pending.items() if n}

    def size(self) -> int:
        """Bytes on disk."""
        return durable_size(self.path)

    def prune(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        return self.db.execute("DELETE FROM deliveries WHERE (state = 'delivered' AND done_at < ?) OR "
                               "(state = 'failed' AND done_at < ?)", (now - KEEP_DELIVERED, now - KEEP_FAILED)).rowcount

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN … COMMIT, or ROLLBACK on any exception (the connection is in autocommit mode)."""
        self.db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
