"""The broker scenario: how many Broker API events per second the daemon takes from upstream, journals and routes.

Processes: the bench simulator (``simproc --broker-accounts N``: the market-data simulator, idle, plus the
simulator's Broker API with N accounts and an event generator) on the other cores, the daemon in Broker mode on
core 0, and U WebSocket users in the bench process itself (other cores), each holding a JWT for N/U accounts, so
every account has exactly one user and every event is delivered exactly once.

Two measurements, one after the other on the same daemon:
  1. paced: the simulator offers R trade events/s (fills in random accounts: a ``new`` then a ``fill`` each) for
     the window; the daemon's CPU over the window, the events it journaled, and the users' deliveries (stamped
     with the event's ``at``, so latency is upstream-to-user) tell whether it keeps up at R;
  2. backlog: B events published at once; the daemon drains them at full speed, and events journaled per second
     of daemon CPU is its ceiling on one core (the simulator's send rate can bound the wall clock, never the CPU
     figure).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import jwt
import orjson
from websockets.asyncio.client import connect

from trade_stream.bench import probes
from trade_stream.bench.histogram import Histogram
from trade_stream.bench.procs import Children
from trade_stream.bench.runner import KEY, SECRET, free_port, relay_argv

JWT_SECRET = "bench-broker-jwt-secret-0123456789abcdef"
GRACE = 5.0  # seconds after the window for events already offered to be journaled and delivered


@dataclass
class BrokerResult:
    relay: str = "ours"
    scenario: str = "broker"
    label: str = ""
    accounts: int = 0
    users: int = 0
    connected: int = 0
    duration_s: float = 0.0
    offered_events_per_s: float = 0.0
    offered: int = 0
    journaled: int = 0
    journaled_per_s: float = 0.0
    deliveries: int = 0
    fraction_delivered: float | None = None
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_max_ms: float | None = None
    relay_cpu_s: float = 0.0
    relay_cpu_pct: float = 0.0
    cpu_ms_per_event: float | None = None
    backlog_events: int = 0
    backlog_journaled: int = 0
    backlog_wall_s: float | None = None
    backlog_relay_cpu_s: float | None = None
    backlog_events_per_cpu_s: float | None = None
    backlog_delivered: int = 0
    overflows: int = 0
    load_cpu_pct: float = 0.0  # simulator + bench (users), % of one core
    foreign_cpu_pct: float = 0.0  # CPU used by processes outside this bench during the window, % of one core
    load_average: float = 0.0
    rss_mb: float = 0.0
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _at_ns(at: str) -> int:
    head, _, frac = at.rstrip("Z").partition(".")
    base = int(datetime.fromisoformat(head + "+00:00").timestamp())
    return base * 1_000_000_000 + int((frac + "000000000")[:9])


class User:
    """One WebSocket user: auth with a JWT for its accounts, subscribe to orders, count order updates."""

    def __init__(self, name: str, accounts: list[str]) -> None:
        self.token = jwt.encode({"sub": name, "accounts": accounts, "exp": int(time.time()) + 86400}, JWT_SECRET,
                                algorithm="HS256")
        self.received = 0
        self.hist = Histogram()
        self.ready = asyncio.Event()
        self.error: str | None = None

    async def run(self, port: int) -> None:
        try:
            async with connect(f"ws://127.0.0.1:{port}/", ping_interval=None, max_size=None) as ws:
                await ws.send(orjson.dumps({"action": "auth", "token": self.token}).decode())
                await ws.send(orjson.dumps({"action": "subscribe", "channel": "orders"}).decode())
                async for raw in ws:
                    now = time.time_ns()
                    msg = orjson.loads(raw)
                    for m in msg if isinstance(msg, list) else [msg]:
                        kind = m.get("type")
                        if kind == "order_update":
                            self.received += 1
                            at = m.get("data", {}).get("at")
                            if at:
                                self.hist.add(max(0, now - _at_ns(at)) // 1000)
                        elif kind == "error" and not self.ready.is_set():
                            self.error = str(m)
                            self.ready.set()
        except Exception as exc:  # reported in the result
            self.error = f"{type(exc).__name__}: {exc}"
            self.ready.set()


class BrokerRun:
    def __init__(self, accounts: int, users: int, rate: float, duration: float, warmup: float, backlog: int,
                 relay_cores: set[int] | None, other_cores: set[int] | None, relay_args: list[str],
                 workdir: Path) -> None:
        self.accounts, self.users, self.rate = accounts, users, rate
        self.duration, self.warmup, self.backlog = duration, warmup, backlog
        self.relay_cores, self.other_cores, self.relay_args = relay_cores, other_cores, relay_args
        self.workdir = workdir
        self.children = Children(workdir)
        self.sim_port, self.relay_port = free_port(), free_port()

    def _sim(self, path: str) -> str:
        return f"http://127.0.0.1:{self.sim_port}/_sim/{path}"

    async def _status(self) -> dict[str, Any]:
        data = await probes.http_json(f"http://127.0.0.1:{self.relay_port}/api/stream/status")
        return data.get("broker") or {}

    async def _journaled(self) -> int:
        return int((await self._status()).get("events", 0))

    async def execute(self) -> BrokerResult:
        tasks: list[asyncio.Task[None]] = []
        try:
            return await self._execute(tasks)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self.children.stop_all()

    async def _execute(self, tasks: list[asyncio.Task[None]]) -> BrokerResult:
        res = BrokerResult(accounts=self.accounts, users=self.users, duration_s=self.duration)
        sim = await self.children.spawn(
            "simulator", [sys.executable, "-m", "trade_stream.bench.simproc", "--port", str(self.sim_port),
                          "--key", KEY, "--secret", SECRET, "--broker-accounts", str(self.accounts)],
            self.other_cores, talk=True)
        broker_port = int((await sim.readline(60)).split()[2])
        ids: list[str] = await probes.http_json(self._sim("broker_accounts"), 30)
        argv = relay_argv("ours", self.relay_port, self.sim_port, self.workdir / "state", [
            "--broker-api-key", KEY, "--broker-secret-key", SECRET, "--broker-base-url",
            f"http://127.0.0.1:{broker_port}", "--jwt-secret", JWT_SECRET, *self.relay_args])
        relay = await self.children.spawn("relay-ours", argv, self.relay_cores)
        deadline = time.monotonic() + 30
        while True:
            if relay.proc.returncode is not None:
                raise RuntimeError(f"relay exited (rc={relay.proc.returncode}):\n{relay.tail()}")
            status = await probes.try_http_json(f"http://127.0.0.1:{self.relay_port}/api/stream/status")
            streams = ((status or {}).get("broker") or {}).get("streams") or {}
            if streams.get("trades", {}).get("state") == "connected":
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"relay's trades stream not connected within 30s:\n{relay.tail()}")
            await asyncio.sleep(0.2)
        per = -(-len(ids) // self.users)
        users = [User(f"u{i}", ids[i * per:(i + 1) * per]) for i in range(self.users) if ids[i * per:(i + 1) * per]]
        tasks += [asyncio.create_task(u.run(self.relay_port)) for u in users]
        deadline = time.monotonic() + 60
        while (await self._status()).get("clients", 0) < len(users) and not any(u.error for u in users):
            if time.monotonic() > deadline:
                raise RuntimeError("the users did not all subscribe within 60 s")
            await asyncio.sleep(0.2)
        res.users = len(users)
        res.connected = sum(1 for u in users if u.error is None)
        res.errors += [u.error for u in users if u.error][:5]

        # 1. paced: warm-up, then the window
        seconds = self.warmup + self.duration
        await probes.http_json(self._sim(f"broker_generate?rate={self.rate}&seconds={seconds}"))
        await asyncio.sleep(self.warmup)
        offered0 = (await probes.http_json(self._sim("broker_counts")))["events"]
        journaled0, delivered0 = await self._journaled(), sum(u.received for u in users)
        for u in users:
            u.hist = Histogram()
        cpu0, load0, busy0 = probes.cpu_seconds(relay.pid), probes.cpu_seconds(sim.pid), probes.busy_cpu_seconds()
        self_cpu0 = probes.cpu_seconds(os.getpid())
        began = time.monotonic()
        await asyncio.sleep(self.duration)
        cpu = probes.cpu_seconds(relay.pid) - cpu0
        load = probes.cpu_seconds(sim.pid) - load0 + probes.cpu_seconds(os.getpid()) - self_cpu0
        busy = probes.busy_cpu_seconds() - busy0
        elapsed = time.monotonic() - began
        journaled = await self._journaled() - journaled0
        offered = (await probes.http_json(self._sim("broker_counts")))["events"] - offered0
        res.load_average = probes.load_average()
        res.rss_mb = round(probes.rss_bytes(relay.pid) / 2**20, 1)
        await self._settle(users)
        delivered = sum(u.received for u in users) - delivered0
        total_journaled = await self._journaled() - journaled0
        hist = Histogram()
        for u in users:
            hist.merge(u.hist.counts, u.hist.max_us)
        res.offered, res.offered_events_per_s = offered, round(offered / elapsed, 1)
        res.journaled, res.journaled_per_s = journaled, round(journaled / elapsed, 1)
        res.deliveries = delivered
        res.fraction_delivered = round(delivered / total_journaled, 6) if total_journaled else None
        res.latency_p50_ms = _ms(hist.percentile(50))
        res.latency_p99_ms = _ms(hist.percentile(99))
        res.latency_max_ms = _ms(hist.max_us) if hist.total else None
        res.relay_cpu_s, res.relay_cpu_pct = round(cpu, 2), round(100 * cpu / elapsed, 1)
        res.cpu_ms_per_event = round(1000 * cpu / journaled, 4) if journaled else None
        res.load_cpu_pct = round(100 * load / elapsed, 1)
        res.foreign_cpu_pct = round(max(0.0, 100 * (busy - cpu - load) / elapsed), 1)

        # 2. backlog: everything at once, drained at full speed
        if self.backlog:
            before, delivered0 = await self._journaled(), sum(u.received for u in users)
            cpu0, t0 = probes.cpu_seconds(relay.pid), time.monotonic()
            await probes.http_json(self._sim(f"broker_generate?burst={self.backlog}"), 120)
            target = before + self.backlog - self.backlog % 2
            last, still = -1, time.monotonic()
            while (now := await self._journaled()) < target:
                if now != last:
                    last, still = now, time.monotonic()
                elif time.monotonic() - still > 10:
                    res.errors.append(f"backlog: journal stuck at {now - before} of {target - before}")
                    break
                await asyncio.sleep(0.05)
            res.backlog_wall_s = round(time.monotonic() - t0, 3)
            cpu_b = probes.cpu_seconds(relay.pid) - cpu0
            res.backlog_events = target - before
            res.backlog_journaled = await self._journaled() - before
            res.backlog_relay_cpu_s = round(cpu_b, 3)
            res.backlog_events_per_cpu_s = round(res.backlog_journaled / cpu_b, 1) if cpu_b else None
            await self._settle(users)
            res.backlog_delivered = sum(u.received for u in users) - delivered0
        streams = (await self._status()).get("streams", {})
        res.overflows = int(streams.get("trades", {}).get("overflows", 0))
        if relay.proc.returncode is not None:
            res.errors.append("relay exited: " + relay.tail(3).replace("\n", " | "))
        return res

    async def _settle(self, users: list[User]) -> None:
        """Wait until deliveries stop moving (at most GRACE seconds)."""
        deadline, last = time.monotonic() + GRACE, -1
        while time.monotonic() < deadline:
            now = sum(u.received for u in users)
            if now == last and now >= await self._journaled_routed():
                return
            last = now
            await asyncio.sleep(0.3)

    async def _journaled_routed(self) -> int:
        return int((await self._status()).get("routed", 0))


def _ms(us: float | None) -> float | None:
    return None if us is None else round(us / 1000.0, 3)


async def run(accounts: int, users: int, rate: float, duration: float, warmup: float, backlog: int,
              relay_cores: set[int] | None, other_cores: set[int] | None, relay_args: list[str],
              keep_dir: str | None = None) -> BrokerResult:
    args = (accounts, users, rate, duration, warmup, backlog, relay_cores, other_cores, relay_args)
    if keep_dir:
        path = Path(keep_dir) / f"broker-ours-run-{int(time.time())}"
        path.mkdir(parents=True, exist_ok=True)
        return await BrokerRun(*args, path).execute()
    with tempfile.TemporaryDirectory(prefix="trade-stream-bench-") as tmp:
        return await BrokerRun(*args, Path(tmp)).execute()


def text_report(header: dict[str, Any], r: BrokerResult) -> str:
    m = header["machine"]
    pct = "-" if r.fraction_delivered is None else f"{100 * r.fraction_delivered:.3f} %"
    keeps = r.journaled_per_s >= 0.99 * r.offered_events_per_s and (r.fraction_delivered or 0) >= 0.999
    out = [f"trade-stream bench: scenario broker ({header['description']})",
           f"machine: {m['nproc']} cores, {m['cpu_model']}, Python {m['python']}",
           f"pinning: {header['pinning']}",
           f"accounts: {r.accounts}, users: {r.connected}/{r.users} (WebSocket, orders), window: {r.duration_s} s "
           f"after {header['warmup']} s warm-up",
           "",
           f"paced:   offered {r.offered_events_per_s:.0f} events/s, journaled {r.journaled_per_s:.0f} events/s, "
           f"delivered {pct} (of journaled), latency p50 {r.latency_p50_ms} ms p99 {r.latency_p99_ms} ms "
           f"max {r.latency_max_ms} ms",
           f"         daemon CPU {r.relay_cpu_pct:.1f} % of one core ({r.cpu_ms_per_event} ms per event), "
           f"RSS {r.rss_mb} MB, overflows {r.overflows}",
           f"backlog: {r.backlog_journaled}/{r.backlog_events} journaled in {r.backlog_wall_s} s wall, "
           f"{r.backlog_relay_cpu_s} s daemon CPU -> {r.backlog_events_per_cpu_s} events per CPU second; "
           f"delivered {r.backlog_delivered}",
           f"others:  simulator + users {r.load_cpu_pct:.0f} %, foreign {r.foreign_cpu_pct:.0f} % of one core, "
           f"load average {r.load_average}"]
    if r.errors:
        out.append("errors: " + "; ".join(r.errors[:3]))
    cap = r.backlog_events_per_cpu_s
    out.append("targets" + ("" if header["target_size"] else " (NOTE: not run at the issue's sizes)") + ":")
    out.append(f"  keeps up at the offered rate (journaled >= 99 % of offered, >= 99.9 % delivered): "
               f"{'MET' if keeps else 'MISSED'}")
    out.append(f"  >= 2,000 events per daemon CPU second (backlog): {cap} -> "
               f"{'n/a' if cap is None else 'MET' if cap >= 2000 else 'MISSED'}")
    return "\n".join(out)
