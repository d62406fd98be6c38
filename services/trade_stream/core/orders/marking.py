"""Positions of one account marked to market, and pushed to whoever follows them.

Quantities come from the REST snapshot plus fills (``Positions``); prices come from live trades of the held
symbols, taken through a private hub holder (the price tap) that is subscribed only while someone follows
positions: an order subscriber, or an SSE position stream (a *watcher*). A fill is pushed at once; a price move at
most every ``POSITION_INTERVAL`` seconds per symbol, the latest one winning, so a busy symbol costs clients a
bounded rate.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from decimal import Decimal
from typing import Any

from trade_stream.core.fanout import Client, TradeTap
from trade_stream.core.framing import text_frame
from trade_stream.core.positions import Positions, dec, num
from trade_stream.core.protocol import ClientError, encode
from trade_stream.core.relay import Relay
from trade_stream.core.upstream import MarketUpstream

log = logging.getLogger("trade_stream.core.orders")  # one logger for the whole order side

POSITION_INTERVAL = 0.25  # at most 4 position updates per second per symbol

Schedule = Callable[[float, Callable[[str], None], str], object]


def _call_later(delay: float, callback: Callable[[str], None], symbol: str) -> object:
    return asyncio.get_running_loop().call_later(delay, callback, symbol)


class PositionMarker:
    """Keeps ``positions`` marked to live trades and pushes ``position_update`` messages.

    ``subscribers`` is the account's live order subscribers (shared, not copied): they get every update, and
    while there are any, or any watchers, the price tap holds the held symbols. ``clock`` and ``schedule`` are
    the monotonic clock and the loop's ``call_later``, given so the throttle can be driven by hand."""

    def __init__(self, relay: Relay[MarketUpstream], positions: Positions, account: str,
                 subscribers: Collection[Client], clock: Callable[[], float] = time.monotonic,
                 schedule: Schedule = _call_later) -> None:
        self.relay = relay
        self.positions = positions
        self.account = account
        self.subscribers = subscribers
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self.watchers: set[object] = set()  # SSE position streams: like subscribers, they need prices
        self._clock = clock
        self._schedule = schedule
        self._tap = TradeTap(self.on_trades)
        self._tapped: set[str] = set()
        self._last_push: dict[str, float] = {}
        self._scheduled: set[str] = set()

    def load(self, rows: list[dict[str, Any]]) -> None:
        """Positions as REST has them now (after reconciliation, or on a node without the trading stream)."""
        self.positions.load(rows)
        self.sync()
        self.push_all()

    def apply_fill(self, data: dict[str, Any]) -> None:
        """A fill or partial fill from the journal: the position changes, and is pushed at once with the P&L the
        fill realized (a closed position too, at quantity 0). A fill the order had already reached is a replay:
        nothing changes, nothing is pushed."""
        order = data.get("order") or {}
        qty, price = dec(data.get("qty")), dec(data.get("price"))
        symbol = order.get("symbol")
        if not symbol or qty is None or price is None:
            return
        order_id = order.get("id")
        applied = self.positions.apply_fill(symbol, str(order.get("side")), qty, price,
                                            dec(data.get("position_qty")), str(order_id) if order_id else None,
                                            dec(order.get("filled_qty")))
        if applied is None:
            return
        self.sync()
        self.push(symbol, force=True, realized_pl=applied.realized_pl)

    def on_trades(self, trades: list[dict[str, Any]]) -> None:
        for t in trades:
            price = dec(t.get("p"))
            if price is not None and self.positions.mark(t.get("S", ""), price):
                self.push(t["S"])

    def catch_up(self, client: Client, shown: list[dict[str, Any]]) -> None:
        """``client`` joins the live positions after a snapshot that showed ``shown``: one update for each
        position that changed since (fills and marks pushed while its journal was replayed reached only the
        subscribers of that moment), a closed one at quantity 0."""
        before = {p["symbol"]: p for p in shown}
        now = {symbol: pos.to_dict() for symbol, pos in self.positions.by_symbol.items()}
        for symbol in sorted(before.keys() | now.keys()):
            if before.get(symbol) != now.get(symbol):
                client.send(text_frame(encode(self.message(symbol))))

    def message(self, symbol: str, realized_pl: Decimal | None = None) -> dict[str, Any]:
        """The ``position_update`` of ``symbol`` as it stands (quantity 0 once closed)."""
        pos = self.positions.by_symbol.get(symbol)
        view = pos.to_dict() if pos else {"symbol": symbol, "qty": "0", "avg_entry_price": "0",
                                          "current_price": None, "market_value": 0.0, "unrealized_pl": 0.0}
        realized = None if realized_pl is None else num(realized_pl, 2)  # in cents, as unrealized_pl
        return {"type": "position_update", **view, "realized_pl": realized, "portfolio": self.positions.portfolio(),
                "account": self.account}

    def push(self, symbol: str, force: bool = False, realized_pl: Decimal | None = None) -> None:
        """One ``position_update`` for ``symbol``; unless ``force``d, at most one per interval (later, if not now).
        ``realized_pl``: what the fill behind this update realized; the message's field is null on any other."""
        now = self._clock()
        wait = self._last_push.get(symbol, 0) + POSITION_INTERVAL - now
        if wait > 0 and not force:
            if symbol not in self._scheduled:
                self._scheduled.add(symbol)
                self._schedule(wait, self._push_later, symbol)
            return
        if symbol in self.positions.by_symbol:
            self._last_push[symbol] = now
        else:
            self._last_push.pop(symbol, None)  # a closed position leaves no per-symbol state behind
        msg = self.message(symbol, realized_pl)
        frame = text_frame(encode(msg))
        for client in list(self.subscribers):
            client.send(frame)
        for listener in self.listeners:
            listener(msg)

    def push_all(self) -> None:
        for symbol in list(self.positions.by_symbol):
            self.push(symbol, force=True)

    def watch(self, holder: object) -> None:
        """Someone outside the subscribers (an SSE position stream) follows positions: mark them to market."""
        self.watchers.add(holder)
        self.sync()

    def unwatch(self, holder: object) -> None:
        self.watchers.discard(holder)
        self.sync()

    def sync(self) -> None:
        """Hold upstream trades for held symbols while anyone follows positions, and only then."""
        want = set(self.positions.by_symbol) if (self.subscribers or self.watchers) else set()
        add, drop = want - self._tapped, self._tapped - want
        if drop:
            self.relay.unsubscribe(self._tap, [("trades", s) for s in drop])
        if add:
            self.relay.subscribe(self._tap, [("trades", s) for s in add], _log_tap_error,
                                 private=True)  # positions are nobody else's business: not in public status
        self._tapped = want

    def _push_later(self, symbol: str) -> None:
        self._scheduled.discard(symbol)
        self.push(symbol, force=True)


def _log_tap_error(err: ClientError | None) -> None:
    if err is not None:
        log.warning("positions_price_subscription_failed code=%s message=%s", err.code, err.message)
