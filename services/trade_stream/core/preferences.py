"""Which kinds of notification a person wants on which channel: the pure rule, its defaults, and their store.

A preference maps a notification ``kind`` (core/notifications.py ``KINDS``: ``fills``, ``rejections``,
``order_events``, ``price_alerts``, ``account_status``, ``activities``) to the channels it goes to (``bell``,
``desktop``, ``sound``, ``email``, ``push``, ``webhooks``). A user stores only the kinds they changed; every other
kind follows ``DEFAULTS``: fills, rejections and price alerts on every channel, the rest on the bell only (and
webhooks, below).

"Every channel" means every channel the user has set up: ``wants`` answers what the person asked for, and each
channel's sender still needs its own means (an email address, a push subscription, a webhook target, a tab open
with desktop alerts allowed). So a default never sends mail to someone without an address: there is nothing
to send it to.

The channels:

- ``bell``: the user's in-app list. A kind off for the bell is neither pushed live to that user (WebSocket
  ``notification``, SSE ``alert:new``) nor listed or counted unread for them (REST); it is still stored, for the
  other users who see it, and for the webhooks.
- ``desktop`` and ``sound``: the page's desktop alert and its chime; the page reads the preferences and obeys.
- ``email``, ``push``: the senders ask ``Preferences.channels`` for each user a notification is for.
- ``webhooks``: every kind by default, because a webhook target already picks its notification types with its
  own ``events``: a default of "bell only" would silence what targets were set up to receive. A notification
  scoped to named users goes to a target only when one of them wants it there. One
  scoped to an account goes by the target's ``events`` and ``accounts``, and also only when at least one user
  the relay knows to see that account (the users file, the ``TRADE_STREAM_TOKEN`` user) wants it there:
  targets belong to the operator, so a single user turning webhooks off does not silence a receiver the
  account's other users still want; users known only from a JWT are not counted (they cannot be enumerated).

The store is an engine seam (core/engine.py ``SharedPreferences``), because in a cluster a preference saved
through one node must govern the leader's webhooks (and email, push) and every node's pushes: one process keeps
them in SQLite beside the notification store (``SqlitePreferenceStore``), a cluster in Redis. Either way every
user's preferences are held in memory and written through, so ``channels`` (on every notification, for every
recipient) never waits on a disk or a network.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import orjson

from trade_stream.core.journal import open_durable

KINDS = ("fills", "rejections", "order_events", "price_alerts", "account_status", "activities")
CHANNELS = ("bell", "desktop", "sound", "email", "push", "webhooks")
EVERYWHERE = frozenset(CHANNELS)
BELL_ONLY = frozenset({"bell", "webhooks"})  # and the webhook targets, which pick by their own ``events``
#: What a user who never changed a kind gets for it.
DEFAULTS: Mapping[str, frozenset[str]] = {"fills": EVERYWHERE, "rejections": EVERYWHERE, "price_alerts": EVERYWHERE,
                                          "order_events": BELL_ONLY, "account_status": BELL_ONLY,
                                          "activities": BELL_ONLY}
Prefs = Mapping[str, frozenset[str]]  # kind -> channels, only the kinds a user changed


class PreferencesUnavailable(Exception):
    """The store could not take a change (a broken file, the cluster store unreachable): nothing was changed."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS preferences (
    user TEXT PRIMARY KEY,
    updated REAL NOT NULL,
    payload BLOB NOT NULL
);
"""


def wants(prefs: Prefs | None, kind: str, channel: str) -> bool:
    """Whether a user with ``prefs`` (None: never set any) wants ``kind`` on ``channel``. A kind this code does
    not know follows ``order_events`` (the bell and webhooks), so a new kind never reaches a person's mail or
    phone by surprise."""
    chosen = prefs.get(kind) if prefs is not None else None
    if chosen is None:
        chosen = DEFAULTS.get(kind, BELL_ONLY)
    return channel in chosen


def effective(prefs: Prefs | None) -> dict[str, list[str]]:
    """Every kind with its channels (stored or default), channels in ``CHANNELS`` order: what the API answers."""
    return {kind: [c for c in CHANNELS if wants(prefs, kind, c)] for kind in KINDS}


def parse(body: object) -> dict[str, frozenset[str]] | str:
    """``{"fills": ["bell", "email"], …}`` (any subset of kinds) as preferences, or what is wrong with it, naming
    the field."""
    if not isinstance(body, dict) or not body:
        return 'send {"<kind>": ["<channel>", …], …}; kinds are ' + ", ".join(KINDS)
    out: dict[str, frozenset[str]] = {}
    for kind, channels in body.items():
        if kind not in KINDS:
            return f"{kind}: unknown kind; kinds are {', '.join(KINDS)}"
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            return f"{kind}: must be a list of channels (empty for none)"
        wrong = [c for c in channels if c not in CHANNELS]
        if wrong:
            return f"{kind}: unknown channel {wrong[0]!r}; channels are {', '.join(CHANNELS)}"
        out[kind] = frozenset(channels)
    return out


def encode(prefs: Prefs) -> bytes:
    return orjson.dumps({k: sorted(v) for k, v in prefs.items()})


def decode(payload: bytes | str) -> dict[str, frozenset[str]]:
    """Stored preferences; kinds or channels a newer version wrote and this one does not know are left out."""
    stored: Any = orjson.loads(payload)
    if not isinstance(stored, dict):
        return {}
    return {k: frozenset(c for c in v if c in CHANNELS) for k, v in stored.items()
            if k in KINDS and isinstance(v, list)}


class PreferenceStore(Protocol):
    """Every user's preferences: read from memory, one user written at a time."""

    def get(self, user: str) -> Prefs | None:
        """What ``user`` stored (None: never stored any), from memory."""

    async def save(self, user: str, prefs: Prefs) -> None:
        """Store ``user``'s preferences (every kind they changed); raise ``PreferencesUnavailable`` when it cannot
        be done, with nothing changed."""

    def close(self) -> None: ...


class SqlitePreferenceStore:
    """One process: a file in the state directory, read whole at open."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = open_durable(path, SCHEMA)
        try:
            rows = self.db.execute("SELECT user, payload FROM preferences").fetchall()
        except BaseException:
            self.db.close()
            raise
        self.by_user: dict[str, dict[str, frozenset[str]]] = {user: decode(payload) for user, payload in rows}

    def get(self, user: str) -> Prefs | None:
        return self.by_user.get(user)

    async def save(self, user: str, prefs: Prefs) -> None:
        try:
            self.db.execute("INSERT INTO preferences(user, updated, payload) VALUES (?, ?, ?) ON CONFLICT(user) DO "
                            "UPDATE SET updated = excluded.updated, payload = excluded.payload",
                            (user, time.time(), encode(prefs)))
        except (sqlite3.Error, OSError) as exc:
            raise PreferencesUnavailable(f"preferences file {self.path} cannot be written ({exc}): make "
                                         "TRADE_STREAM_STATE_DIR writable with free space") from exc
        self.by_user[user] = dict(prefs)

    def close(self) -> None:
        self.db.close()


class Preferences:
    """Every user's preferences, as the notifier and the senders ask for them."""

    def __init__(self, store: PreferenceStore) -> None:
        self.store = store

    def of(self, user: str) -> Prefs | None:
        return self.store.get(user)

    def channels(self, user: str, kind: str) -> frozenset[str]:
        """The channels ``user`` wants ``kind`` on."""
        prefs = self.store.get(user)
        return frozenset(c for c in CHANNELS if wants(prefs, kind, c))

    def wants(self, user: str, kind: str, channel: str) -> bool:
        return wants(self.store.get(user), kind, channel)

    def anyone_wants(self, users: Iterable[str], kind: str, channel: str) -> bool:
        return any(wants(self.store.get(u), kind, channel) for u in users)

    def view(self, user: str) -> dict[str, list[str]]:
        return effective(self.store.get(user))

    async def update(self, user: str, changes: Prefs) -> dict[str, list[str]]:
        """Merge ``changes`` (some kinds) into ``user``'s preferences and store them; ``PreferencesUnavailable``
        when the store cannot take them (nothing changed)."""
        merged = {**(self.store.get(user) or {}), **changes}
        await self.store.save(user, merged)
        return effective(merged)

    def close(self) -> None:
        self.store.close()
