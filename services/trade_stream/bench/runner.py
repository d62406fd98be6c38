"""One measured run: simulator + relay (ours or the baseline) + load-client processes, then numbers.

Timeline of a run (all processes are children of the bench, traffic is loopback only):
  1. simulator (others' core), relay (its own core); wait until the relay holds its upstream session
  2. idle RSS of the relay
  3. load clients connect and subscribe (others' core); wait until every process says ready
  4. simulator rate on; warm-up; then a window [T0, T1) of wall-clock time: the simulator counts the trades it
     stamps inside it, clients count and time the ones they receive stamped inside it, and the relay's CPU
     (user+system time, from /proc schedstat) and RSS are read at T0 and T1
  5. after a grace period for in-flight messages, collect the reports; stop everything (also on failure)
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trade_stream.bench import peers, probes
from trade_stream.bench.histogram import Histogram
from trade_stream.bench.procs import Child, Children
from trade_stream.bench.scenarios import Plan

KEY, SECRET = "BENCH_KEY", "BENCH_SECRET"
GRACE = 1.5  # seconds after T1 for messages stamped before T1 to arrive
NS = 1_000_000_000


@dataclass
class RunOptions:
    relay: str  # "ours" | "baseline" | "node" | "raw" | "cluster"
    duration: float
    warmup: float = 2.0
    batch: bool = False
    per_process: int = 500
    relay_cores: set[int] | None = None
    other_cores: set[int] | None = None
    relay_args: list[str] = field(default_factory=list)
    profile: str | None = None  # py-spy output path (flame graph .svg, or .txt for raw/collapsed)
    stall_timeout: float = 60.0  # keep waiting this long (from stall start) for the staller's cut-off
    label: str = ""
    sim_tick: float = 0.05  # how often the simulator sends what it generated (its upstream batching)
    cluster: int = 0  # > 1: that many daemons on one redis-server (bench/cluster.py)
    load_client: str = "python"  # "python" (bench/loadclient.py) | "node" (bench/node/loadclient.mjs)


@dataclass
class RunResult:
    relay: str
    scenario: str
    label: str
    clients: int
    connected: int
    connect_failed: int
    connect_seconds: float
    duration_s: float
    upstream_msgs_per_s: float
    deliveries: int
    expected: int
    deliveries_per_s: float
    fraction_delivered: float | None
    worst_client_fraction: float | None
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    latency_max_ms: float | None
    relay_cpu_s: float
    relay_cpu_pct: float
    cpu_s_per_million: float | None
    rss_idle_mb: float
    rss_mb: float
    rss_per_client_kb: float | None
    slow_client_cutoffs: int | None
    stall_cutoff_s: float | None = None
    stall_cut: bool | None = None
    clients_lost: int = 0
    load_cpu_pct: float = 0.0  # simulator + load clients, % of one core: near 100 means the client side was the limit
    late_messages: int = 0
    foreign_cpu_pct: float = 0.0  # CPU used by processes outside this bench during the window, % of one core
    load_average: float = 0.0  # 1-minute load average at the end of the window
    writes_per_delivery: float | None = None  # the relay's write system calls in the window per delivered message
    relay_exited: bool = False
    errors: list[str] = field(default_factory=list)
    profile: str | None = None
    # cluster runs only (bench/cluster.py): Redis's CPU, each node's numbers, the failover's
    redis_cpu_pct: float | None = None
    redis_cpu_s_per_million: float | None = None
    nodes: list[dict[str, Any]] | None = None
    failover: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _script(name: str) -> list[str]:
    """The console script next to this interpreter (the venv's), else ``python -m``."""
    path = Path(sys.executable).with_name(name)
    return [str(path)] if path.exists() else [sys.executable, "-m", name.replace("-", "_")]


def load_argv(kind: str, spec: Path, stallers: bool) -> list[str]:
    """How to start one load-client process on the spec file ``spec``. Stallers always get the Python client: a
    staller needs a small SO_RCVBUF, which Node cannot set, so the Node client refuses them."""
    if kind == "node" and not stallers:
        return [peers.require_node_client(), str(peers.NODE_LOAD_CLIENT), str(spec)]
    if kind not in ("python", "node"):
        raise ValueError(f"unknown load client {kind!r}")
    return [sys.executable, "-m", "trade_stream.bench.loadclient", str(spec)]


def relay_argv(kind: str, port: int, sim_port: int, state_dir: Path, extra: list[str]) -> list[str]:
    if kind == "baseline":
        return [sys.executable, "-m", "trade_stream.bench.baseline", "--port", str(port),
                "--upstream", f"ws://127.0.0.1:{sim_port}/v2/iex", "--key", KEY, "--secret", SECRET]
    if kind in ("node", "raw"):
        return peers.argv(kind, port, f"ws://127.0.0.1:{sim_port}/v2/iex", KEY, SECRET)
    sim = f"127.0.0.1:{sim_port}"
    return [*_script("trade-stream"), "--host", "127.0.0.1", "--port", str(port), "--api-key", KEY,
            "--secret-key", SECRET, "--base-url", f"http://{sim}", "--data-url", f"http://{sim}",
            "--data-stream-url", f"ws://{sim}/v2/iex", "--trading-stream-url", f"ws://{sim}/stream",
            "--max-connections-per-ip", "100000", "--max-connections", "100000", "--max-actions-per-sec", "1000",
            "--max-symbols-per-client", "1000", "--linger", "0", "--log-level", "WARNING",
            "--state-dir", str(state_dir), *extra]


async def _wait_ours_ready(port: int, relay: Child, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if relay.proc.returncode is not None:
            raise RuntimeError(f"relay exited (rc={relay.proc.returncode}):\n{relay.tail()}")
        health = await probes.try_http_json(f"http://127.0.0.1:{port}/healthz")
        if health and health.get("upstream", {}).get("state") == "connected":
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"relay not connected upstream within {timeout:.0f}s:\n{relay.tail()}")


async def _sleep_until_ns(t_ns: int) -> None:
    await asyncio.sleep(max(0.0, (t_ns - time.time_ns()) / NS))


class Run:
    """State of one run; ``execute`` is the whole timeline."""

    def __init__(self, plan: Plan, opts: RunOptions, workdir: Path) -> None:
        self.plan = plan
        self.opts = opts
        self.workdir = workdir
        self.children = Children(workdir)
        self.sim_port = free_port()
        self.relay_port = free_port()
        self.loads: list[Child] = []
        self.specs: list[list[dict[str, Any]]] = []  # per load process: its clients (symbols, stall)
        self.ready: list[dict[str, Any]] = []  # per load process: its "ready" line
        self.load_node: list[int] = []  # per load process: the index of the node it connects to
        self._last_cpu = 0.0
        self.sim: Child | None = None
        self.relay: Child | None = None

    async def execute(self) -> RunResult:
        try:
            return await self._execute()
        finally:
            await self.children.stop_all()

    async def _execute(self) -> RunResult:
        opts, plan = self.opts, self.plan
        await self._start_simulator()
        relay = await self._start_relay()
        await asyncio.sleep(1.0)
        rss_idle = probes.rss_bytes(relay.pid)
        connect = await self._start_loads()
        start_ns, end_ns = await self._open_window()
        profiler = await self._start_profiler(relay.pid, opts.duration) if opts.profile else None
        await _sleep_until_ns(start_ns)
        cpu0 = self._last_cpu = probes.cpu_seconds(relay.pid)
        writes0 = probes.write_calls(relay.pid)
        sampler = asyncio.create_task(self._sample_cpu(relay.pid))
        load_cpu0 = self._load_cpu()
        busy0 = probes.busy_cpu_seconds()
        stall = await self._watch_stall() if plan.stallers else None
        await _sleep_until_ns(end_ns)
        cpu1 = probes.cpu_seconds(relay.pid)
        writes1 = probes.write_calls(relay.pid)
        load_cpu1 = self._load_cpu()
        exited = relay.proc.returncode is not None or not cpu1
        if exited:  # e.g. the baseline, blocked on a slow client, gets dropped by the simulator and dies
            cpu1 = self._last_cpu
        sampler.cancel()
        busy = probes.busy_cpu_seconds() - busy0
        loadavg = probes.load_average()
        rss = probes.rss_bytes(relay.pid)
        await asyncio.sleep(GRACE)
        reports = await self._collect_reports()
        if stall is not None:  # the window is over; the staller may need longer to hit the relay's limits
            await asyncio.wait({stall}, timeout=opts.stall_timeout)
        counts: dict[str, int] = await probes.http_json(self._sim_url("bench_counts"))
        await probes.http_json(self._sim_url("rate?per_symbol=0"))
        cutoffs = await self._cutoffs()
        if profiler is not None:
            await asyncio.wait_for(profiler.proc.wait(), 30)
        result = self._result(reports, counts, connect, rss_idle, rss, cpu1 - cpu0, load_cpu1 - load_cpu0, cutoffs,
                              stall)
        other = busy - (cpu1 - cpu0) - (load_cpu1 - load_cpu0)
        result.foreign_cpu_pct = round(max(0.0, 100 * other / opts.duration), 1)
        if writes1 > writes0 and result.deliveries:
            result.writes_per_delivery = round((writes1 - writes0) / result.deliveries, 3)
        result.load_average = loadavg
        if exited:
            result.relay_exited = True
            result.errors.append(f"{relay.name} exited: " + relay.tail(3).replace("\n", " | "))
        return result

    # --- processes ----------------------------------------------------------------------------------------

    def _sim_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.sim_port}/_sim/{path}"

    async def _open_window(self) -> tuple[int, int]:
        """Start the upstream rate, warm up, then fix the measurement window (on a whole second) in the simulator
        and every load client: ``(start_ns, end_ns)``."""
        await probes.http_json(self._sim_url(f"rate?per_symbol={self.plan.per_symbol_rate}"))
        await asyncio.sleep(self.opts.warmup)
        start_ns = (time.time_ns() // NS + 1) * NS
        end_ns = start_ns + int(self.opts.duration * NS)
        await probes.http_json(self._sim_url(f"bench_window?start_ns={start_ns}&end_ns={end_ns}"))
        for load in self.loads:
            load.send({"cmd": "window", "start_ns": start_ns, "end_ns": end_ns})
        return start_ns, end_ns

    async def _start_simulator(self) -> None:
        self.sim = await self.children.spawn(
            "simulator", [sys.executable, "-m", "trade_stream.bench.simproc", "--port", str(self.sim_port),
                          "--key", KEY, "--secret", SECRET, "--tick", str(self.opts.sim_tick)],
            self.opts.other_cores, talk=True)
        await self.sim.readline(20)

    async def _start_relay(self) -> Child:
        kind = self.opts.relay
        argv = relay_argv(kind, self.relay_port, self.sim_port, self.workdir / "state", self.opts.relay_args)
        ours = kind == "ours"
        self.relay = relay = await self.children.spawn(f"relay-{kind}", argv, self.opts.relay_cores, talk=not ours)
        if ours:
            await _wait_ours_ready(self.relay_port, relay)
        else:  # the other relays print "ready <port>" once upstream is authenticated
            await relay.readline(20)
        return relay

    async def _start_loads(self) -> float:
        """Spawn the load processes (stallers get their own) and wait until every client is subscribed."""
        plan, per = self.plan, max(1, self.opts.per_process)
        normal = [{"symbols": s} for s in plan.clients]
        nodes = max(1, self.opts.cluster)
        groups: list[tuple[int, list[dict[str, Any]]]] = []  # (node, clients): client i goes to node i mod N
        for node in range(nodes):
            mine = normal[node::nodes]
            groups += [(node, mine[i:i + per]) for i in range(0, len(mine), per)]
        if plan.stallers:
            groups.append((0, [{"symbols": s, "stall": True} for s in plan.stallers]))
        started = time.monotonic()
        for n, (node, clients) in enumerate(groups):
            self.load_node.append(node)
            spec = {"host": "127.0.0.1", "port": self._load_port(node), "batch": self.opts.batch, "clients": clients,
                    "concurrency": 32, "timeout": 30}
            path = self.workdir / f"load-{n}.json"
            path.write_text(json.dumps(spec))
            self.specs.append(clients)
            argv = load_argv(self.opts.load_client, path, any(c.get("stall") for c in clients))
            self.loads.append(await self.children.spawn(f"load-{n}", argv, self.opts.other_cores, talk=True))
        timeout = 60 + len(normal) / 100
        self.ready = [await load.read_json(timeout) for load in self.loads]
        return time.monotonic() - started

    def _load_port(self, node: int) -> int:
        return self.relay_port

    async def _start_profiler(self, pid: int, duration: float) -> Child:
        out = self.opts.profile or "profile.svg"
        fmt = ["--format", "raw"] if out.endswith(".txt") else []
        return await self.children.spawn(
            "py-spy", [*_script("py-spy"), "record", "--pid", str(pid), "--duration", str(math.ceil(duration)),
                       "--rate", "200", "--nonblocking", "-o", out, *fmt], self.opts.other_cores)

    async def _sample_cpu(self, pid: int) -> None:
        """Keep the relay's last CPU reading, in case it dies before the window ends."""
        while True:
            now = probes.cpu_seconds(pid)
            if not now:
                return
            self._last_cpu = now
            await asyncio.sleep(0.25)

    def _load_cpu(self) -> float:
        pids = [c.pid for c in self.loads] + ([self.sim.pid] if self.sim else [])
        return sum(probes.cpu_seconds(p) for p in pids)

    async def _collect_reports(self) -> list[dict[str, Any]]:
        for load in self.loads:
            load.send({"cmd": "report"})
        return [await load.read_json(30) for load in self.loads]

    async def _cutoffs(self) -> int | None:
        if self.opts.relay != "ours":
            return None
        try:
            text = (await probes.http_get(f"http://127.0.0.1:{self.relay_port}/metrics")).decode()
        except OSError:
            return None
        value = probes.prom_value(text, "trade_stream_slow_client_cutoffs_total")
        return None if value is None else int(value)

    async def _watch_stall(self) -> asyncio.Task[float | None]:
        """Stallers stop reading now; a task polls the relay's cut-off counter until it moves or time runs out."""
        for load in self.loads:
            load.send({"cmd": "stall"})
        began = time.monotonic()
        before = await self._cutoffs() or 0

        async def poll() -> float | None:
            while time.monotonic() - began < self.opts.stall_timeout:
                now = await self._cutoffs()
                if now is not None and now > before:
                    return time.monotonic() - began
                await asyncio.sleep(0.25)
            return None

        return asyncio.create_task(poll())

    # --- numbers ------------------------------------------------------------------------------------------

    def _result(self, reports: list[dict[str, Any]], counts: dict[str, int], connect: float, rss_idle: int,
                rss: int, cpu: float, load_cpu: float, cutoffs: int | None,
                stall: asyncio.Task[float | None] | None) -> RunResult:
        plan, opts = self.plan, self.opts
        hist = Histogram()
        received = expected = lost = late = 0
        worst: float | None = None
        errors: list[str] = []
        for clients, rep, ready in zip(self.specs, reports, self.ready, strict=True):
            hist.merge(rep["hist"]["counts"], rep["hist"]["max_us"])
            lost += rep["lost"]
            late += rep["late"]
            errors += ready.get("errors", []) + rep["errors"]
            for index, got in rep["per_client"]:
                want = sum(counts.get(s, 0) for s in clients[index]["symbols"])
                received += got
                expected += want
                if want:
                    frac = got / want
                    worst = frac if worst is None else min(worst, frac)
        connected = sum(r["connected"] for r in self.ready)
        failed = sum(r["failed"] for r in self.ready)
        n_clients = len(plan.clients) + len(plan.stallers)
        stall_s = stall.result() if stall is not None and stall.done() else None
        if stall is not None and not stall.done():
            stall.cancel()

        def ms(us: float | None) -> float | None:
            return None if us is None else round(us / 1000.0, 3)

        dur = opts.duration
        rss_delta = max(0, rss - rss_idle)
        return RunResult(
            relay=opts.relay, scenario=plan.scenario, label=opts.label, clients=n_clients, connected=connected,
            connect_failed=failed, connect_seconds=round(connect, 1), duration_s=dur,
            upstream_msgs_per_s=round(sum(counts.values()) / dur, 1), deliveries=received, expected=expected,
            deliveries_per_s=round(received / dur, 1),
            fraction_delivered=round(received / expected, 6) if expected else None,
            worst_client_fraction=None if worst is None else round(worst, 6),
            latency_p50_ms=ms(hist.percentile(50)), latency_p99_ms=ms(hist.percentile(99)),
            latency_max_ms=ms(hist.max_us) if hist.total else None,
            relay_cpu_s=round(cpu, 2), relay_cpu_pct=round(100 * cpu / dur, 1),
            cpu_s_per_million=round(cpu / received * 1e6, 3) if received else None,
            rss_idle_mb=round(rss_idle / 2**20, 1), rss_mb=round(rss / 2**20, 1),
            rss_per_client_kb=round(rss_delta / 1024 / connected, 2) if connected else None,
            slow_client_cutoffs=cutoffs, stall_cutoff_s=None if stall_s is None else round(stall_s, 2),
            stall_cut=(stall_s is not None) if stall is not None else None,
            clients_lost=lost, load_cpu_pct=round(100 * load_cpu / dur, 1), late_messages=late,
            errors=errors[:10], profile=opts.profile,
        )
