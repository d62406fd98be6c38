"""Command line: ``trade-stream [options]`` runs the relay; ``simulate``, ``check`` and ``bench`` are tools."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from trade_stream import __version__, config

SUBCOMMANDS = {
    "simulate": "serve the Alpaca simulator on its own",
    "check": "validate the configuration and try the credentials against Alpaca",
    "bench": "measure fan-out against the simulator (and a baseline relay with --compare)",
    "webhook": "`webhook test NAME`: send a test event to a webhook target and print the answer",
    "user": "`user add NAME --accounts a,b`, `user list`, `user remove NAME`: the users file (TRADE_STREAM_USERS_FILE)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trade-stream",
        description="Relay one Alpaca market-data and trading stream to many browser clients.",
        epilog="Tools: " + "; ".join(f"trade-stream {k}: {v}" for k, v in SUBCOMMANDS.items())
        + " (each takes --help). Every flag can also be set by the environment variable in brackets,"
        " or in a .env file.",
    )
    parser.add_argument("--version", action="version", version=f"trade-stream {__version__}")
    config.add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SUBCOMMANDS:
        return tool(argv[0])(argv[1:])
    leading = env_file_then_tool(argv)
    if leading is not None:
        return tool(leading[0])(leading[1])
    args = build_parser().parse_args(argv)
    try:
        cfg = config.load(args)
    except config.ConfigError as exc:
        print(f"trade-stream: {exc}", file=sys.stderr)
        return 2
    return run(cfg, lambda: config.load(args))


def env_file_then_tool(argv: list[str]) -> tuple[str, list[str]] | None:
    """``trade-stream --env-file F user add …``: the file names the settings of the whole command line, so it may
    come before a tool's name too (the form a service's admin types); the tool gets it as its own first option."""
    if len(argv) >= 3 and argv[0] == "--env-file" and argv[2] in SUBCOMMANDS:
        return argv[2], ["--env-file", argv[1], *argv[3:]]
    if len(argv) >= 2 and argv[0].startswith("--env-file=") and argv[1] in SUBCOMMANDS:
        return argv[1], [argv[0], *argv[2:]]
    return None


def tool(name: str) -> Callable[[list[str]], int]:
    """Tools are imported only when asked for: the daemon never loads the simulator or the benchmark."""
    if name == "simulate":
        from trade_stream.simulator.cli import main
    elif name == "check":
        from trade_stream.ops.check import main
    elif name == "webhook":
        from trade_stream.edges.webhooks import main
    elif name == "user":
        from trade_stream.edges.identity import main
    else:
        from trade_stream.bench.cli import main
    return main


def run(cfg: config.Config, reread: Callable[[], config.Config] | None = None) -> int:
    import uvloop

    from trade_stream.app import App
    from trade_stream.engines.base import EngineUnavailable
    from trade_stream.ops import logs

    logs.setup(cfg.log_level)
    try:
        uvloop.run(App(cfg).run_until_signalled(reread))
    except OSError as exc:
        print(f"trade-stream: cannot listen on {cfg.host}:{cfg.port}: {exc.strerror}; "
              "set TRADE_STREAM_PORT or stop the other process", file=sys.stderr)
        return 2
    except EngineUnavailable as exc:
        print(f"trade-stream: {exc}", file=sys.stderr)
        return 2
    return 0
