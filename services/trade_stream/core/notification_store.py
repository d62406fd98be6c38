"""Where notifications and their read state are kept: a narrow interface, and SQLite (WAL) in the state directory.

The interface is small on purpose (add, list, since, mark_read, unread_count, last_id, prune) so another backend
(Redis, for cluster mode) can implement it without knowing SQL. Notifications are scoped by account; read state
is kept per user (a user id string: today the one token's user, ``default``), so two users of one account each
have their own unread list, and a user only ever sees the accounts it is given.

Ids are the store's own AUTOINCREMENT rowids: monotonic and never reused, also across restarts. They are not the
order journal's ids, which start again at 1 when a journal is recreated; the journal's ``<epoch>-<id>`` is kept
as ``source`` and is unique, so adding the same order event twice stores it once.

Read state is a per-user watermark ("everything up to id N is read", what "mark all read" sets) plus the ids read
one by one above it, so "mark all read" is one row however many notifications there are.
"""

from __future__ import annotations

import builtins  # the classes' own ``list`` method hides the builtin in their later annotations
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import orjson

from trade_stream.core.journal import open_durable

SCHEMA = """
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL UNIQUE,
    account TEXT NOT NULL,
    created REAL NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS notifications_account ON notifications(account, id);
CREATE TABLE IF NOT EXISTS read_upto (user TEXT PRIMARY KEY, upto INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS reads (user TEXT NOT NULL, id INTEGER NOT NULL, PRIMARY KEY (user, id));
"""
MAX_LIMIT = 500


class NotificationStore(Protocol):
    """What the notifier needs from a store. ``accounts`` None means every account."""

    def add(self, source: str, account: str, fields: dict[str, Any]) -> dict[str, Any] | None: ...
    def list(self, user: str, accounts: Iterable[str] | None, limit: int = 20,
             unread_only: bool = False) -> list[dict[str, Any]]: ...
    def since(self, after_id: int, limit: int, user: str | None = None,
              accounts: Iterable[str] | None = None) -> builtins.list[dict[str, Any]]: ...
    def mark_read(self, user: str, ids: Iterable[int] | None,
                  accounts: Iterable[str] | None = None) -> builtins.list[int]: ...
    def unread_count(self, user: str, accounts: Iterable[str] | None) -> int: ...
    def last_id(self) -> int: ...
    def prune(self, older_than: float) -> int: ...
    def close(self) -> None: ...


class SqliteNotificationStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = open_durable(path, SCHEMA)  # the webhook outbox is fed from here: what is stored stays

    def close(self) -> None:
        self.db.close()

    def add(self, source: str, account: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        """Store one notification; None when ``source`` was stored already."""
        cur = self.db.execute("INSERT OR IGNORE INTO notifications(source, account, created, payload) "
                              "VALUES (?, ?, ?, ?)", (source, account, time.time(), orjson.dumps(fields)))
        if cur.rowcount == 0:
            return None
        return {"id": int(cur.lastrowid or 0), "account": account, **fields, "read": False}

    def list(self, user: str, accounts: Iterable[str] | None, limit: int = 20,
             unread_only: bool = False) -> list[dict[str, Any]]:
        """Newest first."""
        where, args = _scope(accounts)
        if unread_only:
            where += " AND id > ? AND id NOT IN (SELECT id FROM reads WHERE user = ?)"
            args += [self._upto(user), user]
        rows = self.db.execute(f"SELECT id, account, payload FROM notifications WHERE {where} ORDER BY id DESC "
                               "LIMIT ?", [*args, max(1, min(limit, MAX_LIMIT))]).fetchall()
        return self._views(rows, user)

    def since(self, after_id: int, limit: int, user: str | None = None,
              accounts: Iterable[str] | None = None) -> builtins.list[dict[str, Any]]:
        """Oldest first, after ``after_id`` (a replay, or the webhook outbox catching up). Without a ``user``
        (the outbox) each carries its ``source`` too: the order event it came from, which names its deliveries."""
        where, args = _scope(accounts)
        rows = self.db.execute(f"SELECT id, account, payload, source FROM notifications WHERE {where} AND id > ? "
                               "ORDER BY id LIMIT ?", [*args, after_id, limit]).fetchall()
        views = self._views(rows, user)
        if user is None:
            for view, row in zip(views, rows, strict=True):
                view["source"] = row[3]
        return views

    def mark_read(self, user: str, ids: Iterable[int] | None,
                  accounts: Iterable[str] | None = None) -> builtins.list[int]:
        """Mark ``ids`` (None: everything so far) read for ``user``; returns the ids that were unread."""
        if ids is None:
            unread = [n["id"] for n in self.list(user, accounts, MAX_LIMIT, unread_only=True)]
            last = self.last_id()
            self.db.execute("BEGIN")
            try:
                self.db.execute("INSERT INTO read_upto(user, upto) VALUES (?, ?) ON CONFLICT(user) DO UPDATE SET "
                                "upto = MAX(upto, excluded.upto)", (user, last))
                self.db.execute("DELETE FROM reads WHERE user = ? AND id <= ?", (user, last))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            return sorted(unread)
        wanted = sorted({int(i) for i in ids})
        if not wanted:
            return []
        where, args = _scope(accounts)
        marks = ",".join("?" * len(wanted))
        visible = [r[0] for r in self.db.execute(
            f"SELECT id FROM notifications WHERE {where} AND id IN ({marks}) AND id > ? AND id NOT IN "
            "(SELECT id FROM reads WHERE user = ?)", [*args, *wanted, self._upto(user), user]).fetchall()]
        if visible:
            self.db.executemany("INSERT OR IGNORE INTO reads(user, id) VALUES (?, ?)", [(user, i) for i in visible])
        return sorted(visible)

    def unread_count(self, user: str, accounts: Iterable[str] | None) -> int:
        where, args = _scope(accounts)
        return int(self.db.execute(
            f"SELECT COUNT(*) FROM notifications WHERE {where} AND id > ? AND id NOT IN "
            "(SELECT id FROM reads WHERE user = ?)", [*args, self._upto(user), user]).fetchone()[0])

    def last_id(self) -> int:
        return int(self.db.execute("SELECT COALESCE(MAX(id), 0) FROM notifications").fetchone()[0])

    def prune(self, older_than: float) -> int:
        removed = self.db.execute("DELETE FROM notifications WHERE created < ?", (older_than,)).rowcount
        self.db.execute("DELETE FROM reads WHERE id NOT IN (SELECT id FROM notifications)")
        return removed

    def _upto(self, user: str) -> int:
        row = self.db.execute("SELECT upto FROM read_upto WHERE user = ?", (user,)).fetchone()
        return int(row[0]) if row else 0

    def _views(self, rows: builtins.list[Any], user: str | None) -> builtins.list[dict[str, Any]]:
        if not rows:
            return []
        read: set[int] = set()
        if user is not None:
            upto = self._upto(user)
            ids = [r[0] for r in rows if r[0] > upto]
            if ids:
                marks = ",".join("?" * len(ids))
                read = {r[0] for r in self.db.execute(f"SELECT id FROM reads WHERE user = ? AND id IN ({marks})",
                                                      [user, *ids]).fetchall()}
            read |= {r[0] for r in rows if r[0] <= upto}
        return [{"id": r[0], "account": r[1], **orjson.loads(r[2]), "read": r[0] in read} for r in rows]


def _scope(accounts: Iterable[str] | None) -> tuple[str, list[Any]]:
    if accounts is None:
        return "1", []
    names = sorted(set(accounts))
    if not names:
        return "0", []
    return f"account IN ({','.join('?' * len(names))})", list(names)
