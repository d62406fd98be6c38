"""Notifications as a service: from any source, stored with read state, pushed at once to whom they are for.

``notify(fields, account=…)`` or ``notify(fields, users=[…])`` is the one entry point: order events (``on_entry``),
Broker events (``on_broker``: trade events with their ``reason``, account status changes, non-trade activities)
and price alerts all come through it. ``fields`` carries the ``type``, the ``level`` and the plain ``message``
(core/notifications.py); its ``kind`` (for preferences) follows from the type when not given.

Flow: ``notify`` stores the notification (notification_store.py) and hands it to: authenticated WebSocket
clients subscribed to ``orders`` of the users it is for (``{"type":"notification",…}``, one frame per user, with
that user's unread count), then to ``listeners`` (the SSE alert stream, the webhook outbox's wake-up). Marking
read pushes ``notifications_read`` the same way, so two open tabs agree on what is unread.

Whom a notification is for: scoped to an account, every user who sees that account (core/users.py ``User``:
``TRADE_STREAM_TOKEN`` is user ``default``, who sees every account); scoped to named users, those users only,
whatever accounts they see. Of those, a user who turned the notification's kind off for the ``bell``
(core/preferences.py) is not pushed it, and does not see it listed or counted unread. Which users a channel
sending outside the page (webhooks, email, push) reaches is ``recipients``.

The store can fail (corrupt file, full disk). That never reaches the relay or the order journal: the fault is
logged once, shown in status, the notification is still pushed live (with ``id`` null: it cannot be marked
read), and the store is reopened on the next use after ``retry`` seconds.
"""

from __future__ import annotations

import builtins  # the classes' own ``list`` method hides the builtin in their later annotations
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from trade_stream.core.framing import text_frame
from trade_stream.core.journal import Entry, durable_size
from trade_stream.core.notification_store import NotificationStore, SqliteNotificationStore
from trade_stream.core.notifications import LEVELS, TYPES, describe, describe_account_status, describe_activity, kind_of
from trade_stream.core.orders import Orders
from trade_stream.core.preferences import KINDS, Preferences
from trade_stream.core.protocol import encode
from trade_stream.core.users import User

log = logging.getLogger("trade_stream.core.notifier")

DEFAULT_USER = "default"
DEFAULT_ACCOUNT = "default"
STORE_ERRORS = (sqlite3.Error, OSError)
MAX_LIMIT = 200


#: Broker activity types that are trades: the trade events already tell of them.
TRADE_ACTIVITIES = frozenset({"FILL", "PARTIAL_FILL"})


class TradeNotifier:
    def __init__(self, path: Path, accounts: Any, retention_days: float = 7.0, retry: float = 5.0,
                 open_store: Callable[[Path], NotificationStore] = SqliteNotificationStore,
                 preferences: Preferences | None = None) -> None:
        self.path = path
        self.accounts = accounts  # core/accounts.py Accounts: every account's Orders and who each client is
        self.preferences = preferences  # None: everyone has the defaults
        self.retention = retention_days * 86400
        self.retry = retry
        self._open_store = open_store
        self.store: NotificationStore | None = None
        self.fault: str | None = None
        self._fault_since: float | None = None
        self._next_open = 0.0
        self.errors = 0
        self.created = 0
        # A new notification, as {"type":"notification","data":{…},"unread":None,"users":[…]|None} (SSE alerts,
        # the webhook wake-up); ``reaches`` says whether it is for a given user.
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

    # --- whom a notification is for --------------------------------------------------------------------

    def hidden(self, user: User) -> list[str]:
        """The kinds ``user`` turned off for the bell: never pushed to them, nor listed or counted for them."""
        prefs = self.preferences
        return [] if prefs is None else [k for k in KINDS if not prefs.wants(user.name, k, "bell")]

    def _bell(self, name: str, kind: str) -> bool:
        return self.preferences is None or self.preferences.wants(name, kind, "bell")

    def reaches(self, msg: dict[str, Any], user: User) -> bool:
        """Whether the notification ``msg`` (as ``listeners`` get it) is pushed to ``user``'s live streams."""
        note, users = msg["data"], msg.get("users")
        if users is not None:
            seen = user.name in users
        else:
            seen = note.get("account") is not None and user.sees(note["account"])
        return seen and self._bell(user.name, str(note.get("kind") or kind_of(str(note.get("type")))))

    def audience(self, note: dict[str, Any]) -> list[str]:
        """The users a stored notification is for, as far as they are known without a connection: its named
        users, or the configured users who see its account (``Credentials.audience``)."""
        users = note.get("users")
        if users is not None:
            return list(users)
        account = note.get("account")
        return [] if account is None else self.accounts.identity.audience(account)

    def recipients(self, note: dict[str, Any], channel: str) -> list[str]:
        """Of ``audience(note)``, the users who want its kind on ``channel`` (email, push: one delivery each)."""
        kind = str(note.get("kind") or kind_of(str(note.get("type"))))
        prefs = self.preferences
        return [u for u in self.audience(note) if prefs is None or prefs.wants(u, kind, channel)]

    def to_webhooks(self, note: dict[str, Any]) -> bool:
        """Whether ``note`` goes to the webhook targets (each still picks by its ``events`` and ``accounts``):
        one scoped to named users when one of them wants it on ``webhooks``; one scoped to an account when one of
        its configured users does, or when it has none the relay knows of (core/preferences.py says why)."""
        if note.get("users") is None and not self.audience(note):
            return True
        return bool(self.recipients(note, "webhooks"))

    # --- the entry point ------------------------------------------------------------------------------

    def notify(self, fields: dict[str, Any], *, account: str | None = None, users: Iterable[str] | None = None,
               source: str | None = None) -> dict[str, Any] | None:
        """Store and push one notification. ``fields``: ``type`` (records/webhook_targets.py ``TYPES``),
        ``level``, ``message`` and whatever else describes it; ``kind`` is added from the type when missing.
        Scope: ``account`` (everyone who sees it), or ``users`` (those only; ``account`` is then context).
        ``source`` names what it came from, unique: the same source twice is stored and pushed once (None: a
        fresh one). Returns the notification as pushed, or None when its source was stored before."""
        names = None if users is None else sorted(set(users))
        if names is None and account is None:
            raise ValueError("a notification needs an account or users to be for")
        if fields.get("type") not in TYPES or fields.get("level") not in LEVELS:
            raise ValueError(f"type must be one of {TYPES} and level one of {LEVELS}: {fields!r:.200}")
        if not isinstance(fields.get("message"), str):
            raise ValueError("message must be a string")
        fields = {**fields, "kind": fields.get("kind") or kind_of(fields["type"])}
        key = source or f"{fields['type']}:{uuid.uuid4()}"
        ok, stored = self._use(lambda s: s.add(key, account, fields, names))
        if ok and stored is None:
            return None  # stored before: it was pushed then
        note = stored if ok else {"id": None, "account": account, **fields, "read": False}
        self.created += 1
        self._push(note, names)
        msg = {"type": "notification", "data": note, "unread": None, "users": names}
        for listener in self.listeners:
            listener(msg)
        return note

    def _push(self, note: dict[str, Any], names: builtins.list[str] | None) -> None:
        """To the WebSocket clients of the users it is for, each user's frame with their own unread count."""
        account, kind = note.get("account"), note["kind"]
        orders = self.accounts.orders.get(account) if names is None and account is not None else None
        broker = self.accounts.broker
        if orders is not None:  # an account of this relay: its own subscribers, as its order events reach them
            clients = list(orders.subscribers)
        elif names is None and account is not None and broker is not None:  # a Broker account: its index
            clients = broker.watchers(account)
        else:
            clients = None
        if clients is None:
            watchers = self.accounts.watching()
        else:
            watchers = [(c, u) for c in clients if (u := self.accounts.user_of(c)) is not None]
        by_user: dict[str, builtins.list[Any]] = {}
        users: dict[str, User] = {}
        for client, user in watchers:
            seen = user.name in names if names is not None else account is not None and user.sees(account)
            if seen and self._bell(user.name, kind):
                by_user.setdefault(user.name, []).append(client)
                users[user.name] = user
        for name, clients in by_user.items():
            frame = text_frame(encode({"type": "notification", "data": note, "unread": self.unread(users[name])}))
            for client in clients:
                client.send(frame)

    # --- the sources ----------------------------------------------------------------------------------

    def on_entry(self, entry: Entry, orders: Orders) -> None:
        """An order event of one of this relay's accounts."""
        self.notify(describe(entry.event, entry.data), account=orders.account, source=f"{orders.epoch}-{entry.id}")

    def on_broker(self, entries: Iterable[Any], epoch: str) -> None:
        """New Broker API journal entries (core/broker.py ``BrokerEntry``): trade events of customer accounts,
        account status changes and non-trade activities, each for the users who see its account."""
        for entry in entries:
            data = entry.data
            if entry.stream == "trades":
                fields = describe(str(data.get("event") or ""), data)
            elif entry.stream == "accounts":
                fields = describe_account_status(data)
            elif str(data.get("activity_type") or "").upper() in TRADE_ACTIVITIES:
                continue
            else:
                fields = describe_activity(data)
            self.notify(fields, account=entry.account_id, source=f"broker-{epoch}-{entry.id}")

    def unread(self, user: User) -> int | None:
        hidden = self.hidden(user)
        ok, unread = self._use(lambda s: s.unread_count(user.name, self.accounts_of(user), hidden))
        return unread if ok else None

    # --- what clients ask for ---------------------------------------------------------------------------

    def list(self, user: User, limit: int, unread_only: bool) -> tuple[int, dict[str, Any]]:
        limit = max(1, min(limit, MAX_LIMIT))
        accounts, name, hidden = self.accounts_of(user), user.name, self.hidden(user)
        ok, out = self._use(lambda s: (s.list(name, accounts, limit, unread_only, hidden),
                                       s.unread_count(name, accounts, hidden)))
        if not ok:
            return 503, {"error": "Service Unavailable", "message": self.fault or "notification store unavailable"}
        items, unread = out
        return 200, {"notifications": items, "unread": unread, "limit": limit}

    def mark_read(self, user: User, ids: builtins.list[int] | None) -> tuple[int, dict[str, Any]]:
        """Mark ``ids`` (None: all) read for ``user``, and tell that user's open clients."""
        accounts, name, hidden = self.accounts_of(user), user.name, self.hidden(user)
        ok, out = self._use(lambda s: (s.mark_read(name, ids, accounts), s.unread_count(name, accounts, hidden)))
        if not ok:
            return 503, {"error": "Service Unavailable", "message": self.fault or "notification store unavailable"}
        marked, unread = out
        msg = {"type": "notifications_read", "user": name, "ids": marked, "all": ids is None, "unread": unread}
        if marked or ids is None:
            frame = text_frame(encode(msg))
            for client, user in self.accounts.watching():  # this user's open clients only
                if user.name == name:
                    client.send(frame)
            for listener in self.read_listeners:
                listener(msg)
        return 200, {"ids": marked, "all": ids is None, "unread": unread}

    def since(self, after_id: int, limit: int, user: User | None = None) -> builtins.list[dict[str, Any]] | None:
        """Notifications after ``after_id``, oldest first (SSE replay: one user's; the webhook outbox: None, every
        account's); None while faulted."""
        accounts = self.accounts_of(user) if user is not None else None
        name = user.name if user is not None else None
        hidden = self.hidden(user) if user is not None else []
        ok, out = self._use(lambda s: s.since(after_id, limit, name, accounts, hidden))
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
