"""Trade notifications: what an order event means to a person, in one plain sentence. Pure: no I/O.

An order event (Alpaca's ``trade_updates`` ``event``) becomes a notification with a small closed set of types,
so the page, the alert stream and webhook filters never have to know Alpaca's full and growing list of event
strings: ``new`` and ``accepted`` are both ``order_accepted``; anything this code does not know (``pending_new``,
``done_for_day``, ``stopped``, ``restated``, a string Alpaca adds next year) is ``order_other``, never an error.

Numbers come from Alpaca as decimal strings (``"105.8988475"``, ``"10"``, ``"0.5"``); they are shown without
trailing zeros (a price keeps two decimals, as money does) and without exponents, so fractional shares and
notional orders read naturally: "Buy 0.25 AAPL filled at $150.25", "Buy $500.00 of AAPL accepted".

Alpaca's ``trade_updates`` carry no rejection reason on ``rejected`` events (the order object has none either).
A top-level ``reason`` is documented on Broker-API trade events for ``canceled``, ``order_cancel_rejected``,
``order_replace_rejected`` and ``trade_bust``; when an event carries one it is appended ("…rejected: reason").
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from trade_stream.records.webhook_targets import TYPES as TYPES  # the vocabulary, re-exported for the notification code

TYPE_OF_EVENT = {"new": "order_accepted", "accepted": "order_accepted", "fill": "order_filled",
                 "partial_fill": "order_partial_fill", "canceled": "order_cancelled", "rejected": "order_rejected",
                 "expired": "order_expired", "replaced": "order_replaced"}
VERB = {"order_accepted": "accepted", "order_filled": "filled", "order_partial_fill": "partially filled",
        "order_cancelled": "cancelled", "order_rejected": "rejected", "order_expired": "expired",
        "order_replaced": "replaced"}
WARNING_TYPES = frozenset({"order_rejected"})
ALERT_TYPES = frozenset({"order_filled", "order_partial_fill", "order_rejected"})  # worth a desktop alert


def type_of(event: str) -> str:
    return TYPE_OF_EVENT.get(event, "order_other")


def level_of(kind: str) -> str:
    """``warning`` for what went wrong (a rejection), ``info`` for the rest (fills included)."""
    return "warning" if kind in WARNING_TYPES else "info"


def number(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        d = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    return d if d.is_finite() else None


def plain(value: Decimal) -> str:
    """A decimal string as Alpaca writes them: ``100``, ``150.25``, never ``1E+2``."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def fmt_qty(value: Decimal) -> str:
    """``10``, ``0.5``, ``1,250``: no trailing zeros, no exponent."""
    text = f"{value.normalize():,f}"
    return "0" if text in ("-0", "") else text


def fmt_money(value: Decimal) -> str:
    """``$150.25``, ``$150.50``, ``$0.0001``, ``$1,234.00``: at least two decimals, no trailing zeros past them."""
    value = value.normalize()
    exponent = value.as_tuple().exponent
    places = max(2, -exponent if isinstance(exponent, int) else 2)
    sign = "-" if value < 0 else ""
    return f"{sign}${abs(value):,.{places}f}"


def _side(order: dict[str, Any]) -> str | None:
    side = str(order.get("side") or "").lower()
    return side.upper() if side in ("buy", "sell") else None


def describe(event: str, data: dict[str, Any]) -> dict[str, Any]:
    """The notification fields derived from one order event's ``data`` (as the journal holds it)."""
    raw_order = data.get("order")
    order: dict[str, Any] = raw_order if isinstance(raw_order, dict) else {}
    kind = type_of(event)
    symbol = str(order.get("symbol") or data.get("symbol") or "?")
    action = _side(order) or (str(data.get("side")).upper() if data.get("side") in ("buy", "sell") else None)
    order_qty, notional = number(order.get("qty")), number(order.get("notional"))
    fill_qty, fill_price = number(data.get("qty")), number(data.get("price"))
    filled_qty, avg_price = number(order.get("filled_qty")), number(order.get("filled_avg_price"))
    price = quantity = None
    if kind == "order_filled":
        # The order is complete: its totals (one fill or many), falling back to the event's own numbers.
        quantity = filled_qty or fill_qty or order_qty
        price = avg_price or fill_price
    elif kind == "order_partial_fill":
        quantity, price = fill_qty, fill_price or avg_price
    else:
        quantity = order_qty
    message = sentence(kind, event, action, symbol, quantity, notional if quantity is None else None, price,
                       order_qty, filled_qty, data.get("reason"))
    return {"trade_id": order.get("id") or data.get("order_id"), "symbol": symbol, "action": action,
            "type": kind, "status": order.get("status") or data.get("status"), "message": message,
            "fill_price": None if price is None else plain(price),
            "quantity": None if quantity is None else plain(quantity),
            "timestamp": data.get("timestamp") or order.get("updated_at"), "level": level_of(kind), "event": event}


def sentence(kind: str, event: str, action: str | None, symbol: str, quantity: Decimal | None,
             notional: Decimal | None, price: Decimal | None, order_qty: Decimal | None,
             filled_qty: Decimal | None, reason: Any = None) -> str:
    """"Buy 100 AAPL filled at $150.25", "Sell 10 TSLA rejected: insufficient buying power"."""
    words = [action.capitalize()] if action else ["Order"]
    if quantity is not None:
        words.append(fmt_qty(quantity))
        if kind == "order_partial_fill" and order_qty is not None and order_qty != quantity:
            words.append(f"of {fmt_qty(order_qty)}")
        words.append(symbol)
    elif notional is not None:
        words += [fmt_money(notional), "of", symbol]
    else:
        words.append(symbol)
    head = " ".join(words)
    if kind == "order_other":
        return f"{head}: {event.replace('_', ' ') or 'update'}"
    text = f"{head} {VERB[kind]}"
    if kind in ("order_filled", "order_partial_fill") and price is not None:
        text += f" at {fmt_money(price)}"
    if kind in ("order_cancelled", "order_expired") and filled_qty and order_qty and filled_qty < order_qty:
        text += f" ({fmt_qty(filled_qty)} filled)"
    if isinstance(reason, str) and reason.strip():
        text += f": {reason.strip()[:200]}"
    return text
