"""Alpaca-compatible endpoints: unmodified Alpaca SDK clients connect here as if to Alpaca and share the one
upstream connection (protocol reference §1-2, spoken towards the client).

``/v2/{feed}`` speaks the market-data protocol: greeting, auth (message or headers, checked against relay-issued
credentials: any key with TRADE_STREAM_TOKEN as the secret; never forwarded), additive subscribe/unsubscribe
answered with that client's full set, Alpaca's error codes, JSON or msgpack as the client asks. Subscriptions go
through the same hub as browsers. Data is Alpaca's own messages, re-encoded once per codec per upstream batch.
``/stream`` speaks the trading protocol and relays ``trade_updates`` from the order journal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

import msgpack
import orjson
from websockets.asyncio.server import ServerConnection

from trade_stream.fanout import Client, Codec
from trade_stream.framing import binary_frame, text_frame
from trade_stream.hub import Key
from trade_stream.journal import Entry
from trade_stream.orders import EVENT_FIELDS, Orders
from trade_stream.protocol import SYMBOL_RE, ClientError
from trade_stream.relay import Relay

log = logging.getLogger("trade_stream.compat")

DATA_CHANNELS = ("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds", "imbalances")
REPLY_CHANNELS = ("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds", "corrections",
                  "cancelErrors", "imbalances")
AUTH_TIMEOUT = 10.0
ERRORS = {400: "invalid syntax", 401: "not authenticated", 402: "auth failed", 403: "already authenticated",
          404: "auth timeout", 405: "symbol limit exceeded", 409: "insufficient subscription",
          410: "invalid subscribe action for this feed"}


def to_timestamp(value: Any) -> Any:
    """RFC-3339 (any fraction length, Z) → msgpack Timestamp, as Alpaca sends ``t`` in msgpack mode."""
    if not isinstance(value, str) or not value.endswith("Z"):
        return value
    whole, _, frac = value[:-1].partition(".")
    try:
        seconds = int(datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp())
    except ValueError:
        return value
    return msgpack.Timestamp(seconds, int((frac + "000000000")[:9]) if frac else 0)


def msgpack_array(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 65536:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


class AlpacaJsonCodec(Codec):
    def body(self, m: dict[str, Any]) -> bytes:
        return orjson.dumps(m)

    def frames(self, bodies: list[bytes]) -> bytes:
        return text_frame(b"[" + b",".join(bodies) + b"]")


class AlpacaMsgpackCodec(Codec):
    def body(self, m: dict[str, Any]) -> bytes:
        if "t" in m:
            m = {**m, "t": to_timestamp(m["t"])}
        return msgpack.packb(m)

    def frames(self, bodies: list[bytes]) -> bytes:
        return binary_frame(msgpack_array(len(bodies)) + b"".join(bodies))


ALPACA_JSON = AlpacaJsonCodec()
ALPACA_MSGPACK = AlpacaMsgpackCodec()


def wants_msgpack(conn: ServerConnection) -> bool:
    return bool(conn.request) and "msgpack" in conn.request.headers.get("Content-Type", "").lower()


class Wire:
    """Encodes this client's control messages the way it asked: JSON text or msgpack binary (or, on the trading
    stream, JSON in binary frames as Alpaca does)."""

    def __init__(self, client: Client, use_msgpack: bool, binary_json: bool = False) -> None:
        self.client = client
        self.msgpack = use_msgpack
        self.binary_json = binary_json

    def send(self, msg: Any) -> None:
        if self.msgpack:
            self.client.send(binary_frame(msgpack.packb(msg)), 0)
        elif self.binary_json:
            self.client.send(binary_frame(orjson.dumps(msg)), 0)
        else:
            self.client.send(text_frame(orjson.dumps(msg)), 0)

    def decode(self, raw: str | bytes) -> Any:
        if isinstance(raw, bytes) and self.msgpack:
            try:
                return msgpack.unpackb(raw, timestamp=3)
            except Exception:
                pass
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None


class MarketDataSession:
    def __init__(self, conn: ServerConnection, client: Client, relay: Relay, orders: Orders, feed: str,
                 served_feed: str, max_symbols_per_client: int) -> None:
        self.conn = conn
        self.client = client
        self.relay = relay
        self.orders = orders
        self.feed = feed
        self.served_feed = served_feed
        self.max_symbols = max_symbols_per_client
        self.authenticated = False
        self.wire = Wire(client, wants_msgpack(conn))
        client.codec = ALPACA_MSGPACK if self.wire.msgpack else ALPACA_JSON

    def error(self, code: int, msg: str | None = None) -> None:
        self.wire.send([{"T": "error", "code": code, "msg": msg or ERRORS[code]}])

    async def run(self) -> None:
        self.wire.send([{"T": "success", "msg": "connected"}])
        headers = self.conn.request.headers if self.conn.request else {}
        key, secret = headers.get("APCA-API-KEY-ID"), headers.get("APCA-API-SECRET-KEY")
        if key is not None or secret is not None:
            self.auth(key, secret)
        timer = asyncio.get_running_loop().call_later(AUTH_TIMEOUT, self._auth_timeout)
        try:
            async for raw in self.conn:
                self.handle(self.wire.decode(raw))
        finally:
            timer.cancel()

    def _auth_timeout(self) -> None:
        if not self.authenticated:
            self.error(404)
            self._closing = asyncio.ensure_future(self.conn.close(1008, "auth timeout"))

    def auth(self, key: Any, secret: Any) -> None:
        if self.authenticated:
            self.error(403)
            return
        if not isinstance(key, str) or not isinstance(secret, str) or not key:
            self.error(402)
            return
        if self.orders.check_token(secret, self.client.ip) is not None:
            self.error(402)
            return
        if self.feed != self.served_feed:
            self.error(409, f"insufficient subscription (this relay serves {self.served_feed})")
            return
        self.authenticated = True
        self.wire.send([{"T": "success", "msg": "authenticated"}])

    def handle(self, msg: Any) -> None:
        if not isinstance(msg, dict) or not isinstance(msg.get("action"), str):
            self.error(400)
            return
        action = msg["action"]
        if action == "auth":
            self.auth(msg.get("key"), msg.get("secret"))
        elif action in ("subscribe", "unsubscribe"):
            if not self.authenticated:
                self.error(401)
                return
            keys = self.parse_keys(msg)
            if isinstance(keys, int):
                self.error(keys)
            elif action == "subscribe":
                self.subscribe(keys)
            else:
                self.relay.unsubscribe(self.client, keys)
                self.send_subscription()
        else:
            self.error(400)

    def parse_keys(self, msg: dict[str, Any]) -> list[Key] | int:
        keys: list[Key] = []
        for name, value in msg.items():
            if name == "action":
                continue
            if name in ("corrections", "cancelErrors"):
                return 400  # implied by trades; cannot be subscribed directly
            if name not in DATA_CHANNELS:
                return 410
            if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
                return 400
            for symbol in value:
                if symbol != "*" and not SYMBOL_RE.fullmatch(symbol):
                    return 400
                keys.append((name, symbol))
        return keys

    def subscribe(self, keys: list[Key]) -> None:
        held = {s for _, s in self.relay.hub.held_by(self.client)}
        if len(held | {s for _, s in keys}) > self.max_symbols:
            self.error(405)
            return

        def reply(err: ClientError | None) -> None:
            if err is None:
                self.send_subscription()
            elif err.code == "symbol_limit":
                self.error(405)
            else:
                self.error(400, err.message)

        self.relay.subscribe(self.client, keys, reply)

    def send_subscription(self) -> None:
        held: dict[str, list[str]] = {ch: [] for ch in REPLY_CHANNELS}
        for channel, symbol in self.relay.hub.held_by(self.client):
            held[channel].append(symbol)
        held["corrections"] = list(held["trades"])
        held["cancelErrors"] = list(held["trades"])
        self.wire.send([{"T": "subscription", **{ch: sorted(v) for ch, v in held.items()}}])


class TradingSession:
    """The trading stream towards the client: auth (both forms), listen, trade_updates from the journal."""

    def __init__(self, conn: ServerConnection, client: Client, orders: Orders) -> None:
        self.conn = conn
        self.client = client
        self.orders = orders
        self.wire = Wire(client, wants_msgpack(conn), binary_json=True)
        self.authenticated = False
        self.listening = False

    async def run(self) -> None:
        self.orders.listeners.append(self.on_entry)
        try:
            async for raw in self.conn:
                self.handle(self.wire.decode(raw))
        finally:
            self.orders.listeners.remove(self.on_entry)

    def reply(self, stream: str, data: dict[str, Any]) -> None:
        self.wire.send({"stream": stream, "data": data})

    def handle(self, msg: Any) -> None:
        if not isinstance(msg, dict):
            self.reply("error", {"error_message": "invalid syntax"})
            return
        action, data = msg.get("action"), msg.get("data") if isinstance(msg.get("data"), dict) else {}
        if action in ("auth", "authenticate"):
            secret = msg.get("secret") if action == "auth" else data.get("secret_key")
            ok = isinstance(secret, str) and self.orders.check_token(secret, self.client.ip) is None
            self.authenticated = self.authenticated or ok
            self.reply("authorization", {"status": "authorized" if ok else "unauthorized",
                                         "action": "authenticate"})
        elif action == "listen":
            if not self.authenticated:
                self.reply("authorization", {"status": "unauthorized", "action": "listen"})
                return
            streams = data.get("streams")
            if not isinstance(streams, list):
                self.reply("error", {"error_message": "invalid syntax"})
                return
            self.listening = "trade_updates" in streams
            self.reply("listening", {"streams": ["trade_updates"] if self.listening else []})
        else:
            self.reply("error", {"error_message": "invalid syntax"})

    def on_entry(self, entry: Entry) -> None:
        if self.listening:
            self.reply("trade_updates", {k: entry.data[k] for k in EVENT_FIELDS if k in entry.data})


class AlpacaEndpoints:
    """Registers the compatible paths on the WebSocket server."""

    def __init__(self, relay: Relay, orders: Orders, served_feed: str, prefix: str,
                 max_symbols_per_client: int) -> None:
        self.relay = relay
        self.orders = orders
        self.served_feed = served_feed
        self.prefix = prefix.rstrip("/")
        self.max_symbols = max_symbols_per_client

    def routes(self) -> dict[str, Any]:
        return {f"{self.prefix}/v2/": self.market_data, f"{self.prefix}/stream": self.trading}

    async def market_data(self, conn: ServerConnection, client: Client) -> None:
        path = conn.request.path.split("?", 1)[0] if conn.request else ""
        feed = path[len(self.prefix) + len("/v2/"):].strip("/")
        started = time.monotonic()
        log.info("alpaca_client_connected kind=market_data feed=%s ip=%s", feed, client.ip)
        try:
            await MarketDataSession(conn, client, self.relay, self.orders, feed, self.served_feed,
                                    self.max_symbols).run()
        finally:
            log.info("alpaca_client_closed kind=market_data ip=%s seconds=%.1f", client.ip,
                     time.monotonic() - started)

    async def trading(self, conn: ServerConnection, client: Client) -> None:
        log.info("alpaca_client_connected kind=trading ip=%s", client.ip)
        await TradingSession(conn, client, self.orders).run()
