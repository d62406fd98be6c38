"""The market-data session: greeting, auth (header or message), subscribe/unsubscribe, the auth deadline.

One ``DataStream`` serves every market-data connection of a simulator; ``serve`` runs one connection's session
until it closes. The rules (what a request means, which plan allows what) live in protocol.py; this module is
their order in time on a socket, and the faults queued for auth (faults.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from . import protocol
from .config import SimConfig
from .connection import Conn, receive, reply
from .faults import Faults
from .inspection import Connections
from .market import Market
from .wire import Out, frame


class DataStream:
    """Serves Alpaca's market-data WebSocket sessions against the simulator's plans, faults and market."""

    def __init__(self, config: SimConfig, conns: Connections, faults: Faults, market: Market,
                 push: Callable[[Conn, bytes, bool], None]) -> None:
        self.config = config
        self.conns = conns
        self.faults = faults
        self.market = market
        self.push = push

    async def serve(self, conn: Conn) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.auth_timeout
        await reply(conn, protocol.CONNECTED)
        headers = conn.ws.request.headers if conn.ws.request else {}
        if "APCA-API-KEY-ID" in headers and conn.kind == "options" and not conn.use_msgpack:
            await reply(conn, protocol.error(412))
        elif "APCA-API-KEY-ID" in headers:
            await self._auth(conn, headers.get("APCA-API-KEY-ID"), headers.get("APCA-API-SECRET-KEY"))
        while True:
            if conn.key is None:
                try:
                    msg = await self._recv(conn, max(0.0, deadline - loop.time()))
                except TimeoutError:
                    await reply(conn, protocol.error(404))
                    await conn.ws.close(protocol.AUTH_TIMEOUT_CLOSE, "auth timeout")
                    return
            else:
                msg = await self._recv(conn)
            await self._on_message(conn, msg)

    async def _recv(self, conn: Conn, timeout: float | None = None) -> Any:
        return await receive(conn, timeout, lambda: self.faults.read_delay, self.conns.record)

    async def _on_message(self, conn: Conn, msg: Any) -> None:
        action = msg.get("action") if isinstance(msg, dict) else None
        if conn.kind == "options" and not conn.use_msgpack:
            # Alpaca serves options in msgpack only; what it does with a JSON session beyond the documented 412 is
            # unknown: here every message gets 412 and nothing is authenticated.
            await reply(conn, protocol.error(412))
        elif action == "auth":
            key, secret = msg.get("key"), msg.get("secret")
            if not isinstance(key, str) or not isinstance(secret, str):
                await reply(conn, protocol.error(400))
            else:
                await self._auth(conn, key, secret)
        elif action in ("subscribe", "unsubscribe"):
            await self._subscribe(conn, msg, action == "subscribe")
        else:
            await reply(conn, protocol.error(400))

    async def _auth(self, conn: Conn, key: str | None, secret: str | None) -> None:
        if conn.key is not None:
            await reply(conn, protocol.error(403))
            return
        code = self.faults.take_auth_failure(conn.path)
        if code is None:
            code = self._auth_check(conn, key, secret)
        if code is not None:
            await reply(conn, protocol.error(code))
            return
        conn.key = key
        await reply(conn, protocol.AUTHENTICATED)

    def _auth_check(self, conn: Conn, key: str | None, secret: str | None) -> int | None:
        """The error code for this auth attempt (402 credentials, 409 plan, 406 session limit) or None."""
        if key is None or self.config.accounts.get(key) != secret:
            return 402
        plan = self.config.plan_for(key)
        if conn.feed not in plan.feeds:
            return 409
        if self.conns.sessions(conn.path, key=key) >= plan.max_connections:
            self.conns.session_refusals += 1
            return 406
        return None

    async def _subscribe(self, conn: Conn, msg: dict, subscribe: bool) -> None:
        if conn.key is None:
            await reply(conn, protocol.error(401))
            return
        try:
            request = protocol.parse_request(msg, self.faults.refused_symbols, kind=conn.kind)
            new = protocol.apply(conn.subs, request, subscribe)
            if subscribe:
                protocol.check_plan(new, self.config.plan_for(conn.key))
        except protocol.ProtocolError as exc:
            await reply(conn, protocol.error(exc.code))
            return
        books = sorted(s for s in request.get("orderbooks", ()) if s != "*") if subscribe else []
        # A full book first for each newly subscribed one: no change of it goes out before (a tick may run while
        # the reply is sent; a connection's messages are handled one at a time, so nothing else changes subs).
        conn.subs = {**new, "orderbooks": new["orderbooks"] - set(books)} if books else new
        await reply(conn, protocol.subscription_message(new))
        if books and not conn.frozen and not conn.muted:
            outs = [Out(*self.market.orderbook(s)) for s in books]
            self.push(conn, frame(outs, conn.use_msgpack), not conn.use_msgpack)
        conn.subs = new
