"""Application wiring, in one place: build every component from the Config, start them, stop them in order."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from typing import Any

from trade_stream.config import Config
from trade_stream.metrics import CONTENT_TYPE, build_registry, render
from trade_stream.origins import OriginPolicy
from trade_stream.relay import Relay
from trade_stream.stats import Stats
from trade_stream.web import StaticFiles, Web, json_response, response
from trade_stream.ws_server import WsServer

log = logging.getLogger("trade_stream.app")
DEMO_KEY, DEMO_SECRET = "DEMO_KEY", "DEMO_SECRET"


class App:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.stats = Stats()
        self.simulator: Any = None
        self.relay: Relay | None = None
        self.ws: WsServer | None = None
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
        self.web = Web(StaticFiles(cfg.public_dir), routes)
        self.ws = WsServer(cfg, relay, self.web, origins, self.stats)
        await self.ws.start()
        self._tasks.append(asyncio.create_task(relay.run(), name="upstream-market-data"))
        log.info("listening host=%s port=%d demo=%s feed=%s upstream=%s", cfg.host, self.ws.port, cfg.demo,
                 cfg.data_feed, cfg.data_stream_url)

    async def _start_simulator(self) -> Config:
        from trade_stream.simulator import SimConfig, Simulator  # demo mode only: production never imports it

        self.simulator = sim = Simulator(SimConfig(host="127.0.0.1", port=0, accounts={DEMO_KEY: DEMO_SECRET}))
        await sim.start()
        log.warning("DEMO MODE: market data and orders are SIMULATED (simulator at %s)", sim.http_url)
        return dataclasses.replace(
            self.cfg, api_key=DEMO_KEY, secret_key=DEMO_SECRET, base_url=sim.http_url, data_url=sim.http_url,
            data_stream_url=f"{sim.ws_url}/v2/{self.cfg.data_feed}", trading_stream_url=f"{sim.ws_url}/stream",
        )

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
        if self.relay is not None:
            await self.relay.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.simulator is not None:
            await self.simulator.stop()
        log.info("stopped")

    async def run_until_signalled(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()

    async def __aenter__(self) -> App:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
