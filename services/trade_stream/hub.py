"""Subscription hub: reference counts per (channel, symbol) across all clients. Pure logic, no sockets.

The hub answers one question for everything else: which (channel, symbol) pairs should upstream hold right now?
That is every pair with a holder, plus pairs whose last holder left less than ``linger`` seconds ago (so a page
reload does not churn Alpaca). Callers pass ``now`` in, which keeps the hub deterministic under test.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

Key = tuple[str, str]  # (channel, symbol)


class SymbolLimit(Exception):
    """Holding the request would take upstream past the symbol cap; nothing was changed."""


@dataclass
class Change:
    """What a hub operation means for upstream."""

    subscribe: list[Key] = field(default_factory=list)
    unsubscribe: list[Key] = field(default_factory=list)
    added: list[Key] = field(default_factory=list)  # keys the client newly holds (to roll back on rejection)

    def __bool__(self) -> bool:
        return bool(self.subscribe or self.unsubscribe)


def group(keys: Iterable[Key]) -> dict[str, list[str]]:
    """Keys grouped into Alpaca's {channel: [symbols]} shape, sorted for stable messages."""
    out: dict[str, list[str]] = {}
    for channel, symbol in keys:
        out.setdefault(channel, []).append(symbol)
    return {ch: sorted(syms) for ch, syms in sorted(out.items())}


class Hub:
    def __init__(self, linger: float = 5.0, max_symbols: int = 0) -> None:
        self.linger = linger
        self.max_symbols = max_symbols
        self.holders: dict[Key, set[Hashable]] = {}
        self._held_by: dict[Hashable, set[Key]] = {}
        self._lingering: dict[Key, float] = {}  # key -> deadline

    # --- queries -------------------------------------------------------------------------------------------

    def wanted(self) -> set[Key]:
        """Exactly what upstream should hold."""
        return set(self.holders) | set(self._lingering)

    def is_wanted(self, key: Key) -> bool:
        return key in self.holders or key in self._lingering

    def wanted_symbols(self) -> set[str]:
        return {symbol for _, symbol in self.wanted()}

    def held_by(self, client: Hashable) -> set[Key]:
        return self._held_by.get(client, set())

    def holder_counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for (channel, symbol), clients in sorted(self.holders.items()):
            out.setdefault(symbol, {})[channel] = len(clients)
        return out

    def next_deadline(self) -> float | None:
        return min(self._lingering.values(), default=None)

    # --- changes -------------------------------------------------------------------------------------------

    def subscribe(self, client: Hashable, keys: Iterable[Key], now: float) -> Change:
        """Add ``client`` as a holder of ``keys``. Raises SymbolLimit (and changes nothing) when over the cap."""
        keys = [k for k in dict.fromkeys(keys) if client not in self.holders.get(k, ())]
        change = Change(added=keys)
        if self.max_symbols:
            change.unsubscribe = self._make_room(keys)
        for key in keys:
            if key in self._lingering:
                del self._lingering[key]
            elif key not in self.holders:
                change.subscribe.append(key)
            self.holders.setdefault(key, set()).add(client)
            self._held_by.setdefault(client, set()).add(key)
        return change

    def _make_room(self, keys: list[Key]) -> list[Key]:
        """Check the symbol cap, evicting lingering symbols (oldest first) before refusing."""
        current = self.wanted_symbols()
        needed = {s for _, s in keys} - current
        excess = len(current) + len(needed) - self.max_symbols
        if excess <= 0:
            return []
        held = {s for _, s in self.holders}
        wanted_now = {s for _, s in keys}
        idle = sorted(
            {s for _, s in self._lingering} - held - wanted_now,
            key=lambda s: min(d for (_, sym), d in self._lingering.items() if sym == s),
        )
        if len(idle) < excess:
            raise SymbolLimit(f"upstream symbol cap {self.max_symbols} reached")
        evict = set(idle[:excess])
        dropped = [k for k in self._lingering if k[1] in evict]
        for key in dropped:
            del self._lingering[key]
        return dropped

    def unsubscribe(self, client: Hashable, keys: Iterable[Key], now: float) -> Change:
        """Release ``keys`` held by ``client``. Keys nobody holds any more linger, or go at once if linger is 0."""
        change = Change()
        mine = self._held_by.get(client)
        if not mine:
            return change
        for key in list(keys):
            if key not in mine:
                continue
            mine.discard(key)
            holders = self.holders[key]
            holders.discard(client)
            if not holders:
                del self.holders[key]
                if self.linger > 0:
                    self._lingering[key] = now + self.linger
                else:
                    change.unsubscribe.append(key)
        if not mine:
            del self._held_by[client]
        return change

    def drop(self, client: Hashable, now: float) -> Change:
        """A client left: release everything it held."""
        return self.unsubscribe(client, list(self._held_by.get(client, ())), now)

    def reject(self, keys: Iterable[Key]) -> dict[Hashable, list[Key]]:
        """Upstream refused ``keys`` (e.g. 405): drop every holder of them, with no linger.

        Returns the clients that held them, so each can be told.
        """
        affected: dict[Hashable, list[Key]] = {}
        for key in keys:
            self._lingering.pop(key, None)
            for client in self.holders.pop(key, ()):
                affected.setdefault(client, []).append(key)
                mine = self._held_by.get(client)
                if mine is not None:
                    mine.discard(key)
                    if not mine:
                        del self._held_by[client]
        return affected

    def expire(self, now: float) -> Change:
        """Lingering keys whose time is up: upstream should let them go."""
        due = [k for k, deadline in self._lingering.items() if deadline <= now]
        for key in due:
            del self._lingering[key]
        return Change(unsubscribe=due)
