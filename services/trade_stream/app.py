"""Application wiring, in one place: build every component from the Config, start them, stop them in order."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from trade_stream.config import Config
from trade_stream.core.event_ids import EventId, parse
from trade_stream.core.orders import AuthThrottled, Orders
from trade_stream.core.protocol import ClientError
from trade_stream.core.relay import Relay
from trade_stream.core.snapshots import Snapshots
from trade_stream.core.stats import Stats
from trade_stream.edges.compat import AlpacaEndpoints
from trade_stream.edges.origins import OriginPolicy
from trade_stream.edges.sse import SseServer
from trade_stream.edges.web import StaticFiles, Web, json_response, response
from trade_stream.edges.ws_server import WsServer
from trade_stream.engines.base import Engine
from trade_stream.engines.memory import MemoryEngine
from trade_stream.ops.health import report, upstream_health
from trade_stream.ops.metrics import CONTENT_TYPE, build_registry, render
from trade_stream.ops.sdnotify import Notifier, keep_alive, under_systemd, watchdog_interval
from trade_stream.ops.supervisor import Supervisor
from trade_stream.upstream.market_data import UpstreamState
from trade_stream.upstream.rest import AlpacaRest
from trade_stream.upstream.trading import TradingUpstream

log = logging.getLogger("trade_stream.app")
TOKEN_URL_FILE = "page-url"  # in the state directory: the page URL carrying a generated token (under systemd)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by this user only (0600, also when the file already existed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


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
        self.engine: Engine | None = None
        self.supervisor = Supervisor(cfg.timings.reconnect_min, cfg.timings.reconnect_max)
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        if self.cfg.demo:
            self.cfg = await self._start_simulator()
        cfg = self.cfg
        self.engine = engine = self._build_engine()
        self.relay = relay = Relay(cfg, self.stats, cfg.data_stream_url, engine)
        engine.hooks.on_leader = self._leadership
        await engine.connect()  # a cluster store that cannot be reached: EngineUnavailable, exit 2
        registry = build_registry(self.stats, relay.status, self.supervisor.restarts, engine.metrics)
        origins = OriginPolicy(cfg.allowed_origins)

        def cors(request: Any) -> dict[str, str]:
            allow = origins.cors_origin(request.headers.get("Origin"), request.headers.get("Host"))
            return {"Access-Control-Allow-Origin": allow, "Vary": "Origin"} if allow else {}

        routes = {
            "/healthz": lambda r: self._healthz(cors(r)),
            "/api/stream/status": lambda r: json_response(200, self.status(), cors(r)),
            "/metrics": lambda r: response(200, render(registry), CONTENT_TYPE),
        }
        self.orders = orders = self._build_orders(relay)
        peer_routes = {"/api/orders/events": lambda r, ip: self._order_events(r, ip, cors(r))}
        self.web = Web(StaticFiles(cfg.public_dir), routes, peer_routes)
        if not (Path(cfg.public_dir) / "index.html").is_file():
            log.warning("no_page public_dir=%s: / will answer 404; set TRADE_STREAM_PUBLIC_DIR to public_html",
                        cfg.public_dir)
        self.ws = WsServer(cfg, relay, self.web, origins, self.stats, private=orders, snapshots=Snapshots(cfg))
        compat = AlpacaEndpoints(relay, orders, cfg.data_feed, cfg.alpaca_prefix, cfg.max_symbols_per_client)
        self.ws.endpoints.update(compat.routes())
        await self.ws.start()
        if cfg.sse_port:
            self.sse = SseServer(cfg, relay, orders, origins, self.stats, status=self.status)
            await self.sse.start()
        await engine.start(self.supervisor.start)
        trading = self.trading
        self.supervisor.start("upstream-market-data", relay.run)
        self.supervisor.start("upstream-trading", lambda: engine.while_leader(trading.run, trading))
        self.supervisor.start("journal-retention", self._prune_journal)
        log.info("listening host=%s port=%d demo=%s feed=%s upstream=%s", cfg.host, self.ws.port, cfg.demo,
                 cfg.data_feed, cfg.data_stream_url)
        log.info("config %s", " ".join(f"{k}={v}" for k, v in cfg.public_view().items()))
        if cfg.token_generated:
            self._announce_token()

    def _build_engine(self) -> Engine:
        """One process (no Redis), or a node of a cluster sharing TRADE_STREAM_REDIS_URL."""
        cfg = self.cfg
        if not cfg.redis_url:
            return MemoryEngine(cfg.node_id)
        from trade_stream.engines.redis import RedisEngine  # cluster mode only: one process never imports redis

        return RedisEngine(cfg.redis_url, cfg.node_id, cfg.redis_prefix, lease=cfg.cluster_lease,
                           max_symbols=cfg.max_symbols, retention_days=cfg.journal_retention_days)

    def _leadership(self, leading: bool) -> None:
        """A node that does not hold the trading stream still shows positions: from REST, then from fills."""
        log.info("leadership node=%s leading=%s", self.cfg.node_id, leading)
        if not leading and self.orders is not None:
            orders = self.orders
            self.supervisor.start("positions-load", orders.load_positions)

    def _announce_token(self) -> None:
        """Tell the operator where the generated token is. In a terminal: print the page URL, as always. Under
        systemd stdout lands in the journal, readable by more people and kept long after the token should be
        gone: write it to a file only the service user can read instead, and log where."""
        cfg = self.cfg
        host = "localhost" if cfg.host in ("0.0.0.0", "::", "") else cfg.host
        url = f"http://{host}:{self.port}/#token={cfg.token}"
        if not under_systemd():
            print(f"trade-stream: no TRADE_STREAM_TOKEN set, generated one for this run. Open {url} to see order "
                  "updates.", flush=True)
            return
        path = Path(cfg.state_dir) / TOKEN_URL_FILE
        try:
            write_private(path, url + "\n")
        except OSError as exc:
            log.error("generated_token_not_saved path=%s error=%s: set TRADE_STREAM_TOKEN to use order updates",
                      path, exc)
            return
        log.warning("generated_token no TRADE_STREAM_TOKEN set, generated one for this run; the page URL with it is "
                    "in %s (mode 0600, this service's user only); set TRADE_STREAM_TOKEN for a fixed token", path)

    def _build_orders(self, relay: Relay) -> Orders:
        cfg = self.cfg
        name = "orders-demo.sqlite3" if cfg.demo else "orders.sqlite3"  # never mix simulated fills with real ones
        orders = Orders(cfg.token, Path(cfg.state_dir) / name, AlpacaRest(cfg), relay, self.stats,
                        cfg.journal_retention_days, cfg.timings.journal_retry,  # a journal fault is reported, not fatal
                        open_log=self.engine.open_order_log)

        def trading_state(state: UpstreamState) -> None:
            orders.on_state(state.state == "connected")
            log.info("trading_state state=%s error=%r", state.state, state.error)

        self.trading = TradingUpstream(
            url=cfg.trading_stream_url, key=cfg.api_key or "", secret=cfg.secret_key or "",
            on_event=orders.on_event, on_connected=orders.reconcile, on_state=trading_state,
            timings=cfg.timings, stats=self.stats,
        )
        return orders

    def _order_events(self, request: Any, ip: str, headers: dict[str, str]) -> Any:
        """Token-protected REST fallback: GET /api/orders/events?since=<id> with Authorization: Bearer <token>."""
        auth = request.headers.get("Authorization", "")
        token = auth[7:] if auth[:7].lower() == "bearer " else ""
        err = self.orders.check_token(token, ip) if token else ClientError("unauthorized", "missing bearer token")
        if isinstance(err, AuthThrottled):
            return json_response(429, {"error": "Too Many Requests", "message": err.message},
                                 {**headers, "Retry-After": str(err.retry_after)})
        if err is not None:
            return json_response(401, {"error": "Unauthorized", "message": err.message},
                                 {**headers, "WWW-Authenticate": "Bearer"})
        query = parse_qs(urlsplit(request.path).query)
        since = parse(query.get("since", [""])[-1]) or EventId(0)  # an id we cannot have issued: a reset
        status, body = self.orders.events_since(since)
        return json_response(status, body, headers)

    def health(self) -> dict[str, Any]:
        upstreams = {"market_data": self.relay.upstream.status} if self.relay else {}
        if self.trading is not None:
            upstreams["trading"] = self.trading.status
        view = report(upstreams, self.supervisor, self.cfg.health_grace)
        if self.orders is not None:
            orders = view["orders"] = self.orders.health()
            if orders["fault_for"] is not None and orders["fault_for"] > self.cfg.health_grace:
                view["ok"] = False
                view["down"].append("orders")
        return view

    def _healthz(self, headers: dict[str, str]) -> Any:
        """200 while every upstream and task is up (or down for less than the grace period), else 503."""
        health = self.health()
        body = {"status": "ok" if health["ok"] else "down", "upstream": self.relay.upstream_view(), **health}
        return json_response(200 if health["ok"] else 503, body, headers)

    def status(self) -> dict[str, Any]:
        """The relay's status plus the trading stream and the health view."""
        out = self.relay.status()
        if self.trading is not None:
            out["trading"] = upstream_health(self.trading.status, self.cfg.health_grace)
        if self.orders is not None:
            out["orders"] = self.orders.health()
        out["health"] = self.health()
        return out

    async def _prune_journal(self) -> None:
        while True:
            removed = self.orders.prune()
            if removed:
                log.info("journal_pruned removed=%d", removed)
            await asyncio.sleep(3600)

    async def _start_simulator(self) -> Config:
        from trade_stream import demo  # demo mode only: production never imports the simulator

        self.simulator, cfg = await demo.start(self.cfg)
        simulator = self.simulator
        self.supervisor.start("demo-trader", lambda: demo.trader(simulator))
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
        # All at once: each may wait out its own grace (a frozen upstream, stalled clients), and in a row those
        # waits add up past what systemd and Kubernetes give a stopping process.
        closing = [c for c in (self.ws and self.ws.close(), self.sse and self.sse.close(),
                               self.relay and self.relay.stop(), self.trading and self.trading.stop()) if c]
        for result in await asyncio.gather(*closing, return_exceptions=True):
            if isinstance(result, Exception):
                log.error("shutdown_step_failed error=%r", result)
        if self.engine is not None:
            await self.engine.stop()  # hands the lease over now, not after it runs out
        await self.supervisor.stop()
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
        health = self.health()
        return (f"upstream={relay.upstream.status.state} trading={trading} clients={len(relay.clients)} "
                f"symbols={len(relay.hub.wanted_symbols())} health={'ok' if health['ok'] else 'down'}"
                + (f" down={','.join(health['down'])}" if health["down"] else ""))

    def reload(self, cfg: Config) -> None:
        """SIGHUP: apply the new log level and limits; connections and subscriptions stay."""
        logging.getLogger().setLevel(cfg.log_level)
        if self.ws is not None:
            self.ws.reload_limits(cfg)
        if self.sse is not None:
            self.sse.reload_limits(cfg)
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
                self.supervisor.start("watchdog-keep-alive", lambda: keep_alive(notifier, interval, self.status_line))
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
