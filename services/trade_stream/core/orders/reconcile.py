"""Reconciliation over REST: after a gap in the trading stream, emit what changed meanwhile, once each.

Alpaca's trading stream does not replay what it sent while a client was away, so after every (re)connect the
orders REST shows are compared with what the journal last had of each order, and the events a live client would
have had are derived (``missed_lifecycle``) and published marked ``reconciled``. Each derived event carries a
dedupe key, and the journal ignores a key it has, so reconciling twice, or on two nodes, relays nothing twice.
On the very first start nothing is news: what exists is recorded as the baseline. The time the journal last
heard from the stream (``SEEN_KEY``) bounds what to ask REST for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Protocol

from trade_stream.core.engine import OrderLog
from trade_stream.core.journal import Entry
from trade_stream.core.orders.events import missed_lifecycle, parse_ts
from trade_stream.core.orders.journal_writer import JOURNAL_ERRORS, JournalWriter
from trade_stream.core.orders.marking import PositionMarker
from trade_stream.core.positions import dec

log = logging.getLogger("trade_stream.core.orders")  # one logger for the whole order side

SEEN_KEY = "trading_seen_at"
REST_TIMEOUT = 10.0  # alpaca-py sets no request timeout; a hung call must not hold a client back
SKEW = 2.0  # seconds of margin for clock skew between Alpaca and us

Publish = Callable[[dict[str, Any], bool, str | None], Entry | None]


class OrdersRest(Protocol):
    """What the order side asks of Alpaca's trading REST (upstream/rest.AlpacaRest is the real one)."""

    async def orders(self, limit: int = 100) -> list[dict[str, Any]]: ...
    async def orders_submitted_since(self, since: float) -> list[dict[str, Any]]: ...
    async def order(self, order_id: str) -> dict[str, Any]: ...
    async def positions(self) -> list[dict[str, Any]]: ...


class Reconciler:
    """One account's reconciliation: REST against the journal through ``writer``, events out through
    ``publish`` (the order side's, so they are journaled and relayed like live ones), positions to ``marker``."""

    def __init__(self, rest: OrdersRest, writer: JournalWriter, publish: Publish, marker: PositionMarker) -> None:
        self.rest = rest
        self.writer = writer
        self.publish = publish
        self.marker = marker
        self.live = False  # the trading stream is connected (this node holds it)
        self._lock = asyncio.Lock()

    def on_state(self, connected: bool) -> None:
        """Remember when a live trading stream went away: reconciliation looks for changes since then."""
        if connected:
            self.live = True
        elif self.live:
            self.live = False
            self.mark_seen()

    def mark_seen(self) -> None:
        """The journal has what the stream sent up to now."""
        journal = self.writer.journal
        if journal is None:
            return
        try:
            journal.set_meta(SEEN_KEY, repr(time.time()))
        except JOURNAL_ERRORS as exc:
            self.writer.fail(exc)

    async def reconcile(self) -> None:
        """After (re)connecting: emit what changed while the stream was down, once each, marked reconciled."""
        async with self._lock:
            journal = self.writer.journal
            if journal is None:
                return  # the journal's recovery reconciles once it is back
            # A shared log: what the previous leader wrote must be known before comparing. If that cannot be
            # read, the error ends the trading session, which is retried: better than relaying twice.
            await journal.sync()
            try:
                seen = journal.get_meta(SEEN_KEY)
                open_ids = journal.open_orders()
            except JOURNAL_ERRORS as exc:
                self.writer.fail(exc)
                return
            cutoff = None if seen is None else float(seen) - SKEW
            try:
                if cutoff is None:
                    orders = await asyncio.wait_for(self.rest.orders(limit=500), REST_TIMEOUT)
                else:
                    orders = await self._changed_since(cutoff, open_ids)
                positions = await asyncio.wait_for(self.rest.positions(), REST_TIMEOUT)
            except Exception as exc:
                log.warning("reconcile_failed error=%r", exc)
                return
            try:
                if self.writer.journal is not journal:
                    return
                if cutoff is None:  # first start: what exists now is the baseline, not news
                    for order in orders:
                        journal.remember(order)
                else:
                    for order in sorted(orders, key=lambda o: str(o.get("updated_at"))):
                        self._reconcile_order(journal, order, cutoff)
                journal.set_meta(SEEN_KEY, repr(time.time()))
            except JOURNAL_ERRORS as exc:
                self.writer.fail(exc)
            self.marker.load(positions)

    async def load_positions(self) -> None:
        """Positions from REST, for a node that does not hold the trading stream (fills then keep them live)."""
        try:
            positions = await asyncio.wait_for(self.rest.positions(), REST_TIMEOUT)
        except Exception as exc:
            log.warning("positions_load_failed error=%r", exc)
            return
        self.marker.load(positions)

    async def _changed_since(self, cutoff: float, open_ids: list[str]) -> list[dict[str, Any]]:
        """Every order that may have changed since ``cutoff``: Alpaca filters orders on submission time only, so
        that is the orders submitted since then (every page), plus each order clients last saw open (a GTC order
        submitted long ago can fill during the gap behind any number of newer orders), fetched by id."""
        orders = await asyncio.wait_for(self.rest.orders_submitted_since(cutoff), REST_TIMEOUT * 6)
        known = {o.get("id") for o in orders}
        for order_id in open_ids:
            if order_id in known:
                continue
            try:
                orders.append(await asyncio.wait_for(self.rest.order(order_id), REST_TIMEOUT))
            except Exception as exc:  # e.g. gone from Alpaca: the others still count
                log.warning("reconcile_order_failed order_id=%s error=%r", order_id, exc)
        return orders

    def _reconcile_order(self, journal: OrderLog, order: dict[str, Any], cutoff: float) -> None:
        updated = parse_ts(order.get("updated_at"))
        if updated is None or updated < cutoff:
            return
        status, filled, last_updated = journal.order_state(str(order.get("id")))
        if (status, filled) == (order.get("status"), str(order.get("filled_qty"))):
            return
        if last_updated and (parse_ts(last_updated) or 0) >= updated:
            return  # we already relayed something as new as this
        for data, dedupe in missed_lifecycle(order, status, dec(filled) or Decimal(0)):
            self.publish(data, True, dedupe)
