"""The latest email address each JWT user presented, so an alert can reach them while they are offline.

A users-file user's address is in the users file. A JWT user exists only while a token of theirs is presented:
the ``email`` claim of the latest valid token (with the accounts that token named) is kept here, in
``addresses.sqlite3`` in the state directory, so a fill at night still finds them. Bounded: at most ``bound``
users (default 10,000), the one seen longest ago forgotten first; a user seen again moves to the back. Written
only when a user's address or accounts change, or once an hour per user to keep their place, so a busy login
path costs a dictionary lookup.

Per node: each node of a cluster remembers the JWTs presented to it (README: what that means for a cluster).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from trade_stream.core.journal import open_durable

log = logging.getLogger("trade_stream.edges.addresses")

SCHEMA = """
CREATE TABLE IF NOT EXISTS addresses (
    user TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    accounts TEXT NOT NULL,
    seen REAL NOT NULL
);
"""
TOUCH_EVERY = 3600.0
BOUND = 10_000


@dataclass(frozen=True)
class Remembered:
    address: str
    accounts: frozenset[str]
    seen: float


class AddressBook:
    def __init__(self, path: Path, bound: int = BOUND) -> None:
        self.path = path
        self.bound = bound
        self.db: sqlite3.Connection | None = None
        self._entries: OrderedDict[str, Remembered] = OrderedDict()  # oldest seen first
        self.fault: str | None = None
        try:
            self.db = open_durable(path, SCHEMA)
            for user, address, accounts, seen in self.db.execute(
                    "SELECT user, address, accounts, seen FROM addresses ORDER BY seen").fetchall():
                self._entries[user] = Remembered(address, frozenset(a for a in accounts.split(",") if a), seen)
        except (sqlite3.Error, OSError) as exc:  # kept in memory only: JWT users are mailed until a restart
            self._fault(exc)

    def _fault(self, exc: BaseException) -> None:
        self.fault = f"address book {self.path} cannot be used ({exc}): make TRADE_STREAM_STATE_DIR writable"
        log.error("address_book_fault %s", self.fault)
        if self.db is not None:
            self.db.close()
            self.db = None

    def remember(self, user: str, address: str, accounts: frozenset[str]) -> None:
        now = time.time()
        old = self._entries.get(user)
        if old is not None and old.address == address and old.accounts == accounts and now - old.seen < TOUCH_EVERY:
            return
        self._entries.pop(user, None)
        self._entries[user] = Remembered(address, accounts, now)
        gone = []
        while len(self._entries) > self.bound:
            gone.append(self._entries.popitem(last=False)[0])
        if self.db is None:
            return
        try:
            self.db.execute("INSERT INTO addresses(user, address, accounts, seen) VALUES (?, ?, ?, ?) ON CONFLICT"
                            "(user) DO UPDATE SET address = excluded.address, accounts = excluded.accounts, "
                            "seen = excluded.seen", (user, address, ",".join(sorted(accounts)), now))
            if gone:
                self.db.executemany("DELETE FROM addresses WHERE user = ?", [(u,) for u in gone])
        except (sqlite3.Error, OSError) as exc:
            self._fault(exc)

    def address(self, user: str) -> str | None:
        entry = self._entries.get(user)
        return None if entry is None else entry.address

    def seeing(self, account: str) -> list[str]:
        """The remembered users whose latest token named ``account``."""
        return [u for u, e in self._entries.items() if account in e.accounts]

    def __len__(self) -> int:
        return len(self._entries)

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
