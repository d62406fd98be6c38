"""Fault injection: the failures a test queues (auth, handshakes), the slowness and strictness it sets, and the
connection-level faults it applies to whatever is open at that moment.

The queued faults are plain bookkeeping with no I/O, taken by the sessions at the moment Alpaca would decide
(an auth attempt, a handshake), so a test can set a fault between awaits and know which attempt it hits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from .config import DATA_PATHS, Plan
from .connection import Conn

#: "Leave unchanged" for plan settings where None is itself a value (no symbol limit, wildcard unset).
KEEP: Any = object()


def _hits(only: str | None, path: str) -> bool:
    """Whether a failure queued for ``only`` (None: any market-data endpoint) applies on ``path``."""
    return only == path or (only is None and path in DATA_PATHS)


class Faults:
    """Queued auth failures and handshake rejections, the read delay, REST delays, and the symbols refused as
    malformed."""

    def __init__(self) -> None:
        self.auth_failures: list[tuple[int, str | None]] = []
        self.rejections: list[int] = []
        self.read_delay = 0.0
        self.rest_delays: dict[str, float] = {}  # REST path -> seconds before it is answered (a slow Alpaca)
        self.refused_symbols: set[str] = set()

    def fail_next_auth(self, code: int = 402, times: int = 1, path: str | None = None) -> None:
        self.auth_failures.extend([(int(code), path)] * int(times))

    def clear_auth_failures(self, path: str | None = None) -> int:
        """Drop queued auth failures (all, or those that would hit ``path``); returns how many."""
        if path is None:
            dropped = len(self.auth_failures)
            self.auth_failures.clear()
            return dropped
        keep = [(code, only) for code, only in self.auth_failures if not _hits(only, path)]
        dropped = len(self.auth_failures) - len(keep)
        self.auth_failures[:] = keep
        return dropped

    def take_auth_failure(self, path: str) -> int | None:
        """The code of the oldest failure queued for this path, removing it; None when none is queued."""
        for i, (code, only) in enumerate(self.auth_failures):
            if _hits(only, path):
                del self.auth_failures[i]
                return code
        return None

    def reject_handshakes(self, status: int = 429, times: int = 1) -> None:
        self.rejections.extend([int(status)] * int(times))

    def take_rejection(self) -> int | None:
        """The HTTP status for this handshake instead of 101, or None to accept it."""
        return self.rejections.pop(0) if self.rejections else None

    def set_read_delay(self, seconds: float) -> None:
        self.read_delay = max(0.0, float(seconds))

    def set_rest_delay(self, path: str, seconds: float) -> None:
        """Answer REST requests for exactly ``path`` ``seconds`` late (0: at once again)."""
        if seconds > 0:
            self.rest_delays[path] = float(seconds)
        else:
            self.rest_delays.pop(path, None)

    def state(self) -> dict[str, Any]:
        """The fault part of the simulator's ``state()``."""
        return {"read_delay": self.read_delay, "rest_delays": dict(self.rest_delays),
                "pending_auth_failures": len(self.auth_failures),
                "pending_handshake_rejections": len(self.rejections)}


def cut(conns: Iterable[Conn]) -> None:
    """Abort every transport: a network fault, no close frame."""
    for conn in conns:
        if conn.ws.transport is not None:
            conn.ws.transport.abort()


def mute(conns: Iterable[Conn], on: bool) -> None:
    for conn in conns:
        conn.muted = on


def freeze(conns: Iterable[Conn], on: bool) -> None:
    for conn in conns:
        conn.frozen = conn.muted = on


def stop_reading(conns: Iterable[Conn]) -> None:
    for conn in conns:
        if conn.ws.transport is not None:
            conn.ws.transport.pause_reading()


def changed_plan(plan: Plan, feeds: Iterable[str] | None = None, symbol_limit: int | None = KEEP,
                 max_connections: int | None = None, wildcard: bool | None = KEEP) -> Plan:
    """``plan`` with the given settings changed (None or KEEP: unchanged, as ``Simulator.set_plan`` documents)."""
    changes: dict[str, Any] = {}
    if feeds is not None:
        changes["feeds"] = frozenset(feeds)
    if symbol_limit is not KEEP:
        changes["symbol_limit"] = symbol_limit
    if max_connections is not None:
        changes["max_connections"] = max_connections
    if wildcard is not KEEP:
        changes["wildcard"] = wildcard
    return dataclasses.replace(plan, **changes)
