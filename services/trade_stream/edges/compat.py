"""Alpaca-compatible endpoints: unmodified Alpaca SDK clients connect here as if to Alpaca and share the one
upstream connection (spoken towards the client).

``/v2/{feed}`` (every stock feed), ``/v1beta3/crypto/{loc}``, ``/v1beta1/news`` and the option feeds
``/v1beta1/indicative`` and ``/v1beta1/opra`` (msgpack only, as on Alpaca) speak the market-data protocol:
 greeting, auth (message or headers, checked against relay-issued
credentials: any key with TRADE_STREAM_TOKEN as the secret; never forwarded), additive subscribe/unsubscribe
answered with that client's full set, Alpaca's error codes, JSON or msgpack as the client asks. Subscriptions go
through the same hub as browsers, to the upstream connection of the source the path names (upstream/sources.py),
opened on demand: a client of ``/v2/sip`` on a relay configured for ``iex`` is served when the account's plan has
SIP, and gets Alpaca's own 409 at auth when it has not. Data is Alpaca's own messages, re-encoded once per codec
per upstream batch.
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
from websockets.protocol import State

from trade_stream.core.accounts import LIMIT_CLOSE_CODE, LIMIT_CLOSE_REASON, Accounts
from trade_stream.core.fanout import Codec
from trade_stream.core.framing import binary_frame, text_frame
from trade_stream.core.hub import Key
from trade_stream.core.journal import Entry
from trade_stream.core.orders import Orders, alpaca_fields
from trade_stream.core.protocol import CRYPTO_SYMBOL_RE, OPTION_SYMBOL_RE, SYMBOL_RE, ClientError
from trade_stream.core.relay import Relay
from trade_stream.core.users import Credentials, Seat, User
from trade_stream.edges.transport import Client
from trade_stream.upstream.sources import PATHS, Source, Sources, SourceSpec

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
          404: "auth timeout", 405: "symbol limit exceeded", 406: "connection limit exceeded",
          409: "insufficient subscription",
          410: "invalid subscribe action for this feed",
          # Option streams only (Alpaca's "Real-time Option Data" page, Errors):
          412: "option messages are only available in MsgPack format",
          413: "star subscription is not allowed for option quotes"}

#: Alpaca's market-data stream paths (after the prefix). The relay serves those in upstream/sources.py's table
#: (stock feeds, crypto, news, options); the others (the old crypto versions) answer as Alpaca answers a feed the
#: account's plan lacks: the ``connected`` greeting, then 409 "insufficient subscription" at auth,
#: which alpaca-py and the Go SDK both treat as final.
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
    return conn.request is not None and "msgpack" in conn.request.headers.get("Content-Type", "").lower()


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


#: Channels of a crypto stream's ``subscription`` reply.
CRYPTO_REPLY_CHANNELS = ("trades", "quotes", "orderbooks", "bars", "updatedBars", "dailyBars")
#: ``subscription`` reply channels per kind of stream (stocks add corrections and cancelErrors, copies of trades).
REPLY_CHANNELS_OF = {"stocks": REPLY_CHANNELS, "crypto": CRYPTO_REPLY_CHANNELS, "news": ("news",),
                     "options": ("trades", "quotes")}


class MarketDataSession:
    def __init__(self, conn: ServerConnection, client: Client, relay: Relay[Sources], identity: Credentials,
                 feed: str, spec: SourceSpec | None, max_symbols_per_client: int) -> None:
        self.conn = conn
        self.client = client
        self.relay = relay
        self.identity = identity
        self.feed = feed
        self.spec = spec  # None: a stream this relay does not serve
        self.source: Source | None = None  # attached once authenticated
        self.prefix = ""
        self.crypto = spec is not None and spec.kind == "crypto"
        self.kind = spec.kind if spec is not None else "stocks"
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
        timer = asyncio.get_running_loop().call_later(AUTH_TIMEOUT, self._auth_timeout)
        try:
            if key is not None or secret is not None:
                await self.auth(key, secret)
            async for raw in self.conn:
                await self.handle(self.wire.decode(raw))
        finally:
            timer.cancel()
            if self.source is not None:
                self.relay.sources.detach(self.source)

    def _auth_timeout(self) -> None:
        if not self.authenticated:
            self.error(404)
            self._closing = asyncio.ensure_future(self.client.close(AUTH_TIMEOUT_CLOSE, "auth timeout"))

    async def auth(self, key: Any, secret: Any) -> None:
        if self.authenticated:
            self.error(403)
            return
        if not isinstance(key, str) or not isinstance(secret, str) or not key:
            self.error(402)
            return
        if not isinstance(self.identity.resolve(secret, self.client.ip), User):  # any user: market data is public
            self.error(402)
            return
        if self.kind == "options" and not self.wire.msgpack:  # Alpaca serves options in msgpack only
            log.info("alpaca_client_refused code=412 stream=%s reason=json ip=%s", self.feed, self.client.ip)
            self.error(412)
            return
        if self.spec is None:
            log.info("alpaca_client_refused code=409 stream=%s reason=not relayed ip=%s", self.feed, self.client.ip)
            self.error(409)
            return
        source = self.relay.sources.attach(self.spec.name)
        code = await source.ready(self.relay.cfg.timings.open_timeout)
        if code is not None:  # Alpaca refused the relay's own session: the client gets Alpaca's answer, at once.
            # 406 (another session holds the key) is not final: SDKs send auth again on this socket, as at Alpaca.
            self.relay.sources.detach(source)
            log.info("alpaca_client_refused code=%d stream=%s reason=%r ip=%s", code, self.feed,
                     source.upstream.status.error, self.client.ip)
            self.error(code)
            return
        if self.authenticated or self.conn.state is not State.OPEN:  # a second auth raced this one, or gone
            self.relay.sources.detach(source)
            return
        self.source, self.prefix = source, source.prefix
        self.authenticated = True
        self.wire.send([{"T": "success", "msg": "authenticated"}])

    async def handle(self, msg: Any) -> None:
        if not isinstance(msg, dict) or not isinstance(msg.get("action"), str):
            self.error(400)
            return
        action = msg["action"]
        if action == "auth":
            await self.auth(msg.get("key"), msg.get("secret"))
        elif action in ("subscribe", "unsubscribe"):
            if not self.authenticated:
                self.error(401)
                return
            keys = self.parse_keys(msg, self.spec.channels if self.spec else (), self.crypto,
                                   self.kind != "stocks")
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

    def parse_keys(self, msg: dict[str, Any], channels: tuple[str, ...] = DATA_CHANNELS,
                   crypto: bool = False, not_stocks: bool = False) -> list[Key] | int:
        """The hub keys of a subscribe/unsubscribe (channels prefixed for this session's source), or the error
        code.

        The Go SDK sends every channel key it knows (orderbooks, news and pricing too), unset ones as nil, so a
        null or empty list means "nothing here" on any key; only a non-empty channel the stream lacks is 410
        (statuses on crypto, orderbooks on stocks). A message naming no channel at all is 400."""
        keys: list[Key] = []
        if len(msg) < 2:
            return 400
        symbol_re = CRYPTO_SYMBOL_RE if crypto else OPTION_SYMBOL_RE if self.kind == "options" else SYMBOL_RE
        for name, value in msg.items():
            if name == "action" or value is None or value == []:
                continue
            if name in IMPLIED_CHANNELS and not (crypto or not_stocks):
                return 400  # implied by trades; cannot be subscribed directly
            if name not in channels:
                return 410
            if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
                return 400
            if self.kind == "options" and name == "quotes" and "*" in value:
                return 413  # "there are simply too many of them"
            for symbol in value:
                if symbol != "*" and not symbol_re.fullmatch(symbol):
                    return 400
                keys.append((self.prefix + name, symbol))
        return keys

    def subscribe(self, keys: list[Key]) -> None:
        held = {s for _, s in self.relay.hub.held_by(self.client)}
        if len(held | {s for _, s in keys}) > self.max_symbols:
            self.error(405)
            return

        def reply(err: ClientError | None) -> None:
            if err is None:
                self.send_subscription()
                self.send_books([s for ch, s in keys if ch == self.prefix + "orderbooks"])
            elif err.code == "symbol_limit":
                self.error(405)
            else:
                self.error(400, err.message)

        self.relay.subscribe(self.client, keys, reply)

    def send_subscription(self) -> None:
        held: dict[str, list[str]] = {ch: [] for ch in REPLY_CHANNELS_OF[self.kind]}
        n = len(self.prefix)
        for channel, symbol in self.relay.hub.held_by(self.client):
            held[channel[n:]].append(symbol)
        if self.kind == "stocks":
            held["corrections"] = list(held["trades"])
            held["cancelErrors"] = list(held["trades"])
        self.wire.send([{"T": "subscription", **{ch: sorted(v) for ch, v in held.items()}}])

    def send_books(self, symbols: list[str]) -> None:
        """A newly subscribed order book that the relay already keeps: Alpaca sends a full book (``r: true``)
        after a subscribe, so this client gets the relay's, in its codec. Otherwise Alpaca's own comes."""
        if self.source is None:
            return
        for symbol in symbols:
            book = self.source.books.get(symbol)
            if book is not None:
                body = self.client.codec.body(book.full(symbol))
                if body is not None:
                    self.client.send(self.client.codec.frames([body]), 1)


class TradingSession:
    """The trading stream towards the client: auth (both forms), listen, trade_updates from the journal.

    The key id picks the account (its name in the accounts file; any key when the user sees exactly one), the
    secret is the user's token: the session then gets that account's events only."""

    def __init__(self, conn: ServerConnection, client: Client, accounts: Accounts) -> None:
        self.conn = conn
        self.client = client
        self.accounts = accounts
        self.orders: Orders | None = None  # the account picked at auth
        self.user: User | None = None
        self.wire = Wire(client, wants_msgpack(conn), binary_json=True)
        client.codec = ALPACA_TRADING
        self.authenticated = False
        self.listening = False
        self.displaced = False  # a newer connection of its user took its place: it is closing
        self._expiry: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        timer = asyncio.get_running_loop().call_later(AUTH_TIMEOUT, self._auth_timeout)
        try:
            async for raw in self.conn:
                self.handle(self.wire.decode(raw))
        finally:
            timer.cancel()
            if self._expiry is not None:
                self._expiry.cancel()
            if self.orders is not None:
                self.orders.listeners.remove(self.on_entry)
            if self.user is not None:
                self.accounts.identity.sessions.release(self.user.name, self)

    def _login(self, key: Any, secret: Any) -> bool:
        if self.displaced:
            return False
        if self.authenticated:
            return True
        if not isinstance(secret, str):
            return False
        user = self.accounts.identity.resolve(secret, self.client.ip)
        if not isinstance(user, User):
            return False
        names = self.accounts.visible(user)
        name = key if key in names else (names[0] if len(names) == 1 and key not in self.accounts.orders else None)
        if name is None:
            log.warning("alpaca_trading_refused user=%s key=%r reason=not one of the user's accounts", user.name,
                        str(key)[:64])
            return False
        seat = Seat("alpaca-trading", self.client.ip, self._displace)
        if self.accounts.identity.sessions.admit(user.name, self, seat) is not None:
            return False
        self.user, self.orders = user, self.accounts.orders[name]
        self.orders.listeners.append(self.on_entry)
        if user.expires_at is not None:
            self._expiry = asyncio.get_running_loop().call_later(max(0.0, user.expires_at - time.time()),
                                                                 self._expired)
        return True

    def _expired(self) -> None:
        """A JWT's exp passed: Alpaca's error shape, then the connection closes (an SDK reconnects and logs in
        again, with whatever fresh token it is given), at once rather than at the next event."""
        self.listening = False
        log.info("token_expired kind=alpaca_trading user=%s ip=%s", self.user.name if self.user else "?",
                 self.client.ip)
        self.error("token expired: authenticate again with a fresh token")
        self._closing = asyncio.ensure_future(self.client.close(AUTH_TIMEOUT_CLOSE, "token expired"))

    def _displace(self, message: str) -> None:
        """A newer connection of this user took its place (its slot is freed already): no more events, Alpaca's
        error shape with the reason, then the connection closes in the background; an auth or listen sent
        meanwhile is refused."""
        self.listening = False
        self.displaced = True
        self.error(f"connection limit: {message}")
        if self.accounts.hang_up is not None:
            self.accounts.hang_up(self.client, LIMIT_CLOSE_CODE, LIMIT_CLOSE_REASON)

    def _auth_timeout(self) -> None:
        """Like the market-data stream: no successful auth within AUTH_TIMEOUT seconds closes the connection."""
        if not self.authenticated:
            self._closing = asyncio.ensure_future(self.client.close(AUTH_TIMEOUT_CLOSE, "auth timeout"))

    def reply(self, stream: str, data: dict[str, Any]) -> None:
        self.wire.send({"stream": stream, "data": data})

    def error(self, message: str) -> None:
        """Alpaca's trading-stream error shape, ``{"action":"error",…}`` (the JS SDK v4
        reads errors by ``action``)."""
        self.wire.send({"action": "error", "data": {"error_message": message}})

    def handle(self, msg: Any) -> None:
        if not isinstance(msg, dict):
            self.error("invalid syntax")
            return
        action, raw_data = msg.get("action"), msg.get("data")
        data: dict[str, Any] = raw_data if isinstance(raw_data, dict) else {}
        if action in ("auth", "authenticate"):
            secret = msg.get("secret") if action == "auth" else data.get("secret_key")
            key = msg.get("key") if action == "auth" else data.get("key_id")
            ok = self._login(key, secret)
            self.authenticated = self.authenticated or ok
            self.reply("authorization", {"status": "authorized" if ok else "unauthorized",
                                         "action": "authenticate"})
        elif action == "listen":
            if not self.authenticated or self.displaced:
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
        user = self.user
        if self.listening and user is not None and user.expires_at is not None and user.expires_at <= time.time():
            self.listening = False
            self.error("token expired: authenticate again with a fresh token")
            return
        if self.listening:
            self.reply("trade_updates", alpaca_fields(entry.data))


class AlpacaEndpoints:
    """Registers the compatible paths on the WebSocket server."""

    def __init__(self, relay: Relay[Sources], accounts: Accounts, prefix: str, max_symbols_per_client: int) -> None:
        self.relay = relay
        self.accounts = accounts
        self.prefix = prefix.rstrip("/")
        self.max_symbols = max_symbols_per_client

    def routes(self) -> dict[str, Any]:
        """Path prefix → session, one row per Alpaca stream path (see MARKET_DATA_PATHS)."""
        table: dict[str, Any] = {f"{self.prefix}{path}": self.market_data for path in MARKET_DATA_PATHS}
        table[f"{self.prefix}{TRADING_PATH}"] = self.trading
        return table

    async def market_data(self, conn: ServerConnection, client: Client) -> None:
        path = conn.request.path.split("?", 1)[0] if conn.request else ""
        # The stream the client asked for, as a path ("v2/iex", "v1beta3/crypto/us"), and its source, if relayed.
        feed = path[len(self.prefix):].strip("/")
        started = time.monotonic()
        log.info("alpaca_client_connected kind=market_data feed=%s ip=%s", feed, client.ip)
        try:
            await MarketDataSession(conn, client, self.relay, self.accounts.identity, feed, PATHS.get(f"/{feed}"),
                                    self.max_symbols).run()
        finally:
            log.info("alpaca_client_closed kind=market_data ip=%s seconds=%.1f", client.ip,
                     time.monotonic() - started)

    async def trading(self, conn: ServerConnection, client: Client) -> None:
        log.info("alpaca_client_connected kind=trading ip=%s", client.ip)
        await TradingSession(conn, client, self.accounts).run()
