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
import re
import time
from datetime import datetime
from typing import Any

import msgpack
import orjson
from websockets.asyncio.server import ServerConnection

from trade_stream.core.fanout import Client, Codec
from trade_stream.core.framing import binary_frame, text_frame
from trade_stream.core.hub import Key
from trade_stream.core.journal import Entry
from trade_stream.core.orders import EVENT_FIELDS, Orders
from trade_stream.core.protocol import SYMBOL_RE, ClientError
from trade_stream.core.relay import Relay

log = logging.getLogger("trade_stream.edges.compat")

DATA_CHANNELS = ("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds", "imbalances")
IMPLIED_CHANNELS = ("corrections", "cancelErrors")  # follow trades; cannot be subscribed directly
REPLY_CHANNELS = ("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds", "corrections",
                  "cancelErrors", "imbalances")
AUTH_TIMEOUT = 10.0
#: Close code after the 404 "auth timeout" frame, the same on both streams and in the simulator. Alpaca documents
#: the frame, not the close code; 1008 (policy violation) is what this project uses everywhere.
AUTH_TIMEOUT_CLOSE = 1008
#: Alpaca's error texts, verbatim: the Go SDK compares code *and* text (marketdata/stream/errors.go).
ERRORS = {400: "invalid syntax", 401: "not authenticated", 402: "auth failed", 403: "already authenticated",
          404: "auth timeout", 405: "symbol limit exceeded", 409: "insufficient subscription",
          410: "invalid subscribe action for this feed"}

#: Alpaca's market-data stream paths (after the prefix). The relay serves one of them, ``/v2/{its feed}``; every
#: other one answers as Alpaca answers a feed the account's plan lacks: the ``connected`` greeting, then 409
#: "insufficient subscription" at auth (protocol reference §1.1), which alpaca-py and the Go SDK both treat as
#: final. Relaying crypto, news or options later means routing its path to a session of its own here.
MARKET_DATA_PATHS = ("/v2/", "/v1beta1/boats", "/v1beta1/overnight", "/v1beta1/news", "/v1beta1/indicative",
                     "/v1beta1/opra", "/v1beta3/crypto/", "/v1beta2/crypto", "/v1beta1/crypto")
TRADING_PATH = "/stream"

#: Fields Alpaca sends as msgpack Timestamps (ext -1): ``t`` everywhere, the stocks ``r`` receive time (Go SDK
#: decodes it with DecodeTime), news ``created_at``/``updated_at`` (alpaca-py calls ``.to_datetime()`` on them),
#: and perp pricing ``ft``.
TIME_FIELDS = frozenset(("t", "r", "created_at", "updated_at", "ft"))
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")


def to_timestamp(value: Any) -> Any:
    """RFC-3339 (any fraction length, Z or an offset) → msgpack Timestamp, as Alpaca sends times in msgpack mode.
    Anything else is returned unchanged."""
    if not isinstance(value, str):
        return value
    match = _RFC3339.fullmatch(value)
    if match is None:
        return value
    whole, frac, zone = match.groups()
    try:
        seconds = int(datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone)).timestamp())
    except ValueError:
        return value
    return msgpack.Timestamp(seconds, int((frac or "0").ljust(9, "0")))


def msgpack_array(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 65536:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def alpaca_control(msg: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The relay's own browser-protocol message as an Alpaca market-data client should see it, or None.

    Alpaca says nothing about its own upstream, so ``status`` is dropped: data pauses, and the relay resubscribes
    what the client holds once the upstream is back. A refusal that cost this client symbols (Alpaca's 405 on a
    request another client made) is the 405 error Alpaca would have sent; other refusals are only logged."""
    if msg.get("type") == "error" and msg.get("code") == "symbol_limit":
        return [{"T": "error", "code": 405, "msg": ERRORS[405]}]
    return None


class AlpacaJsonCodec(Codec):
    def body(self, m: dict[str, Any]) -> bytes:
        return orjson.dumps(m)

    def frames(self, bodies: list[bytes]) -> bytes:
        return text_frame(b"[" + b",".join(bodies) + b"]")

    def control(self, msg: dict[str, Any]) -> bytes | None:
        out = alpaca_control(msg)
        return text_frame(orjson.dumps(out)) if out is not None else None


class AlpacaMsgpackCodec(Codec):
    def body(self, m: dict[str, Any]) -> bytes:
        if not TIME_FIELDS.isdisjoint(m):
            m = {k: to_timestamp(v) if k in TIME_FIELDS else v for k, v in m.items()}
        return msgpack.packb(m)

    def frames(self, bodies: list[bytes]) -> bytes:
        return binary_frame(msgpack_array(len(bodies)) + b"".join(bodies))

    def control(self, msg: dict[str, Any]) -> bytes | None:
        out = alpaca_control(msg)
        return binary_frame(msgpack.packb(out)) if out is not None else None


class AlpacaTradingCodec(Codec):
    """Trading-stream clients hold no market data and Alpaca's trading stream has no status messages."""

    def body(self, m: dict[str, Any]) -> None:
        return None

    def frames(self, bodies: list[bytes]) -> bytes:
        return b""

    def control(self, msg: dict[str, Any]) -> None:
        return None


ALPACA_JSON = AlpacaJsonCodec()
ALPACA_MSGPACK = AlpacaMsgpackCodec()
ALPACA_TRADING = AlpacaTradingCodec()


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
        """The client's message, or None when it cannot be read. A msgpack session speaks msgpack only, as the
        SDKs do (alpaca-py ``msgpack.packb``, Go ``msgpack.Marshal``): a JSON text frame there is invalid syntax."""
        if self.msgpack:
            if not isinstance(raw, bytes):
                return None
            try:
                return msgpack.unpackb(raw, timestamp=3)
            except Exception:
                return None
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
            self._closing = asyncio.ensure_future(self.conn.close(AUTH_TIMEOUT_CLOSE, "auth timeout"))

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
            log.info("alpaca_client_refused code=409 stream=%s served=%s ip=%s", self.feed, self.served_feed,
                     self.client.ip)
            self.error(409)
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
            elif not keys:
                self.send_subscription()  # only null or empty lists: nothing changes, the set is confirmed
            elif action == "subscribe":
                self.subscribe(keys)
            else:
                self.relay.unsubscribe(self.client, keys)
                self.send_subscription()
        else:
            self.error(400)

    @staticmethod
    def parse_keys(msg: dict[str, Any]) -> list[Key] | int:
        """The (channel, symbol) keys of a subscribe/unsubscribe, or the error code.

        The Go SDK sends every channel key it knows (orderbooks, news and pricing too), unset ones as nil, so a
        null or empty list means "nothing here" on any key; only a non-empty unknown channel is 410. A message
        naming no channel at all is 400."""
        keys: list[Key] = []
        if len(msg) < 2:
            return 400
        for name, value in msg.items():
            if name == "action" or value is None or value == []:
                continue
            if name in IMPLIED_CHANNELS:
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
        client.codec = ALPACA_TRADING
        self.authenticated = False
        self.listening = False

    async def run(self) -> None:
        self.orders.listeners.append(self.on_entry)
        timer = asyncio.get_running_loop().call_later(AUTH_TIMEOUT, self._auth_timeout)
        try:
            async for raw in self.conn:
                self.handle(self.wire.decode(raw))
        finally:
            timer.cancel()
            self.orders.listeners.remove(self.on_entry)

    def _auth_timeout(self) -> None:
        """Like the market-data stream: no successful auth within AUTH_TIMEOUT seconds closes the connection."""
        if not self.authenticated:
            self._closing = asyncio.ensure_future(self.conn.close(AUTH_TIMEOUT_CLOSE, "auth timeout"))

    def reply(self, stream: str, data: dict[str, Any]) -> None:
        self.wire.send({"stream": stream, "data": data})

    def error(self, message: str) -> None:
        """Alpaca's trading-stream error shape, ``{"action":"error",…}`` (protocol reference §2; the JS SDK v4
        reads errors by ``action``)."""
        self.wire.send({"action": "error", "data": {"error_message": message}})

    def handle(self, msg: Any) -> None:
        if not isinstance(msg, dict):
            self.error("invalid syntax")
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
                self.error("invalid syntax")
                return
            self.listening = "trade_updates" in streams
            self.reply("listening", {"streams": ["trade_updates"] if self.listening else []})
        else:
            self.error("invalid syntax")

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
        """Path prefix → session, one row per Alpaca stream path (see MARKET_DATA_PATHS)."""
        table: dict[str, Any] = {f"{self.prefix}{path}": self.market_data for path in MARKET_DATA_PATHS}
        table[f"{self.prefix}{TRADING_PATH}"] = self.trading
        return table

    async def market_data(self, conn: ServerConnection, client: Client) -> None:
        path = conn.request.path.split("?", 1)[0] if conn.request else ""
        # The stream the client asked for, as a path ("v2/iex", "v1beta3/crypto/us"): only v2/{served} is served.
        feed = path[len(self.prefix):].strip("/")
        started = time.monotonic()
        log.info("alpaca_client_connected kind=market_data feed=%s ip=%s", feed, client.ip)
        try:
            await MarketDataSession(conn, client, self.relay, self.orders, feed, f"v2/{self.served_feed}",
                                    self.max_symbols).run()
        finally:
            log.info("alpaca_client_closed kind=market_data ip=%s seconds=%.1f", client.ip,
                     time.monotonic() - started)

    async def trading(self, conn: ServerConnection, client: Client) -> None:
        log.info("alpaca_client_connected kind=trading ip=%s", client.ip)
        await TradingSession(conn, client, self.orders).run()
