"""Notifications: what an event means to a person, in one plain sentence, and which kind it is. Pure: no I/O.

Every notification has a ``type`` (``TYPES``: the order event types below, ``price_alert``, ``account_status``,
``activity``), a ``kind`` that preferences are set by (``KIND_OF_TYPE``: fills, rejections, other order events,
price alerts, account status, activities), a ``level`` (``info``, ``warning``, ``error``) and a ``message``.

An order event (Alpaca's ``trade_updates`` ``event``) becomes a notification with a small closed set of types,
so the page, the alert stream and webhook filters never have to know Alpaca's full and growing list of event
strings: ``new`` and ``accepted`` are both ``order_accepted``; anything this code does not know (``pending_new``,
``done_for_day``, ``stopped``, ``restated``, a string Alpaca adds next year) is ``order_other``, never an error.

Numbers come from Alpaca as decimal strings (``"105.8988475"``, ``"10"``, ``"0.5"``); they are shown without
trailing zeros (a price keeps two decimals, as money does) and without exponents, so fractional shares and
notional orders read naturally: "Buy 0.25 AAPL filled at $150.25", "Buy $500.00 of AAPL accepted".

Alpaca's ``trade_updates`` carry no rejection reason on ``rejected`` events (the order object has none either).
A top-level ``reason`` is documented on Broker-API trade events for ``canceled``, ``order_cancel_rejected``,
``order_replace_rejected`` and ``trade_bust``; when an event carries one it is appended ("…rejected: reason",
"…: order cancel rejected (reason)").
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
LEVELS = ("info", "warning", "error")
#: The preference kind of each type; an ``order_*`` type not named here is an ``order_events`` one.
KIND_OF_TYPE = {"order_filled": "fills", "order_partial_fill": "fills", "order_rejected": "rejections",
                "price_alert": "price_alerts", "account_status": "account_status", "activity": "activities"}
#: Broker account statuses that mean the account cannot trade (worth a warning).
BAD_STATUSES = frozenset({"ACCOUNT_CLOSED", "ACCOUNT_UPDATED_REJECTED", "REJECTED", "DISABLED", "ACTION_REQUIRED",
                          "SUBMISSION_FAILED"})
#: Broker non-trade activity types as words; any other type is shown as Alpaca spells it.
ACTIVITY_WORDS = {"DIV": "Dividend", "DIVCGL": "Dividend (long-term capital gain)",
                  "DIVCGS": "Dividend (short-term capital gain)", "DIVNRA": "Dividend (NRA withholding)",
                  "DIVROC": "Dividend (return of capital)", "DIVTXEX": "Dividend (tax exempt)", "INT": "Interest",
                  "SPLIT": "Stock split", "CSD": "Cash deposit", "CSW": "Cash withdrawal", "FEE": "Fee",
                  "JNLC": "Cash journal", "JNLS": "Stock journal", "MA": "Merger/acquisition", "SSO": "Stock spinoff",
                  "TRANS": "Cash transfer", "ACATC": "ACATS cash transfer", "ACATS": "ACATS stock transfer",
                  "REORG": "Reorganization", "NC": "Name change", "PTC": "Pass-through charge",
                  "CFEE": "Crypto fee"}


def type_of(event: str) -> str:
    return TYPE_OF_EVENT.get(event, "order_other")


def kind_of(note_type: str) -> str:
    """The preference kind of a notification type (core/preferences.py ``KINDS``)."""
    return KIND_OF_TYPE.get(note_type, "order_events")


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
            "timestamp": data.get("timestamp") or order.get("updated_at"), "level": level_of(kind), "event": event,
            "kind": kind_of(kind),
            **({"reason": data["reason"].strip()[:200]} if isinstance(data.get("reason"), str) else {})}


def short_account(account_id: str) -> str:
    """A Broker account id (a UUID) as a person reads it: its first 8 characters and an ellipsis."""
    return account_id if len(account_id) <= 9 else account_id[:8] + "\u2026"


def describe_account_status(data: dict[str, Any]) -> dict[str, Any]:
    """A Broker account status event (``status_from`` → ``status_to``): "Account 4f2a1b3c… is now ACTIVE"."""
    account = str(data.get("account_id") or "?")
    status = str(data.get("status_to") or data.get("status") or "").strip()[:64] or "updated"
    message = f"Account {short_account(account)} is now {status}"
    level = "warning" if status in BAD_STATUSES else "info"
    return {"type": "account_status", "kind": "account_status", "level": level, "message": message,
            "status": status, "status_from": data.get("status_from"), "timestamp": data.get("at"),
            "event": "account_status"}


def describe_activity(data: dict[str, Any]) -> dict[str, Any]:
    """A Broker non-trade activity: "Dividend: $12.40 from AAPL", "Fee: -$1.00", "Stock split: AAPL"."""
    code = str(data.get("activity_type") or "").strip().upper()
    words = ACTIVITY_WORDS.get(code, code or "Activity")
    amount = number(data.get("net_amount"))
    symbol = data.get("symbol") if isinstance(data.get("symbol"), str) and data.get("symbol") else None
    parts = []
    if amount is not None and amount != 0:
        parts.append(fmt_money(amount))
    if symbol:
        parts.append(f"from {symbol}" if parts else symbol)
    message = f"{words}: {' '.join(parts)}" if parts else words
    return {"type": "activity", "kind": "activities", "level": "info", "message": message, "symbol": symbol,
            "activity_type": code or None, "amount": None if amount is None else plain(amount),
            "timestamp": data.get("at") or data.get("date"), "event": "activity"}


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
        text = f"{head}: {event.replace('_', ' ') or 'update'}"
    else:
        text = f"{head} {VERB[kind]}"
    if kind in ("order_filled", "order_partial_fill") and price is not None:
        text += f" at {fmt_money(price)}"
    if kind in ("order_cancelled", "order_expired") and filled_qty and order_qty and filled_qty < order_qty:
        text += f" ({fmt_qty(filled_qty)} filled)"
    if isinstance(reason, str) and reason.strip():  # after an event's own words in brackets: one colon only
        text += f" ({reason.strip()[:200]})" if kind == "order_other" else f": {reason.strip()[:200]}"
    return text
