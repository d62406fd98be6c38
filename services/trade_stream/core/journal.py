"""The durable order-event journal (SQLite, WAL): every order event is written here before anyone sees it.

Ids are SQLite AUTOINCREMENT rowids: monotonic and never reused, also across restarts, so a client's ``since``
stays meaningful after the daemon comes back. A deleted or replaced journal starts again at 1, so each journal
also has an *epoch*, a random name made when it is created and stored in it: ids are handed out with it, and an
id from another epoch is recognised as foreign (see event_ids.py). A unique dedupe key makes appending
idempotent, which is what lets reconciliation after a reconnect re-derive events without ever relaying one twice.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

EPOCH_KEY = "epoch"
SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    recorded REAL NOT NULL,
    event TEXT NOT NULL,
    order_id TEXT,
    status TEXT,
    filled_qty TEXT,
    updated_at TEXT,
    dedupe TEXT NOT NULL UNIQUE,
    reconciled INTEGER NOT NULL DEFAULT 0,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_order ON events(order_id, id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY,
    status TEXT,
    filled_qty TEXT,
    updated_at TEXT
);
"""


@dataclass(frozen=True)
class Entry:
    id: int
    event: str
    data: dict[str, Any]
    reconciled: bool

    def to_message(self) -> dict[str, Any]:
        return {"type": "order_update", "id": self.id, "event": self.event, "data": self.data,
                "reconciled": self.reconciled}


def dedupe_key(data: dict[str, Any]) -> str:
    """Execution id when the event has one (fills); otherwise order id + event + timestamp."""
    if data.get("execution_id"):
        return f"x:{data['execution_id']}"
    order = data.get("order") or {}
    return f"o:{order.get('id')}:{data.get('event')}:{data.get('timestamp') or order.get('updated_at')}"


def state_key(data: dict[str, Any]) -> str | None:
    """The event and the order state it reports (status, filled quantity): the same for a live event and for
    the one REST reconciliation derives for it, whatever their other keys (None without an order id)."""
    order = data.get("order") or {}
    if not order.get("id"):
        return None
    return f"s:{order['id']}:{data.get('event')}:{order.get('status')}:{order.get('filled_qty')}"


def open_durable(path: Path, schema: str) -> sqlite3.Connection:
    """An SQLite file for state that must survive a crash (the order journal, the broker journal, notifications,
    the webhook outbox): WAL, ``synchronous=FULL`` (what a client was told survives power loss), the schema
    created; the connection is closed again when any of that fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(schema)
    except BaseException:
        db.close()
        raise
    return db


class JournalReplaced(OSError):
    """The journal's file was deleted or replaced while open: writing on would go to a file nobody will read."""


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def durable_size(path: Path) -> int:
    """Bytes on disk of a file opened by ``open_durable``: the database and its write-ahead log."""
    total = 0
    for part in (path, path.with_name(path.name + "-wal")):
        try:
            total += part.stat().st_size
        except OSError:
            pass
    return total


class Journal:
    """The single-process order log (core/engine.OrderLog): appends are relayed as soon as they are written."""

    on_entry: Callable[[Entry], None] | None = None  # never called: ``append`` returns each new entry
    #: never called: a recreated file shows as a fault, and recovery announces the reset
    on_reset: Callable[[str], None] | None = None

    def __init__(self, path: Path, retention_days: float = 7.0) -> None:
        self.path = path
        self.retention = retention_days * 86400
        self.db = open_durable(path, SCHEMA)
        try:
            self.epoch = self.get_meta(EPOCH_KEY) or self._new_epoch()
            self._file = _file_id(path)
        except BaseException:
            self.db.close()
            raise

    def check(self) -> None:
        """Raise ``JournalReplaced`` when the path no longer names the open file (deleted, or another put in its
        place): SQLite would go on writing to the unlinked file, and its ids would be mistaken for the new one's."""
        if _file_id(self.path) != self._file:
            raise JournalReplaced(f"{self.path} was deleted or replaced while open")

    def _new_epoch(self) -> str:
        """A journal from before epochs keeps its ids: plain integer ids from its clients stay valid."""
        epoch = secrets.token_hex(6)
        self.set_meta(EPOCH_KEY, epoch)
        return epoch

    def close(self) -> None:
        self.db.close()

    def append(self, data: dict[str, Any], reconciled: bool = False, dedupe: str | None = None) -> Entry | None:
        """Record one event; None when it was already recorded (a duplicate)."""
        order = data.get("order") or {}
        cur = self.db.execute(
            "INSERT OR IGNORE INTO events(recorded, event, order_id, status, filled_qty, updated_at, dedupe,"
            " reconciled, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (time.time(), str(data.get("event")), order.get("id"), order.get("status"),
             str(order.get("filled_qty")), order.get("updated_at"), dedupe or dedupe_key(data), int(reconciled),
             orjson.dumps(data)),
        )
        if cur.rowcount == 0:
            return None
        self.remember(order)
        return Entry(int(cur.lastrowid or 0), str(data.get("event")), data, reconciled)

    def remember(self, order: dict[str, Any]) -> None:
        """Record an order's state as known to clients (after an event, or as the baseline on first start)."""
        if order.get("id"):
            self.db.execute("INSERT OR REPLACE INTO orders(order_id, status, filled_qty, updated_at) VALUES (?,?,?,?)",
                            (order["id"], order.get("status"), str(order.get("filled_qty")), order.get("updated_at")))

    def since(self, after_id: int, limit: int = 10_000) -> list[Entry]:
        rows = self.db.execute(
            "SELECT id, event, payload, reconciled FROM events WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
        ).fetchall()
        return [Entry(r[0], r[1], orjson.loads(r[2]), bool(r[3])) for r in rows]

    def count_after(self, after_id: int, limit: int) -> int:
        """How many events follow ``after_id``, counting no further than ``limit``."""
        return int(self.db.execute("SELECT COUNT(*) FROM (SELECT 1 FROM events WHERE id > ? LIMIT ?)",
                                   (after_id, limit)).fetchone()[0])

    def last_id(self) -> int:
        return int(self.db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0])

    def first_id(self) -> int:
        return int(self.db.execute("SELECT COALESCE(MIN(id), 0) FROM events").fetchone()[0])

    def order_state(self, order_id: str) -> tuple[str | None, str | None, str | None]:
        """(status, filled_qty, updated_at) of this order as clients last learned it."""
        row = self.db.execute(
            "SELECT status, filled_qty, updated_at FROM orders WHERE order_id = ?", (order_id,)
        ).fetchone()
        return (row[0], row[1], row[2]) if row else (None, None, None)

    def open_orders(self) -> list[str]:
        """Ids of orders whose last state clients learned was not final: they can still change."""
        rows = self.db.execute("SELECT order_id FROM orders WHERE status IS NULL OR status NOT IN ('filled', "
                               "'canceled', 'expired', 'rejected', 'replaced')").fetchall()
        return [r[0] for r in rows]

    def prune(self, now: float | None = None) -> int:
        cutoff = (now or time.time()) - self.retention
        removed = self.db.execute("DELETE FROM events WHERE recorded < ?", (cutoff,)).rowcount
        self.db.execute("DELETE FROM orders WHERE order_id NOT IN (SELECT DISTINCT order_id FROM events "
                        "WHERE order_id IS NOT NULL) AND status IN ('filled', 'canceled', 'expired', 'rejected', "
                        "'replaced')")
        return removed

    async def sync(self) -> None:
        """Nothing to catch up with: this process is the only writer."""

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))


def fault_message(path: Path, exc: BaseException) -> str:
    """One line for the operator: which file, what is wrong, what to do."""
    if isinstance(exc, JournalReplaced):
        return (f"order journal {path} was deleted or replaced while the daemon ran: a new journal is opened at "
                "that path, clients get a reset and missed events come back by REST reconciliation")
    text = str(exc) or type(exc).__name__
    low = text.lower()
    if isinstance(exc, sqlite3.DatabaseError) and ("not a database" in low or "malformed" in low):
        return (f"order journal {path} is corrupt ({text}): move it aside (mv {path} {path}.bad); the relay then "
                "starts a new journal by itself and clients get a reset")
    if "full" in low:
        return f"order journal {path} cannot be written ({text}): free space on its filesystem"
    return (f"order journal {path} cannot be opened or written ({text}): make TRADE_STREAM_STATE_DIR "
            f"({path.parent}) a writable directory")
