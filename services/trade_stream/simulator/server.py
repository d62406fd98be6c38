"""The Simulator: one websockets server speaking Alpaca's market-data, trading-stream and REST protocols.

Everything runs on the caller's event loop; the control API is plain synchronous methods (sending uses
``broadcast()``, which never blocks), so a test can drive the simulator between awaits without races.

``Simulator`` is the façade: it owns the listening socket, routes HTTP and WebSocket handshakes, and keeps the
control API tests call; each role behind it is its own module. data_stream.py and trading_stream.py run the two
kinds of session, ticker.py decides what the market generates, faults.py holds queued and applied faults,
inspection.py the open connections and what they sent, connection.py how bytes cross one connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from . import faults, protocol, rest
from .clock import Clock
from .config import DATA_PATHS, TRADING_PATH, Plan, SimConfig, feed_kind
from .connection import Conn, push
from .data_stream import DataStream
from .faults import KEEP, Faults
from .inspection import Connections, Received
from .market import Market, Stamped
from .orders import Event, OrderBook
from .rest import Query, Result
from .ticker import Ticker
from .trading_stream import TradingStream
from .units import format_ts
from .wire import Out, encode_data, encode_trading, frame

__all__ = ["Conn", "Received", "Simulator"]

log = logging.getLogger("trade_stream.simulator")


class Simulator:
    """An in-process Alpaca: market-data streams, the trading stream, REST, and a control API for tests."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        #: The simulated time (clock.py); SimConfig.clock pins or shifts it, else it is the wall clock.
        self.clock = self.config.clock or Clock()
        #: ``/_sim/clock?open=``: pins ``/v2/clock``'s ``is_open`` (None follows the calendar).
        self.clock_open: bool | None = None
        self.market = Market(self.config.seed, self.config.start_prices, self.config.intraday_history,
                             self.clock, self.config.universe)
        # The trading side keeps the wall clock, as Alpaca's does: clients reconcile orders by their own clock.
        self.book = OrderBook(list(self.config.accounts), self.market.price, self.config.seed,
                              self.config.starting_cash)
        #: Paths (with query) of the Alpaca REST requests served, newest last: which endpoint a client used.
        self.rest_requests: deque[str] = deque(maxlen=1000)
        self.conns = Connections()
        self.faults = Faults()
        self.ticker = Ticker(self.config, self.market, self.clock)
        self._data = DataStream(self.config, self.conns, self.faults, self.market, self._push)
        self._trading = TradingStream(self.config, self.conns, self.faults)
        self._server: Server | None = None
        self._ticks: asyncio.Task[None] | None = None
        self.port = self.config.port

    # -- state the roles hold, under the names tests read ---------------------------------------------

    @property
    def _conns(self) -> dict[int, Conn]:
        return self.conns.by_id

    @property
    def received(self) -> list[Received]:
        return self.conns.received

    @property
    def connection_count_total(self) -> int:
        return self.conns.connection_count_total

    @property
    def session_refusals(self) -> int:
        """406s and refused trading logins: a second session for the same account."""
        return self.conns.session_refusals

    @property
    def refused_symbols(self) -> set[str]:
        return self.faults.refused_symbols

    @property
    def rate_per_symbol(self) -> float:
        return self.ticker.rate_per_symbol

    @rate_per_symbol.setter
    def rate_per_symbol(self, per_symbol: float) -> None:
        self.ticker.rate_per_symbol = per_symbol

    # -- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> Simulator:
        cfg = self.config
        self._server = await serve(
            self._handle, cfg.host, cfg.port, process_request=self._process_request,
            ping_interval=cfg.ping_interval, ping_timeout=cfg.ping_timeout, server_header=None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ticks = asyncio.create_task(self._run_ticks(), name="alpaca-sim-ticker")
        return self

    async def stop(self) -> None:
        """Close every connection (close frame, then abort after 1 s) and the listening socket."""
        if self._ticks is not None:
            self._ticks.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticks
            self._ticks = None
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

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        delay = self.faults.rest_delays.get(url.path)
        if delay and not url.path.startswith("/_sim/"):
            await asyncio.sleep(delay)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        if url.path.startswith("/_sim/"):
            return rest.respond(*control(self, url.path[len("/_sim/"):], query))
        if url.path in DATA_PATHS or url.path == TRADING_PATH:
            status = self.faults.take_rejection()
            if status is not None:
                return rest.respond(status, {"code": status, "message": "simulated handshake rejection"})
            return None
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return rest.respond(*rest.not_found(f"no stream at {url.path}"))
        if request.method not in ("GET", "HEAD"):
            return rest.respond(405, {"code": 40510000, "message": "method not allowed: the simulator "
                                      "serves GET only; create orders with /_sim/order"})
        self.rest_requests.append(request.path)
        return rest.respond(*rest.route(self, url.path, query, request.headers))

    # -- WebSocket handler -----------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        path = urlsplit(ws.request.path).path if ws.request else ""
        content_type = ws.request.headers.get("Content-Type", "") if ws.request else ""
        conn = Conn(self.conns.next_id(), ws, path, DATA_PATHS.get(path),
                    content_type.startswith("application/msgpack"))
        if conn.kind != "stocks":
            conn.subs = protocol.empty_subs(kind=conn.kind)
        self.conns.add(conn)
        try:
            if conn.is_data:
                await self._data.serve(conn)
            else:
                await self._trading.serve(conn)
        except ConnectionClosed:
            pass
        finally:
            self.conns.drop(conn)

    # -- data generation and fan-out -------------------------------------------------------------------

    async def _run_ticks(self) -> None:
        """Each tick generates the data of the time since the last one, up to ``catch_up`` seconds: a tick that
        comes late on a busy machine must not make up the whole delay in one burst, which makes the next tick
        later still until the loop does nothing but generate. Behind, the market runs slower, as a feed would."""
        loop = asyncio.get_running_loop()
        catch_up = max(0.25, 5 * self.config.tick_interval)
        last = deadline = loop.time()
        while True:
            deadline = max(deadline + self.config.tick_interval, loop.time())
            await asyncio.sleep(deadline - loop.time())
            now = loop.time()
            try:
                self._tick(min(now - last, catch_up))
            except Exception:
                log.exception("simulator tick failed")
            last = now

    def _tick(self, dt: float) -> None:
        """Generate ``dt`` seconds of data for what is subscribed and send each connection one frame."""
        tick = self.ticker.tick(self.conns.by_id.values(), dt, asyncio.get_running_loop().time())
        for conn, outs in tick.announce:
            self._push(conn, frame(outs, conn.use_msgpack), not conn.use_msgpack)
        for conns, outs in tick.deliver:
            self._fan_out(conns, outs)

    def _fan_out(self, conns: Iterable[Conn], outs: list[Out]) -> None:
        if not outs:
            return
        for conn in conns:
            mine = [o for o in outs if protocol.wants(conn.subs, o.channel, o.symbol)]
            if mine:
                self._push(conn, frame(mine, conn.use_msgpack), not conn.use_msgpack)

    def _push(self, conn: Conn, payload: bytes, text: bool) -> None:
        push(conn, payload, text, self.config.slow_client_buffer)

    def _deliver(self, outs: list[Out], path: str | None = None) -> None:
        self._fan_out(self.conns.data_conns(path), outs)

    def _emit(self, order: dict, events: list[Event]) -> None:
        """Send ``trade_updates`` events to every listening trading connection of the order's account."""
        key = self.book.owner(order["id"]).key
        for conn in self.conns:
            if conn.is_data or conn.key != key or conn.muted or "trade_updates" not in conn.streams:
                continue
            for event in events:
                self._push(conn, encode_trading({"stream": "trade_updates", "data": event}, conn.use_msgpack),
                           False)

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
        for conn in self.conns:
            if conn.path != endpoint_path:
                continue
            if conn.is_data:
                self._push(conn, encode_data(batch, conn.use_msgpack), not conn.use_msgpack)
            else:
                for message in batch:
                    self._push(conn, encode_trading(message, conn.use_msgpack), False)

    def inject_frame(self, endpoint_path: str, payload: bytes | str) -> None:
        """Send one frame exactly as given (a ``str`` as a text frame, ``bytes`` as binary) to every open
        connection on a path: for fault injection with frames no encoder would produce."""
        text = isinstance(payload, str)
        data = payload.encode() if isinstance(payload, str) else payload
        for conn in self.conns:
            if conn.path == endpoint_path:
                self._push(conn, data, text)

    def set_rate(self, per_symbol: float) -> None:
        """Auto-generated trades per second per subscribed symbol (0 = only injected data)."""
        self.ticker.rate_per_symbol = float(per_symbol)

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
        for conn in self.conns:
            faults.cut([conn])
            self.conns.drop(conn)  # gone now, as the reset reaches the server: a reconnect is not refused

    def fail_next_auth(self, code: int = 402, times: int = 1, path: str | None = None) -> None:
        """The next ``times`` auth attempts fail. ``path`` None means any market-data endpoint (answered with
        ``code``); ``path="/stream"`` targets the trading stream (answered ``unauthorized``)."""
        self.faults.fail_next_auth(code, times, path)

    def clear_auth_failures(self, path: str | None = None) -> int:
        """Drop queued auth failures: all of them, or (``path`` given) those that would hit that path; returns
        how many. Lets a test end an outage it started with a large ``times``."""
        return self.faults.clear_auth_failures(path)

    def reject_handshakes(self, status: int = 429, times: int = 1) -> None:
        """The next ``times`` WebSocket handshakes get this HTTP status instead of 101."""
        self.faults.reject_handshakes(status, times)

    def set_mute(self, on: bool = True) -> None:
        """Mute (or unmute) the currently open connections: no data frames or trade updates, pings answered,
        control replies still sent. Connections opened later are not muted."""
        faults.mute(self.conns, on)

    def set_frozen(self, on: bool = True) -> None:
        """Freeze (or thaw) the currently open connections: the server side is gone but something still answers
        WebSocket pings, as a half-dead load balancer would: no data, no trade updates, no control replies."""
        faults.freeze(self.conns, on)

    def stop_reading(self) -> None:
        """The server hangs: it stops reading every open connection, so nothing it is sent is handled (pings and
        close frames included). For shutdown tests: a proper close to such a server can only time out."""
        faults.stop_reading(self.conns)

    def refuse_symbols(self, symbols: Iterable[str]) -> None:
        """Treat these symbols as malformed: a subscribe naming any of them is refused whole with 400, as Alpaca
        does for a symbol that breaks its rules (for tests of rules stricter than the relay's own check)."""
        self.faults.refused_symbols = set(symbols)

    def set_read_delay(self, seconds: float) -> None:
        """Sleep this long before handling each client message (a slow server reading its socket)."""
        self.faults.set_read_delay(seconds)

    def set_rest_delay(self, path: str, seconds: float) -> None:
        """Answer REST GETs of ``path`` (e.g. ``/v2/orders``) ``seconds`` late; 0 puts it back."""
        self.faults.set_rest_delay(path, seconds)

    def set_plan(self, key: str, feeds: Iterable[str] | None = None, symbol_limit: int | None = KEEP,
                 max_connections: int | None = None, wildcard: bool | None = KEEP) -> Plan:
        """Change a key's data plan (applies to later auths and subscribes)."""
        plan = faults.changed_plan(self.config.plan_for(key), feeds, symbol_limit, max_connections, wildcard)
        self.config.plans[key] = plan
        return plan

    # -- observation -----------------------------------------------------------------------------------

    def clear_received(self) -> None:
        self.conns.received.clear()

    def received_on(self, path: str | None = None) -> list[Any]:
        """Just the decoded messages clients sent (on ``path``), in order."""
        return self.conns.received_on(path)

    def connections(self, path: str | None = None) -> int:
        """Open connections (authenticated or not)."""
        return self.conns.connections(path)

    def sessions(self, path: str, *, key: str | None = None) -> int:
        """Authenticated sessions on ``path`` (of ``key``, if given)."""
        return self.conns.sessions(path, key=key)

    def subscriptions(self, path: str) -> dict[str, list[str]]:
        """The union of the current subscriptions of all connections on ``path``, per channel."""
        return self.conns.subscriptions(path)

    def state(self) -> dict[str, Any]:
        conns = self.conns.state()
        return {**conns, "rate_per_symbol": self.rate_per_symbol, **self.faults.state()}


# -- /_sim/ control: the façade's own API over HTTP, for tests and demos in other processes ----------


def _num(query: Query, name: str, cast: Callable[[str], Any] = float, default: Any = None) -> Any:
    value = query.get(name)
    return default if value in (None, "") else cast(value)


def _flag(query: Query, name: str, default: bool = True) -> bool:
    value = query.get(name)
    return default if value is None else value.lower() in ("1", "true", "yes", "on")


def _market_fields(query: Query, names: tuple[str, ...]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name in names:
        if name in query:
            fields[name] = query[name].split(",") if name == "c" else query[name]
    return fields


def control(sim: Simulator, name: str, query: Query) -> Result:
    handler = CONTROL.get(name)
    if handler is None:
        return 404, {"error": f"unknown control endpoint /_sim/{name}", "endpoints": sorted(CONTROL)}
    try:
        return 200, handler(sim, query)
    except (ValueError, KeyError, TypeError) as exc:
        return 400, {"error": str(exc) or type(exc).__name__}


def _clock(sim: Simulator, q: Query) -> dict:
    value = q.get("open", "auto").lower()
    sim.clock_open = None if value == "auto" else value in ("1", "true", "yes", "on")
    return rest.market_clock(sim.clock.now(), sim.clock_open)


def _trade(sim: Simulator, q: Query) -> dict:
    return sim.inject_trade(q["symbol"], _num(q, "price"), _num(q, "size", int), path=q.get("path"),
                            **_market_fields(q, ("x", "c", "z")))


def _quote(sim: Simulator, q: Query) -> dict:
    fields = _market_fields(q, ("bx", "ax", "c", "z"))
    fields.update({k: int(q[k]) for k in ("bs", "as") if k in q})
    return sim.inject_quote(q["symbol"], _num(q, "bid"), _num(q, "ask"), path=q.get("path"), **fields)


def _bar(sim: Simulator, q: Query) -> dict:
    fields: dict[str, Any] = {k: float(q[k]) for k in ("o", "h", "l", "c", "vw") if k in q}
    fields.update({k: int(q[k]) for k in ("v", "n") if k in q})
    return sim.inject_bar(q["symbol"], kind=q.get("kind", "b"), path=q.get("path"), **fields)


def _order(sim: Simulator, q: Query) -> dict | list[dict]:
    """One order, or ``count`` of them at once (e.g. to bury an older order behind a page of newer ones)."""
    kwargs: dict[str, Any] = {k: q[k] for k in ("stop_price", "time_in_force", "client_order_id") if q.get(k)}
    count = _num(q, "count", int, None)
    orders = [sim.submit_order(q["symbol"], q.get("side", "buy"), q.get("qty", "1"), q.get("type", "market"),
                               q.get("limit_price") or None, key=q.get("key") or None, **kwargs)
              for _ in range(count or 1)]
    return orders if count is not None else orders[0]


def _replace(sim: Simulator, q: Query) -> dict:
    return sim.replace_order(q["order_id"], q.get("qty") or None, q.get("limit_price") or None)


def _event(sim: Simulator, q: Query) -> dict:
    return sim.emit_order_event(q["order_id"], q["event"])


def _plan(sim: Simulator, q: Query) -> dict:
    feeds = q["feeds"].split(",") if q.get("feeds") else None
    kwargs: dict[str, Any] = {}
    if "symbol_limit" in q:
        kwargs["symbol_limit"] = int(q["symbol_limit"]) if q["symbol_limit"] else None
    plan = sim.set_plan(q["key"], feeds, max_connections=_num(q, "max_connections", int), **kwargs)
    return {"feeds": sorted(plan.feeds), "symbol_limit": plan.symbol_limit,
            "max_connections": plan.max_connections, "wildcard": plan.allows_wildcard()}


def _received(sim: Simulator, q: Query) -> list[dict]:
    path = q.get("path")
    return [r._asdict() for r in sim.received if path is None or r.path == path]


def _ok(fn: Callable[[], Any]) -> dict:
    fn()
    return {"ok": True}


CONTROL: dict[str, Callable[[Simulator, Query], Any]] = {
    "news": lambda s, q: s.inject_news([x for x in q.get("symbols", "").split(",") if x], q.get("headline")),
    "trade": _trade,
    "quote": _quote,
    "bar": _bar,
    "order": _order,
    "fill": lambda s, q: s.fill_order(q["order_id"], q.get("qty") or None, q.get("price") or None),
    "cancel": lambda s, q: s.cancel_order(q["order_id"]),
    "reject": lambda s, q: s.reject_order(q["order_id"]),
    "expire": lambda s, q: s.expire_order(q["order_id"]),
    "replace": _replace,
    "event": _event,
    "cut": lambda s, q: _ok(s.cut_all),
    "fail_auth": lambda s, q: _ok(lambda: s.fail_next_auth(_num(q, "code", int, 402), _num(q, "times", int, 1),
                                                           q.get("path") or None)),
    "clear_auth_failures": lambda s, q: {"cleared": s.clear_auth_failures(q.get("path") or None)},
    "reject_handshakes": lambda s, q: _ok(lambda: s.reject_handshakes(_num(q, "status", int, 429),
                                                                      _num(q, "times", int, 1))),
    "mute": lambda s, q: _ok(lambda: s.set_mute(_flag(q, "on"))),
    "freeze": lambda s, q: _ok(lambda: s.set_frozen(_flag(q, "on"))),
    "refuse_symbols": lambda s, q: _ok(lambda: s.refuse_symbols(x for x in q.get("symbols", "").split(",") if x)),
    "read_delay": lambda s, q: _ok(lambda: s.set_read_delay(_num(q, "seconds", float, 0.0))),
    "rest_delay": lambda s, q: _ok(lambda: s.set_rest_delay(q.get("path", ""), _num(q, "seconds", float, 0.0))),
    "rate": lambda s, q: _ok(lambda: s.set_rate(_num(q, "per_symbol", float, 0.0))),
    "plan": _plan,
    "received": _received,
    "clear_received": lambda s, q: _ok(s.clear_received),
    "state": lambda s, q: s.state(),
    "clock": _clock,
}
