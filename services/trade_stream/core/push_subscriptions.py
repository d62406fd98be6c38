"""Web Push subscriptions: what is kept of a browser's ``PushSubscription``, the rule that bounds them per user,
and where one process keeps them.

Each is kept for the user who posted it, with the accounts that user saw then (a JWT user exists only while a
token of theirs is presented: this is how a fill on their account finds them while they are away), at most
``per_user`` per user: a new browser beyond that replaces the user's oldest (a person whose old browser is gone
cannot delete its subscription from there). One endpoint is one browser profile, so the same endpoint posted
again (a renewed key, another user signing in on that browser) replaces what was kept for it. A subscription's
id is derived from its endpoint, so it names the same outbox lane on every node and across restarts.

Where they are kept is the engine's (core/engine.py ``SharedPushSubscriptions``): one process keeps them in
``push-subscriptions.sqlite3`` in the state directory (``SqlitePushSubscriptions``); a cluster in Redis, mirrored
in every node's memory (engines/redis_push.py), so the leader pushes to a browser whichever node it subscribed
through, and a 404/410 the leader gets removes it on every node. Either way they are all held in memory, so a
notification's deliveries (``of``, for every recipient) never touch a disk or the network.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from trade_stream.core.journal import open_durable

SCHEMA = """
CREATE TABLE IF NOT EXISTS subscriptions (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    endpoint TEXT NOT NULL UNIQUE,
    p256dh TEXT NOT NULL,
    auth TEXT NOT NULL,
    created REAL NOT NULL,
    accounts TEXT NOT NULL DEFAULT '*'
);
CREATE INDEX IF NOT EXISTS subscriptions_user ON subscriptions(user, created);
"""


class PushStoreUnavailable(Exception):
    """The store could not take a change (a broken file, the cluster store unreachable): nothing was changed."""


@dataclass(frozen=True)
class Subscription:
    id: str
    user: str
    endpoint: str
    p256dh: str  # base64url, as the browser gave it
    auth: str
    created: float
    accounts: frozenset[str] | None = None  # what the user who posted it saw then; None: every account

    def sees(self, account: str) -> bool:
        return self.accounts is None or account in self.accounts

    @property
    def origin(self) -> str:
        """The push service's origin: the ``aud`` of the VAPID token for this endpoint."""
        parts = urlsplit(self.endpoint)
        return f"{parts.scheme}://{parts.netloc}"

    def view(self) -> dict[str, Any]:
        """What the API shows: the push service, not the whole endpoint (it is the browser's capability)."""
        return {"id": self.id, "push_service": self.origin, "created": self.created}

    def record(self) -> dict[str, Any]:
        """Everything kept of it, as JSON-able fields (``from_record`` reads it back)."""
        return {"id": self.id, "user": self.user, "endpoint": self.endpoint, "p256dh": self.p256dh,
                "auth": self.auth, "created": self.created, "accounts": accounts_text(self.accounts)}


def from_record(data: dict[str, Any]) -> Subscription:
    return Subscription(str(data["id"]), str(data["user"]), str(data["endpoint"]), str(data["p256dh"]),
                        str(data["auth"]), float(data["created"]), accounts_of(str(data.get("accounts", "*"))))


def accounts_text(accounts: frozenset[str] | None) -> str:
    return "*" if accounts is None else ",".join(sorted(accounts))


def accounts_of(text: str) -> frozenset[str] | None:
    return None if text == "*" else frozenset(a for a in text.split(",") if a)


def subscription_id(endpoint: str) -> str:
    return hashlib.sha256(endpoint.encode()).hexdigest()[:24]


class PushSubscriptionStore(Protocol):
    """Every user's subscriptions: read from memory, changed one user's at a time. A change is applied here once
    the store has it; ``PushStoreUnavailable`` when it cannot be made, with nothing changed."""

    removed_gone: int  # removed by this node because the push service said the subscription is gone

    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Subscription]: ...
    def get(self, sub_id: str) -> Subscription | None: ...
    def of(self, user: str) -> list[Subscription]:
        """The user's subscriptions, oldest first."""

    async def add(self, user: str, endpoint: str, p256dh: str, auth: str,
                  accounts: frozenset[str] | None = None) -> tuple[Subscription, list[str]]:
        """Keep the subscription for ``user`` (who sees ``accounts``); returns it and the ids of the user's oldest
        it replaced."""

    async def remove(self, user: str, endpoint: str) -> bool:
        """The user's subscription for ``endpoint`` removed (False: they had none for it)."""

    async def gone(self, sub_id: str) -> bool:
        """The push service answered 404/410: the browser dropped the subscription; forget it (False: it was not
        kept)."""

    def close(self) -> None: ...


class PushTable:
    """The subscriptions themselves, by id, and the per-user bound; pure (the caller gives the time)."""

    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        self.by_id: dict[str, Subscription] = {}
        self.removed_gone = 0

    def __len__(self) -> int:
        return len(self.by_id)

    def __iter__(self) -> Iterator[Subscription]:
        return iter(list(self.by_id.values()))

    def get(self, sub_id: str) -> Subscription | None:
        return self.by_id.get(sub_id)

    def of(self, user: str) -> list[Subscription]:
        return sorted((s for s in self.by_id.values() if s.user == user), key=lambda s: s.created)

    def plan(self, user: str, endpoint: str, p256dh: str, auth: str, accounts: frozenset[str] | None,
             now: float) -> tuple[Subscription, list[str]]:
        """The subscription to keep and the ids of the user's oldest it replaces; nothing is changed yet."""
        sub = Subscription(subscription_id(endpoint), user, endpoint, p256dh, auth, now, accounts)
        others = [s for s in self.of(user) if s.id != sub.id]
        return sub, [s.id for s in others[:max(0, len(others) + 1 - self.per_user)]]

    def owned(self, user: str, endpoint: str) -> Subscription | None:
        """The subscription for ``endpoint`` when it is ``user``'s."""
        sub = self.by_id.get(subscription_id(endpoint))
        return sub if sub is not None and sub.user == user else None

    def apply(self, put: list[Subscription], removed: list[str]) -> None:
        for sub_id in removed:
            self.by_id.pop(sub_id, None)
        for sub in put:
            self.by_id[sub.id] = sub


class SqlitePushStore:
    """The file: one table, read whole at open."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = open_durable(path, SCHEMA)

    def load(self) -> list[Subscription]:
        rows = self.db.execute("SELECT id, user, endpoint, p256dh, auth, created, accounts FROM subscriptions "
                               "ORDER BY created").fetchall()
        return [Subscription(sub_id, user, endpoint, p256dh, auth, created, accounts_of(accounts))
                for sub_id, user, endpoint, p256dh, auth, created, accounts in rows]

    def write(self, put: list[Subscription], removed: list[str]) -> None:
        """One transaction: ``removed`` deleted, ``put`` saved."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany("DELETE FROM subscriptions WHERE id = ?", [(i,) for i in removed])
            self.db.executemany(
                "INSERT OR REPLACE INTO subscriptions(id, user, endpoint, p256dh, auth, created, accounts) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(s.id, s.user, s.endpoint, s.p256dh, s.auth, s.created, accounts_text(s.accounts)) for s in put])
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.db.close()


class SqlitePushSubscriptions(PushTable):
    """One process: the file in the state directory, read once at open and written through on each change."""

    def __init__(self, path: Path, per_user: int) -> None:
        super().__init__(per_user)
        self.store = SqlitePushStore(path)
        try:
            self.apply(self.store.load(), [])
        except BaseException:
            self.store.close()
            raise

    def _write(self, put: list[Subscription], removed: list[str]) -> None:
        try:
            self.store.write(put, removed)
        except (sqlite3.Error, OSError) as exc:
            raise PushStoreUnavailable(f"the push subscription store {self.store.path} cannot be written ({exc}): "
                                       "make TRADE_STREAM_STATE_DIR writable with free space") from exc
        self.apply(put, removed)

    async def add(self, user: str, endpoint: str, p256dh: str, auth: str,
                  accounts: frozenset[str] | None = None) -> tuple[Subscription, list[str]]:
        sub, replaced = self.plan(user, endpoint, p256dh, auth, accounts, time.time())
        self._write([sub], replaced)
        return sub, replaced

    async def remove(self, user: str, endpoint: str) -> bool:
        sub = self.owned(user, endpoint)
        if sub is None:
            return False
        self._write([], [sub.id])
        return True

    async def gone(self, sub_id: str) -> bool:
        if sub_id not in self.by_id:
            return False
        self._write([], [sub_id])
        self.removed_gone += 1
        return True

    def close(self) -> None:
        self.store.close()
