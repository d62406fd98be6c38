"""Live positions: quantity and average entry from the REST snapshot plus fills, marked to the live trade price,
and the P&L each fill realizes. Pure: decimal arithmetic, no sockets, so the numbers can be checked exactly."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

ZERO = Decimal(0)
FILLED_ORDERS = 10_000  # orders whose cumulative fill is remembered, so a replayed fill is not applied twice


def dec(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def text(d: Decimal) -> str:
    """Alpaca-style decimal string: no exponent, no trailing zeros."""
    out = format(d.normalize(), "f")
    return "0" if out in ("-0", "") else out


def num(d: Decimal, places: int = 4) -> float:
    return float(round(d, places))


@dataclass(frozen=True)
class FillEffect:
    """What one fill did to a position: the quantity and average entry after it, how much of the position held
    before it the fill closed (0 when it opened or added), and the P&L realized on that part."""

    qty: Decimal
    avg_entry: Decimal
    closed: Decimal
    realized_pl: Decimal


def fill_effect(held: Decimal, avg_entry: Decimal, signed_qty: Decimal, price: Decimal,
                position_qty: Decimal | None = None) -> FillEffect:
    """Apply a fill of ``signed_qty`` (buys positive) at ``price`` to ``held`` shares (shorts negative) entered
    at ``avg_entry`` on average.

    The part that closes the held position realizes ``(price - avg_entry) * closed`` for a long and
    ``(avg_entry - price) * closed`` for a short; the average entry stays as it was, as Alpaca keeps it; what
    goes past zero opens the other side at the fill price; adding realizes nothing and moves the average entry
    to the quantity-weighted mean. ``position_qty``, Alpaca's position after the event, wins for the quantity
    and bounds what was closed: a position it shows as not reduced (the fill was already counted, say from a
    REST snapshot taken after it) realizes nothing."""
    new = held + signed_qty if position_qty is None else position_qty
    closed = ZERO
    if held != 0 and signed_qty != 0 and (held > 0) != (signed_qty > 0):  # the fill trades against the position
        closed = min(abs(signed_qty), abs(held))
        if new != 0 and (new > 0) == (held > 0):  # still on the same side: what was closed is what is gone
            closed = min(closed, max(ZERO, abs(held) - abs(new)))
    realized = (price - avg_entry) * closed if held > 0 else (avg_entry - price) * closed
    if new == 0:
        avg = ZERO
    elif held == 0 or (held > 0) != (new > 0):
        avg = price  # opened, or flipped: the new side is entered at this fill
    elif abs(new) > abs(held):
        avg = (abs(held) * avg_entry + (abs(new) - abs(held)) * price) / abs(new)
    else:
        avg = avg_entry
    return FillEffect(new, avg, closed, realized)


@dataclass
class Position:
    symbol: str
    qty: Decimal
    avg_entry: Decimal
    price: Decimal | None = None

    @property
    def market_value(self) -> Decimal | None:
        return None if self.price is None else self.qty * self.price

    @property
    def unrealized_pl(self) -> Decimal | None:
        return None if self.price is None else (self.price - self.avg_entry) * self.qty

    def to_dict(self) -> dict[str, Any]:
        mv, pl = self.market_value, self.unrealized_pl
        return {"symbol": self.symbol, "qty": text(self.qty), "avg_entry_price": text(self.avg_entry),
                "side": "long" if self.qty >= 0 else "short",
                "current_price": None if self.price is None else num(self.price),
                "market_value": None if mv is None else num(mv, 2),
                "unrealized_pl": None if pl is None else num(pl, 2)}


@dataclass(frozen=True)
class Applied:
    """A fill applied to the positions: the position after it (quantity 0 when the fill closed it) and the P&L it
    realized, None when it closed nothing."""

    position: Position
    realized_pl: Decimal | None


class Positions:
    def __init__(self) -> None:
        self.by_symbol: dict[str, Position] = {}
        self._filled: OrderedDict[str, Decimal] = OrderedDict()  # order id -> cumulative quantity applied

    def load(self, snapshot: list[dict[str, Any]]) -> None:
        """Replace everything with Alpaca's positions list (qty is signed; short positions are negative)."""
        self.by_symbol = {}
        for p in snapshot:
            qty, avg = dec(p.get("qty")), dec(p.get("avg_entry_price"))
            if p.get("symbol") and qty and avg is not None:
                if p.get("side") == "short" and qty > 0:
                    qty = -qty
                self.by_symbol[p["symbol"]] = Position(p["symbol"], qty, avg, dec(p.get("current_price")))

    def apply_fill(self, symbol: str, side: str, fill_qty: Decimal, fill_price: Decimal,
                   position_qty: Decimal | None, order_id: str | None = None,
                   filled_qty: Decimal | None = None) -> Applied | None:
        """Update from one (partial) fill of ``fill_qty`` (the event's own quantity, not the order's total).

        ``filled_qty`` is the order's cumulative filled quantity after the event: a fill of an order that does not
        take it past what was applied already is a replay, and changes nothing (None)."""
        if order_id is not None and filled_qty is not None:
            if filled_qty <= self._filled.get(order_id, ZERO):
                return None
            self._filled[order_id] = filled_qty
            self._filled.move_to_end(order_id)
            while len(self._filled) > FILLED_ORDERS:
                self._filled.popitem(last=False)
        pos = self.by_symbol.get(symbol)
        signed = fill_qty if side == "buy" else -fill_qty
        effect = fill_effect(pos.qty if pos else ZERO, pos.avg_entry if pos else ZERO, signed, fill_price,
                             position_qty)
        realized = effect.realized_pl if effect.closed else None
        if effect.qty == 0:
            self.by_symbol.pop(symbol, None)
            return Applied(Position(symbol, ZERO, ZERO, fill_price), realized)
        price = pos.price if pos and pos.price is not None else fill_price
        self.by_symbol[symbol] = new = Position(symbol, effect.qty, effect.avg_entry, price)
        return Applied(new, realized)

    def mark(self, symbol: str, price: Decimal) -> Position | None:
        pos = self.by_symbol.get(symbol)
        if pos is None or pos.price == price:
            return None
        pos.price = price
        return pos

    def portfolio(self) -> dict[str, Any]:
        priced = [p for p in self.by_symbol.values() if p.price is not None]
        return {"positions": len(self.by_symbol),
                "market_value": num(sum((p.market_value or Decimal(0) for p in priced), Decimal(0)), 2),
                "unrealized_pl": num(sum((p.unrealized_pl or Decimal(0) for p in priced), Decimal(0)), 2)}

    def views(self) -> list[dict[str, Any]]:
        return [p.to_dict() for _, p in sorted(self.by_symbol.items())]
