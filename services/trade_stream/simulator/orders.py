"""The brokerage side: accounts, orders, fills and positions, in Alpaca's REST shapes.

Pure state (no sockets). Every mutation returns the ``trade_updates`` event payloads it causes; the server
decides who, if anyone, is listening. State is kept either way so a client can reconcile over REST after
missing events, exactly the situation Alpaca's stream (which has no replay) forces on a relay.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .market import parse_ts, tape_of
from .units import format_ts

OPEN_STATUSES = frozenset({
    "new", "partially_filled", "accepted", "pending_new", "pending_cancel", "pending_replace",
    "accepted_for_bidding", "held", "stopped", "calculated", "suspended",
})
ORDER_TYPES = frozenset({"market", "limit", "stop", "stop_limit", "trailing_stop"})
EXCHANGE_OF_TAPE = {"A": "NYSE", "B": "ARCA", "C": "NASDAQ"}
ZERO = Decimal(0)

#: An event payload: the ``data`` object of a ``{"stream":"trade_updates","data":...}`` message.
Event = dict

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


class Ulids:
    """ULIDs as Alpaca's ``event_id`` (e.g. ``01JJ3WE73W5PG672TC4XACXH5R``): 48 bits of milliseconds, 80 random
    bits, Crockford base32; monotonic within a millisecond, so ids sort in event order."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._last = (0, 0)

    def next(self, ns: int) -> str:
        ms = ns // 1_000_000
        last_ms, last_rand = self._last
        rand = last_rand + 1 if ms <= last_ms else self._rng.getrandbits(80)
        ms = max(ms, last_ms)
        self._last = (ms, rand)
        value = (ms << 80) | (rand & (2**80 - 1))
        return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def dec(value: object) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def dstr(value: Decimal) -> str:
    """Alpaca's string decimals: no exponent, no trailing zeros (``"10"``, ``"105.8988475"``)."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def asset_id(symbol: str) -> str:
    """A stable asset id per symbol, as Alpaca's asset ids are stable."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"alpaca-sim:asset:{symbol}"))


@dataclass
class Position:
    symbol: str
    qty: Decimal = ZERO
    avg_entry_price: Decimal = ZERO

    def apply_fill(self, signed_qty: Decimal, price: Decimal) -> None:
        """Update qty and the weighted average entry price; a flip opens the rest at the fill price."""
        new_qty = self.qty + signed_qty
        if self.qty == 0 or (self.qty > 0) == (signed_qty > 0):
            total = abs(self.qty) * self.avg_entry_price + abs(signed_qty) * price
            self.avg_entry_price = total / abs(new_qty)
        elif new_qty == 0:
            self.avg_entry_price = ZERO
        elif (new_qty > 0) != (self.qty > 0):
            self.avg_entry_price = price
        self.qty = new_qty


@dataclass
class Account:
    key: str
    id: str
    number: str
    cash: Decimal
    created_at: str
    orders: dict[str, dict] = field(default_factory=dict)
    positions: dict[str, Position] = field(default_factory=dict)


class OrderBook:
    """Orders, fills and positions of every simulated account."""

    def __init__(self, keys: list[str], price_of: Callable[[str], float], seed: int | None = None,
                 starting_cash: float = 100_000.0) -> None:
        self._rng = random.Random(seed)
        self._ulids = Ulids(self._rng)
        self._price_of = price_of
        self._owner: dict[str, Account] = {}
        self.accounts: dict[str, Account] = {}
        now = format_ts(time.time_ns())
        for i, key in enumerate(keys):
            self.accounts[key] = Account(key, self._uuid(), f"PA{31415926 + i:010d}", dec(starting_cash), now)

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def account(self, key: str) -> Account:
        try:
            return self.accounts[key]
        except KeyError:
            raise ValueError(f"unknown account key {key!r}") from None

    def owner(self, order_id: str) -> Account:
        try:
            return self._owner[order_id]
        except KeyError:
            raise ValueError(f"order not found: {order_id}") from None

    def order(self, order_id: str) -> dict:
        return self.owner(order_id).orders[order_id]

    # -- lifecycle -------------------------------------------------------------------------------------

    def submit(self, key: str, symbol: str, side: str, qty: float | str, type: str = "market",
               limit_price: float | str | None = None, *, stop_price: float | str | None = None,
               time_in_force: str = "day", client_order_id: str | None = None,
               extended_hours: bool = False) -> tuple[dict, list[Event]]:
        """Accept an order (status ``new``); returns it and its ``new`` event."""
        acct = self.account(key)
        if side not in ("buy", "sell"):
            raise ValueError("side must be buy or sell")
        if type not in ORDER_TYPES:
            raise ValueError(f"unsupported order type {type!r}")
        if dec(qty) <= 0:
            raise ValueError("qty must be > 0")
        if type in ("limit", "stop_limit") and limit_price is None:
            raise ValueError("limit_price is required for limit orders")
        if type in ("stop", "stop_limit") and stop_price is None:
            raise ValueError("stop_price is required for stop orders")
        now = format_ts(time.time_ns())
        held = acct.positions.get(symbol)
        held_qty = held.qty if held else ZERO
        intent = ("buy_to_close" if held_qty < 0 else "buy_to_open") if side == "buy" else (
            "sell_to_close" if held_qty > 0 else "sell_to_open")
        order: dict[str, Any] = {
            "id": self._uuid(), "client_order_id": client_order_id or self._uuid(),
            "created_at": now, "updated_at": now, "submitted_at": now,
            "filled_at": None, "expired_at": None, "expires_at": None, "canceled_at": None,
            "cancel_requested_at": None,
            "failed_at": None, "replaced_at": None, "replaced_by": None, "replaces": None,
            "asset_id": asset_id(symbol), "symbol": symbol, "asset_class": "us_equity",
            "notional": None, "qty": dstr(dec(qty)), "filled_qty": "0", "filled_avg_price": None,
            "order_class": "simple", "order_type": type, "type": type, "side": side,
            "position_intent": intent, "time_in_force": time_in_force,
            "limit_price": None if limit_price is None else dstr(dec(limit_price)),
            "stop_price": None if stop_price is None else dstr(dec(stop_price)),
            "status": "new", "extended_hours": bool(extended_hours), "legs": None,
            "trail_percent": None, "trail_price": None, "hwm": None, "subtag": None, "source": None,
        }
        acct.orders[order["id"]] = order
        self._owner[order["id"]] = acct
        return order, [self._event("new", order, now)]

    def fill(self, order_id: str, qty: float | str | None = None,
             price: float | str | None = None) -> tuple[dict, list[Event]]:
        """Execute ``qty`` (default: all that remains); ``partial_fill`` unless the order is complete."""
        acct, order = self.owner(order_id), self.order(order_id)
        self._require_open(order)
        total, filled = dec(order["qty"]), dec(order["filled_qty"])
        remaining = total - filled
        fill_qty = remaining if qty is None else dec(qty)
        if fill_qty <= 0 or fill_qty > remaining:
            raise ValueError(f"fill qty must be in (0, {dstr(remaining)}]")
        fill_px = dec(price) if price is not None else self._default_fill_price(order)
        prev_avg = dec(order["filled_avg_price"] or 0)
        new_filled = filled + fill_qty
        avg = (prev_avg * filled + fill_px * fill_qty) / new_filled
        now = format_ts(time.time_ns())
        complete = new_filled == total
        order.update(filled_qty=dstr(new_filled), filled_avg_price=dstr(avg.quantize(Decimal("1e-9"))),
                     status="filled" if complete else "partially_filled", updated_at=now)
        if complete:
            order["filled_at"] = now
        signed = fill_qty if order["side"] == "buy" else -fill_qty
        pos = acct.positions.setdefault(order["symbol"], Position(order["symbol"]))
        pos.apply_fill(signed, fill_px)
        acct.cash -= signed * fill_px
        if pos.qty == 0:
            del acct.positions[order["symbol"]]
        event = self._event("fill" if complete else "partial_fill", order, now,
                            execution_id=self._uuid(), price=dstr(fill_px), qty=dstr(fill_qty),
                            position_qty=dstr(pos.qty))
        return order, [event]

    def cancel(self, order_id: str) -> tuple[dict, list[Event]]:
        order = self.order(order_id)
        if order["status"] in OPEN_STATUSES:
            order["cancel_requested_at"] = format_ts(time.time_ns())
        return self._close(order_id, "canceled", "canceled", "canceled_at")

    def expire(self, order_id: str) -> tuple[dict, list[Event]]:
        return self._close(order_id, "expired", "expired", "expired_at")

    def reject(self, order_id: str) -> tuple[dict, list[Event]]:
        return self._close(order_id, "rejected", "rejected", "failed_at")

    def replace(self, order_id: str, qty: float | str | None = None, limit_price: float | str | None = None,
                stop_price: float | str | None = None,
                time_in_force: str | None = None) -> tuple[dict, list[Event]]:
        """Replace an open order: the old one becomes ``replaced`` (event ``replaced``, with ``replaced_by``)
        and a new order (``replaces`` = old id) is accepted (event ``new``). Returns the new order."""
        acct, old = self.owner(order_id), self.order(order_id)
        self._require_open(old)
        new, events = self.submit(
            acct.key, old["symbol"], old["side"], qty if qty is not None else old["qty"], old["type"],
            limit_price if limit_price is not None else old["limit_price"],
            stop_price=stop_price if stop_price is not None else old["stop_price"],
            time_in_force=time_in_force or old["time_in_force"], extended_hours=old["extended_hours"])
        now = new["created_at"]
        new["replaces"] = old["id"]
        old.update(status="replaced", replaced_at=now, replaced_by=new["id"], updated_at=now)
        events[0]["order"] = dict(new)
        return new, [self._event("replaced", old, now), *events]

    def event(self, order_id: str, event: str, **extra: object) -> tuple[dict, list[Event]]:
        """An arbitrary event (``pending_new``, ``done_for_day``, ``restated``, anything) on an order as it is."""
        order = self.order(order_id)
        return order, [{**self._event(event, order, format_ts(time.time_ns())), **extra}]

    # -- helpers ---------------------------------------------------------------------------------------

    def _event(self, event: str, order: dict, now: str, **extra: object) -> Event:
        """An event as Alpaca sends it: ``at`` (when recorded) and a ULID ``event_id`` besides the classic
        fields (Alpaca's 2025 examples; the Go SDK's TradeUpdate has ``At time.Time`` and ``EventID string``)."""
        at = time.time_ns()
        return {"event": event, "timestamp": now, "order": dict(order), **extra, "at": format_ts(at),
                "event_id": self._ulids.next(at)}

    @staticmethod
    def _require_open(order: dict) -> None:
        if order["status"] not in OPEN_STATUSES:
            raise ValueError(f"order is {order['status']}")

    def _default_fill_price(self, order: dict) -> Decimal:
        if order["limit_price"] is not None:
            return dec(order["limit_price"])
        return dec(round(self._price_of(order["symbol"]), 2))

    def _close(self, order_id: str, status: str, event: str, stamp: str) -> tuple[dict, list[Event]]:
        order = self.order(order_id)
        self._require_open(order)
        now = format_ts(time.time_ns())
        order.update({"status": status, stamp: now, "updated_at": now})
        return order, [self._event(event, order, now)]

    # -- REST views ------------------------------------------------------------------------------------

    def list_orders(self, key: str, status: str = "open", limit: int = 50, after: str | None = None,
                    until: str | None = None, direction: str = "desc", symbols: set[str] | None = None,
                    side: str | None = None) -> list[dict]:
        """``GET /v2/orders``: filtered on submission time (``after`` < submitted_at < ``until``)."""
        orders = list(self.account(key).orders.values())
        if status == "open":
            orders = [o for o in orders if o["status"] in OPEN_STATUSES]
        elif status == "closed":
            orders = [o for o in orders if o["status"] not in OPEN_STATUSES]
        if symbols:
            orders = [o for o in orders if o["symbol"] in symbols]
        if side:
            orders = [o for o in orders if o["side"] == side]
        if after:
            orders = [o for o in orders if parse_ts(o["submitted_at"]) > parse_ts(after)]
        if until:
            orders = [o for o in orders if parse_ts(o["submitted_at"]) < parse_ts(until)]
        if direction == "desc":
            orders.reverse()
        return orders[: max(0, min(limit, 500))]

    def position_view(self, acct: Account, pos: Position) -> dict:
        """``GET /v2/positions`` element, with market values at the simulator's current price."""
        price = dec(round(self._price_of(pos.symbol), 2))
        lastday = dec(round(self._price_of(pos.symbol), 2))
        market_value = pos.qty * price
        cost_basis = pos.qty * pos.avg_entry_price
        pl = market_value - cost_basis
        plpc = pl / abs(cost_basis) if cost_basis else ZERO
        intraday = pos.qty * (price - lastday)
        q = Decimal("1e-10")
        return {
            "asset_id": asset_id(pos.symbol), "symbol": pos.symbol,
            "exchange": EXCHANGE_OF_TAPE[tape_of(pos.symbol)], "asset_class": "us_equity",
            "asset_marginable": True, "qty": dstr(pos.qty),
            "avg_entry_price": dstr(pos.avg_entry_price.quantize(q)),
            "side": "long" if pos.qty > 0 else "short", "market_value": dstr(market_value),
            "cost_basis": dstr(cost_basis.quantize(q)), "unrealized_pl": dstr(pl.quantize(q)),
            "unrealized_plpc": dstr(plpc.quantize(q)), "unrealized_intraday_pl": dstr(intraday),
            "unrealized_intraday_plpc": dstr((intraday / abs(cost_basis)).quantize(q) if cost_basis else ZERO),
            "current_price": dstr(price), "lastday_price": dstr(lastday), "change_today": "0",
            "qty_available": dstr(self._qty_available(acct, pos)),
        }

    @staticmethod
    def _qty_available(acct: Account, pos: Position) -> Decimal:
        """Position minus what open orders on the closing side already hold."""
        closing = "sell" if pos.qty > 0 else "buy"
        held = sum((dec(o["qty"]) - dec(o["filled_qty"]) for o in acct.orders.values()
                    if o["symbol"] == pos.symbol and o["side"] == closing and o["status"] in OPEN_STATUSES),
                   ZERO)
        return max(ZERO, pos.qty - held) if pos.qty > 0 else min(ZERO, pos.qty + held)

    def positions(self, key: str) -> list[dict]:
        acct = self.account(key)
        return [self.position_view(acct, p) for p in sorted(acct.positions.values(), key=lambda p: p.symbol)]

    def account_view(self, key: str) -> dict:
        """``GET /v2/account`` (cash account math; margin fields mirror a 1x paper account)."""
        acct = self.account(key)
        views = self.positions(key)
        long_mv = sum((dec(v["market_value"]) for v in views if v["side"] == "long"), ZERO)
        short_mv = sum((dec(v["market_value"]) for v in views if v["side"] == "short"), ZERO)
        equity = acct.cash + long_mv + short_mv
        buying_power = max(ZERO, equity - abs(short_mv))
        s = dstr
        return {
            "id": acct.id, "account_number": acct.number, "status": "ACTIVE", "crypto_status": "ACTIVE",
            "currency": "USD", "buying_power": s(buying_power), "regt_buying_power": s(buying_power),
            "daytrading_buying_power": "0", "effective_buying_power": s(buying_power),
            "non_marginable_buying_power": s(max(ZERO, acct.cash)), "options_buying_power": s(buying_power),
            "bod_dtbp": "0", "cash": s(acct.cash), "accrued_fees": "0", "pending_transfer_in": "0",
            "portfolio_value": s(equity), "pattern_day_trader": False, "trading_blocked": False,
            "transfers_blocked": False, "account_blocked": False, "created_at": acct.created_at,
            "trade_suspended_by_user": False, "multiplier": "1", "shorting_enabled": True,
            "equity": s(equity), "last_equity": s(equity), "long_market_value": s(long_mv),
            "short_market_value": s(short_mv), "position_market_value": s(long_mv + short_mv),
            "initial_margin": s(long_mv + abs(short_mv)), "maintenance_margin": s((long_mv + abs(short_mv)) / 4),
            "last_maintenance_margin": "0", "sma": "0", "options_approved_level": 0,
            "options_trading_level": 0, "intraday_adjustments": "0", "pending_reg_taf_fees": "0",
        }

