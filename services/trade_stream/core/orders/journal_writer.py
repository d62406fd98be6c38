"""Writing order events to the journal, and surviving the journal failing.

The journal can fail (corrupt file, unwritable directory, full disk). That must not take market data down or end
the trading task, so the writer never raises a journal error to its caller: it reports the fault (``health``,
one log line per episode, the ``journal_ok``/``journal_errors`` counters), keeps events that could not be written
in memory (up to ``PENDING_LIMIT``, in order, and every later event behind them so the order holds), reopens the
journal every ``retry`` seconds, then writes what it kept, oldest first. Its listener relays each entry written,
hears when the journal came back as another one (a new epoch: clients refetch), and reconciles over REST for
anything beyond what could be kept.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol

from trade_stream.core.engine import OrderLog
from trade_stream.core.journal import Entry, Journal, fault_message
from trade_stream.core.stats import Stats

log = logging.getLogger("trade_stream.core.orders")  # one logger for the whole order side

JOURNAL_ERRORS = (sqlite3.Error, OSError)
PENDING_LIMIT = 10_000  # events kept in memory while the journal is down; beyond that, REST reconciliation

Spawn = Callable[[Coroutine[Any, Any, None]], None]


class WriterListener(Protocol):
    """What the writer tells the rest of the order side."""

    def on_entry(self, entry: Entry) -> None:
        """A new entry of the log (written here, or by another node into a shared log): relay it."""

    def on_log_reset(self, reason: str) -> None:
        """The shared log started a new epoch under the running process (Redis restarted empty)."""

    def on_recovered(self, reset: str | None) -> None:
        """The journal works again and what was kept is written. ``reset`` says why clients must refetch when it
        came back as another journal (a new epoch), else None."""


class JournalWriter:
    """The order log of one account, open or faulted, with the events kept while it is down."""

    def __init__(self, path: Path, stats: Stats, listener: WriterListener, spawn: Spawn,
                 retention_days: float = 7.0, retry: float = 5.0,
                 open_log: Callable[[Path, float], OrderLog] | None = None) -> None:
        self.path = path
        self.stats = stats
        self.listener = listener
        self.spawn = spawn  # the owner's task set, so that stopping the order side cancels recovery too
        self.retention_days = retention_days
        self.retry = retry
        self._open_log = open_log or Journal  # the engine's order log: SQLite here, shared in a cluster
        self.journal: OrderLog | None = None
        self.fault: str | None = None
        self._fault_since: float | None = None  # monotonic time the current fault episode began
        self._pending: deque[tuple[dict[str, Any], bool, str | None]] = deque()
        self._overflowed = False
        self._recovering = False
        self._epoch_seen: str | None = None  # the epoch clients were last told of

    def start(self) -> None:
        """Open the log; a failure is a fault like any later one, recovered in the background."""
        if self._open():
            self._epoch_seen = self.epoch
            self.stats.journal_ok = 1

    @property
    def epoch(self) -> str | None:
        return self.journal.epoch if self.journal is not None else None

    @property
    def pending(self) -> int:
        """Events kept in memory, waiting for the journal."""
        return len(self._pending)

    def health(self) -> dict[str, Any]:
        """For status, healthz and metrics: is the order journal usable, and if not, what to do."""
        fault_for = None if self._fault_since is None else round(time.monotonic() - self._fault_since, 1)
        return {"state": "fault" if self.fault else "ok", "journal": str(self.path), "epoch": self.epoch,
                "error": self.fault, "fault_for": fault_for, "pending_events": len(self._pending)}

    def append(self, data: dict[str, Any], reconciled: bool = False, dedupe: str | None = None) -> Entry | None:
        """Journal, then tell the listener. None for a duplicate (nothing is relayed twice) and for an event kept
        back because the journal is down (it is written and relayed when the journal is back)."""
        if self.journal is None or self._pending:  # behind the ones already waiting, in order
            self._keep(data, reconciled, dedupe)
            return None
        try:
            self.journal.check()
            return self._write(self.journal, data, reconciled, dedupe)
        except JOURNAL_ERRORS as exc:
            self._keep(data, reconciled, dedupe)
            self.fail(exc)
            return None

    def fail(self, exc: BaseException) -> None:
        """Note a journal fault once per episode (one line naming the file and the fix), and start recovery."""
        message = fault_message(self.path, exc)
        self.stats.journal_errors += 1
        self.stats.journal_ok = 0
        if self.fault != message:  # once per episode, and again only if the reason changes
            log.error("journal_fault %s", message)
        self.fault = message
        if self._fault_since is None:
            self._fault_since = time.monotonic()
        journal, self.journal = self.journal, None
        if journal is not None:
            try:
                journal.close()
            except JOURNAL_ERRORS:
                pass
        if not self._recovering:
            self.spawn(self._recover())

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()

    def _open(self) -> bool:
        try:
            self.journal = self._open_log(self.path, self.retention_days)
        except JOURNAL_ERRORS as exc:
            self.fail(exc)
            return False
        self.journal.on_entry = self.listener.on_entry  # entries another node appended to a shared log
        self.journal.on_reset = self._log_reset  # a shared log recreated under us (Redis restarted empty)
        return True

    def _keep(self, data: dict[str, Any], reconciled: bool, dedupe: str | None) -> None:
        if len(self._pending) < PENDING_LIMIT:
            self._pending.append((data, reconciled, dedupe))
        elif not self._overflowed:
            self._overflowed = True
            log.error("journal_backlog_full kept=%d: later events come back by REST reconciliation", PENDING_LIMIT)
        if not self._recovering:
            self.spawn(self._recover())

    def _write(self, journal: OrderLog, data: dict[str, Any], reconciled: bool, dedupe: str | None) -> Entry | None:
        """Append and tell the listener; raises the journal's error, with nothing told, when the append fails."""
        entry = journal.append(data, reconciled, dedupe)
        if entry is not None:
            self.listener.on_entry(entry)
        return entry

    async def _recover(self) -> None:
        if self._recovering:
            return
        self._recovering = True
        try:
            while self.journal is None or self._pending:
                await asyncio.sleep(self.retry)
                before = self._epoch_seen
                if (self.journal is None and not self._open()) or not self._flush():
                    continue
                log.info("journal_recovered path=%s epoch=%s", self.path, self.epoch)
                self.fault = self._fault_since = None
                self.stats.journal_ok = 1
                reset = None
                if before is not None and before != self.epoch:
                    reset = f"the order journal was recreated (epoch {self.epoch}); refetch state"
                self._epoch_seen = self.epoch
                self.listener.on_recovered(reset)
        finally:
            self._recovering = False

    def _flush(self) -> bool:
        """Write the events kept while the journal was down, in order; False if it fails again."""
        while self._pending:
            data, reconciled, dedupe = self._pending[0]
            if self.journal is None:
                return False
            try:
                self._write(self.journal, data, reconciled, dedupe)
            except JOURNAL_ERRORS as exc:
                self.fail(exc)
                return False
            self._pending.popleft()
        self._overflowed = False
        return True

    def _log_reset(self, reason: str) -> None:
        self._epoch_seen = self.epoch
        self.listener.on_log_reset(reason)
