"""The browser-facing WebSocket server (and plain HTTP on the same port).

``process_request`` is the gate: plain HTTP goes to ``web``; WebSocket upgrades are checked for origin (and,
when they carry the session cookie, for an origin that may use it) and connection limits before the handshake.
Each accepted connection gets a ``BrowserSession`` that parses actions and answers them; market data reaches it
through the router, never through this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from trade_stream import __version__
from trade_stream.config import Config
from trade_stream.core import fanout, protocol
from trade_stream.core.app_channels import BROWSER_CHANNELS
from trade_stream.core.event_ids import EventId
from trade_stream.core.fanout import BROWSER, BROWSER_BATCH
from trade_stream.core.limits import Admission, TokenBucket
from trade_stream.core.protocol import ClientError
from trade_stream.core.relay import Relay
from trade_stream.core.stats import Stats
from trade_stream.core.users import User
from trade_stream.edges.http.credentials import RequestCredentials
from trade_stream.edges.http.responses import Response as HttpResponse
from trade_stream.edges.http.responses import error
from trade_stream.edges.http_body import BodyConnection
from trade_stream.edges.origins import OriginPolicy, refusal_message
from trade_stream.edges.transport import Client, WatchedConnection, Writes, watch_stalls
from trade_stream.edges.web import Web, request_of, to_websockets
from trade_stream.ops.supervisor import Supervise
from trade_stream.upstream.snapshots import Snapshots
from trade_stream.upstream.sources import Sources

log = logging.getLogger("trade_stream.ws")


class PrivateStreams(Protocol):
    """What the order-updates side offers a browser session (see core/orders/)."""

    def authenticate(self, client: Client, token: str) -> ClientError | None: ...
    def subscribe(self, client: Client, since: EventId | dict[str, EventId] | None) -> ClientError | None: ...
    def unsubscribe(self, client: Client) -> None: ...
    def forget(self, client: Client) -> None: ...
    def user_of(self, client: Any) -> User | None: ...


class AlertActions(Protocol):
    """Price alerts as a browser session reaches them (core/price_alerts.py ``PriceAlerts.action``)."""

    async def action(self, client: Client, op: str, body: dict[str, Any]) -> dict[str, Any] | None: ...


# An extra WebSocket endpoint (e.g. the Alpaca-compatible paths): path prefix -> handler.
Endpoint = Callable[[ServerConnection, Client], Any]


class Connection(BodyConnection, WatchedConnection):
    """The main port's connection: small JSON bodies for the API (http_body.py), and the client marked closed as
    soon as websockets stops taking its frames (transport.py)."""


class WsServer:
    def __init__(self, cfg: Config, relay: Relay[Sources], web: Web, origins: OriginPolicy, stats: Stats,
                 private: PrivateStreams | None = None, snapshots: Snapshots | None = None,
                 endpoints: dict[str, Endpoint] | None = None, credentials: RequestCredentials | None = None,
                 alerts: AlertActions | None = None) -> None:
        self.cfg = cfg
        self.alerts = alerts
        self.credentials = credentials or RequestCredentials(cfg.auth_cookie, origins, cfg.allowed_origins)
        self.relay = relay
        self.web = web
        self.origins = origins
        self.stats = stats
        self.private = private
        self.snapshots = snapshots
        self._tasks: set[asyncio.Task[Any]] = set()
        self.endpoints: dict[str, Endpoint] = dict(endpoints or {})  # path prefix -> WebSocket session
        self.server: Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.writes = Writes(stats, cfg.write_delay_ms / 1000)  # every client's writes of an iteration (or delay)
        self.admission = Admission.of(cfg.max_connections, cfg.max_connections_per_ip,
                                      cfg.max_connect_rate_per_ip)
        self._limits = cfg
        self.instance = ""  # set by app.py once the port is known (page.instance_id)
        # Bodies up to the publish API's limit (the other routes' bodies are small and checked by them).
        self._connection = type("Connection", (Connection,), {"max_body": max(Connection.max_body,
                                                                               cfg.publish_max_bytes)})

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    def reload_limits(self, cfg: Config) -> None:
        """SIGHUP: new limits apply to new actions and connections; nobody is dropped."""
        self._limits = cfg
        self.admission.update(cfg.max_connections, cfg.max_connections_per_ip, cfg.max_connect_rate_per_ip)

    async def start(self, supervise: Supervise | None = None) -> None:
        """Listen; the stall sweep runs under ``supervise`` (the app's supervisor: restarted on any exception,
        in health and metrics)."""
        if self.cfg.stall_timeout:
            def sweep() -> Coroutine[Any, Any, None]:
                return watch_stalls(self.writes, self.cfg.stall_timeout)

            self._sweeper = supervise("stall-sweep", sweep) if supervise else asyncio.create_task(sweep())
        ping = self.cfg.ping_interval or None
        self.server = await serve(
            self._handler, self.cfg.host, self.cfg.port, process_request=self._process_request,
            compression=None, max_size=self.cfg.max_message_bytes, ping_interval=ping, ping_timeout=ping,
            close_timeout=self.cfg.timings.shutdown_grace, server_header=f"trade-stream/{__version__}",
            create_connection=self._connection,
        )

    async def close(self) -> None:
        """Close clients with 1001 (going away); abort whoever does not finish within the grace period."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self.server is None:
            return
        self.server.close(close_connections=True)
        try:
            await asyncio.wait_for(self.server.wait_closed(), self.cfg.timings.shutdown_grace)
        except TimeoutError:
            for client in list(self.relay.clients):
                if isinstance(client, Client):
                    client.abort()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), 1.0)

    # --- handshake gate -----------------------------------------------------------------------------------

    def _process_request(self, conn: ServerConnection, request: Request) -> Any:
        method = getattr(request, "method", "GET")
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return self._http(method, request, _ip(conn), getattr(conn, "request_body", None),
                              getattr(conn, "body_error", None))
        origin, host = request.headers.get("Origin"), request.headers.get("Host")
        if not self.origins.allows(origin, host):
            log.warning("origin_refused origin=%r", origin)
            return to_websockets(error(403, refusal_message(origin, self.cfg.allowed_origins),
                                       {"X-Trade-Stream-Refused": "origin"}))
        ip = _ip(conn)
        hijack = self.credentials.cookie_refusal(request_of(request, ip))
        if hijack is not None:  # another site's page, the visitor's cookie attached by the browser
            log.warning("cookie_origin_refused origin=%r ip=%s path=%s", origin, ip, request.path.split("?", 1)[0])
            return to_websockets(error(403, hijack, {"X-Trade-Stream-Refused": "cookie-origin"}))
        refusal = self.admission.refuse(ip, len(self.relay.clients), time.monotonic())
        if refusal is None:
            return None
        status, message, retry_after = refusal
        self.stats.connections_refused += 1
        log.warning("connection_refused ip=%s status=%d", ip, status)
        return to_websockets(error(status, message, {"Retry-After": str(retry_after)}))

    def _http(self, method: str, request: Request, ip: str, body: bytes | None = None,
              body_error: int | None = None) -> Any:
        resp = self.web.handle(request_of(request, ip, method, body, body_error))
        if inspect.isawaitable(resp):  # a route that calls out (e.g. /api/bars); websockets awaits it
            return self._finish_async(method, resp)
        return to_websockets(resp, head=method == "HEAD")

    async def _finish_async(self, method: str, pending: Awaitable[HttpResponse]) -> Response:
        return to_websockets(await pending, head=method == "HEAD")

    # --- connections --------------------------------------------------------------------------------------

    async def _handler(self, conn: ServerConnection) -> None:
        ip = _ip(conn)
        self.admission.opened(ip)
        assert isinstance(conn, Connection)
        client = Client(conn, ip, self.cfg.client_buffer_bytes, self.stats, self.writes, self._cut_off)
        self.relay.add(client)
        try:
            path = conn.request.path.split("?", 1)[0] if conn.request else "/"
            endpoint = next((h for prefix, h in self.endpoints.items() if path.startswith(prefix)), None)
            if endpoint is not None:
                await endpoint(conn, client)
            else:
                await BrowserSession(self, client).run()
        except ConnectionClosed:
            pass
        finally:
            self.relay.remove(client)
            if self.private is not None:
                self.private.forget(client)
            self.admission.closed(ip)

    def spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def hang_up(self, client: fanout.Client, code: int, reason: str) -> None:
        """Close ``client`` in the background with ``code`` and ``reason``, after what is queued for it. The caller
        never waits on the socket; a close handshake not done within the grace (a client that stopped reading)
        ends with an abort."""
        if isinstance(client, Client):
            self.spawn(self._close(client, code, reason))

    async def _close(self, client: Client, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(client.close(code, reason), self.cfg.timings.shutdown_grace)
        except TimeoutError:
            client.abort()

    def _cut_off(self, client: Client) -> None:
        self.relay.remove(client)

    def welcome(self) -> dict[str, Any]:
        limits = self._limits
        return {
            "type": "welcome", "version": __version__, "demo": self.cfg.demo, "instance": self.instance,
            "upstream": self.relay.upstream_view(),
            "channels": list(protocol.MARKET_CHANNELS),
            "limits": {"max_symbols_per_client": limits.max_symbols_per_client,
                       "max_actions_per_sec": limits.max_actions_per_sec,
                       "max_message_bytes": limits.max_message_bytes,
                       "max_symbols": limits.max_symbols or None},
        }


class BrowserSession:
    """One browser connection speaking the client protocol (README, "Client protocol")."""

    def __init__(self, server: WsServer, client: Client) -> None:
        self.server = server
        self.client = client
        rate = server._limits.max_actions_per_sec
        self.bucket = TokenBucket(rate=rate, burst=max(1.0, 2 * rate))

    async def run(self) -> None:
        client = self.client
        client.send_message(self.server.welcome())
        request = client.conn.request
        if request is not None:
            self.cookie_auth(self.server.credentials.from_cookie(request_of(request, client.ip)))
        async for raw in client.conn:
            self.handle(raw)

    def cookie_auth(self, credential: str) -> None:
        """The handshake's session cookie authenticates the connection at once, as an ``auth`` action would:
        ``authenticated`` or the error, each marked ``"via":"cookie"`` (a wrong cookie leaves the connection for
        public data, and counts as a failed credential). A later ``auth`` action replaces the cookie's user,
        which is the precedence HTTP has too: what the client sends explicitly wins over what the browser
        attached."""
        private = self.server.private
        if not credential or private is None:
            return
        err = private.authenticate(self.client, credential)
        if err is None:
            self.client.send_message({"type": "authenticated", "via": "cookie"})
            return
        self.server.stats.client_errors += 1
        self.client.send_message({**err.to_message(), "via": "cookie"})

    def handle(self, raw: str | bytes) -> None:
        if not self.bucket.take(time.monotonic()):
            self.reply_error(ClientError("rate_limited", "too many actions; slow down"))
            return
        action = protocol.parse(raw)
        if isinstance(action, ClientError):
            self.reply_error(action)
            return
        match action:
            case protocol.Subscribe():
                self.subscribe(action)
            case protocol.Unsubscribe():
                keys = self.server.relay.sources.browser_keys(action.symbols, action.channels)
                self.server.relay.unsubscribe(self.client, keys)
                for msg in protocol.subscribed(action.symbols, action.channels, "unsubscribed"):
                    self.client.send_message(msg)
            case protocol.Ping():
                self.client.send_message({"type": "pong", "time": time.time()})
            case protocol.Options():
                self.client.codec = BROWSER_BATCH if action.batch else BROWSER
                self.client.send_message({"type": "options", "batch": action.batch})
            case protocol.Auth():
                self.private_call(lambda p: p.authenticate(self.client, action.token), {"type": "authenticated"})
                if self.server.private is not None and self.server.relay.channels.channels_of(self.client):
                    # app channels held before: kept as far as the user now authenticated may see them
                    self.server.relay.channels.logged_in(self.client, self.server.private.user_of(self.client))
            case protocol.SubscribeOrders():
                self.private_call(lambda p: p.subscribe(self.client, action.since), None)
            case protocol.UnsubscribeOrders():
                self.private_call(lambda p: p.unsubscribe(self.client), {"type": "unsubscribed",
                                                                          "channel": "orders"})
            case protocol.SubscribeChannel():
                self.subscribe_channel(action)
            case protocol.UnsubscribeChannel():
                self.server.relay.channels.unsubscribe(self.client, action.channel)
                self.client.send_message({"type": "unsubscribed", "channel": action.channel})
            case protocol.AlertAction():
                self.alert(action)

    def subscribe_channel(self, action: protocol.SubscribeChannel) -> None:
        """An app channel (core/app_channels.py): acknowledged before what ``since`` replays."""
        private = self.server.private
        user = private.user_of(self.client) if private is not None else None
        err = self.server.relay.channels.subscribe(self.client, action.channel, user, BROWSER_CHANNELS,
                                                   action.since)
        if err is not None:
            self.reply_error(err)
            return
        self.client.send_message({"type": "subscribed", "channel": action.channel})

    def alert(self, action: protocol.AlertAction) -> None:
        alerts = self.server.alerts
        if alerts is None:
            self.reply_error(ClientError("unavailable", "price alerts are not enabled on this relay"))
            return

        async def run() -> None:
            reply = await alerts.action(self.client, action.op, action.body)
            if reply is not None:
                if reply.get("type") == "error":
                    self.server.stats.client_errors += 1
                self.client.send_message(reply)

        self.server.spawn(run())

    def subscribe(self, action: protocol.Subscribe) -> None:
        relay, client = self.server.relay, self.client
        held = {s for _, s in relay.hub.held_by(client)}
        cap = self.server._limits.max_symbols_per_client
        if len(held | set(action.symbols)) > cap:
            self.reply_error(ClientError("symbol_limit", f"at most {cap} symbols per connection"))
            return
        keys = relay.sources.browser_keys(action.symbols, action.channels)  # BTC/USD goes to the crypto stream

        def reply(err: ClientError | None) -> None:
            if err is not None:
                self.reply_error(err)
                return
            for msg in protocol.subscribed(action.symbols, action.channels):
                client.send_message(msg)
            if "orderbooks" in action.channels:  # the current top levels; updates to them follow
                for symbol in action.symbols:
                    book = relay.sources.orderbook(symbol)
                    if book is not None:
                        client.send_message(book)
            # the REST snapshot: stocks and pairs (crypto REST) have one, option contracts none
            wanted = [s for s in action.symbols if not protocol.is_option(s)]
            if "trades" in action.channels and wanted and self.server.snapshots is not None:
                self.server.spawn(self.send_snapshots(wanted))

        relay.subscribe(client, keys, reply)

    async def send_snapshots(self, symbols: list[str]) -> None:
        assert self.server.snapshots is not None
        for msg in await self.server.snapshots.get(symbols):
            self.client.send_message(msg)

    def private_call(self, call: Callable[[PrivateStreams], ClientError | None], ok: dict[str, Any] | None) -> None:
        private = self.server.private
        if private is None:
            self.reply_error(ClientError("unavailable", "order updates are not enabled on this relay"))
            return
        err = call(private)
        if err is not None:
            self.reply_error(err)
        elif ok is not None:
            self.client.send_message(ok)

    def reply_error(self, err: ClientError) -> None:
        self.server.stats.client_errors += 1
        self.client.send_message(err.to_message())


def _ip(conn: ServerConnection) -> str:
    addr = conn.remote_address
    return str(addr[0]) if addr else "?"
