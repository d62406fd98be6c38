"""Alpaca REST through alpaca-py (synchronous `requests` underneath, so every call runs in a worker thread)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from alpaca.common.enums import Sort
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import QueryOrderStatus
from alpaca.trading.requests import GetOrdersRequest

from trade_stream.config import Config

PAGE = 500  # Alpaca's largest page of orders


def _micro(value: str) -> str:
    """An RFC 3339 timestamp with nanoseconds as Python can parse it (microseconds, explicit zone)."""
    value = value.replace("Z", "+00:00")
    head, dot, rest = value.partition(".")
    if not dot:
        return value
    digits = "".join(ch for ch in rest if ch.isdigit())
    return f"{head}.{digits[:6]}{rest[len(digits):]}"


async def _call(fn: Callable[..., object], *args: object) -> Any:
    """One alpaca-py call in a worker thread. With ``raw_data=True`` it returns the decoded JSON (a list or a
    dict), while its annotations also allow the model objects of the other mode; so the result is typed as the
    JSON it is, and each caller says which shape it reads."""
    return await asyncio.to_thread(fn, *args)


class AlpacaRest:
    def __init__(self, cfg: Config) -> None:
        self.trading = TradingClient(cfg.api_key, cfg.secret_key, raw_data=True, url_override=cfg.base_url)

    async def orders(self, limit: int = 100) -> list[dict[str, Any]]:
        """Most recently submitted orders first, every status."""
        req = GetOrdersRequest(status=QueryOrderStatus.ALL, limit=limit, nested=False)
        return list(await _call(self.trading.get_orders, req))

    async def orders_submitted_since(self, since: float, page: int = PAGE) -> list[dict[str, Any]]:
        """Every order submitted after ``since`` (epoch seconds), oldest first, all pages.

        GET /v2/orders filters ``after``/``until`` on submission time and returns at most 500 per call
        (services/PROTOCOL.md §2), so this walks forward with ``after`` = the last submission time seen. The cursor
        is cut to microseconds (alpaca-py sends a datetime), so a boundary order can come twice: ids dedupe it.
        """
        seen: dict[str, dict[str, Any]] = {}
        after = datetime.fromtimestamp(since, UTC)
        while True:
            req = GetOrdersRequest(status=QueryOrderStatus.ALL, limit=page, after=after, direction=Sort.ASC,
                                   nested=False)
            batch = list(await _call(self.trading.get_orders, req))
            fresh = [o for o in batch if o.get("id") not in seen]
            for order in fresh:
                seen[order["id"]] = order
            if len(batch) < page or not fresh:
                return list(seen.values())
            after = datetime.fromisoformat(_micro(str(batch[-1]["submitted_at"])))

    async def order(self, order_id: str) -> dict[str, Any]:
        return dict(await _call(self.trading.get_order_by_id, order_id))

    async def positions(self) -> list[dict[str, Any]]:
        return list(await _call(self.trading.get_all_positions))

    async def account(self) -> dict[str, Any]:
        return dict(await _call(self.trading.get_account))
