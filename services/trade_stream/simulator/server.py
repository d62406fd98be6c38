"""The Simulator: one websockets server speaking Alpaca's market-data, trading-stream and REST protocols.

Everything runs on the caller's event loop; the control API is plain synchronous methods (sending uses
``broadcast()``, which never blocks), so a test can drive the simulator between awaits without races.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from . import calendar, protocol, rest
from .clock import Clock
from .config import CRYPTO_FEEDS, DATA_PATHS, TRADING_PATH, Plan, SimConfig, feed_kind
from .market import OPTION_SYMBOL_RE, Market, Stamped, format_ts
from .orders import Event, OrderBook
from .protocol import Subs
from .wire import Out, decode_client, encode_data, encode_trading, frame

log = logging.getLogger("trade_stream.simulator")

#: Alpaca's trading-stream error shape (protocol reference §2): keyed by ``action``, unlike every other message.
TRADING_SYNTAX_ERROR = {"action": "error", "data": {"error_message": "invalid syntax"}}

_KEEP: Any = object()
#: The share of the regular session's trade rate a stock feed keeps before the open and after the close.
EXTENDED_SHARE = 0.1


class Received(NamedTuple):
    """One message a client sent, as decoded by the server."""

    conn_id: int
    path: str
    message: Any
    time: float


@dataclass(eq=False)
class Conn:
    """Server-side state of one WebSocket connection."""

    id: int
    ws: ServerConnection
    path: str
    feed: str | None
    use_msgpack: bool
    key: str | None = None
    subs: Subs = field(default_factory=protocol.empty_subs)
    streams: set[str] = field(default_factory=set)
    muted: bool = False
    frozen: bool = False  # nothing at all is sent (control replies neither); pings are still answered
    #: (channel, symbol) pairs of statuses/lulds this connection has been sent the current state of.
    announced: set[tuple[str, str]] = field(default_factory=set)

    @property
    def is_data(self) -> bool:
        return self.feed is not None

    @property
    def crypto(self) -> bool:
        return self.feed in CRYPTO_FEEDS

    @property
    def kind(self) -> str:
        return feed_kind(self.feed)


class Simulator:
    """An in-process Alpaca: market-data streams, the trading stream, REST, and a control API for tests."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        #: The simulated time (clock.py); SimConfig.clock pins or shifts it, else it is the wall clock.
        self.clock = self.config.clock or Clock()
        self.market = Market(self.config.seed, self.config.start_prices, self.config.intraday_history,
                             self.clock, self.config.universe)
        # The trading side keeps the wall clock, as Alpaca's does: clients reconcile orders by their own clock.
        self.book = OrderBook(list(self.config.accounts), self.market.price, self.config.seed,
                              self.config.starting_cash)
        self.rate_per_symbol = self.config.rate_per_symbol
        self.received: list[Received] = []
        #: Paths (with query) of the Alpaca REST requests served, newest last: which endpoint a client used.
        self.rest_requests: deque[str] = deque(maxlen=1000)
        self.connection_count_total = 0
        self.session_refusals = 0  # 406s and refused trading logins: a second session for the same account
        self._conns: dict[int, Conn] = {}
        self._next_id = 0
        self._fail_auth: list[tuple[int, str | None]] = []
        self._reject: list[int] = []
        self._read_delay = 0.0
        self._halted_until: dict[str, float] = {}  # symbol -> loop time its trading pause ends
        self._luld_due: dict[str, float] = {}  # symbol -> loop time of its next LULD band message
        self.refused_symbols: set[str] = set()
        self._server: Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.port = self.config.port

    # -- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> Simulator:
        cfg = self.config
        self._server = await serve(
            self._handle, cfg.host, cfg.port, process_request=self._process_request,
            ping_interval=cfg.ping_interval, ping_timeout=cfg.ping_timeout, server_header=None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ticker = asyncio.create_task(self._run_ticks(), name="alpaca-sim-ticker")
        return self

    async def stop(self) -> None:
        """Close every connection (close frame, then abort after 1 s) and the listening socket."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._server is None:
            return
        self._server.close()
        try:
            await asyncio.wait_for(self._server.wait_closed(), 1.0)
        except TimeoutError:
            self.cut_all()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        self._server = None

    async def __aenter__(self) -> Simulator:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def _public_host(self) -> str:
        host = self.config.host
        return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host

    @property
    def http_url(self) -> str:
        return f"http://{self._public_host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self._public_host}:{self.port}"

    # -- HTTP ------------------------------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        if url.path.startswith("/_sim/"):
            return rest.respond(*rest.control(self, url.path[len("/_sim/"):], query))
        if url.path in DATA_PATHS or url.path == TRADING_PATH:
            if self._reject:
                status = self._reject.pop(0)
                return rest.respond(status, {"code": status, "message": "simulated handshake rejection"})
            return None
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return rest.respond(*rest.not_found(f"no stream at {url.path}"))
        if request.method not in ("GET", "HEAD"):
            return rest.respond(405, {"code": 40510000, "message": "method not allowed: the simulator "
                                      "serves GET only; create orders with /_sim/order"})
        self.rest_requests.append(request.path)
        return rest.respond(*rest.route(self, url.path, query, request.headers))

    # -- WebSocket handlers ----------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        path = urlsplit(ws.request.path).path if ws.request else ""
        content_type = ws.request.headers.get("Content-Type", "") if ws.request else ""
        self._next_id += 1
        conn = Conn(self._next_id, ws, path, DATA_PATHS.get(path), content_type.startswith("application/msgpack"))
        if conn.kind != "stocks":
            conn.subs = protocol.empty_subs(kind=conn.kind)
        self._conns[conn.id] = conn
        self.connection_count_total += 1
        try:
            if conn.is_data:
                await self._serve_data(conn)
            else:
                await self._serve_trading(conn)
        except ConnectionClosed:
            pass
        finally:
            self._conns.pop(conn.id, None)

    async def _recv(self, conn: Conn, timeout: float | None = None) -> Any:
        """Receive, honour the simulated read delay, decode and record one client message.

        Returns the decoded message, or ``ValueError`` (as a value) for undecodable input.
        """
        data = await asyncio.wait_for(conn.ws.recv(), timeout) if timeout is not None else await conn.ws.recv()
        if self._read_delay:
            await asyncio.sleep(self._read_delay)
        try:
            msg: Any = decode_client(data, conn.use_msgpack)
        except ValueError as exc:
            self.received.append(Received(conn.id, conn.path, data, time.monotonic()))
            return exc
        self.received.append(Received(conn.id, conn.path, msg, time.monotonic()))
        return msg

    async def _reply(self, conn: Conn, *messages: dict) -> None:
        if conn.frozen:
            return
        if conn.is_data:
            await conn.ws.send(encode_data(list(messages), conn.use_msgpack), text=not conn.use_msgpack)
        else:
            for message in messages:
                await conn.ws.send(encode_trading(message, conn.use_msgpack), text=False)

    # market data

    async def _serve_data(self, conn: Conn) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.auth_timeout
        await self._reply(conn, protocol.CONNECTED)
        headers = conn.ws.request.headers if conn.ws.request else {}
        if "APCA-API-KEY-ID" in headers and conn.kind == "options" and not conn.use_msgpack:
            await self._reply(conn, protocol.error(412))
        elif "APCA-API-KEY-ID" in headers:
            await self._data_auth(conn, headers.get("APCA-API-KEY-ID"), headers.get("APCA-API-SECRET-KEY"))
        while True:
            if conn.key is None:
                try:
                    msg = await self._recv(conn, max(0.0, deadline - loop.time()))
                except TimeoutError:
                    await self._reply(conn, protocol.error(404))
                    await conn.ws.close(protocol.AUTH_TIMEOUT_CLOSE, "auth timeout")
                    return
            else:
                msg = await self._recv(conn)
            await self._on_data_message(conn, msg)

    async def _on_data_message(self, conn: Conn, msg: Any) -> None:
        action = msg.get("action") if isinstance(msg, dict) else None
        if conn.kind == "options" and not conn.use_msgpack:
            # Alpaca serves options in msgpack only; what it does with a JSON session beyond the documented 412 is
            # unknown: here every message gets 412 and nothing is authenticated.
            await self._reply(conn, protocol.error(412))
        elif action == "auth":
            key, secret = msg.get("key"), msg.get("secret")
            if not isinstance(key, str) or not isinstance(secret, str):
                await self._reply(conn, protocol.error(400))
            else:
                await self._data_auth(conn, key, secret)
        elif action in ("subscribe", "unsubscribe"):
            await self._data_subscribe(conn, msg, action == "subscribe")
        else:
            await self._reply(conn, protocol.error(400))

    async def _data_auth(self, conn: Conn, key: str | None, secret: str | None) -> None:
        if conn.key is not None:
            await self._reply(conn, protocol.error(403))
            return
        code = self._take_auth_failure(conn.path)
        if code is None:
            code = self._auth_check(conn, key, secret)
        if code is not None:
            await self._reply(conn, protocol.error(code))
            return
        conn.key = key
        await self._reply(conn, protocol.AUTHENTICATED)

    def _auth_check(self, conn: Conn, key: str | None, secret: str | None) -> int | None:
        """The error code for this auth attempt (402 credentials, 409 plan, 406 session limit) or None."""
        if key is None or self.config.accounts.get(key) != secret:
            return 402
        plan = self.config.plan_for(key)
        if conn.feed not in plan.feeds:
            return 409
        if self.sessions(conn.path, key=key) >= plan.max_connections:
            self.session_refusals += 1
            return 406
        return None

    async def _data_subscribe(self, conn: Conn, msg: dict, subscribe: bool) -> None:
        if conn.key is None:
            await self._reply(conn, protocol.error(401))
            return
        try:
            request = protocol.parse_request(msg, self.refused_symbols, kind=conn.kind)
            new = protocol.apply(conn.subs, request, subscribe)
            if subscribe:
                protocol.check_plan(new, self.config.plan_for(conn.key))
        except protocol.ProtocolError as exc:
            await self._reply(conn, protocol.error(exc.code))
            return
        books = sorted(s for s in request.get("orderbooks", ()) if s != "*") if subscribe else []
        # A full book first for each newly subscribed one: no change of it goes out before (a tick may run while
        # the reply is sent; a connection's messages are handled one at a time, so nothing else changes subs).
        conn.subs = {**new, "orderbooks": new["orderbooks"] - set(books)} if books else new
        await self._reply(conn, protocol.subscription_message(new))
        if books and not conn.frozen and not conn.muted:
            outs = [Out(*self.market.orderbook(s)) for s in books]
            self._push(conn, frame(outs, conn.use_msgpack), text=not conn.use_msgpack)
        conn.subs = new

    # trading stream

    async def _serve_trading(self, conn: Conn) -> None:
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
                await self._trading_auth(conn, msg)
            elif action == "listen":
                await self._trading_listen(conn, msg)
            else:
                await self._reply(conn, TRADING_SYNTAX_ERROR)

    async def _trading_auth(self, conn: Conn, msg: dict) -> None:
        if msg["action"] == "auth":
            key, secret = msg.get("key"), msg.get("secret")
        else:
            data = msg.get("data") if isinstance(msg.get("data"), dict) else {}
            key, secret = data.get("key_id"), data.get("secret_key")
        failed = self._take_auth_failure(conn.path) is not None
        ok = not failed and isinstance(key, str) and self.config.accounts.get(key) == secret
        if ok and conn.key is None and self.sessions(conn.path, key=key) >= 1:
            # One trade_updates connection per account (alpaca-py#740, from an Alpaca employee). What Alpaca
            # answers is undocumented; like market data's 406, the new session is refused and may retry auth on
            # the same socket once the old one is gone.
            log.info("trading_session_refused key=%s reason=another session holds the account", key)
            self.session_refusals += 1
            ok = False
        if ok:
            conn.key = key
        status = "authorized" if ok else "unauthorized"
        await self._reply(conn, {"stream": "authorization", "data": {"status": status, "action": "authenticate"}})

    async def _trading_listen(self, conn: Conn, msg: dict) -> None:
        if conn.key is None:
            await self._reply(conn, {"stream": "authorization",
                                     "data": {"status": "unauthorized", "action": "listen"}})
            return
        data = msg.get("data")
        streams = data.get("streams") if isinstance(data, dict) else None
        if not isinstance(streams, list):
            await self._reply(conn, TRADING_SYNTAX_ERROR)
            return
        conn.streams = {s for s in streams if s == "trade_updates"}
        await self._reply(conn, {"stream": "listening", "data": {"streams": sorted(conn.streams)}})

    # -- data generation and fan-out -------------------------------------------------------------------

    async def _run_ticks(self) -> None:
        loop = asyncio.get_running_loop()
        last = deadline = loop.time()
        while True:
            deadline = max(deadline + self.config.tick_interval, loop.time())
            await asyncio.sleep(deadline - loop.time())
            now = loop.time()
            try:
                self._tick(now - last)
            except Exception:
                log.exception("simulator tick failed")
            last = now

    def _tick(self, dt: float) -> None:
        """Generate ``dt`` seconds of data for what is subscribed and send each connection one frame."""
        if self.rate_per_symbol <= 0:
            return
        by_path: dict[str, list[Conn]] = {}
        for conn in self._conns.values():
            if conn.is_data and conn.key is not None and not conn.muted:
                by_path.setdefault(conn.path, []).append(conn)
        outs_by_path: dict[str, list[Out]] = {}
        bar_symbols: set[str] = set()
        now = asyncio.get_running_loop().time()
        for path, conns in by_path.items():
            if feed_kind(DATA_PATHS[path]) == "stocks":
                self._announce(conns)
        resumed: list[Out] = []
        for symbol, until in list(self._halted_until.items()):
            if until <= now:
                del self._halted_until[symbol]
                resumed.append(Out(*self.market.status(symbol, False)))
        phase = calendar.phase(self.clock.now()) if self.config.market_hours else calendar.REGULAR
        for path, conns in by_path.items():
            feed = DATA_PATHS[path]
            share = self._session_share(feed, phase)
            if not share:  # the feed is shut at this hour: no trades, quotes, bars or bands
                continue
            if feed == "news":  # an article now and then, about a subscribed symbol
                outs_by_path[path] = self._generate_news(conns, dt)
                continue
            if feed_kind(feed) == "options":  # trades and quotes of subscribed contracts, while the sim runs
                outs_by_path[path] = self._generate_options(self._subscribed(feed, conns, "trades"),
                                                            self._subscribed(feed, conns, "quotes"), dt)
                continue
            if feed in CRYPTO_FEEDS:  # around the clock: trades, quotes, bars, order books
                trades, quotes, bars = self._active_symbols(feed, conns)
                books = self._subscribed(feed, conns, "orderbooks")
                outs_by_path[path] = self._generate_crypto(trades | bars, quotes, books, dt)
                outs_by_path[path] += [Out(*m) for m in self.market.updated_bars(
                    self._subscribed(feed, conns, "updatedBars"), self.clock(),
                    int(self.config.updated_bar_delay * 1e9))]
                bar_symbols |= bars
                continue
            trades, quotes, bars = self._active_symbols(feed, conns)
            outs = self._generate(feed, {s for s in trades | bars if s not in self._halted_until}, quotes,
                                  dt * share, extended=share < 1)
            outs_by_path[path] = outs + resumed + (self._unasked(feed, conns, dt, now) if share == 1 else [])
            bar_symbols |= bars
        bar_outs = [Out(*m) for pair in self.market.roll_bars(bar_symbols, self.clock()) for m in pair]
        for path, conns in by_path.items():
            if path in outs_by_path:
                self._fan_out(conns, outs_by_path[path] + bar_outs)

    def _session_share(self, feed: str, phase: str) -> float:
        """How much of the configured rate a feed generates in a market phase: all of it in the regular session,
        EXTENDED_SHARE before the open and after the close, none when the feed is shut (see SimConfig.market_hours).
        """
        if not self.config.market_hours or feed in CRYPTO_FEEDS or feed in ("news", "test"):
            return 1.0
        if feed in ("boats", "overnight"):
            return EXTENDED_SHARE if calendar.overnight(self.clock.now()) else 0.0
        if feed_kind(feed) == "options":
            return 1.0 if phase == calendar.REGULAR else 0.0
        return {calendar.REGULAR: 1.0, calendar.PRE: EXTENDED_SHARE, calendar.POST: EXTENDED_SHARE}.get(phase, 0.0)

    def _active_symbols(self, feed: str, conns: list[Conn]) -> tuple[set[str], set[str], set[str]]:
        """Symbols with trade, quote and bar subscribers on one feed (``*`` = every known symbol)."""
        union = self._subscribed
        return union(feed, conns, "trades"), union(feed, conns, "quotes"), union(feed, conns, "bars", "dailyBars")

    def _subscribed(self, feed: str, conns: list[Conn], *channels: str) -> set[str]:
        """Symbols with subscribers to any of ``channels`` on one feed (``*`` = every known symbol)."""
        out: set[str] = set()
        for conn in conns:
            for ch in channels:
                out |= conn.subs[ch]
        if "*" in out:
            out.discard("*")
            # A pair streams on the crypto feeds only, a contract on the option feeds, a stock on the stock feeds.
            kind = feed_kind(feed)
            out.update(["FAKEPACA"] if feed == "test" else
                       [s for s in self.market.known_symbols()
                        if kind == ("crypto" if "/" in s else "options" if OPTION_SYMBOL_RE.fullmatch(s)
                                    else "stocks")])
        return out & {"FAKEPACA"} if feed == "test" else out

    def _unasked(self, feed: str, conns: list[Conn], dt: float, now: float) -> list[Out]:
        """What Alpaca sends without a trade behind it: trading pauses (statuses), LULD bands every
        ``luld_interval`` seconds, and updatedBars for minute bars that late trades changed."""
        cfg, market = self.config, self.market
        outs: list[Out] = []
        for symbol in self._subscribed(feed, conns, "statuses"):
            if symbol not in self._halted_until and market.rng.random() < cfg.halt_rate * dt:
                self._halted_until[symbol] = now + cfg.halt_seconds
                outs.append(Out(*market.status(symbol, True)))
        for symbol in self._subscribed(feed, conns, "lulds"):
            due = self._luld_due.setdefault(symbol, now + cfg.luld_interval)
            if due <= now:
                self._luld_due[symbol] = now + cfg.luld_interval
                outs.append(Out(*market.luld(symbol)))
        updated = self._subscribed(feed, conns, "updatedBars")
        outs += [Out(*m) for m in market.updated_bars(updated, self.clock(), int(cfg.updated_bar_delay * 1e9))]
        return outs

    def _announce(self, conns: list[Conn]) -> None:
        """A connection newly subscribed to a symbol's statuses or LULDs gets its current state at once."""
        for conn in conns:
            wanted = {(ch, s) for ch in ("statuses", "lulds") for s in conn.subs[ch] if s != "*"}
            conn.announced &= wanted
            new = sorted(wanted - conn.announced)
            if not new:
                continue
            conn.announced |= wanted
            outs = [Out(*(self.market.status(s, s in self._halted_until) if ch == "statuses"
                          else self.market.luld(s))) for ch, s in new]
            self._push(conn, frame(outs, conn.use_msgpack), text=not conn.use_msgpack)

    def _generate_news(self, conns: list[Conn], dt: float) -> list[Out]:
        interval = self.config.news_interval
        if not interval or self.market.rng.random() >= dt / interval:
            return []
        symbols = sorted(self._subscribed("news", conns, "news"))
        if not symbols:
            return []
        msg, ns = self.market.news([self.market.rng.choice(symbols)])
        return [Out(msg, ns)]

    def _generate_crypto(self, trade_symbols: Iterable[str], quote_symbols: Iterable[str],
                         book_symbols: Iterable[str], dt: float) -> list[Out]:
        rng, market = self.market.rng, self.market
        expected = self.rate_per_symbol * dt
        outs: list[Out] = []
        for symbols, make in ((quote_symbols, market.crypto_quote), (trade_symbols, market.crypto_trade),
                              (book_symbols, market.orderbook_update)):
            for symbol in symbols:
                for _ in range(int(expected) + (rng.random() < expected - int(expected))):
                    made = make(symbol)
                    if made is not None:
                        outs.append(Out(*made))
        return outs

    def _generate_options(self, trade_symbols: Iterable[str], quote_symbols: Iterable[str],
                          dt: float) -> list[Out]:
        """Options trade far less often than they quote: a fifth of the stock rate in trades, twice in quotes."""
        rng, market = self.market.rng, self.market
        outs: list[Out] = []
        for symbols, make, rate in ((quote_symbols, market.option_quote, 2.0),
                                    (trade_symbols, market.option_trade, 0.2)):
            expected = self.rate_per_symbol * dt * rate
            for symbol in symbols:
                for _ in range(int(expected) + (rng.random() < expected - int(expected))):
                    outs.append(Out(*make(symbol)))
        return outs

    def _generate(self, feed: str, trade_symbols: Iterable[str], quote_symbols: Iterable[str],
                  dt: float, extended: bool = False) -> list[Out]:
        """Trades and quotes for ``dt`` seconds; ``extended``: outside the regular session, small trades marked
        as Alpaca's feeds mark them (``T``: Form T, an extended-hours trade; ``I``: an odd lot)."""
        rng = self.market.rng
        if self.market.universe is not None:
            trade_symbols = [s for s in trade_symbols if self.market.known(s)]
            quote_symbols = [s for s in quote_symbols if self.market.known(s)]
        expected = self.rate_per_symbol * dt
        whole, frac = int(expected), expected - int(expected)
        q_expected = expected * self.config.quote_ratio
        q_whole, q_frac = int(q_expected), q_expected - int(q_expected)
        cfg, market = self.config, self.market
        outs: list[Out] = []
        for symbol in quote_symbols:
            for _ in range(q_whole + (rng.random() < q_frac)):
                outs.append(Out(*market.quote(symbol, feed)))
        for symbol in trade_symbols:
            for _ in range(whole + (rng.random() < frac)):
                if extended:
                    size = rng.choice((1, 5, 10, 25, 50, 100, 100, 200))
                    outs.append(Out(*market.trade(symbol, feed, size=size,
                                                  c=["@", "T"] + (["I"] if size < 100 else []))))
                    continue
                late = market.late_trade(symbol, feed, self.clock()) if rng.random() < cfg.late_trade_rate \
                    else None
                outs.append(Out(*(late or market.trade(symbol, feed))))
                if rng.random() < cfg.correction_rate and (fix := market.correction(symbol)) is not None:
                    outs.append(Out(*fix))
                if rng.random() < cfg.cancel_error_rate and (cancel := market.cancel_error(symbol)) is not None:
                    outs.append(Out(*cancel))
        return outs

    def _fan_out(self, conns: Iterable[Conn], outs: list[Out]) -> None:
        if not outs:
            return
        for conn in conns:
            mine = [o for o in outs if protocol.wants(conn.subs, o.channel, o.symbol)]
            if mine:
                self._push(conn, frame(mine, conn.use_msgpack), text=not conn.use_msgpack)

    def _push(self, conn: Conn, payload: bytes, text: bool) -> None:
        """Send without awaiting; a client too far behind gets 407 "slow client" and is dropped."""
        transport = conn.ws.transport
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() > self.config.slow_client_buffer:
            broadcast([conn.ws], encode_data([protocol.error(407)], conn.use_msgpack), text=text)
            transport.abort()
            return
        broadcast([conn.ws], payload, text=text)

    def _data_conns(self, path: str | None = None) -> list[Conn]:
        return [c for c in self._conns.values()
                if c.is_data and c.key is not None and not c.muted and (path is None or c.path == path)]

    def _deliver(self, outs: list[Out], path: str | None = None) -> None:
        self._fan_out(self._data_conns(path), outs)

    def _emit(self, order: dict, events: list[Event]) -> None:
        """Send ``trade_updates`` events to every listening trading connection of the order's account."""
        key = self.book.owner(order["id"]).key
        for conn in list(self._conns.values()):
            if conn.is_data or conn.key != key or conn.muted or "trade_updates" not in conn.streams:
                continue
            for event in events:
                self._push(conn, encode_trading({"stream": "trade_updates", "data": event}, conn.use_msgpack),
                           text=False)

    # -- control API: market data ----------------------------------------------------------------------

    def inject_trade(self, symbol: str, price: float | None = None, size: int | None = None, *,
                     path: str | None = None, **fields: Any) -> dict:
        """Send a trade now to every trades subscriber of ``symbol`` (incl. ``*``); returns the message. On an
        option path (``/v1beta1/indicative``) it is an option trade."""
        feed = DATA_PATHS.get(path or "", "iex")
        kind = feed_kind(feed)
        msg, ns = (self.market.option_trade(symbol, price, size, **fields) if kind == "options" else
                   self.market.crypto_trade(symbol, price, size, **fields) if kind == "crypto" else
                   self.market.trade(symbol, feed, price, size, **fields))
        return self._inject(msg, ns, path)

    def inject_quote(self, symbol: str, bid: float | None = None, ask: float | None = None, *,
                     path: str | None = None, **fields: Any) -> dict:
        feed = DATA_PATHS.get(path or "", "iex")
        kind = feed_kind(feed)
        msg, ns = (self.market.option_quote(symbol, bid, ask, **fields) if kind == "options" else
                   self.market.crypto_quote(symbol, bid, ask, **fields) if kind == "crypto" else
                   self.market.quote(symbol, feed, bid, ask, **fields))
        return self._inject(msg, ns, path)

    def inject_bar(self, symbol: str, *, kind: str = "b", path: str | None = None, **fields: Any) -> dict:
        """A bar at the current price unless fields say otherwise: ``kind`` b or u for the previous minute, d for
        today's daily bar (which starts at midnight New York time)."""
        st = self.market.state(symbol)
        now = self.clock()
        if kind == "d":  # today's running daily bar, which starts at midnight New York time
            start = st.daily.window_of(now)
            daily = st.daily.current() or self.market.synthetic_bar(st, start)
            bar = {"T": kind, "S": symbol, **daily, **fields}
        else:
            start = st.minute.window_of(now) - 60 * 1_000_000_000
            bar = {"T": kind, "S": symbol, **self.market.synthetic_bar(st, start), **fields}
        return self._inject(bar, start, path)

    def inject_news(self, symbols: Iterable[str], headline: str | None = None, **fields: Any) -> dict:
        """Publish a news article now to every news subscriber of any of ``symbols`` (or of ``*``)."""
        msg, ns = self.market.news(list(symbols), headline, **fields)
        return self._inject(msg, ns, "/v1beta1/news")

    def _inject(self, msg: dict, ns: int, path: str | None) -> dict:
        out = Out(msg, None if isinstance(msg.get("t"), str) and msg["t"] != format_ts(ns) else ns)
        self._deliver([out], path)
        return msg

    def inject_raw(self, endpoint_path: str, messages: list[dict] | dict) -> None:
        """Send arbitrary messages to every open connection on a path, authenticated or not, muted or not.

        Data paths get them as one array frame; the trading stream gets one binary frame per message.
        """
        batch = messages if isinstance(messages, list) else [messages]
        for conn in list(self._conns.values()):
            if conn.path != endpoint_path:
                continue
            if conn.is_data:
                self._push(conn, encode_data(batch, conn.use_msgpack), text=not conn.use_msgpack)
            else:
                for message in batch:
                    self._push(conn, encode_trading(message, conn.use_msgpack), text=False)

    def inject_frame(self, endpoint_path: str, payload: bytes | str) -> None:
        """Send one frame exactly as given (a ``str`` as a text frame, ``bytes`` as binary) to every open
        connection on a path: for fault injection with frames no encoder would produce."""
        text = isinstance(payload, str)
        data = payload.encode() if isinstance(payload, str) else payload
        for conn in list(self._conns.values()):
            if conn.path == endpoint_path:
                self._push(conn, data, text=text)

    def set_rate(self, per_symbol: float) -> None:
        """Auto-generated trades per second per subscribed symbol (0 = only injected data)."""
        self.rate_per_symbol = float(per_symbol)

    def push_stamped(self, stamped: list[Stamped], path: str | None = None) -> None:
        """Deliver pre-built market messages (from ``self.market``) with normal subscription routing."""
        self._deliver([Out(m, ns) for m, ns in stamped], path)

    # -- control API: orders ---------------------------------------------------------------------------

    def _default_key(self) -> str:
        return next(iter(self.config.accounts))

    def submit_order(self, symbol: str, side: str, qty: float | str, type: str = "market",
                     limit_price: float | str | None = None, *, key: str | None = None, **kwargs: Any) -> dict:
        """Accept an order (event ``new``); kwargs: stop_price, time_in_force, client_order_id, extended_hours."""
        order, events = self.book.submit(key or self._default_key(), symbol, side, qty, type, limit_price,
                                         **kwargs)
        return self._after(order, events)

    def fill_order(self, order_id: str, qty: float | str | None = None, price: float | str | None = None) -> dict:
        return self._after(*self.book.fill(order_id, qty, price))

    def cancel_order(self, order_id: str) -> dict:
        return self._after(*self.book.cancel(order_id))

    def reject_order(self, order_id: str) -> dict:
        return self._after(*self.book.reject(order_id))

    def expire_order(self, order_id: str) -> dict:
        return self._after(*self.book.expire(order_id))

    def replace_order(self, order_id: str, qty: float | str | None = None, limit_price: float | str | None = None,
                      **kwargs: Any) -> dict:
        """Replace an order; emits ``replaced`` (old order) then ``new`` (the replacement); returns the new one."""
        return self._after(*self.book.replace(order_id, qty, limit_price, **kwargs))

    def emit_order_event(self, order_id: str, event: str, **extra: Any) -> dict:
        """Emit any event string (known or not) for an order, ``extra`` merged into the event data."""
        return self._after(*self.book.event(order_id, event, **extra))

    def _after(self, order: dict, events: list[Event]) -> dict:
        self._emit(order, events)
        return dict(order)

    # -- control API: faults ---------------------------------------------------------------------------

    def cut_all(self) -> None:
        """Abort every transport: a network fault, no close frame."""
        for conn in list(self._conns.values()):
            if conn.ws.transport is not None:
                conn.ws.transport.abort()
            self._conns.pop(conn.id, None)  # gone now, as the reset reaches the server: a reconnect is not refused

    def fail_next_auth(self, code: int = 402, times: int = 1, path: str | None = None) -> None:
        """The next ``times`` auth attempts fail. ``path`` None means any market-data endpoint (answered with
        ``code``); ``path="/stream"`` targets the trading stream (answered ``unauthorized``)."""
        self._fail_auth.extend([(int(code), path)] * int(times))

    def clear_auth_failures(self, path: str | None = None) -> int:
        """Drop queued auth failures: all of them, or (``path`` given) those that would hit that path; returns
        how many. Lets a test end an outage it started with a large ``times``."""
        if path is None:
            dropped = len(self._fail_auth)
            self._fail_auth.clear()
            return dropped
        keep = [(code, only) for code, only in self._fail_auth
                if not (only == path or (only is None and path in DATA_PATHS))]
        dropped = len(self._fail_auth) - len(keep)
        self._fail_auth[:] = keep
        return dropped

    def _take_auth_failure(self, path: str) -> int | None:
        for i, (code, only) in enumerate(self._fail_auth):
            if only == path or (only is None and path in DATA_PATHS):
                del self._fail_auth[i]
                return code
        return None

    def reject_handshakes(self, status: int = 429, times: int = 1) -> None:
        """The next ``times`` WebSocket handshakes get this HTTP status instead of 101."""
        self._reject.extend([int(status)] * int(times))

    def set_mute(self, on: bool = True) -> None:
        """Mute (or unmute) the currently open connections: no data frames or trade updates, pings answered,
        control replies still sent. Connections opened later are not muted."""
        for conn in self._conns.values():
            conn.muted = on

    def set_frozen(self, on: bool = True) -> None:
        """Freeze (or thaw) the currently open connections: the server side is gone but something still answers
        WebSocket pings, as a half-dead load balancer would: no data, no trade updates, no control replies."""
        for conn in self._conns.values():
            conn.frozen = conn.muted = on

    def stop_reading(self) -> None:
        """The server hangs: it stops reading every open connection, so nothing it is sent is handled (pings and
        close frames included). For shutdown tests: a proper close to such a server can only time out."""
        for conn in self._conns.values():
            if conn.ws.transport is not None:
                conn.ws.transport.pause_reading()

    def refuse_symbols(self, symbols: Iterable[str]) -> None:
        """Treat these symbols as malformed: a subscribe naming any of them is refused whole with 400, as Alpaca
        does for a symbol that breaks its rules (for tests of rules stricter than the relay's own check)."""
        self.refused_symbols = set(symbols)

    def set_read_delay(self, seconds: float) -> None:
        """Sleep this long before handling each client message (a slow server reading its socket)."""
        self._read_delay = max(0.0, float(seconds))

    def set_plan(self, key: str, feeds: Iterable[str] | None = None, symbol_limit: int | None = _KEEP,
                 max_connections: int | None = None, wildcard: bool | None = _KEEP) -> Plan:
        """Change a key's data plan (applies to later auths and subscribes)."""
        changes: dict[str, Any] = {}
        if feeds is not None:
            changes["feeds"] = frozenset(feeds)
        if symbol_limit is not _KEEP:
            changes["symbol_limit"] = symbol_limit
        if max_connections is not None:
            changes["max_connections"] = max_connections
        if wildcard is not _KEEP:
            changes["wildcard"] = wildcard
        plan = dataclasses.replace(self.config.plan_for(key), **changes)
        self.config.plans[key] = plan
        return plan

    # -- observation -----------------------------------------------------------------------------------

    def clear_received(self) -> None:
        self.received.clear()

    def received_on(self, path: str | None = None) -> list[Any]:
        """Just the decoded messages clients sent (on ``path``), in order."""
        return [r.message for r in self.received if path is None or r.path == path]

    def connections(self, path: str | None = None) -> int:
        """Open connections (authenticated or not)."""
        return sum(1 for c in self._conns.values() if path is None or c.path == path)

    def sessions(self, path: str, *, key: str | None = None) -> int:
        """Authenticated sessions on ``path`` (of ``key``, if given)."""
        return sum(1 for c in self._conns.values()
                   if c.path == path and c.key is not None and (key is None or c.key == key))

    def subscriptions(self, path: str) -> dict[str, list[str]]:
        """The union of the current subscriptions of all connections on ``path``, per channel."""
        union = protocol.empty_subs(kind=feed_kind(DATA_PATHS.get(path)))
        for conn in self._conns.values():
            if conn.path == path:
                for ch, symbols in conn.subs.items():
                    union[ch] |= symbols
        return {ch: sorted(symbols) for ch, symbols in union.items()}

    def state(self) -> dict[str, Any]:
        paths = sorted({c.path for c in self._conns.values()})
        return {
            "connections": {p: self.connections(p) for p in paths},
            "sessions": {p: self.sessions(p) for p in paths},
            "subscriptions": {p: self.subscriptions(p) for p in paths if p in DATA_PATHS},
            "listening": {str(c.id): sorted(c.streams) for c in self._conns.values() if not c.is_data},
            "connection_count_total": self.connection_count_total,
            "session_refusals": self.session_refusals,
            "muted": sorted(c.id for c in self._conns.values() if c.muted),
            "rate_per_symbol": self.rate_per_symbol,
            "read_delay": self._read_delay,
            "pending_auth_failures": len(self._fail_auth),
            "pending_handshake_rejections": len(self._reject),
        }
