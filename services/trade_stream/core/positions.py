"""Live positions: quantity and average entry from the REST snapshot plus fills, marked to the live trade price.
Pure: decimal arithmetic, no sockets, so the numbers can be checked exactly."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any


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


class Positions:
    def __init__(self) -> None:
        self.by_symbol: dict[str, Position] = {}

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
                   position_qty: Decimal | None) -> Position | None:
        """Update from one (partial) fill. ``position_qty`` (Alpaca's position after the event) wins for the
        quantity; the average entry moves only when the position grows, and resets when it flips side."""
        pos = self.by_symbol.get(symbol)
        old_qty = pos.qty if pos else Decimal(0)
        old_avg = pos.avg_entry if pos else Decimal(0)
        signed = fill_qty if side == "buy" else -fill_qty
        new_qty = position_qty if position_qty is not None else old_qty + signed
        if new_qty == 0:
            self.by_symbol.pop(symbol, None)
            return Position(symbol, Decimal(0), Decimal(0), fill_price)
        if old_qty == 0 or (old_qty > 0) != (new_qty > 0):
            avg = fill_price
        elif abs(new_qty) > abs(old_qty):
            avg = (abs(old_qty) * old_avg + abs(new_qty - old_qty) * fill_price) / abs(new_qty)
        else:
            avg = old_avg
        price = pos.price if pos and pos.price is not None else fill_price
        self.by_symbol[symbol] = new = Position(symbol, new_qty, avg, price)
        return new

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
