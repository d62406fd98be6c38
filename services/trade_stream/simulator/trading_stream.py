"""The trading session (``/stream``): auth in either of Alpaca's two shapes, one session per account, listen.

One ``TradingStream`` serves every trading connection; ``serve`` runs one connection's session until it closes.
Order events reach a listening session through the façade's ``trade_updates`` fan-out, not through here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from . import protocol
from .config import SimConfig
from .connection import Conn, receive, reply
from .faults import Faults
from .inspection import Connections

log = logging.getLogger("trade_stream.simulator")

#: Alpaca's trading-stream error shape: keyed by ``action``, unlike every other message.
TRADING_SYNTAX_ERROR = {"action": "error", "data": {"error_message": "invalid syntax"}}


class TradingStream:
    """Serves Alpaca's trading WebSocket sessions against the simulator's accounts and queued auth faults."""

    def __init__(self, config: SimConfig, conns: Connections, faults: Faults) -> None:
        self.config = config
        self.conns = conns
        self.faults = faults

    async def serve(self, conn: Conn) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.auth_timeout
        while True:
            if conn.key is None:
                try:
                    msg = await self._recv(conn, max(0.0, deadline - loop.time()))
                except TimeoutError:  # like the market-data streams, minus the 404 frame they document
                    await conn.ws.close(protocol.AUTH_TIMEOUT_CLOSE, "auth timeout")
                    return
            else:
                msg = await self._recv(conn)
            action = msg.get("action") if isinstance(msg, dict) else None
            if action in ("auth", "authenticate"):
                await self._auth(conn, msg)
            elif action == "listen":
                await self._listen(conn, msg)
            else:
                await reply(conn, TRADING_SYNTAX_ERROR)

    async def _recv(self, conn: Conn, timeout: float | None = None) -> Any:
        return await receive(conn, timeout, lambda: self.faults.read_delay, self.conns.record)

    async def _auth(self, conn: Conn, msg: dict) -> None:
        if msg["action"] == "auth":
            key, secret = msg.get("key"), msg.get("secret")
        else:
            data: dict[str, Any] = msg["data"] if isinstance(msg.get("data"), dict) else {}
            key, secret = data.get("key_id"), data.get("secret_key")
        failed = self.faults.take_auth_failure(conn.path) is not None
        ok = not failed and isinstance(key, str) and self.config.accounts.get(key) == secret
        if ok and conn.key is None and self.conns.sessions(conn.path, key=key) >= 1:
            # One trade_updates connection per account (alpaca-py#740, from an Alpaca employee). What Alpaca
            # answers is undocumented; like market data's 406, the new session is refused and may retry auth on
            # the same socket once the old one is gone.
            log.info("trading_session_refused key=%s reason=another session holds the account", key)
            self.conns.session_refusals += 1
            ok = False
        if ok:
            conn.key = key
        status = "authorized" if ok else "unauthorized"
        await reply(conn, {"stream": "authorization", "data": {"status": status, "action": "authenticate"}})

    async def _listen(self, conn: Conn, msg: dict) -> None:
        if conn.key is None:
            await reply(conn, {"stream": "authorization", "data": {"status": "unauthorized", "action": "listen"}})
            return
        data = msg.get("data")
        streams = data.get("streams") if isinstance(data, dict) else None
        if not isinstance(streams, list):
            await reply(conn, TRADING_SYNTAX_ERROR)
            return
        conn.streams = {s for s in streams if s == "trade_updates"}
        await reply(conn, {"stream": "listening", "data": {"streams": sorted(conn.streams)}})
