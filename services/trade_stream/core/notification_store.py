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

A notification's scope is an account (everyone who sees the account sees it) or named users (``users``: a price
alert is one user's; an account is then only context, and seeing that account does not show it). Each row also
keeps its preference ``kind``, so one user's list and unread count can leave out the kinds they turned off for
the bell (``hidden``) without reading every payload.

Schema versions (``PRAGMA user_version``): 0 had neither ``users`` nor ``kind``; opening such a file adds both
columns and fills ``kind`` from each stored notification's type, so existing files keep their rows and read
state.
"""

from __future__ import annotations

import builtins  # the classes' own ``list`` method hides the builtin in their later annotations
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import orjson

from trade_stream.core.journal import open_durable
from trade_stream.core.notifications import kind_of

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
CREATE TABLE IF NOT EXISTS recipients (user TEXT NOT NULL, id INTEGER NOT NULL, PRIMARY KEY (user, id));
"""
SCHEMA_VERSION = 1
MAX_LIMIT = 500


def migrate(db: sqlite3.Connection) -> None:
    """Bring a file of an older schema to ``SCHEMA_VERSION`` in one transaction (see the module docstring)."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version >= SCHEMA_VERSION:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        columns = {r[1] for r in db.execute("PRAGMA table_info(notifications)").fetchall()}
        if "users" not in columns:
            db.execute("ALTER TABLE notifications ADD COLUMN users BLOB")  # NULL: the account's; else a JSON list
        if "kind" not in columns:
            db.execute("ALTER TABLE notifications ADD COLUMN kind TEXT NOT NULL DEFAULT 'order_events'")
            rows = db.execute("SELECT id, payload FROM notifications").fetchall()
            db.executemany("UPDATE notifications SET kind = ? WHERE id = ?",
                           [(kind_of(str(orjson.loads(p).get("type") or "")), i) for i, p in rows])
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


class NotificationStore(Protocol):
    """What the notifier needs from a store. ``accounts`` None means every account; ``user`` None (the webhook
    outbox) every notification, whoever it is for; ``hidden`` the kinds left out of that user's view."""

    def add(self, source: str, account: str | None, fields: dict[str, Any],
            users: Iterable[str] | None = None) -> dict[str, Any] | None: ...
    def list(self, user: str, accounts: Iterable[str] | None, limit: int = 20, unread_only: bool = False,
             hidden: Iterable[str] = ()) -> list[dict[str, Any]]: ...
    def since(self, after_id: int, limit: int, user: str | None = None, accounts: Iterable[str] | None = None,
              hidden: Iterable[str] = ()) -> builtins.list[dict[str, Any]]: ...
    def mark_read(self, user: str, ids: Iterable[int] | None,
                  accounts: Iterable[str] | None = None) -> builtins.list[int]: ...
    def unread_count(self, user: str, accounts: Iterable[str] | None, hidden: Iterable[str] = ()) -> int: ...
    def last_id(self) -> int: ...
    def prune(self, older_than: float) -> int: ...
    def close(self) -> None: ...


class SqliteNotificationStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = open_durable(path, SCHEMA)  # the webhook outbox is fed from here: what is stored stays
        try:
            migrate(self.db)
        except BaseException:
            self.db.close()
            raise

    def close(self) -> None:
        self.db.close()

    def add(self, source: str, account: str | None, fields: dict[str, Any],
            users: Iterable[str] | None = None) -> dict[str, Any] | None:
        """Store one notification, for ``account``'s users or (``users`` given) for those users only; None when
        ``source`` was stored already."""
        names = None if users is None else sorted(set(users))
        kind = str(fields.get("kind") or kind_of(str(fields.get("type") or "")))
        self.db.execute("BEGIN")
        try:
            cur = self.db.execute(
                "INSERT OR IGNORE INTO notifications(source, account, created, payload, users, kind) "
                "VALUES (?, ?, ?, ?, ?, ?)", (source, account or "", time.time(), orjson.dumps(fields),
                                              None if names is None else orjson.dumps(names), kind))
            new_id = int(cur.lastrowid or 0) if cur.rowcount else None
            if new_id is not None and names:
                self.db.executemany("INSERT INTO recipients(user, id) VALUES (?, ?)", [(u, new_id) for u in names])
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        if new_id is None:
            return None
        return {"id": new_id, "account": account or None, **fields, "read": False}

    def list(self, user: str, accounts: Iterable[str] | None, limit: int = 20, unread_only: bool = False,
             hidden: Iterable[str] = ()) -> list[dict[str, Any]]:
        """Newest first."""
        where, args = _scope(user, accounts, hidden)
        if unread_only:
            where += " AND id > ? AND id NOT IN (SELECT id FROM reads WHERE user = ?)"
            args += [self._upto(user), user]
        rows = self.db.execute(f"SELECT id, account, payload FROM notifications WHERE {where} ORDER BY id DESC "
                               "LIMIT ?", [*args, max(1, min(limit, MAX_LIMIT))]).fetchall()
        return self._views(rows, user)

    def since(self, after_id: int, limit: int, user: str | None = None, accounts: Iterable[str] | None = None,
              hidden: Iterable[str] = ()) -> builtins.list[dict[str, Any]]:
        """Oldest first, after ``after_id`` (a replay, or the webhook outbox catching up). Without a ``user``
        (the outbox) each carries its ``source`` too (what it came from, which names its deliveries) and, when
        it is scoped to named users, ``users``."""
        where, args = _scope(user, accounts, hidden)
        rows = self.db.execute(f"SELECT id, account, payload, source, users FROM notifications WHERE {where} "
                               "AND id > ? ORDER BY id LIMIT ?", [*args, after_id, limit]).fetchall()
        views = self._views(rows, user)
        if user is None:
            for view, row in zip(views, rows, strict=True):
                view["source"] = row[3]
                if row[4] is not None:
                    view["users"] = orjson.loads(row[4])
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
        where, args = _scope(user, accounts, ())
        marks = ",".join("?" * len(wanted))
        visible = [r[0] for r in self.db.execute(
            f"SELECT id FROM notifications WHERE {where} AND id IN ({marks}) AND id > ? AND id NOT IN "
            "(SELECT id FROM reads WHERE user = ?)", [*args, *wanted, self._upto(user), user]).fetchall()]
        if visible:
            self.db.executemany("INSERT OR IGNORE INTO reads(user, id) VALUES (?, ?)", [(user, i) for i in visible])
        return sorted(visible)

    def unread_count(self, user: str, accounts: Iterable[str] | None, hidden: Iterable[str] = ()) -> int:
        where, args = _scope(user, accounts, hidden)
        return int(self.db.execute(
            f"SELECT COUNT(*) FROM notifications WHERE {where} AND id > ? AND id NOT IN "
            "(SELECT id FROM reads WHERE user = ?)", [*args, self._upto(user), user]).fetchone()[0])

    def last_id(self) -> int:
        return int(self.db.execute("SELECT COALESCE(MAX(id), 0) FROM notifications").fetchone()[0])

    def prune(self, older_than: float) -> int:
        removed = self.db.execute("DELETE FROM notifications WHERE created < ?", (older_than,)).rowcount
        self.db.execute("DELETE FROM reads WHERE id NOT IN (SELECT id FROM notifications)")
        self.db.execute("DELETE FROM recipients WHERE id NOT IN (SELECT id FROM notifications)")
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
        return [{"id": r[0], "account": r[1] or None, **orjson.loads(r[2]), "read": r[0] in read} for r in rows]


def _scope(user: str | None, accounts: Iterable[str] | None, hidden: Iterable[str]) -> tuple[str, list[Any]]:
    """The WHERE clause of what ``user`` (None: anyone, the outbox) sees of ``accounts`` (None: every account):
    notifications of those accounts that name no users, and those that name this user."""
    args: list[Any] = []
    if accounts is None:
        by_account = "users IS NULL"
    else:
        names = sorted(set(accounts))
        by_account = f"(users IS NULL AND account IN ({','.join('?' * len(names))}))" if names else "0"
        args += names
    if user is None:
        where = "1" if accounts is None else f"({by_account} OR users IS NOT NULL)"
    else:
        where = f"({by_account} OR id IN (SELECT id FROM recipients WHERE user = ?))"
        args.append(user)
    kinds = sorted(set(hidden))
    if kinds:
        where += f" AND kind NOT IN ({','.join('?' * len(kinds))})"
        args += kinds
    return where, args
