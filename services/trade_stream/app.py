"""Application wiring, in one place: build every component from the Config, start them, stop them in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from trade_stream.compat import AlpacaEndpoints
from trade_stream.config import Config
from trade_stream.history import History
from trade_stream.journal import Journal
from trade_stream.metrics import CONTENT_TYPE, build_registry, render
from trade_stream.orders import Orders
from trade_stream.origins import OriginPolicy
from trade_stream.page import PageSupport
from trade_stream.protocol import ClientError
from trade_stream.relay import Relay
from trade_stream.rest import AlpacaRest
from trade_stream.sdnotify import Notifier, keep_alive, watchdog_interval
from trade_stream.snapshots import Snapshots
from trade_stream.sse import SseServer
from trade_stream.stats import Stats
from trade_stream.trading import TradingUpstream
from trade_stream.upstream import UpstreamState
from trade_stream.web import StaticFiles, Web, json_response, response
from trade_stream.ws_server import WsServer

log = logging.getLogger("trade_stream.app")


class App:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.stats = Stats()
        self.simulator: Any = None
        self.relay: Relay | None = None
        self.ws: WsServer | None = None
        self.orders: Orders | None = None
        self.sse: SseServer | None = None
        self.trading: TradingUpstream | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        if self.cfg.demo:
            self.cfg = await self._start_simulator()
        cfg = self.cfg
        self.relay = relay = Relay(cfg, self.stats, cfg.data_stream_url)
        registry = build_registry(self.stats, relay.status)
        origins = OriginPolicy(cfg.allowed_origins)

        def cors(request: Any) -> dict[str, str]:
            allow = origins.cors_origin(request.headers.get("Origin"), request.headers.get("Host"))
            return {"Access-Control-Allow-Origin": allow, "Vary": "Origin"} if allow else {}

        routes = {
            "/healthz": lambda r: json_response(200, {"status": "ok", "upstream": relay.upstream_view()}, cors(r)),
            "/api/stream/status": lambda r: json_response(200, relay.status(), cors(r)),
            "/metrics": lambda r: response(200, render(registry), CONTENT_TYPE),
        }
        self.orders = orders = self._build_orders(relay)
        routes["/api/orders/events"] = lambda r: self._order_events(r, cors(r))
        self.web = Web(StaticFiles(cfg.public_dir), routes)
        if not (Path(cfg.public_dir) / "index.html").is_file():
            log.warning("no_page public_dir=%s: / will answer 404; set TRADE_STREAM_PUBLIC_DIR to public_html",
                        cfg.public_dir)
        self.ws = WsServer(cfg, relay, self.web, origins, self.stats, private=orders, snapshots=Snapshots(cfg))
        compat = AlpacaEndpoints(relay, orders, cfg.data_feed, cfg.alpaca_prefix, cfg.max_symbols_per_client)
        self.ws.endpoints.update(compat.routes())
        await self.ws.start()
        page = PageSupport(cfg, origins, self.ws.port)
        self.ws.instance = page.instance
        history = History(cfg)
        routes["/config.js"] = page.config_js
        routes["/api/page-info"] = page.info
        routes["/api/bars"] = lambda r: history.bars_route(r, cors(r))
        routes["/api/clock"] = lambda r: history.clock_route(r, cors(r))
        if cfg.sse_port:
            self.sse = SseServer(cfg, relay, orders, origins, self.stats)
            await self.sse.start()
        self._tasks.append(asyncio.create_task(relay.run(), name="upstream-market-data"))
        self._tasks.append(asyncio.create_task(self.trading.run(), name="upstream-trading"))
        self._tasks.append(asyncio.create_task(self._prune_journal(), name="journal-retention"))
        log.info("listening host=%s port=%d demo=%s feed=%s upstream=%s", cfg.host, self.ws.port, cfg.demo,
                 cfg.data_feed, cfg.data_stream_url)
        log.info("config %s", " ".join(f"{k}={v}" for k, v in cfg.public_view().items()))
        if cfg.token_generated:
            host = "localhost" if cfg.host in ("0.0.0.0", "::", "") else cfg.host
            print(f"trade-stream: no TRADE_STREAM_TOKEN set, generated one for this run. Open "
                  f"http://{host}:{self.ws.port}/#token={cfg.token} to see order updates.", flush=True)
        if not cfg.token_generated:  # the page's address is the last line printed at start, token or not
            page_host = "localhost" if cfg.host in ("0.0.0.0", "::", "") else cfg.host
            print(f"trade-stream: listening; open http://{page_host}:{self.ws.port}/ for the page.", flush=True)

    def _build_orders(self, relay: Relay) -> Orders:
        cfg = self.cfg
        name = "orders-demo.sqlite3" if cfg.demo else "orders.sqlite3"  # never mix simulated fills with real ones
        journal = Journal(Path(cfg.state_dir) / name, cfg.journal_retention_days)
        orders = Orders(cfg.token, journal, AlpacaRest(cfg), relay, self.stats)

        def trading_state(state: UpstreamState) -> None:
            orders.on_state(state.state == "connected")
            log.info("trading_state state=%s error=%r", state.state, state.error)

        self.trading = TradingUpstream(
            url=cfg.trading_stream_url, key=cfg.api_key or "", secret=cfg.secret_key or "",
            on_event=orders.on_event, on_connected=orders.on_connected, on_state=trading_state,
            timings=cfg.timings,
        )
        return orders

    def _order_events(self, request: Any, headers: dict[str, str]) -> Any:
        """Token-protected REST fallback: GET /api/orders/events?since=<id> with Authorization: Bearer <token>."""
        auth = request.headers.get("Authorization", "")
        token = auth[7:] if auth[:7].lower() == "bearer " else ""
        ip = "rest"
        err = self.orders.check_token(token, ip) if token else ClientError("unauthorized", "missing bearer token")
        if err is not None:
            return json_response(401 if err.code == "unauthorized" else 429,
                                 {"error": "Unauthorized", "message": err.message},
                                 {**headers, "WWW-Authenticate": "Bearer"})
        query = parse_qs(urlsplit(request.path).query)
        try:
            since = int(query.get("since", ["0"])[0])
        except ValueError:
            return json_response(400, {"error": "Bad Request", "message": "since must be an integer"}, headers)
        return json_response(200, self.orders.events_since(since), headers)

    async def _prune_journal(self) -> None:
        while True:
            removed = self.orders.journal.prune()
            if removed:
                log.info("journal_pruned removed=%d", removed)
            await asyncio.sleep(3600)

    async def _start_simulator(self) -> Config:
        from trade_stream import demo  # demo mode only: production never imports the simulator

        self.simulator, cfg = await demo.start(self.cfg)
        self._tasks.append(asyncio.create_task(demo.trader(self.simulator), name="demo-trader"))
        return cfg

    @property
    def port(self) -> int:
        assert self.ws is not None
        return self.ws.port

    async def stop(self) -> None:
        """Clients get 1001, upstream gets a proper close (so Alpaca frees the slot), then everything else."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        log.info("shutting_down")
        if self.ws is not None:
            await self.ws.close()
        if self.sse is not None:
            await self.sse.close()
        if self.relay is not None:
            await self.relay.stop()
        if self.trading is not None:
            await self.trading.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.orders is not None:
            await self.orders.stop()
        if self.simulator is not None:
            await self.simulator.stop()
        log.info("stopped")

    def status_line(self) -> str:
        relay = self.relay
        if relay is None:
            return "starting"
        trading = self.trading.status.state if self.trading else "off"
        return (f"upstream={relay.upstream.status.state} trading={trading} clients={len(relay.clients)} "
                f"symbols={len(relay.hub.wanted_symbols())}")

    def reload(self, cfg: Config) -> None:
        """SIGHUP: apply the new log level and limits; connections and subscriptions stay."""
        logging.getLogger().setLevel(cfg.log_level)
        if self.ws is not None:
            self.ws.reload_limits(cfg)
        if self.sse is not None:
            self.sse.admission.update(cfg.max_connections, cfg.max_connections_per_ip, cfg.max_connect_rate_per_ip)
        log.info("reloaded log_level=%s max_connections=%d max_connections_per_ip=%d", cfg.log_level,
                 cfg.max_connections, cfg.max_connections_per_ip)

    async def run_until_signalled(self, reread: Callable[[], Config] | None = None) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if reread is not None:
            loop.add_signal_handler(signal.SIGHUP, lambda: self._on_hup(reread))
        notifier = Notifier.from_env()
        try:
            await self.start()
        except BaseException:
            await self.stop()  # whatever did start (the demo simulator, a listener) goes away cleanly
            raise
        if notifier is not None:
            notifier.send(ready=1, status=self.status_line())
            interval = watchdog_interval()
            if interval:
                self._tasks.append(asyncio.create_task(keep_alive(notifier, interval, self.status_line)))
        try:
            await stop.wait()
        finally:
            if notifier is not None:
                notifier.send(stopping=1, status="shutting down")
            await self.stop()
            if notifier is not None:
                notifier.close()

    def _on_hup(self, reread: Callable[[], Config]) -> None:
        try:
            self.reload(reread())
        except Exception as exc:  # a bad edit must not kill a running daemon
            log.error("reload_failed error=%s (keeping the running configuration)", exc)

    async def __aenter__(self) -> App:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
