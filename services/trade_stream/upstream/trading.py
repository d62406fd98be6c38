"""The one upstream trading-stream connection: auth, listen to trade_updates, relay every
event (known or not). Binary frames carry JSON. Same reconnect and close discipline as market data."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection

from trade_stream.config import Timings
from trade_stream.core.stats import Stats
from trade_stream.core.upstream_state import UpstreamState
from trade_stream.upstream.backoff import Failure
from trade_stream.upstream.market_data import ReconnectingStream, UpstreamError

log = logging.getLogger("trade_stream.upstream.trading")


class TradingUpstream(ReconnectingStream):
    name = "trading"

    def __init__(self, *, url: str, key: str, secret: str, on_event: Callable[[dict[str, Any]], None],
                 on_connected: Callable[[], Awaitable[None]], on_state: Callable[[UpstreamState], None],
                 timings: Timings, stats: Stats | None = None) -> None:
        """``on_event`` takes each event (journaling it); ``on_connected`` catches up on what was missed. If
        either raises, the session ends and is retried with backoff: the stream is not "connected" while the
        events it would receive cannot be kept."""
        super().__init__(url=url, timings=timings, on_state=on_state, stats=stats)
        self._key = key
        self._secret = secret
        self._on_event = on_event
        self._on_connected = on_connected

    async def _recv(self, ws: ClientConnection) -> dict[str, Any]:
        msg = orjson.loads(await asyncio.wait_for(ws.recv(), self.timings.open_timeout))
        if not isinstance(msg, dict):
            raise UpstreamError(Failure.NETWORK, None, f"unexpected trading frame {str(msg)[:100]}")
        return msg

    async def _session(self, ws: ClientConnection) -> None:
        await ws.send(orjson.dumps({"action": "auth", "key": self._key, "secret": self._secret}).decode())
        reply = await self._recv(ws)
        if reply.get("stream") != "authorization" or (reply.get("data") or {}).get("status") != "authorized":
            raise UpstreamError(Failure.CONFIG, 401,
                                "trading stream unauthorized: check ALPACA_API_KEY / ALPACA_SECRET_KEY and "
                                "that ALPACA_BASE_URL matches the key (paper vs live)")
        await ws.send(orjson.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}).decode())
        while True:
            msg = await self._recv(ws)
            if msg.get("stream") == "listening":
                break
            self._handle(msg)
        await self._on_connected()  # events arriving meanwhile wait in the socket, then go through _handle
        self._authenticated()
        async for raw in ws:
            try:
                msg = orjson.loads(raw)
            except orjson.JSONDecodeError:
                self._bad_message("undecodable frame", raw)
                continue
            if isinstance(msg, dict):
                self._handle(msg)
            else:
                self._bad_message("frame is not a JSON object", msg)

    def _handle(self, msg: dict[str, Any]) -> None:
        if msg.get("stream") == "trade_updates" and isinstance(msg.get("data"), dict):
            if self.backoff.attempt:
                self.backoff.reset()
            self._on_event(msg["data"])
        elif msg.get("action") == "error" or msg.get("stream") == "error":
            log.error("trading_stream_error msg=%s", str(msg)[:300])
