"""Command line: ``trade-stream [options]`` runs the relay; ``simulate``, ``check``, ``bench``, ``webhook``, ``user``
and ``publish`` are tools."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from typing import Any

from trade_stream import __version__, config

SUBCOMMANDS = {
    "simulate": "serve the Alpaca simulator on its own",
    "check": "validate the configuration and try the credentials against Alpaca",
    "bench": "measure fan-out against the simulator (and a baseline relay with --compare)",
    "webhook": "`webhook test NAME`: send a test event to a webhook target and print the answer",
    "push": "`push keys`: print a new VAPID key pair (Web Push) as env-file lines",
    "user": "`user add NAME --accounts a,b`, `user list`, `user remove NAME`: the users file",
    "publish": "`publish --channel C --event E --data JSON`: publish one event to an app channel",
}
DESCRIPTION = """Relay one Alpaca market-data and trading stream to many browser clients.

Without a subcommand it runs the daemon. Subcommands (each takes --help):
{}

Every flag below can also be set by the environment variable in brackets, or in a .env file."""


def build_parser() -> argparse.ArgumentParser:
    width = max(map(len, SUBCOMMANDS))
    listing = "\n".join(f"  {name:<{width}}  {text}" for name, text in SUBCOMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="trade-stream", usage="trade-stream [SUBCOMMAND] [options]",
        description=DESCRIPTION.format(listing), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"trade-stream {__version__}")
    config.add_arguments(parser)
    return parser


def subcommand_first(argv: list[str]) -> list[str]:
    """``trade-stream --env-file X user add …`` as ``trade-stream user --env-file X add …``: the file may be
    named before the subcommand as well as anywhere after it."""
    head: list[str] = []
    rest = list(argv)
    while (rest[:1] == ["--env-file"] and len(rest) >= 2) or (rest[:1] and rest[0].startswith("--env-file=")):
        take = 1 if "=" in rest[0] else 2
        head, rest = head + rest[:take], rest[take:]
    if head and rest and rest[0] in SUBCOMMANDS:
        return [rest[0], *head, *rest[1:]]
    return list(argv)


def main(argv: list[str] | None = None) -> int:
    argv = subcommand_first(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        return tool(argv[0])(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        cfg = config.load(args)
        config.check_state_dir(cfg.state_dir)
    except config.ConfigError as exc:
        print(f"trade-stream: {exc}", file=sys.stderr)
        return 2
    return run(cfg, lambda: config.load(args))


def tool(name: str) -> Callable[[list[str]], int]:
    """Tools are imported only when asked for: the daemon never loads the simulator or the benchmark."""
    if name == "simulate":
        from trade_stream.simulator import cli as simulate

        return simulate.main
    if name == "check":
        from trade_stream.ops import check

        return functools.partial(check.main, start_demo=start_demo)
    if name == "webhook":
        from trade_stream.edges import webhooks

        return webhooks.main
    if name == "push":
        from trade_stream.edges import push

        return push.main
    if name == "user":
        from trade_stream.edges import identity

        return identity.main
    if name == "publish":
        from trade_stream.edges import publish_api

        return publish_api.main
    from trade_stream.bench import cli as bench

    return bench.main


async def start_demo(cfg: config.Config) -> tuple[config.Config, Any]:
    """Start the simulator in-process, as ``trade-stream --demo`` does, and point the config at it."""
    from trade_stream import demo  # only with --demo: the check never imports the simulator otherwise

    sim, cfg = await demo.start(cfg)
    return cfg, sim


def run(cfg: config.Config, reread: Callable[[], config.Config] | None = None) -> int:
    import uvloop

    from trade_stream.app import App, CannotListen
    from trade_stream.core.engine import EngineUnavailable
    from trade_stream.ops import logs

    logs.setup(cfg.log_level)
    try:
        uvloop.run(App(cfg).run_until_signalled(reread))
    except (CannotListen, EngineUnavailable) as exc:
        print(f"trade-stream: {exc}", file=sys.stderr)
        return 2
    return 0
