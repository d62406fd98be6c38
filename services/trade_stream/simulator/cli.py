"""Standalone runner: serve the simulator until SIGINT/SIGTERM (for demos, browser tests, benchmarks)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import signal
import sys

import uvloop

from .clock import Clock
from .config import KNOWN_SYMBOLS, SimConfig
from .server import Simulator


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="trade-stream simulate", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8900, help="port for WebSocket, REST and control (8900)")
    parser.add_argument("--key", default="DEMO_KEY", help="API key id accepted (default DEMO_KEY)")
    parser.add_argument("--secret", default="DEMO_SECRET", help="API secret accepted (default DEMO_SECRET)")
    parser.add_argument("--rate", type=float, default=2.0, help="trades/s per subscribed symbol (0 = none)")
    parser.add_argument("--seed", type=int, default=None, help="random seed for reproducible data")
    parser.add_argument("--no-history", action="store_true",
                        help="no synthesized day so far: the bars REST holds only what was traded since start")
    parser.add_argument("--session", default="live", metavar="live|open|TIME",
                        help="the simulated clock: live (default; real US market hours: stocks trade 04:00-20:00 "
                             "New York time on trading days, sparsely outside 09:30-16:00, crypto always), open "
                             "(a regular session at any hour), or an RFC 3339 time to start the clock at")
    parser.add_argument("--any-symbol", action="store_true",
                        help="every symbol is listed (default: well-known tickers only; others are unknown, as at "
                             "Alpaca)")
    return parser.parse_args(argv)


async def serve_forever(config: SimConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with Simulator(config) as sim:
        print(f"Alpaca simulator on {sim.http_url}", flush=True)
        print(f"  market data : {sim.ws_url}/v2/iex  (also /v2/sip, /v2/delayed_sip, /v2/test)", flush=True)
        print(f"  trading     : {sim.ws_url}/stream", flush=True)
        print(f"  REST        : {sim.http_url}/v2/account, /v2/stocks/snapshots?symbols=AAPL", flush=True)
        print(f"  control     : {sim.http_url}/_sim/state", flush=True)
        print(f"  clock       : {sim.clock.now():%a %Y-%m-%d %H:%M} New York ({sim.http_url}/v2/clock)", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        clock = Clock.for_session(args.session)
    except ValueError as exc:
        print(f"trade-stream simulate: --session {args.session}: {exc}", file=sys.stderr)
        return 2
    config = SimConfig(host=args.host, port=args.port, accounts={args.key: args.secret},
                       rate_per_symbol=args.rate, seed=args.seed, intraday_history=not args.no_history,
                       clock=clock, universe=None if args.any_symbol else KNOWN_SYMBOLS)
    try:
        uvloop.run(serve_forever(config))
    except OSError as exc:  # the port is taken (or the address is not this host's): one line, no traceback
        why = (f"port {args.port} is in use ({args.host}:{args.port})" if exc.errno == errno.EADDRINUSE
               else f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc})")
        print(f"trade-stream simulate: {why}; pick another --port or stop the other process", file=sys.stderr)
        return 2
    return 0
