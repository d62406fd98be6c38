"""Broker API mode: the events of thousands of Alpaca accounts, journaled once and routed to each account's users.

A journal per account (core/journal.py) does not scale to 10,000 accounts, so Broker mode has ONE journal
(SQLite, WAL) with an ``account_id`` column: every event of the three streams (trades, account status,
activities) is written there before anyone sees it, in batches (one transaction per batch, off the upstream
reader), deduplicated by a unique key, and replayed per account by filtering. The per-stream upstream cursor (the
last processed ULID) is stored in the same transaction as the events it covers, so a restart resumes exactly.
The cursor never moves past what Alpaca can have issued by now (``CURSOR_SKEW`` seconds of clock difference
allowed): one event with an id from the far future would otherwise make every later replay start after every
real event. Such an event is still journaled and routed, only counted (``future_ids``); a stored cursor that is
not a ULID or lies in the future is repaired at start, from the highest plausible id in the journal.

Dedupe keys: a fill is ``order id + cumulative filled qty`` (the same whether it came over SSE or from the REST
poll of the fallback, which has no execution id in common with the stream); every other event its ``event_id``;
an activity its activity ``id``.

Routing is by account id: WebSocket clients that subscribed to orders get ``order_update`` / ``account_status`` /
``activity`` for the accounts their user sees (one encoded frame per event for all of them); the SSE side
listens with ``listeners``. Fills also update ``positions`` (Alpaca's ``position_qty`` after the fill).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from trade_stream.core.event_ids import EventId, cursor, is_ulid, ulid_ceiling, ulid_floor
from trade_stream.core.fanout import Client
from trade_stream.core.framing import text_frame
from trade_stream.core.journal import open_durable
from trade_stream.core.protocol import encode
from trade_stream.core.users import User

log = logging.getLogger("trade_stream.core.broker")

STREAM_TYPES = {"trades": "order_update", "accounts": "account_status", "activities": "activity", "nta": "activity"}
FILL_EVENTS = ("fill", "partial_fill")
CURSOR_SKEW = 60.0  # seconds an upstream id may lie ahead of this clock and still move the cursor
SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    recorded REAL NOT NULL,
    stream TEXT NOT NULL,
    account_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    at TEXT,
    dedupe TEXT NOT NULL UNIQUE,
    late INTEGER NOT NULL DEFAULT 0,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_account ON events(account_id, id);
CREATE INDEX IF NOT EXISTS events_stream ON events(stream, event_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class BrokerEntry:
    id: int
    stream: str
    account_id: str
    data: dict[str, Any]
    late: bool


def event_ulid(data: dict[str, Any]) -> str:
    """An event's ULID: ``event_ulid`` where a stream has it (the ``/v1`` streams, whose ``event_id`` is a legacy
    integer or absent), else ``event_id``."""
    return str(data.get("event_ulid") or data.get("event_id") or "")


def cursor_limit(now: float | None = None) -> str:
    """The highest cursor Alpaca can plausibly have issued by ``now`` (wall clock)."""
    return ulid_ceiling(int(((time.time() if now is None else now) + CURSOR_SKEW) * 1000))


def dedupe_key(stream: str, data: dict[str, Any]) -> str:
    if stream == "trades" and data.get("event") in FILL_EVENTS:
        order = data.get("order") or {}
        return f"f:{order.get('id')}:{order.get('filled_qty')}"
    if stream in ("activities", "nta") and data.get("id"):  # one activity id, whichever stream brought it
        return f"a:{data['id']}"
    return f"e:{stream}:{data.get('event_id')}"


class BrokerJournal:
    def __init__(self, path: Path, retention_days: float = 7.0) -> None:
        self.path = path
        self.retention = retention_days * 86400
        self.db = open_durable(path, SCHEMA)
        self.epoch = self.get_meta("epoch") or self._new_epoch()
        self.future_ids = 0  # events of the last append whose id lay past cursor_limit

    def _new_epoch(self) -> str:
        epoch = secrets.token_hex(6)
        self.set_meta("epoch", epoch)
        return epoch

    def close(self) -> None:
        self.db.close()

    def append(self, stream: str, events: Iterable[dict[str, Any]], late: bool = False,
               cursor_key: str | None = None) -> list[BrokerEntry]:
        """Write a batch in one transaction; the entries that were new. ``cursor_key`` (the stream's upstream
        cursor) moves to the highest plausible event id of the batch (``cursor_limit``) in the same transaction."""
        out: list[BrokerEntry] = []
        now = time.time()
        limit = cursor_limit(now)
        top: str | None = None
        self.future_ids = 0
        self.db.execute("BEGIN")
        try:
            for data in events:
                event_id = event_ulid(data)
                if event_id > limit:
                    self.future_ids += 1
                elif is_ulid(event_id) and (top is None or event_id > top):
                    top = event_id
                cur = self.db.execute(
                    "INSERT OR IGNORE INTO events(recorded, stream, account_id, event_id, at, dedupe, late, payload)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (now, stream, str(data.get("account_id")), event_id, data.get("at"), dedupe_key(stream, data),
                     int(late), orjson.dumps(data)))
                if cur.rowcount:
                    out.append(BrokerEntry(int(cur.lastrowid or 0), stream, str(data.get("account_id")), data, late))
            if cursor_key and top is not None:
                old = self.get_meta(cursor_key)
                if old is None or top > old:
                    self.set_meta(cursor_key, top)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return out

    def since(self, after_id: int, accounts: frozenset[str] | None, limit: int = 10_000) -> list[BrokerEntry]:
        """Entries after ``after_id`` of these accounts (None: all)."""
        if accounts is None:
            rows = self.db.execute("SELECT id, stream, account_id, payload, late FROM events WHERE id > ? "
                                   "ORDER BY id LIMIT ?", (after_id, limit)).fetchall()
        else:
            marks = ",".join("?" * len(accounts))
            rows = self.db.execute(f"SELECT id, stream, account_id, payload, late FROM events WHERE id > ? AND "
                                   f"account_id IN ({marks}) ORDER BY id LIMIT ?",
                                   (after_id, *accounts, limit)).fetchall()
        return [BrokerEntry(r[0], r[1], r[2], orjson.loads(r[3]), bool(r[4])) for r in rows]

    def last_id(self) -> int:
        return int(self.db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0])

    def first_id(self) -> int:
        return int(self.db.execute("SELECT COALESCE(MIN(id), 0) FROM events").fetchone()[0])

    def last_at(self, stream: str) -> str | None:
        row = self.db.execute("SELECT at FROM events WHERE stream = ? AND late = 0 ORDER BY id DESC LIMIT 1",
                              (stream,)).fetchone()
        return row[0] if row else None

    def prune(self, now: float | None = None) -> int:
        return self.db.execute("DELETE FROM events WHERE recorded < ?",
                               ((now or time.time()) - self.retention,)).rowcount

    def repair_cursors(self, now: float | None = None) -> list[tuple[str, str, str]]:
        """Replace each stored cursor that is not a ULID or lies past ``cursor_limit``: with the stream's highest
        plausible journaled id, or, when it has none, the start of its first journaled event's millisecond (or
        now). Returns (stream, old, new) of each repaired one."""
        limit = cursor_limit(now)
        repaired = []
        rows = self.db.execute("SELECT key, value FROM meta WHERE key LIKE 'cursor:%'").fetchall()
        for key, old in rows:
            if is_ulid(old) and old <= limit:
                continue
            stream = key.partition(":")[2]
            candidates = self.db.execute(
                "SELECT event_id FROM events WHERE stream = ? AND event_id <= ? ORDER BY event_id DESC LIMIT 100",
                (stream, limit)).fetchall()
            new = next((c[0] for c in candidates if is_ulid(c[0])), None)
            if new is None:
                first = self.db.execute("SELECT MIN(recorded) FROM events WHERE stream = ?", (stream,)).fetchone()[0]
                new = ulid_floor(int((first if first is not None else (now or time.time())) * 1000))
            self.set_meta(key, new)
            repaired.append((stream, old, new))
        return repaired

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))


class BrokerEvents:
    """The Broker-mode event log and router (see the module docstring)."""

    def __init__(self, journal_path: Path, retention_days: float = 7.0) -> None:
        self.journal = BrokerJournal(journal_path, retention_days)
        self.listeners: list[Callable[[list[BrokerEntry]], None]] = []
        self.clients: dict[Client, User] = {}
        self._by_account: dict[str, set[Client]] = {}
        self._everyone: set[Client] = set()  # users who see every account
        self.positions: dict[str, dict[str, str]] = {}  # account -> symbol -> qty after the last fill
        self.counts = {"events": 0, "duplicates": 0, "late": 0, "routed": 0, "future_ids": 0, "cursor_repairs": 0}
        self.upstreams: list[Any] = []  # upstream/broker_events.BrokerStream, for status
        for stream, old, new in self.journal.repair_cursors():
            self.counts["cursor_repairs"] += 1
            log.warning("broker_cursor_repaired stream=%s cursor=%r now=%s (the stored one was not a ULID or lay "
                        "in the future)", stream, old[:40], new)

    @property
    def epoch(self) -> str:
        return self.journal.epoch

    def cursor(self, stream: str) -> str | None:
        return self.journal.get_meta(f"cursor:{stream}")

    # --- clients --------------------------------------------------------------------------------------

    def watch(self, client: Client, user: User, since: EventId | None = None) -> None:
        """Route this user's accounts to ``client`` from now on; with ``since`` (an id from a ``message``) first
        replay the journal after it. Replay and joining happen in one go (no await), so nothing falls between
        them. An id this journal did not issue (another epoch, ahead of it, or older than retention kept) gets
        ``orders_reset`` instead: the client starts over from live events."""
        self.unwatch(client)
        if since is not None:
            self._replay(client, user, since)
        self.clients[client] = user
        if user.accounts is None:
            self._everyone.add(client)
        else:
            for account in user.accounts:
                self._by_account.setdefault(account, set()).add(client)

    def unwatch(self, client: Client) -> None:
        user = self.clients.pop(client, None)
        self._everyone.discard(client)
        if user is not None and user.accounts is not None:
            for account in user.accounts:
                held = self._by_account.get(account)
                if held is not None:
                    held.discard(client)
                    if not held:
                        del self._by_account[account]

    def watchers(self, account_id: str) -> list[Client]:
        """The clients watching ``account_id``: its users', and those of users who see every account."""
        return [*self._by_account.get(account_id, ()), *self._everyone]

    def _replay(self, client: Client, user: User, since: EventId) -> None:
        last = self.journal.last_id()
        reason = None
        if not since.known or (since.epoch is not None and since.epoch != self.epoch):
            reason = "resume id not from this Broker journal: starting from live events"
        elif since.n > last:
            reason = "resume id ahead of this Broker journal: starting from live events"
        elif since.n < last and since.n + 1 < self.journal.first_id():
            reason = "resume id older than the Broker journal keeps: starting from live events"
        if reason is not None:
            client.send_message({"type": "orders_reset", "broker": True, "message": reason, "epoch": self.epoch,
                                 "last_id": cursor(self.epoch, last)})
            return
        after = since.n
        while True:
            entries = self.journal.since(after, user.accounts)
            for entry in entries:
                client.send(text_frame(encode(self.message(entry))), 1)
            if len(entries) < 10_000:
                return
            after = entries[-1].id

    # --- events ---------------------------------------------------------------------------------------

    def ingest(self, stream: str, events: list[dict[str, Any]], late: bool = False) -> list[BrokerEntry]:
        """Journal a batch (the cursor moves with it unless these are late, polled events), then route it."""
        entries = self.journal.append(stream, events, late, None if late else f"cursor:{stream}")
        if self.journal.future_ids:
            self.counts["future_ids"] += self.journal.future_ids
            log.warning("broker_future_event_ids stream=%s count=%d: journaled, but the cursor stays at %s",
                        stream, self.journal.future_ids, self.cursor(stream))
        self.counts["events"] += len(entries)
        self.counts["duplicates"] += len(events) - len(entries)
        if late:
            self.counts["late"] += len(entries)
        for entry in entries:
            self._route(entry)
        if entries:
            for listener in self.listeners:
                listener(entries)
        return entries

    def message(self, entry: BrokerEntry) -> dict[str, Any]:
        data = entry.data
        msg: dict[str, Any] = {"type": STREAM_TYPES[entry.stream], "id": cursor(self.epoch, entry.id),
                               "account": entry.account_id, "data": data}
        if entry.stream == "trades":
            msg["event"] = data.get("event")
        if entry.late:
            msg["late"] = True
        return msg

    def _route(self, entry: BrokerEntry) -> None:
        if entry.stream == "trades" and entry.data.get("event") in FILL_EVENTS:
            symbol = (entry.data.get("order") or {}).get("symbol")
            if symbol and entry.data.get("position_qty") is not None:
                self.positions.setdefault(entry.account_id, {})[symbol] = str(entry.data["position_qty"])
        targets = self._by_account.get(entry.account_id)
        if not targets and not self._everyone:
            return
        frame = text_frame(encode(self.message(entry)))
        for client in (*(targets or ()), *self._everyone):
            client.send(frame, 1)
            self.counts["routed"] += 1

    def status(self) -> dict[str, Any]:
        return {"journal": str(self.journal.path), "epoch": self.epoch, **self.counts, "clients": len(self.clients),
                "accounts_with_positions": len(self.positions),
                "streams": {u.stream: u.view() for u in self.upstreams}}

    def prune(self) -> int:
        return self.journal.prune()

    def close(self) -> None:
        self.journal.close()
