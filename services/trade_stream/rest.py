"""Alpaca REST through alpaca-py (synchronous `requests` underneath, so every call runs in a worker thread)."""

from __future__ import annotations

import asyncio
from typing import Any

from alpaca.trading.client import TradingClient
from alpaca.trading.enums import QueryOrderStatus
from alpaca.trading.requests import GetOrdersRequest

from trade_stream.config import Config


class AlpacaRest:
    def __init__(self, cfg: Config) -> None:
        self.trading = TradingClient(cfg.api_key, cfg.secret_key, raw_data=True, url_override=cfg.base_url)

    async def orders(self, limit: int = 100) -> list[dict[str, Any]]:
        """Most recently submitted orders first, every status."""
        req = GetOrdersRequest(status=QueryOrderStatus.ALL, limit=limit, nested=False)
        return list(await asyncio.to_thread(self.trading.get_orders, req))  # type: ignore[arg-type]

    async def positions(self) -> list[dict[str, Any]]:
        return list(await asyncio.to_thread(self.trading.get_all_positions))  # type: ignore[arg-type]

    async def account(self) -> dict[str, Any]:
        return dict(await asyncio.to_thread(self.trading.get_account))  # type: ignore[arg-type]
