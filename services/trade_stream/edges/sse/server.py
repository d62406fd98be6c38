"""The Server-Sent Events side-port (TRADE_STREAM_SSE_PORT): the same feed as the WebSocket side, for clients
that only listen.

This module is the server and nothing else: it reads each request with h11 (channel.py), admits the connection
(per-address limits, the same ``Admission`` as the main port), and dispatches on one route table declared at
construction: two JSON routes (status, metrics) and the stream kinds — market (market.py), private
(private.py), alerts (alerts.py), app channels (channel_streams.py) and the events API (events.py) — each run
through the one stream template (streams.py). The wire format is in wire.py, the codecs in codecs.py. It also
keeps the per-user event buffers of the streams that have one (core/user_buffer.py), dropped by a supervised
sweep, and writes the ``test`` event of ``POST /api/stream/test`` (stream_test.py) to every open stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

import h11

from trade_stream.config import Config
from trade_stream.core.accounts import Accounts
from trade_stream.core.broker import BrokerEvents
from trade_stream.core.limits import Admission
from trade_stream.core.protocol import encode
from trade_stream.core.relay import Relay
from trade_stream.core.stats import Stats
from trade_stream.core.user_buffer import UserBuffers
from trade_stream.core.users import User
from trade_stream.edges.http.credentials import RequestCredentials
from trade_stream.edges.http.request import Request
from trade_stream.edges.http.responses import Cors, Response, error, json
from trade_stream.edges.http.routes import Route, Router
from trade_stream.edges.origins import OriginPolicy
from trade_stream.edges.sse.alerts import AlertsStream
from trade_stream.edges.sse.channel import (
    PREFLIGHT,
    REQUEST_TIMEOUT,
    Channel,
    Shared,
    bad_request,
    parse_throttle,
    read_request,
)
from trade_stream.edges.sse.channel_streams import STRATEGIES, ChannelStream, strategy_channel
from trade_stream.edges.sse.client import SseClient
from trade_stream.edges.sse.codecs import PriceCodec, SseCodec
from trade_stream.edges.sse.events import EventsApi
from trade_stream.edges.sse.market import Holds, PricesStream, TradesStream
from trade_stream.edges.sse.private import OrderFanout, OrdersStream, OrderState
from trade_stream.edges.sse.streams import Opened, Stream
from trade_stream.edges.sse.wire import Ring, event_bytes
from trade_stream.edges.stream_test import PATH as STREAM_TEST_PATH
from trade_stream.edges.stream_test import StreamTest
from trade_stream.edges.transport import watch_stalls
from trade_stream.ops.supervisor import Supervise
from trade_stream.upstream.snapshots import Snapshots
from trade_stream.upstream.sources import Sources

log = logging.getLogger("trade_stream.edges.sse")

STREAM_ALLOW = "GET, OPTIONS"


class SseServer:
    def __init__(self, cfg: Config, relay: Relay[Sources], accounts: Accounts | None, origins: OriginPolicy,
                 stats: Stats, status: Callable[[], dict[str, Any]] | None = None, snapshots: Snapshots | None = None,
                 broker: BrokerEvents | None = None, routes: tuple[Route, ...] = (),
                 test_auth: Callable[[Request, dict[str, str]], Response | None] | None = None) -> None:
        """``routes``: more routes the wiring declares on this port (``POST /api/publish``); ``test_auth``: who
        may ``POST /api/stream/test`` (the publish API's check; None: nobody, the route answers 404)."""
        self.cfg = cfg
        self.max_body = cfg.publish_max_bytes if routes else 0  # request bodies are read for those routes only
        self.relay = relay
        self.status = status or relay.status  # the same public view as the main port's /api/stream/status
        self.accounts = accounts
        self.stats = stats
        self.shared = Shared(cfg, stats, Cors(origins, credentials=bool(cfg.auth_cookie)), cfg.max_symbols_per_client)
        self.credentials = RequestCredentials(cfg.auth_cookie, origins, cfg.allowed_origins)
        self.sent: Counter[str] = self.shared.sent
        self.ring = Ring(cfg.sse_replay)
        self.codec = SseCodec(self.ring, relay.sources.browser_prefix)
        self.price_ring = Ring(cfg.sse_replay)
        self.price_codec = PriceCodec(self.price_ring, relay.sources.browser_prefix)
        self.admission = Admission.of(cfg.max_connections, cfg.max_connections_per_ip,
                                      cfg.max_connect_rate_per_ip)
        self.server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

        self.clients: set[SseClient] = set()  # live market streams, trades and prices
        holds = Holds(relay, self.shared)
        trades = TradesStream(relay, self.shared, holds, self.codec, self.clients)
        prices = PricesStream(relay, self.shared, holds, self.price_codec, self.clients, snapshots)
        self.fanout = fanout = OrderFanout(accounts) if accounts is not None else None
        hub, tail = relay.channels, relay.engine.channel_tail  # app channels (core/app_channels.py)
        private = {kind: OrdersStream(kind, accounts, fanout, self.codec, self.credentials, hub, tail)
                   for kind in ("orders", "positions", "trading")}
        identity = accounts.identity if accounts is not None else None
        self.buffers = UserBuffers(cfg.sse_user_buffer, cfg.sse_user_buffer_ttl)
        self.alerts = AlertsStream(identity, self.codec, self.credentials, hub, tail, self.buffers)
        self.strategies = ChannelStream("strategies", strategy_channel, identity, self.credentials, hub, tail,
                                        self.buffers, self.codec, must_exist=True)
        self.ai_decisions = ChannelStream("ai-decisions", lambda r: "ai-decisions", identity, self.credentials,
                                          hub, tail, self.buffers, self.codec)
        self.events_api = EventsApi(accounts, broker, self.shared, self.codec)
        self.router = Router([
            Route("/api/stream/status", lambda r: json(200, self.status())),
            Route("/api/stream/metrics", lambda r: json(200, self.metrics(r))),
            Route("/api/stream/trades", trades, methods=("GET",)),
            Route("/api/stream/prices", prices, methods=("GET",)),
            *(Route(f"/api/stream/{kind}", stream, methods=("GET",)) for kind, stream in private.items()),
            Route("/api/stream/alerts", self.alerts, methods=("GET",)),
            Route(STRATEGIES, self.strategies, methods=("GET",), prefix=True),
            Route("/api/stream/ai-decisions", self.ai_decisions, methods=("GET",)),
            *self.events_api.routes(),
            *routes,
            *([Route(STREAM_TEST_PATH, StreamTest(test_auth, self.send_test, lambda: relay.clients, lambda r: {}),
                     methods=None)] if test_auth is not None else []),
        ])
        # What this port serves from the order side (``fanout``: order events, positions and resets per account;
        # ``events_api``: order events or the Broker journal; ``alerts``: notifications) is subscribed by the
        # wiring that builds the server, so one place shows every receiver of an order event.

    @property
    def order_clients(self) -> dict[SseClient, OrderState]:
        return self.fanout.clients if self.fanout is not None else {}

    @property
    def alert_clients(self) -> dict[SseClient, User]:
        return self.alerts.clients

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    def reload_limits(self, cfg: Config) -> None:
        """SIGHUP: new limits apply to new connections and requests; nobody is dropped."""
        self.admission.update(cfg.max_connections, cfg.max_connections_per_ip, cfg.max_connect_rate_per_ip)
        self.shared.max_symbols_per_client = cfg.max_symbols_per_client

    def _streams(self) -> list[SseClient]:
        return [*self.clients, *self.order_clients, *self.alert_clients, *self.strategies.clients,
                *self.ai_decisions.clients]

    def send_test(self, message: str, timestamp: str) -> int:
        """``event: test`` (no id: it is no source's event, so it leaves every client's Last-Event-ID alone) on
        every open stream of the SSE API: how many got it. The Alpaca-style events API streams are left alone:
        their clients are Alpaca's SDKs, which know no such event."""
        ev = event_bytes("test", encode({"message": message, "timestamp": timestamp}))
        broker = [c for c, (stream, _, _) in self.events_api.live.items() if stream == "broker"]
        return sum(1 for client in [*self._streams(), *broker] if client.write(ev, 1))

    async def start(self, supervise: Supervise | None = None) -> None:
        """Listen; the stall sweep runs under ``supervise`` (restarted on any exception, in health and metrics)."""
        self.server = await asyncio.start_server(self._handle, self.cfg.host, self.cfg.sse_port)
        if self.cfg.stall_timeout:
            def sweep() -> Coroutine[Any, Any, None]:
                return watch_stalls(self.shared.writes, self.cfg.stall_timeout)

            self._handlers.add(supervise("stall-sweep-sse", sweep) if supervise else asyncio.create_task(sweep()))
        if self.buffers.size:
            self._handlers.add(supervise("sse-user-buffers", self.sweep_buffers) if supervise
                               else asyncio.create_task(self.sweep_buffers()))
        log.info("sse_listening port=%d", self.port)

    async def sweep_buffers(self) -> None:
        """Drop each user's buffer ``TRADE_STREAM_SSE_USER_BUFFER_TTL`` after their last connection to its stream
        closed, checking a few times per that interval (at most every 30 s)."""
        every = min(30.0, self.buffers.linger / 4)
        while True:
            await asyncio.sleep(every)
            for (user, stream), events in self.buffers.sweep(time.monotonic()):
                log.info("sse_user_buffer_dropped user=%s stream=%s events=%d", user, stream, events)

    async def close(self) -> None:
        if self.server is None:
            return
        self.server.close()
        for client in [*self._streams(), *self.events_api.live]:
            client.end()
        for task in list(self._handlers):
            task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.server.wait_closed(), self.cfg.timings.shutdown_grace)

    # --- connection ---------------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        peer = writer.get_extra_info("peername")
        ip = str(peer[0]) if peer else "?"
        conn = h11.Connection(h11.SERVER)
        try:
            request = await asyncio.wait_for(read_request(conn, reader, ip, self.max_body), REQUEST_TIMEOUT)
            if request is not None:
                await self._serve(Channel(conn, request, reader, writer, self.shared))
        except h11.RemoteProtocolError as exc:  # malformed request (a NUL in the target, huge headers, …)
            bad_request(conn, writer, exc)
        except (TimeoutError, ConnectionError):
            pass
        except asyncio.CancelledError:
            # close() cancels every handler (one may be waiting on a snapshot batch): the connection ends here.
            # A handler task that ends cancelled makes asyncio's stream server log "Exception in callback ...
            # CancelledError" (Python 3.11), so at shutdown the cancel stops here; at any other time it goes on.
            if self.server is not None and self.server.is_serving():
                raise
        finally:
            if task is not None:
                self._handlers.discard(task)
            writer.close()

    async def _serve(self, channel: Channel) -> None:
        request = channel.request
        log.info("sse_request method=%s path=%s ip=%s correlation_id=%s", request.method, request.path,
                 request.ip, channel.correlation)
        route = self.router.find(request.path)
        if route is None:
            return channel.respond(error(404, f"no such path {request.path}"))
        if route.methods is None:  # a resource answering its own preflight and 405s (POST /api/publish)
            answer = route.handler(request)
            return channel.respond(await answer if inspect.isawaitable(answer) else answer)
        if request.method == "OPTIONS":
            return channel.respond(Response(204, headers=PREFLIGHT))
        if request.method not in route.methods:
            return channel.respond(error(405, f"{request.method} not allowed", {"Allow": STREAM_ALLOW}))
        if not isinstance(route.handler, Stream):
            return channel.respond(route.handler(request))
        refused = self._refuse(request)
        if refused is not None:
            return channel.respond(refused)
        self.admission.opened(request.ip)
        try:  # whatever happens from here on, the slot is given back
            accepted = route.handler(request)
            if isinstance(accepted, Opened):
                await accepted.run(channel)
            else:
                channel.respond(accepted)
        finally:
            self.admission.closed(request.ip)

    def _refuse(self, request: Request) -> Response | None:
        """Before any stream: a bad ``throttle_ms``, then the connection limits (per address, overall, rate)."""
        throttle = parse_throttle(request.query.get("throttle_ms"))
        if isinstance(throttle, str):
            return error(400, throttle)
        refused = self.admission.refuse(request.ip, len(self._streams()), time.monotonic())
        if refused is None:
            return None
        status, message, retry_after = refused
        self.stats.connections_refused += 1
        return error(status, message, {"Retry-After": str(retry_after)})

    # --- metrics ----------------------------------------------------------------------------------------

    def metrics(self, request: Request) -> dict[str, Any]:
        """Public counts. Per-user counts are anonymous unless the caller is an admin user (or holds
        TRADE_STREAM_TOKEN): who is connected is nobody else's business."""
        per_user = Counter([*(s.user.name for s in self.order_clients.values()),
                            *(u.name for u in self.alert_clients.values()),
                            *(s.user.name for s in self.strategies.clients.values()),
                            *(s.user.name for s in self.ai_decisions.clients.values())])
        found = self.credentials.user(self.accounts.identity if self.accounts is not None else None, request,
                                      query=True)
        admin = isinstance(found, User) and found.admin
        connections = Counter(c.kind for c in self._streams())
        return {
            "connections": {k: connections.get(k, 0) for k in ("trades", "prices", "orders", "positions",
                                                               "trading", "alerts", "strategies",
                                                               "ai-decisions")},
            "users": dict(sorted(per_user.items())) if admin else sorted(per_user.values(), reverse=True),
            "events_sent": dict(sorted(self.sent.items())),
            "replay_buffers": {"trades": len(self.ring.events), "prices": len(self.price_ring.events),
                               "prices_coalescing": len(self.price_codec.pending),
                               "orders": "the order journal (TRADE_STREAM_JOURNAL_RETENTION_DAYS)",
                               "user_buffers": len(self.buffers.buffers)},
        }
