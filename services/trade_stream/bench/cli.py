"""``trade-stream bench``: measure the relay's fan-out against the simulator, and a naive relay with --compare.

Everything runs on this machine over loopback: a counting simulator, the daemon (or the baseline relay from
``bench/baseline.py``) pinned to the first core, and load-client processes on the other cores. One table comes
out (``--json`` for machine-readable results). See ``bench/runner.py`` for what is measured and when.
``--rounds N`` runs the daemon, a Node ws relay and the raw-write floor (``bench/peers.py``) in N interleaved
rounds and compares their medians (``bench/rounds.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from trade_stream.bench import broker, peers, procs, report, rounds, scenarios
from trade_stream.bench.cluster import ClusterRun
from trade_stream.bench.runner import Run, RunOptions, RunResult
from trade_stream.bench.scenarios import Plan

RATE_MEANING = {"hot": "msg/s on the one symbol", "stall": "msg/s on the one symbol",
                "spread": "msg/s upstream in total", "idle": "msg/s upstream in total",
                "firehose": "msg/s upstream in total", "broker": "Broker trade events/s offered upstream",
                "mix": "msg/s upstream in total"}
ROUND_SCENARIOS = ("hot", "spread", "firehose", "mix")  # one relay per run, no staller: comparable as they are


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="trade-stream bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="`trade-stream bench outbox --help`: the webhook outbox's head query and "
                                       "sizes as a backlog grows.\n\n"
                                       "Scenarios (defaults are the issue's target sizes):\n" + "\n".join(
                                    f"  {k:9s} {scenarios.DESCRIPTIONS[k]} (default N={d.clients}, R={d.rate:g}, "
                                    f"{d.duration:g} s)" for k, d in scenarios.DEFAULTS.items())
                                + "\n\ntrade-stream bench auth --help: the cost of one credential check with 1 and "
                                  "10,000 users"
                                + "\n\ntrade-stream bench publish --help: app-channel events taken in and delivered"
                                + "\n\ntrade-stream bench alerts --help: price alert evaluation per trade with "
                                  "10,000 armed alerts over 500 symbols")
    p.add_argument("--scenario", choices=sorted(scenarios.DEFAULTS), default="hot")
    p.add_argument("--clients", type=int, help="N: client connections (stall: besides the staller)")
    p.add_argument("--rate", type=float, help="R: msg/s (per symbol for hot/stall, total upstream otherwise)")
    p.add_argument("--duration", type=float, help="measurement window in seconds")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of traffic before the window (default 2)")
    p.add_argument("--compare", action="store_true", help="also run the baseline relay, same plan, right after")
    p.add_argument("--rounds", type=int, default=0, metavar="N",
                   help="run ours, a Node ws relay and the raw-write floor (one transport.write per client per "
                        "message) in N interleaved rounds (ABCABC...) and report each one's medians and the "
                        "ratios ours/node and ours/raw; with --compare the baseline joins every round "
                        f"({', '.join(ROUND_SCENARIOS)})")
    p.add_argument("--cluster", type=int, default=0, metavar="N",
                   help="also run N daemons on one redis-server (clients split across them), same plan, then "
                        "SIGKILL the leader: Redis hop latency, CPU per delivery per node, Redis CPU, failover time "
                        "(hot, spread, firehose)")
    p.add_argument("--batch", action="store_true", help='clients ask for {"action":"options","batch":true}')
    p.add_argument("--json", action="store_true", help="print JSON results instead of the table")
    p.add_argument("--per-process", type=int, help="clients per load-client process")
    p.add_argument("--load-client", choices=("python", "node"), default="python",
                   help="load-client processes: python (uvloop, default) or node (bench/node/loadclient.mjs, "
                        "cheaper per message, so less of the client's own queueing in the latency; stallers "
                        "stay in Python)")
    p.add_argument("--no-pin", action="store_true", help="do not pin relay and clients to different cores")
    p.add_argument("--profile", metavar="PATH", help="py-spy record the relay during the window (.svg or .txt)")
    p.add_argument("--relay-arg", action="append", default=[], metavar="ARG",
                   help="extra daemon flag, repeatable (e.g. --relay-arg=--client-buffer-bytes=262144)")
    p.add_argument("--keep-logs", metavar="DIR", help="keep each run's logs and specs under DIR")
    p.add_argument("--seed", type=int, default=7, help="seed of the subscription plan")
    p.add_argument("--sim-tick", type=float,
                   help="seconds between the simulator's frames, i.e. how Alpaca batches (default 0.05; mix 0.004)")
    p.add_argument("--accounts", type=int, default=scenarios.BROKER_ACCOUNTS,
                   help="broker: Broker API accounts (default 10,000), spread evenly over the N users")
    p.add_argument("--backlog", type=int, default=20_000,
                   help="broker: events published at once after the paced window (0: skip; default 20,000)")
    p.add_argument("--stall-timeout", type=float, default=60.0,
                   help="stall: seconds from the stall to give up waiting for the cut-off (default 60)")
    args = p.parse_args(argv)
    if args.rounds < 0 or (args.rounds and (args.scenario not in ROUND_SCENARIOS or args.cluster)):
        p.error(f"--rounds needs N >= 1, one of the scenarios {', '.join(ROUND_SCENARIOS)}, and no --cluster")
    return args


async def run(plan: Plan, opts: RunOptions, keep_dir: str | None = None) -> RunResult:
    """Execute one run in a fresh temporary directory (logs kept in ``keep_dir`` when given): N daemons on one
    redis-server with ``--cluster N``, else one relay."""
    kind: type[Run] = ClusterRun if opts.cluster > 1 else Run
    if keep_dir:
        name = opts.relay if opts.cluster <= 1 else f"cluster{opts.cluster}"
        path = Path(keep_dir) / f"{plan.scenario}-{name}-{opts.label or 'run'}-{int(time.time())}"
        path.mkdir(parents=True, exist_ok=True)
        return await kind(plan, opts, path).execute()
    with tempfile.TemporaryDirectory(prefix="trade-stream-bench-") as tmp:
        return await kind(plan, opts, Path(tmp)).execute()


async def bench(args: argparse.Namespace) -> tuple[dict[str, Any], list[RunResult]]:
    d = scenarios.DEFAULTS[args.scenario]
    clients = d.clients if args.clients is None else args.clients
    rate = d.rate if args.rate is None else args.rate
    duration = d.duration if args.duration is None else args.duration
    if args.rounds:
        peers.require_node()  # before any run: a missing node or ws is one line, not a failed round
    if args.load_client == "node":
        peers.require_node_client()
    relay_cores, other_cores = procs.core_split(not args.no_pin)
    if other_cores:
        os.sched_setaffinity(0, other_cores)  # the bench itself stays off the relay's core
    fd_limit = procs.raise_fd_limit()
    pinning = (f"relay on core {sorted(relay_cores)}, simulator + load clients + bench on cores "
               f"{sorted(other_cores or ())} (sched_setaffinity)" if relay_cores
               else "none (all processes share all cores)")
    if relay_cores and args.cluster:
        pinning += f"; cluster run: every node and redis-server on core {sorted(relay_cores)}"
    header = {"scenario": args.scenario, "description": scenarios.DESCRIPTIONS[args.scenario], "clients": clients,
              "rate": rate, "rate_meaning": RATE_MEANING[args.scenario], "duration": duration,
              "warmup": args.warmup, "batch": args.batch, "pinning": pinning, "fd_limit": fd_limit,
              "sim_tick": d.tick if args.sim_tick is None else args.sim_tick, "rounds": args.rounds,
              "load_client": args.load_client,
              "machine": report.machine(),
              "target_size": (clients, rate) == (d.clients, d.rate) and duration >= 10}
    base = RunOptions(relay="ours", duration=duration, warmup=args.warmup, batch=args.batch,
                      per_process=args.per_process or d.per_process, relay_cores=relay_cores,
                      other_cores=other_cores, relay_args=args.relay_arg,
                      stall_timeout=args.stall_timeout, sim_tick=header["sim_tick"], load_client=args.load_client)
    variants: list[tuple[str, str, bool]] = [("ours", "", True)]  # (relay, label, with staller)
    if args.scenario == "stall":
        variants = [("ours", "no-staller", False), ("ours", "stall", True)]
    if args.rounds:
        relays = peers.ROUND + (("baseline",) if args.compare else ())
        variants = [(relay, rounds.label(n), True) for n, relay in rounds.schedule(relays, args.rounds)]
    elif args.compare:
        variants += [("baseline", label, staller) for _, label, staller in variants]
    if args.cluster:
        if args.cluster < 2 or args.scenario not in ("hot", "spread", "firehose"):
            raise RuntimeError("--cluster needs N >= 2 and the hot, spread or firehose scenario")
        variants.append(("cluster", "", True))
    results: list[RunResult] = []
    for relay, label, staller in variants:
        plan = scenarios.build(args.scenario, clients, rate, args.seed, with_staller=staller)
        opts = RunOptions(**{**base.__dict__, "relay": relay, "label": label,
                             "cluster": args.cluster if relay == "cluster" else 0,
                             "profile": args.profile if relay == "ours" and label in ("", "stall", "round 1")
                             else None})
        if not args.json:
            what = f"cluster of {args.cluster} nodes + redis-server" if relay == "cluster" else relay
            print(f"running {what}{' ' + label if label else ''}: {len(plan.clients)} clients, "
                  f"{plan.upstream_rate:g} msg/s upstream, {duration:g} s ...", file=sys.stderr, flush=True)
        results.append(await run(plan, opts, args.keep_logs))
    return header, results


def broker_main(args: argparse.Namespace) -> int:
    """The broker scenario has its own runner (bench/broker.py): other processes, other numbers."""
    d = scenarios.DEFAULTS["broker"]
    relay_cores, other_cores = procs.core_split(not args.no_pin)
    if other_cores:
        os.sched_setaffinity(0, other_cores)
    procs.raise_fd_limit()
    users = d.clients if args.clients is None else args.clients
    rate = d.rate if args.rate is None else args.rate
    duration = d.duration if args.duration is None else args.duration
    pinning = (f"daemon on core {sorted(relay_cores)}, simulator + users + bench on cores {sorted(other_cores or ())}"
               if relay_cores else "none (all processes share all cores)")
    if not args.json:
        print(f"running broker: {args.accounts} accounts, {users} users, {rate:g} events/s for {duration:g} s, "
              f"then a backlog of {args.backlog} ...", file=sys.stderr, flush=True)
    try:
        result = asyncio.run(broker.run(args.accounts, users, rate, duration, args.warmup, args.backlog,
                                        relay_cores, other_cores, args.relay_arg, args.keep_logs))
    except (RuntimeError, OSError, TimeoutError) as exc:
        print(f"trade-stream bench: {exc!r}", file=sys.stderr)
        return 1
    header = {"scenario": "broker", "description": scenarios.DESCRIPTIONS["broker"], "clients": users,
              "accounts": args.accounts, "rate": rate, "rate_meaning": RATE_MEANING["broker"],
              "duration": duration, "warmup": args.warmup, "backlog": args.backlog, "pinning": pinning,
              "machine": report.machine(),
              "target_size": args.accounts >= 10_000 and rate >= 2000 and duration >= 10}
    if args.json:
        print(json.dumps({**header, "runs": [result.to_dict()]}, indent=2))
    else:
        print(broker.text_report(header, result))
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["auth"]:  # the cost of one credential check, in process: nothing to fan out
        from trade_stream.bench import auth

        return auth.main(argv[1:])
    if argv[:1] == ["publish"]:  # app channels: publishers and WebSocket subscribers around one daemon
        from trade_stream.bench import publish

        return publish.main(argv[1:])

    if argv[:1] == ["alerts"]:  # price alert evaluation per trade, in process: pure, no sockets
        from trade_stream.bench import alerts

        return alerts.main(argv[1:])
    if argv[:1] == ["outbox"]:  # a sub-command of its own: no relay, no clients, one SQLite file
        from trade_stream.bench import outbox

        return outbox.main(argv[1:])
    args = parse_args(argv)
    if args.scenario == "broker":
        return broker_main(args)
    try:
        header, runs = asyncio.run(bench(args))
    except peers.MissingTool as exc:
        print(f"trade-stream bench: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as exc:
        print(f"trade-stream bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    summary = rounds.summary(runs, args.rounds) if args.rounds else None
    checks = report.targets(args.scenario, runs, summary)
    ratio = report.cpu_ratio(report.first(runs, "ours"), report.first(runs, "baseline"))
    if args.json:
        print(json.dumps({**header, "runs": [r.to_dict() for r in runs], "cpu_per_delivery_ratio": ratio,
                          "rounds": summary, "targets": [t.to_dict() for t in checks]}, indent=2))
    else:
        print(report.text_report(header, runs, checks, ratio, summary))
    return 0
