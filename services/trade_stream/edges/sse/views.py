"""What the private streams send: the flat camelCase views of an order event and a position, and their events.

Pure functions over journal messages and position dicts, encoded once per format for every client of it.
"""

from __future__ import annotations

from typing import Any

from trade_stream.core.protocol import encode
from trade_stream.edges.sse.wire import event_bytes

FILL_EVENTS = ("fill", "partial_fill")


def order_view(message: dict[str, Any]) -> dict[str, Any]:
    """The SSE API's order event: the order's state after this event, flat and camelCase."""
    data = message.get("data") or {}
    order = data.get("order") or {}
    view = {"orderId": order.get("id"), "account": message.get("account"), "symbol": order.get("symbol"),
            "side": order.get("side"), "status": order.get("status"), "qty": order.get("qty"),
            "filledQty": order.get("filled_qty"), "filledAvgPrice": order.get("filled_avg_price"),
            "timestamp": data.get("timestamp") or order.get("updated_at"), "event": message.get("event"),
            "reconciled": message.get("reconciled", False)}
    if message.get("event") in FILL_EVENTS:
        view.update(fillQty=data.get("qty"), fillPrice=data.get("price"))
    return view


def order_events(message: dict[str, Any], legacy: bool) -> list[tuple[str, bytes]]:
    """(event name, data) of one journal entry, encoded once for every client of the same format:
    ``order:update`` (plus ``order:fill`` for a fill), or ``order_update`` with ``?format=legacy``."""
    if legacy:
        return [("order_update", encode(message))]
    data = encode(order_view(message))
    return [("order:update", data), ("order:fill", data)] if message.get("event") in FILL_EVENTS \
        else [("order:update", data)]


def order_event(events: list[tuple[str, bytes]], event_id: str | int) -> bytes:
    """``id: <epoch>-<n>`` (one account) or the compound id (several): EventSource sends it back as
    Last-Event-ID, which tells our journals from another's and resumes each account where it was. A fill's
    ``order:update`` and ``order:fill`` share the id: they are one journal entry, written together."""
    return b"".join(event_bytes(name, data, event_id) for name, data in events)


def position_view(p: dict[str, Any], account: str) -> dict[str, Any]:
    """The SSE API's position, camelCase; ``realizedPl`` is set on the update of a fill that closed or reduced
    it (quantity ``"0"`` when closed), null otherwise."""
    return {"account": account, "symbol": p.get("symbol"), "qty": p.get("qty"), "side": p.get("side"),
            "avgEntryPrice": p.get("avg_entry_price"), "currentPrice": p.get("current_price"),
            "marketValue": p.get("market_value"), "unrealizedPl": p.get("unrealized_pl"),
            "realizedPl": p.get("realized_pl")}


def initial_price(symbol: str, snap: dict[str, Any] | None, live: dict[str, Any] | None) -> dict[str, Any] | None:
    """A symbol's first ``price:update`` (``initializing: true``): the REST snapshot's latest trade and quote, or
    the live state when the snapshot has none (a crypto pair, or no REST feed)."""
    if snap is not None:
        trade, quote = snap.get("latest_trade") or {}, snap.get("latest_quote") or {}
        return {"symbol": symbol, "price": trade.get("price"), "bid": quote.get("bid_price"),
                "ask": quote.get("ask_price"), "timestamp": trade.get("timestamp") or quote.get("timestamp"),
                "initializing": True}
    return {**live, "initializing": True} if live is not None else None

