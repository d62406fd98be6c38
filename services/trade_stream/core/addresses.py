"""The latest email address each JWT user presented, so an alert can reach them while they are offline.

A users-file user's address is in the users file. A JWT user exists only while a token of theirs is presented:
the ``email`` claim of the latest valid token (with the accounts that token named) is remembered, so a fill at
night still finds them. Bounded: at most ``BOUND`` users, the one seen longest ago forgotten first; a user seen
again moves to the back. Written only when a user's address or accounts change, or once an hour per user to
keep their place, so a busy login path costs a dictionary lookup.

Where they are kept is the engine's (core/engine.py ``SharedAddresses``): one process keeps them in
``addresses.sqlite3`` in the state directory (``SqliteAddressStore``); a cluster in Redis, mirrored in every
node's memory (engines/redis_addresses.py), so the leader mails a JWT user whichever node saw their token.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from trade_stream.core.journal import open_durable

log = logging.getLogger("trade_stream.core.addresses")

TOUCH_EVERY = 3600.0
BOUND = 10_000
SCHEMA = """
CREATE TABLE IF NOT EXISTS addresses (
    user TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    accounts TEXT NOT NULL,
    seen REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Remembered:
    address: str
    accounts: frozenset[str]
    seen: float


class AddressStore(Protocol):
    """Every remembered JWT user's address: read from memory, remembered without waiting."""

    def remember(self, user: str, address: str, accounts: frozenset[str]) -> None: ...
    def address(self, user: str) -> str | None: ...
    def seeing(self, account: str) -> list[str]:
        """The remembered users whose latest token named ``account``."""
    def __len__(self) -> int: ...
    def close(self) -> None: ...


class Addresses:
    """The bounded table itself, oldest seen first; pure (the caller gives the time)."""

    def __init__(self, bound: int = BOUND) -> None:
        self.bound = bound
        self.entries: OrderedDict[str, Remembered] = OrderedDict()

    def fresh(self, user: str, address: str, accounts: frozenset[str], now: float) -> bool:
        """Whether what ``user`` presents now is what is remembered, seen within the hour: nothing to write."""
        old = self.entries.get(user)
        return old is not None and old.address == address and old.accounts == accounts and \
            now - old.seen < TOUCH_EVERY

    def put(self, user: str, entry: Remembered) -> list[str]:
        """Remember ``entry`` for ``user`` (at the back); returns the users forgotten to keep the bound."""
        self.entries.pop(user, None)
        self.entries[user] = entry
        gone = []
        while len(self.entries) > self.bound:
            gone.append(self.entries.popitem(last=False)[0])
        return gone

    def address(self, user: str) -> str | None:
        entry = self.entries.get(user)
        return None if entry is None else entry.address

    def seeing(self, account: str) -> list[str]:
        return [u for u, e in self.entries.items() if account in e.accounts]

    def __len__(self) -> int:
        return len(self.entries)


def accounts_text(accounts: frozenset[str]) -> str:
    return ",".join(sorted(accounts))


def accounts_of(text: str) -> frozenset[str]:
    return frozenset(a for a in text.split(",") if a)


class SqliteAddressStore(Addresses):
    """One process: a file in the state directory, read whole at open. A file that cannot be used is logged and
    the addresses kept in memory only, until a restart: email alerts are never what stops the daemon."""

    def __init__(self, path: Path, bound: int = BOUND) -> None:
        super().__init__(bound)
        self.path = path
        self.db: sqlite3.Connection | None = None
        self.fault: str | None = None
        try:
            self.db = open_durable(path, SCHEMA)
            for user, address, accounts, seen in self.db.execute(
                    "SELECT user, address, accounts, seen FROM addresses ORDER BY seen").fetchall():
                self.entries[user] = Remembered(address, accounts_of(accounts), seen)
        except (sqlite3.Error, OSError) as exc:
            self._fault(exc)

    def _fault(self, exc: BaseException) -> None:
        self.fault = f"address book {self.path} cannot be used ({exc}): make TRADE_STREAM_STATE_DIR writable"
        log.error("address_book_fault %s", self.fault)
        if self.db is not None:
            self.db.close()
            self.db = None

    def remember(self, user: str, address: str, accounts: frozenset[str]) -> None:
        now = time.time()
        if self.fresh(user, address, accounts, now):
            return
        gone = self.put(user, Remembered(address, accounts, now))
        if self.db is None:
            return
        try:
            self.db.execute("INSERT INTO addresses(user, address, accounts, seen) VALUES (?, ?, ?, ?) ON CONFLICT"
                            "(user) DO UPDATE SET address = excluded.address, accounts = excluded.accounts, "
                            "seen = excluded.seen", (user, address, accounts_text(accounts), now))
            if gone:
                self.db.executemany("DELETE FROM addresses WHERE user = ?", [(u,) for u in gone])
        except (sqlite3.Error, OSError) as exc:
            self._fault(exc)

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
