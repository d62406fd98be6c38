"""The shapes of order events: what the relay adds to Alpaca's event, and the events a REST view of an order
implies were missed. Pure: no journal, no sockets, so the lifecycle rules can be checked exactly."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from trade_stream.core.positions import dec

CONVENIENCES = ("order_id", "symbol", "side", "status")  # the relay's, copied from the order; not Alpaca's
STATUS_EVENT = {"filled": "fill", "partially_filled": "partial_fill", "canceled": "canceled", "expired": "expired",
                "rejected": "rejected", "replaced": "replaced", "new": "new", "accepted": "accepted",
                "done_for_day": "done_for_day", "pending_new": "pending_new", "pending_cancel": "pending_cancel"}
#: statuses an order reaches only after it was accepted: a ``new`` event came before them
PAST_NEW = frozenset(("partially_filled", "filled", "canceled", "expired", "replaced", "done_for_day",
                      "pending_cancel", "pending_replace"))
ENDED_AT = ("canceled_at", "expired_at", "failed_at", "replaced_at")  # unset at the time of an earlier event


def sanitize(data: dict[str, Any]) -> dict[str, Any]:
    """Every field of Alpaca's event, those it adds later too (SDK clients of the compatible ``/stream`` get them
    all), plus the relay's ``CONVENIENCES`` from the order for browser clients; ``alpaca_fields`` undoes that."""
    out = {k: v for k, v in data.items() if k not in CONVENIENCES}
    raw = data.get("order")
    order: dict[str, Any] = raw if isinstance(raw, dict) else {}
    out.update(order_id=order.get("id"), symbol=order.get("symbol"), side=order.get("side"),
               status=order.get("status"))
    return out


def alpaca_fields(data: dict[str, Any]) -> dict[str, Any]:
    """A journaled event as Alpaca sent it: without the relay's conveniences."""
    return {k: v for k, v in data.items() if k not in CONVENIENCES}


def sanitize_order(order: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in order.items() if not any(w in k.lower() for w in ("secret", "token", "key_id"))}


def parse_ts(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(_trim_ns(value)).timestamp()
    except ValueError:
        return None


def _trim_ns(value: str) -> str:
    """Python parses at most microseconds: cut nanoseconds, keep the zone."""
    value = value.replace("Z", "+00:00")
    if "." in value:
        head, _, rest = value.partition(".")
        digits = rest[:len(rest) - len(rest.lstrip("0123456789"))]  # the fraction: the leading digits only
        zone = rest[len(digits):]
        value = f"{head}.{digits[:6]}{zone}"
    return value


def missed_lifecycle(order: dict[str, Any], journaled_status: str | None,
                     journaled_filled: Decimal) -> list[tuple[dict[str, Any], str]]:
    """The events a consumer would have had live, from what REST shows of ``order`` now and what the journal last
    had of it: (event data, dedupe key) in order. REST carries only the final state, so what it implies comes
    first: ``new`` for an order the journal never saw that went past it, and a ``partial_fill`` for quantity
    filled before a final state that is not a fill (canceled, expired, replaced). Each is built from the order's
    own fields as they were then, so a client, a notification or a webhook keyed on ``new`` sees it."""
    status = str(order.get("status"))
    now_filled = dec(order.get("filled_qty")) or Decimal(0)
    events: list[tuple[dict[str, Any], str]] = []
    if journaled_status is None and status in PAST_NEW:
        at = order.get("submitted_at") or order.get("created_at") or order.get("updated_at")
        was = {**order, "status": "new", "filled_qty": "0", "filled_avg_price": None, "updated_at": at,
               **{k: None for k in ENDED_AT if k in order}}
        events.append(({"event": "new", "order": was, "timestamp": at}, f"r:{order.get('id')}:new"))
    event = STATUS_EVENT.get(status, status)
    if now_filled > journaled_filled and event not in ("fill", "partial_fill"):
        at = order.get("filled_at") or order.get("updated_at")
        was = {**order, "status": "partially_filled", "updated_at": at, **{k: None for k in ENDED_AT if k in order}}
        events.append(({"event": "partial_fill", "order": was, "timestamp": at,
                        "qty": str(now_filled - journaled_filled), "price": order.get("filled_avg_price")},
                       f"r:{order.get('id')}:partially_filled:{order.get('filled_qty')}"))
    data: dict[str, Any] = {"event": event, "order": order, "timestamp": order.get("updated_at")}
    if now_filled > journaled_filled and event in ("fill", "partial_fill"):
        data.update(qty=str(now_filled - journaled_filled), price=order.get("filled_avg_price"))
    events.append((data, f"r:{order.get('id')}:{order.get('status')}:{order.get('filled_qty')}"))
    return events
