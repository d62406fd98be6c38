"""The durable delivery outbox (SQLite, WAL) in the state directory: every delivery is a row before its first attempt.

A delivery belongs to a *channel* (``webhook``, ``email``, ``push``) and to a *target* within it (a webhook target
name, a user, a push subscription): a lane is one (channel, target), and everything below holds per lane, so one
file serves every channel without one channel's backlog touching another's queries.

Rows are queued from the notification store by a cursor (the last notification id queued), in the same
transaction that writes them, so a crash between storing a notification and queueing its deliveries loses
nothing: on start the worker picks up after the cursor. A delivery keeps its id (``delivery_id``) and body for
every retry, so a receiver can deduplicate. The id is derived from the event and the target, so queueing an
event's delivery a second time keeps the one row there is rather than failing or sending it twice.

Deliveries of one order (of one *order key*: a channel may key by something else, email by the user) go out in
order, different orders do not wait for each other: only the oldest pending delivery of each (lane, order) is a
*head* (``head = 1``), and only heads are sent. The flag is kept as rows
are queued and finished, so ``heads`` reads the first few heads by due time from a partial index: its cost does
not grow with the backlog (a dead target piles up a row per event, hundreds of thousands in a few hours). The
backlog is bounded per lane: beyond its channel's bound the oldest pending deliveries are given up as ``dropped``.
Pending counts are kept in memory, loaded once at open, so status and metrics do not count rows either.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

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
    head INTEGER NOT NULL DEFAULT 0,
    channel TEXT NOT NULL DEFAULT 'webhook'
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# After the columns exist (a file written without them gets them at open): an order's rows in a lane, the due
# heads of a lane, and its pending rows oldest first (what the bound gives up).
INDEXES = """
CREATE INDEX IF NOT EXISTS deliveries_orders ON deliveries(channel, target, state, order_key, id);
CREATE INDEX IF NOT EXISTS deliveries_heads ON deliveries(channel, target, next_at, id)
    WHERE state = 'pending' AND head = 1;
CREATE INDEX IF NOT EXISTS deliveries_queue ON deliveries(channel, target, id) WHERE state = 'pending';
"""
# Indexes of a file written before deliveries had a channel: replaced by the ones above at open.
OLD_INDEXES = ("deliveries_lane", "deliveries_heads", "deliveries_queue")
COLUMNS = "id, delivery_id, target, order_key, event, body, created, attempts, next_at, channel"
CURSOR_KEY = "notification_cursor"
KEEP_DELIVERED = 86400.0  # delivered rows are kept a day (for inspection), given-up ones a week
KEEP_FAILED = 7 * 86400.0
DROPPED = "dropped: more than {bound} deliveries pending for this target ({setting})"
WEBHOOK = "webhook"
#: The setting that bounds each channel's lanes, named in a dropped row's error.
BOUND_SETTINGS = {"webhook": "TRADE_STREAM_WEBHOOK_MAX_PENDING", "email": "TRADE_STREAM_EMAIL_MAX_PENDING",
                  "push": "TRADE_STREAM_PUSH_MAX_PENDING"}


class Row(NamedTuple):
    """One delivery to queue: what a channel's sender makes of a notification. A plain 5-tuple is a webhook's."""
    delivery_id: str
    target: str
    order_key: str
    event: str
    body: bytes
    channel: str = WEBHOOK


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
    channel: str = WEBHOOK


Lane = tuple[str, str]  # (channel, target)


class Outbox:
    def __init__(self, path: Path, max_pending: int | None = None,
                 bounds: dict[str, int | None] | None = None) -> None:
        self.path = path
        self.max_pending = max_pending  # per lane, for every channel not in ``bounds``; None: unbounded
        self.bounds = dict(bounds or {})
        self.db = open_durable(path, SCHEMA)
        try:
            self._add_heads()
            self._add_channels()
            self.db.executescript(INDEXES)
            rows = self.db.execute("SELECT channel, target, COUNT(*) FROM deliveries WHERE state = 'pending' "
                                   "GROUP BY channel, target")
            self._pending: dict[Lane, int] = {(r[0], r[1]): int(r[2]) for r in rows.fetchall()}
        except BaseException:
            self.db.close()
            raise

    def bound(self, channel: str) -> int | None:
        return self.bounds.get(channel, self.max_pending)

    def _add_heads(self) -> None:
        """A file written before heads were kept: add the column and mark each order's oldest pending row."""
        if any(col[1] == "head" for col in self.db.execute("PRAGMA table_info(deliveries)").fetchall()):
            return
        with self._transaction():
            self.db.execute("ALTER TABLE deliveries ADD COLUMN head INTEGER NOT NULL DEFAULT 0")
            self.db.execute("UPDATE deliveries SET head = 1 WHERE id IN (SELECT MIN(id) FROM deliveries "
                            "WHERE state = 'pending' GROUP BY target, order_key)")

    def _add_channels(self) -> None:
        """A file written when every delivery was a webhook: add the column (its rows are webhooks) and re-index
        by lane."""
        if any(col[1] == "channel" for col in self.db.execute("PRAGMA table_info(deliveries)").fetchall()):
            return
        with self._transaction():
            self.db.execute("ALTER TABLE deliveries ADD COLUMN channel TEXT NOT NULL DEFAULT 'webhook'")
            for name in OLD_INDEXES:
                self.db.execute(f"DROP INDEX IF EXISTS {name}")

    def close(self) -> None:
        self.db.close()

    def cursor(self) -> int | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (CURSOR_KEY,)).fetchone()
        return int(row[0]) if row else None

    def set_cursor(self, value: int) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (CURSOR_KEY, str(value)))

    def enqueue(self, notifications: Iterable[dict[str, Any]],
                rows_of: Callable[[dict[str, Any]], Iterable[tuple[Any, ...]]],
                cursor: int) -> tuple[int, dict[Lane, int]]:
        """Queue the deliveries ``rows_of`` each notification gives (a ``Row`` each, or a webhook's 5-tuple), drop
        what the bound no longer allows, and move the cursor, in one transaction. Returns how many deliveries were
        queued, and how many were dropped per lane."""
        now = time.time()
        count = 0
        queued: dict[Lane, int] = {}
        with self._transaction():
            for n in notifications:
                for row in (Row(*r) for r in rows_of(n)):
                    inserted = self.db.execute(
                        "INSERT OR IGNORE INTO deliveries(delivery_id, channel, target, order_key, event, body, "
                        "created, next_at, head) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NOT EXISTS (SELECT 1 FROM "
                        "deliveries WHERE channel = ? AND target = ? AND state = 'pending' AND order_key = ?))",
                        (row.delivery_id, row.channel, row.target, row.order_key, row.event, row.body, now, now,
                         row.channel, row.target, row.order_key)).rowcount
                    if inserted:
                        lane = (row.channel, row.target)
                        queued[lane] = queued.get(lane, 0) + 1
                        count += 1
            dropped: dict[Lane, int] = {}
            for lane, added in queued.items():
                bound = self.bound(lane[0])
                excess = self._pending.get(lane, 0) + added - (bound or 0)
                if bound is not None and excess > 0:
                    dropped[lane] = self._drop_oldest(lane, excess, bound)
            self.set_cursor(cursor)
        for lane, added in queued.items():
            self._pending[lane] = self._pending.get(lane, 0) + added - dropped.get(lane, 0)
        return count, dropped

    def trim(self, target: str, bound: int, channel: str = WEBHOOK) -> int:
        """Give up the lane's oldest pending deliveries beyond ``bound``; returns how many."""
        lane = (channel, target)
        excess = self._pending.get(lane, 0) - bound
        if excess <= 0:
            return 0
        with self._transaction():
            dropped = self._drop_oldest(lane, excess, bound)
        self._pending[lane] -= dropped
        return dropped

    def _drop_oldest(self, lane: Lane, count: int, bound: int) -> int:
        rows = self.db.execute("SELECT id, order_key FROM deliveries WHERE channel = ? AND target = ? AND "
                               "state = 'pending' ORDER BY id LIMIT ?", (*lane, count)).fetchall()
        now = time.time()
        error = DROPPED.format(bound=bound, setting=BOUND_SETTINGS.get(lane[0], "its bound"))
        self.db.executemany("UPDATE deliveries SET state = 'failed', head = 0, last_error = ?, done_at = ? "
                            "WHERE id = ?", [(error, now, r[0]) for r in rows])
        for order_key in {r[1] for r in rows}:
            self._promote(lane, order_key)
        return len(rows)

    def heads(self, target: str, exclude: set[str], limit: int = 100, channel: str = WEBHOOK) -> list[Delivery]:
        """The lane's heads, soonest due first (orders in ``exclude`` are in flight)."""
        rows = self.db.execute(
            f"SELECT {COLUMNS} FROM deliveries WHERE channel = ? AND target = ? AND state = 'pending' AND head = 1 "
            "ORDER BY next_at, id LIMIT ?", (channel, target, limit + len(exclude))).fetchall()
        return [Delivery(*r) for r in rows if r[3] not in exclude][:limit]

    def queued(self, target: str, order_key: str, limit: int, channel: str = WEBHOOK) -> list[Delivery]:
        """An order's pending deliveries in the lane, oldest (its head) first: what a channel that gathers several
        deliveries into one message (an email digest) reads."""
        rows = self.db.execute(
            f"SELECT {COLUMNS} FROM deliveries WHERE channel = ? AND target = ? AND state = 'pending' AND "
            "order_key = ? ORDER BY id LIMIT ?", (channel, target, order_key, limit)).fetchall()
        return [Delivery(*r) for r in rows]

    def pending_ids(self, target: str, after: int = 0, limit: int = 500,
                    channel: str = WEBHOOK) -> list[tuple[int, str]]:
        """(row id, delivery id) of the lane's pending deliveries after row ``after``, oldest first."""
        return [(int(r[0]), str(r[1])) for r in self.db.execute(
            "SELECT id, delivery_id FROM deliveries WHERE channel = ? AND target = ? AND state = 'pending' AND id > ? "
            "ORDER BY id LIMIT ?", (channel, target, after, limit)).fetchall()]

    def settled_elsewhere(self, target: str, outcomes: dict[str, str], channel: str = WEBHOOK) -> int:
        """Another node settled these deliveries of the lane (delivery id -> ``delivered`` or ``failed``): leave
        them unsent in that state and pass each order's head on. Returns how many left the pending state."""
        lane = (channel, target)
        now, left, orders = time.time(), 0, set()
        with self._transaction():
            for delivery_id, outcome in outcomes.items():
                row = self.db.execute("UPDATE deliveries SET state = ?, head = 0, last_error = ?, done_at = ? "
                                      "WHERE delivery_id = ? AND channel = ? AND target = ? AND state = 'pending' "
                                      "RETURNING order_key",
                                      ("delivered" if outcome == "delivered" else "failed",
                                       f"settled by another node: {outcome}", now, delivery_id, *lane)).fetchone()
                if row is not None:
                    left += 1
                    orders.add(row[0])
            for order_key in orders:
                self._promote(lane, order_key)
        self._pending[lane] = self._pending.get(lane, left) - left
        return left

    def defer(self, row: Delivery, next_at: float, why: str) -> None:
        """Hold ``row`` back until ``next_at`` without counting an attempt (its channel's rate limit)."""
        self.db.execute("UPDATE deliveries SET next_at = ?, last_error = ? WHERE id = ? AND state = 'pending'",
                        (next_at, why, row.id))

    def delivered(self, row: Delivery, status: int | None) -> None:
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
                self._promote((row.channel, row.target), row.order_key)
        if left:
            lane = (row.channel, row.target)
            self._pending[lane] = self._pending.get(lane, 1) - 1

    def _promote(self, lane: Lane, order_key: str) -> None:
        self.db.execute("UPDATE deliveries SET head = 1 WHERE id = (SELECT MIN(id) FROM deliveries WHERE "
                        "channel = ? AND target = ? AND state = 'pending' AND order_key = ?)", (*lane, order_key))

    def pending(self, channel: str = WEBHOOK) -> dict[str, int]:
        """Pending deliveries per target of ``channel``."""
        return {t: n for (c, t), n in self._pending.items() if n and c == channel}

    def lanes(self) -> dict[Lane, int]:
        """Pending deliveries per lane, every channel."""
        return {lane: n for lane, n in self._pending.items() if n}

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
