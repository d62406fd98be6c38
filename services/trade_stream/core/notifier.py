"""Trade notifications as a service: every journaled order event becomes a stored notification, pushed at once.

Flow: ``Orders`` journals an event and calls its listeners → ``on_entry`` derives the notification
(notifications.py), stores it (notification_store.py), and hands it to: authenticated WebSocket clients
subscribed to ``orders`` (``{"type":"notification",…}``, one frame for all), then to ``listeners`` (the SSE
alert stream, the webhook outbox's wake-up). Marking read pushes ``notifications_read`` the same way, so two open
tabs agree on what is unread.

The store can fail (corrupt file, full disk). That never reaches the relay or the order journal: the fault is
logged once, shown in status, the notification is still pushed live (with ``id`` null: it cannot be marked
read), and the store is reopened on the next use after ``retry`` seconds.

Users and accounts: a notification belongs to the account its order event came from; read state belongs to a
user (core/users.py ``User``: ``TRADE_STREAM_TOKEN`` is user ``default``, who sees every account). A client
is only ever pushed notifications of accounts its user sees, with that user's unread count.
"""

from __future__ import annotations

import builtins  # the classes' own ``list`` method hides the builtin in their later annotations
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trade_stream.core.framing import text_frame
from trade_stream.core.journal import Entry, durable_size
from trade_stream.core.notification_store import NotificationStore, SqliteNotificationStore
from trade_stream.core.notifications import describe
from trade_stream.core.orders import Orders
from trade_stream.core.protocol import encode
from trade_stream.core.users import User

log = logging.getLogger("trade_stream.core.notifier")

DEFAULT_USER = "default"
DEFAULT_ACCOUNT = "default"
STORE_ERRORS = (sqlite3.Error, OSError)
MAX_LIMIT = 200


class TradeNotifier:
    def __init__(self, path: Path, accounts: Any, retention_days: float = 7.0, retry: float = 5.0,
                 open_store: Callable[[Path], NotificationStore] = SqliteNotificationStore) -> None:
        self.path = path
        self.accounts = accounts  # core/accounts.py Accounts: every account's Orders and who each client is
        self.retention = retention_days * 86400
        self.retry = retry
        self._open_store = open_store
        self.store: NotificationStore | None = None
        self.fault: str | None = None
        self._fault_since: float | None = None
        self._next_open = 0.0
        self.errors = 0
        self.created = 0
        # A new notification, as {"type":"notification","data":{…},"unread":n} (SSE alerts, the webhook wake-up)
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self.read_listeners: list[Callable[[dict[str, Any]], None]] = []  # read state changed (SSE)
        self._open()  # each account's order events reach ``on_entry`` through its listeners (app.py)

    @staticmethod
    def accounts_of(user: User) -> list[str] | None:
        return None if user.accounts is None else sorted(user.accounts)

    # --- the store and its faults ----------------------------------------------------------------------

    def _open(self) -> NotificationStore | None:
        if self.store is not None:
            return self.store
        if time.monotonic() < self._next_open:
            return None
        try:
            self.store = self._open_store(self.path)
        except STORE_ERRORS as exc:
            self._fail(exc)
            return None
        if self.fault is not None:
            log.info("notification_store_recovered path=%s", self.path)
        self.fault = self._fault_since = None
        return self.store

    def _fail(self, exc: BaseException) -> None:
        text = str(exc) or type(exc).__name__
        message = (f"notification store {self.path} cannot be used ({text}): make TRADE_STREAM_STATE_DIR "
                   f"({self.path.parent}) writable with free space, or move a corrupt file aside")
        self.errors += 1
        if self.fault != message:
            log.error("notification_store_fault %s", message)
        self.fault = message
        if self._fault_since is None:
            self._fault_since = time.monotonic()
        self._next_open = time.monotonic() + self.retry
        store, self.store = self.store, None
        if store is not None:
            try:
                store.close()
            except STORE_ERRORS:
                pass

    def _use(self, call: Callable[[NotificationStore], Any]) -> tuple[bool, Any]:
        store = self._open()
        if store is None:
            return False, None
        try:
            return True, call(store)
        except STORE_ERRORS as exc:
            self._fail(exc)
            return False, None

    def health(self) -> dict[str, Any]:
        """The store's state. A faulted store is reopened only when used; asking is a use (at most once per retry
        interval), so a fixed store shows as ok without waiting for the next order event."""
        if self.fault is not None:
            self._open()
        fault_for = None if self._fault_since is None else round(time.monotonic() - self._fault_since, 1)
        return {"state": "fault" if self.fault else "ok", "path": str(self.path), "error": self.fault,
                "fault_for": fault_for, "created": self.created}

    # --- from order events ----------------------------------------------------------------------------

    def on_entry(self, entry: Entry, orders: Orders) -> None:
        fields = describe(entry.event, entry.data)
        account = orders.account
        source = f"{orders.epoch}-{entry.id}"
        ok, stored = self._use(lambda s: s.add(source, account, fields))
        if ok and stored is None:
            return  # stored before: it was pushed then
        note = stored if ok else {"id": None, "account": account, **fields, "read": False}
        self.created += 1
        by_user: dict[str, list[Any]] = {}  # the account's watchers, by user: each gets its own unread count
        users: dict[str, User] = {}
        for client in list(orders.subscribers):
            user = self.accounts.user_of(client)
            if user is not None:
                by_user.setdefault(user.name, []).append(client)
                users[user.name] = user
        for name, clients in by_user.items():
            frame = text_frame(encode({"type": "notification", "data": note, "unread": self.unread(users[name])}))
            for client in clients:
                client.send(frame)
        msg = {"type": "notification", "data": note, "unread": None}
        for listener in self.listeners:
            listener(msg)

    def unread(self, user: User) -> int | None:
        ok, unread = self._use(lambda s: s.unread_count(user.name, self.accounts_of(user)))
        return unread if ok else None

    # --- what clients ask for ---------------------------------------------------------------------------

    def list(self, user: User, limit: int, unread_only: bool) -> tuple[int, dict[str, Any]]:
        limit = max(1, min(limit, MAX_LIMIT))
        accounts, name = self.accounts_of(user), user.name
        ok, out = self._use(lambda s: (s.list(name, accounts, limit, unread_only), s.unread_count(name, accounts)))
        if not ok:
            return 503, {"error": "Service Unavailable", "message": self.fault or "notification store unavailable"}
        items, unread = out
        return 200, {"notifications": items, "unread": unread, "limit": limit}

    def mark_read(self, user: User, ids: builtins.list[int] | None) -> tuple[int, dict[str, Any]]:
        """Mark ``ids`` (None: all) read for ``user``, and tell that user's open clients."""
        accounts, name = self.accounts_of(user), user.name
        ok, out = self._use(lambda s: (s.mark_read(name, ids, accounts), s.unread_count(name, accounts)))
        if not ok:
            return 503, {"error": "Service Unavailable", "message": self.fault or "notification store unavailable"}
        marked, unread = out
        msg = {"type": "notifications_read", "user": name, "ids": marked, "all": ids is None, "unread": unread}
        if marked or ids is None:
            frame = text_frame(encode(msg))
            watching = set().union(*(o.subscribers for o in self.accounts))
            for client in self.accounts.clients_of(name):  # this user's open clients only
                if client in watching:
                    client.send(frame)
            for listener in self.read_listeners:
                listener(msg)
        return 200, {"ids": marked, "all": ids is None, "unread": unread}

    def since(self, after_id: int, limit: int, user: User | None = None) -> builtins.list[dict[str, Any]] | None:
        """Notifications after ``after_id``, oldest first (SSE replay: one user's; the webhook outbox: None, every
        account's); None while faulted."""
        accounts = self.accounts_of(user) if user is not None else None
        name = user.name if user is not None else None
        ok, out = self._use(lambda s: s.since(after_id, limit, name, accounts))
        return out if ok else None

    def last_id(self) -> int | None:
        ok, out = self._use(lambda s: s.last_id())
        return out if ok else None

    def prune(self) -> int:
        ok, out = self._use(lambda s: s.prune(time.time() - self.retention))
        return out if ok else 0

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    def collector(self) -> Any:
        """Prometheus: the store's size on disk, read at scrape time (a file size, not a count of rows)."""
        return _SizeCollector(self.path)


class _SizeCollector:
    def __init__(self, path: Path) -> None:
        self.path = path

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        yield GaugeMetricFamily("trade_stream_notification_store_bytes",
                                "Bytes on disk of the notification store (database and write-ahead log)",
                                value=durable_size(self.path))
