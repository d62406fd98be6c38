"""Command line: ``trade-stream [options]`` runs the relay; ``simulate``, ``check`` and ``bench`` are tools."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from trade_stream import __version__, config

SUBCOMMANDS = {
    "simulate": "serve the Alpaca simulator on its own (trade-stream simulate --help)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trade-stream",
        description="Relay one Alpaca market-data and trading stream to many browser clients.",
        epilog="Tools: " + "; ".join(f"trade-stream {k}: {v}" for k, v in SUBCOMMANDS.items())
        + ". Every flag can also be set by the environment variable in brackets, or in a .env file.",
    )
    parser.add_argument("--version", action="version", version=f"trade-stream {__version__}")
    config.add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "simulate":
        from trade_stream.simulator.cli import main as simulate

        return simulate(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        cfg = config.load(args)
    except config.ConfigError as exc:
        print(f"trade-stream: {exc}", file=sys.stderr)
        return 2
    return run(cfg, lambda: config.load(args))


def run(cfg: config.Config, reread: Callable[[], config.Config] | None = None) -> int:
    import uvloop

    from trade_stream import logs
    from trade_stream.app import App

    logs.setup(cfg.log_level)
    try:
        uvloop.run(App(cfg).run_until_signalled(reread))
    except OSError as exc:
        print(f"trade-stream: cannot listen on {cfg.host}:{cfg.port}: {exc.strerror}; "
              "set TRADE_STREAM_PORT or stop the other process", file=sys.stderr)
        return 2
    return 0
