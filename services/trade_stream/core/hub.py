"""Subscription hub: reference counts per (channel, symbol) across all clients. Pure logic, no sockets.

The hub answers one question for everything else: which (channel, symbol) pairs should upstream hold right now?
That is every pair with a holder, plus pairs whose last holder left less than ``linger`` seconds ago (so a page
reload does not churn Alpaca). Callers pass ``now`` in, which keeps the hub deterministic under test.

Two kinds of holder are special. A *private* holder (the orders side marking positions to market) is never shown in
public views: ``visible`` and ``holder_counts`` leave it out, and a pair whose last public holder left stays
visible for the linger time whether or not a private holder keeps it, so its disappearance tells nothing. A *weak*
holder (an SSE client's 60 s reconnect hold) keeps a pair only while nobody needs the room: when the symbol cap
would refuse a request, weakly held symbols are evicted like lingering ones, and the caller is told whose.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

Key = tuple[str, str]  # (channel, symbol)


def source_of(key: Key) -> str:
    """The upstream connection a key belongs to: "" for the default stock feed, whose channels are Alpaca's bare
    names (``("trades", "AAPL")``); otherwise the source named before the last colon of the channel
    (``("crypto:us:trades", "BTC/USD")`` is ``crypto:us``). See upstream/sources.py."""
    return key[0].rpartition(":")[0]


class SymbolLimit(Exception):
    """Holding the request would take upstream past the symbol cap; nothing was changed."""


@dataclass
class Change:
    """What a hub operation means for upstream."""

    subscribe: list[Key] = field(default_factory=list)
    unsubscribe: list[Key] = field(default_factory=list)
    added: list[Key] = field(default_factory=list)  # keys the client newly holds (to roll back on rejection)
    evicted: dict[Hashable, list[Key]] = field(default_factory=dict)  # weak holders that lost keys to the cap

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
        self._private: set[Hashable] = set()
        self._weak: set[Hashable] = set()
        self._shown_until: dict[Key, float] = {}  # last public holder left: still shown until then

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

    def visible(self) -> set[Key]:
        """What public views may show: pairs with a public holder, and pairs lingering after one."""
        private = self._private
        shown = {k for k, clients in self.holders.items() if not clients <= private} if private else set(self.holders)
        return shown | set(self._shown_until)

    def holder_counts(self) -> dict[str, dict[str, int]]:
        """Public holders per symbol and channel (private ones are not counted)."""
        out: dict[str, dict[str, int]] = {}
        for (channel, symbol), clients in sorted(self.holders.items()):
            count = len(clients - self._private) if self._private else len(clients)
            if count:
                out.setdefault(symbol, {})[channel] = count
        return out

    def next_deadline(self) -> float | None:
        return min((*self._lingering.values(), *self._shown_until.values()), default=None)

    # --- changes -------------------------------------------------------------------------------------------

    def subscribe(self, client: Hashable, keys: Iterable[Key], now: float, *, private: bool = False,
                  weak: bool = False) -> Change:
        """Add ``client`` as a holder of ``keys``. Raises SymbolLimit (and changes nothing) when over the cap.

        ``private``: never shown in public views. ``weak``: gives its keys up when the cap needs the room."""
        keys = [k for k in dict.fromkeys(keys) if client not in self.holders.get(k, ())]
        change = Change(added=keys)
        if self.max_symbols:
            change.unsubscribe, change.evicted = self._make_room(keys, weak)
        if keys:
            if private:
                self._private.add(client)
            if weak:
                self._weak.add(client)
        for key in keys:
            if key in self._lingering:
                del self._lingering[key]
            elif key not in self.holders:
                change.subscribe.append(key)
            if not private:
                self._shown_until.pop(key, None)
            self.holders.setdefault(key, set()).add(client)
            self._held_by.setdefault(client, set()).add(key)
        return change

    def _make_room(self, keys: list[Key], weak: bool) -> tuple[list[Key], dict[Hashable, list[Key]]]:
        """Check the symbol cap, per upstream source (Alpaca counts symbols per connection), evicting lingering
        symbols (oldest first), then weakly held ones, before refusing. Nothing changes when it refuses."""
        evict: set[tuple[str, str]] = set()  # (source, symbol)
        for source in sorted({source_of(k) for k in keys}):
            evict |= {(source, s) for s in self._room_in(source, [k for k in keys if source_of(k) == source], weak)}
        if not evict:
            return [], {}
        dropped = [k for k in self._lingering if (source_of(k), k[1]) in evict]
        for key in dropped:
            del self._lingering[key]
            self._shown_until.pop(key, None)
        evicted: dict[Hashable, list[Key]] = {}
        for key in [k for k in self.holders if (source_of(k), k[1]) in evict]:
            for holder, lost in self._remove(key).items():
                evicted.setdefault(holder, []).extend(lost)
            dropped.append(key)
        return dropped, evicted

    def _room_in(self, source: str, keys: list[Key], weak: bool) -> set[str]:
        """The symbols of ``source`` to evict so that ``keys`` fit its cap; raises SymbolLimit."""
        holders = {k: c for k, c in self.holders.items() if source_of(k) == source}
        lingering = {k: d for k, d in self._lingering.items() if source_of(k) == source}
        current = {s for _, s in holders} | {s for _, s in lingering}
        wanted_now = {s for _, s in keys}
        excess = len(current | wanted_now) - self.max_symbols
        if excess <= 0:
            return set()
        strong = {s for (_, s), clients in holders.items() if not clients <= self._weak}
        held = {s for _, s in holders}
        idle = sorted(
            {s for _, s in lingering} - held - wanted_now,
            key=lambda s: min(d for (_, sym), d in lingering.items() if sym == s),
        )
        weakly_held = [] if weak else sorted(held - strong - wanted_now)  # weak holds never evict each other
        candidates = idle + weakly_held
        if len(candidates) < excess:
            raise SymbolLimit(f"upstream symbol cap {self.max_symbols} reached")
        return set(candidates[:excess])

    def _remove(self, key: Key) -> dict[Hashable, list[Key]]:
        """Take ``key`` from every holder at once, with no linger. Returns who held it."""
        self._lingering.pop(key, None)
        self._shown_until.pop(key, None)
        affected: dict[Hashable, list[Key]] = {}
        for client in self.holders.pop(key, ()):
            affected.setdefault(client, []).append(key)
            mine = self._held_by.get(client)
            if mine is not None:
                mine.discard(key)
                if not mine:
                    self._forget(client)
        return affected

    def _forget(self, client: Hashable) -> None:
        self._held_by.pop(client, None)
        self._private.discard(client)
        self._weak.discard(client)

    def unsubscribe(self, client: Hashable, keys: Iterable[Key], now: float) -> Change:
        """Release ``keys`` held by ``client``. Keys nobody holds any more linger, or go at once if linger is 0."""
        change = Change()
        mine = self._held_by.get(client)
        if not mine:
            return change
        public = client not in self._private
        for key in list(keys):
            if key not in mine:
                continue
            mine.discard(key)
            holders = self.holders[key]
            holders.discard(client)
            if public and self.linger > 0 and holders <= self._private:
                self._shown_until[key] = now + self.linger
            if not holders:
                del self.holders[key]
                if self.linger > 0:
                    self._lingering[key] = now + self.linger
                else:
                    change.unsubscribe.append(key)
        if not mine:
            self._forget(client)
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
            for client, lost in self._remove(key).items():
                affected.setdefault(client, []).extend(lost)
        return affected

    def expire(self, now: float) -> Change:
        """Lingering keys whose time is up: upstream should let them go."""
        due = [k for k, deadline in self._lingering.items() if deadline <= now]
        for key in due:
            del self._lingering[key]
        for key in [k for k, deadline in self._shown_until.items() if deadline <= now]:
            del self._shown_until[key]
        return Change(unsubscribe=due)
