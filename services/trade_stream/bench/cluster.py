"""The cluster run of ``trade-stream bench --cluster N``: N daemons on one ``redis-server``, then a failover.

Same scenario, same plan, same window as the single-process run it is printed beside (``runner.Run``), with:
  1. a ``redis-server`` of its own (free port, temporary directory, no persistence), the simulator, and N daemons
     with ``--redis-url``; wait until one leads and holds the upstream session, and every node sees the others
  2. the load clients split across the nodes (client i goes to node i mod N), so every node fans out
  3. over the window: each node's CPU and deliveries (CPU per delivery per node), and Redis's CPU
  4. after the window, the failover: an observer client (authenticated, holding a symbol of the plan and the
     orders channel) on a node that does not lead; orders placed through the simulator's control API, some
     filled; SIGKILL the leader; the rest filled at once, while no node holds the trading stream. Failover time
     = from the kill to the first trade stamped after it that reaches the observer. Then every fill must reach
     the observer exactly once (the new leader reconciles the ones made during the failover over REST).

Pinning on two cores: the nodes and Redis share the relay's core (the system under test, as the one daemon has
it alone in the single-process run); the simulator, load clients, observer and bench stay on the other core.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import websockets

from trade_stream.bench import probes
from trade_stream.bench.loadclient import ts_ns
from trade_stream.bench.procs import Child
from trade_stream.bench.runner import GRACE, NS, Run, RunResult, _sleep_until_ns, free_port, relay_argv

TOKEN = "BENCH_TOKEN"
FILLS = 20  # orders in the failover burst
FILLED_BEFORE_KILL = 5


@dataclass
class Node:
    name: str
    port: int
    child: Child
    cpu0: float = 0.0
    cpu: float = 0.0


def redis_binary() -> str:
    path = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists()
                                             else None)
    if path is None:
        raise RuntimeError("--cluster needs redis-server (Debian: apt-get install redis-server)")
    return path


class ClusterRun(Run):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.redis_port = free_port()
        self.redis: Child | None = None
        self.nodes: list[Node] = []

    async def _execute(self) -> RunResult:
        opts = self.opts
        await self._start_simulator()
        await self._start_redis()
        await self._start_nodes()
        await asyncio.sleep(1.0)
        rss_idle = sum(probes.rss_bytes(n.child.pid) for n in self.nodes)
        connect = await self._start_loads()
        start_ns, end_ns = await self._open_window()
        await _sleep_until_ns(start_ns)
        assert self.redis is not None
        for node in self.nodes:
            node.cpu0 = probes.cpu_seconds(node.child.pid)
        redis0 = probes.cpu_seconds(self.redis.pid)
        load_cpu0 = self._load_cpu()
        busy0 = probes.busy_cpu_seconds()
        await _sleep_until_ns(end_ns)
        for node in self.nodes:
            node.cpu = probes.cpu_seconds(node.child.pid) - node.cpu0
        redis_cpu = probes.cpu_seconds(self.redis.pid) - redis0
        load_cpu = self._load_cpu() - load_cpu0
        busy = probes.busy_cpu_seconds() - busy0
        loadavg = probes.load_average()
        rss = sum(probes.rss_bytes(n.child.pid) for n in self.nodes)
        exited = [n.name for n in self.nodes if n.child.proc.returncode is not None]
        await asyncio.sleep(GRACE)
        reports = await self._collect_reports()
        counts: dict[str, int] = await probes.http_json(self._sim_url("bench_counts"))
        cutoffs = sum([await self._node_cutoffs(n) or 0 for n in self.nodes])
        node_cpu = sum(n.cpu for n in self.nodes)
        result = self._result(reports, counts, connect, rss_idle, rss, node_cpu, load_cpu, cutoffs, None)
        result.relay = "cluster"
        other = busy - node_cpu - redis_cpu - load_cpu
        result.foreign_cpu_pct = round(max(0.0, 100 * other / opts.duration), 1)
        result.load_average = loadavg
        result.redis_cpu_pct = round(100 * redis_cpu / opts.duration, 1)
        result.redis_cpu_s_per_million = round(redis_cpu / result.deliveries * 1e6, 3) if result.deliveries else None
        result.nodes = await self._node_numbers(reports)
        if exited:
            result.relay_exited = True
            result.errors.append("node(s) exited during the window: " + ", ".join(exited))
        try:
            result.failover = await self._failover()
        except (RuntimeError, OSError, TimeoutError) as exc:
            result.errors.append(f"failover: {type(exc).__name__}: {exc}")
        await probes.http_json(self._sim_url("rate?per_symbol=0"))
        return result

    # --- processes ----------------------------------------------------------------------------------------

    async def _start_redis(self) -> None:
        directory = self.workdir / "redis"
        directory.mkdir(parents=True, exist_ok=True)
        self.redis = await self.children.spawn(
            "redis", [redis_binary(), "--port", str(self.redis_port), "--bind", "127.0.0.1", "--dir", str(directory),
                      "--save", "", "--appendonly", "no", "--protected-mode", "no", "--loglevel", "warning"],
            self.opts.relay_cores)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                reader, writer = await asyncio.open_connection("127.0.0.1", self.redis_port)
                writer.write(b"PING\r\n")
                pong = await asyncio.wait_for(reader.readline(), 1)
                writer.close()
                if pong.startswith(b"+PONG"):
                    return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"redis-server did not start:\n{self.redis.tail()}")

    async def _start_nodes(self) -> None:
        for i in range(self.opts.cluster):
            name, port = f"bench-node{i}", free_port()
            extra = ["--redis-url", f"redis://127.0.0.1:{self.redis_port}/0", "--node-id", name, "--token", TOKEN,
                     *self.opts.relay_args]
            argv = relay_argv("ours", port, self.sim_port, self.workdir / f"state-{i}", extra)
            self.nodes.append(Node(name, port, await self.children.spawn(name, argv, self.opts.relay_cores)))
        self.relay = self.nodes[0].child
        deadline = time.monotonic() + 30
        names = sorted(n.name for n in self.nodes)
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.child.proc.returncode is not None:
                    raise RuntimeError(f"{node.name} exited (rc={node.child.proc.returncode}):\n{node.child.tail()}")
            views = [await probes.try_http_json(f"http://127.0.0.1:{n.port}/api/stream/status") for n in self.nodes]
            state = await probes.try_http_json(self._sim_url("state")) or {}
            leaders = {(v or {}).get("cluster", {}).get("leader") for v in views}
            if (all(v and v["cluster"]["nodes"] == names for v in views) and len(leaders) == 1
                    and None not in leaders and state.get("sessions", {}).get("/v2/iex") == 1):
                return
            await asyncio.sleep(0.2)
        raise RuntimeError("the cluster did not form within 30 s:\n" + "\n".join(n.child.tail(5) for n in self.nodes))

    def _load_port(self, index: int) -> int:
        return self.nodes[index % len(self.nodes)].port

    async def _node_cutoffs(self, node: Node) -> int | None:
        with contextlib.suppress(OSError):
            text = (await probes.http_get(f"http://127.0.0.1:{node.port}/metrics")).decode()
            value = probes.prom_value(text, "trade_stream_slow_client_cutoffs_total")
            return None if value is None else int(value)
        return None

    async def _leader(self) -> Node:
        for node in self.nodes:
            view = await probes.try_http_json(f"http://127.0.0.1:{node.port}/api/stream/status")
            lead = (view or {}).get("cluster", {}).get("leader")
            if lead:
                return next(n for n in self.nodes if n.name == lead)
        raise RuntimeError("no node names a leader")

    # --- numbers ------------------------------------------------------------------------------------------

    async def _node_numbers(self, reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each node's CPU over the window against what its own clients received."""
        received = [0] * len(self.nodes)
        for n, rep in enumerate(reports):
            received[self.load_node[n]] += sum(got for _, got in rep["per_client"])
        lead = (await self._leader()).name
        dur = self.opts.duration
        return [{"node": n.name, "leader": n.name == lead, "deliveries": received[i],
                 "cpu_s": round(n.cpu, 3), "cpu_pct": round(100 * n.cpu / dur, 1),
                 "cpu_s_per_million": round(n.cpu / received[i] * 1e6, 3) if received[i] else None}
                for i, n in enumerate(self.nodes)]

    # --- failover -----------------------------------------------------------------------------------------

    async def _failover(self) -> dict[str, Any]:
        lead = await self._leader()
        survivor = next(n for n in self.nodes if n is not lead)
        symbol = self.plan.clients[0][0]
        async with websockets.connect(f"ws://127.0.0.1:{survivor.port}/", max_size=None) as ws:
            observer = Observer(ws)
            reader = asyncio.create_task(observer.read())
            try:
                await ws.send(orjson.dumps({"action": "subscribe", "symbol": symbol}).decode())
                await ws.send(orjson.dumps({"action": "auth", "token": TOKEN}).decode())
                await ws.send(orjson.dumps({"action": "subscribe", "channel": "orders"}).decode())
                await observer.wait(lambda: observer.snapshot, 15, "orders_snapshot on the survivor")
                orders = await probes.http_json(self._sim_url(
                    f"order?symbol={symbol}&side=buy&qty=1&type=limit&limit_price=100&count={FILLS}"))
                ids = [o["id"] for o in orders]
                for order_id in ids[:FILLED_BEFORE_KILL]:
                    await probes.http_json(self._sim_url(f"fill?order_id={order_id}&price=99"))
                await observer.wait(lambda: len(observer.fill_ids()) >= FILLED_BEFORE_KILL, 15,
                                    "the first fills on the survivor")
                killed_ns = time.time_ns()
                lead.child.proc.send_signal(signal.SIGKILL)
                observer.killed_ns = killed_ns
                for order_id in ids[FILLED_BEFORE_KILL:]:  # during the failover: no node holds the trading stream
                    await probes.http_json(self._sim_url(f"fill?order_id={order_id}&price=98"))
                await observer.wait(lambda: observer.resumed_ns is not None, 60, "trades after the kill")
                assert observer.resumed_ns is not None
                failover_s = (observer.resumed_ns - killed_ns) / NS
                with contextlib.suppress(RuntimeError):
                    await observer.wait(lambda: observer.fill_ids() >= set(ids), 30, "every fill")
                await asyncio.sleep(1.0)  # a duplicate would arrive now
            finally:
                reader.cancel()
        fills = [f for f in observer.fills if f[0] in ids]
        state = await probes.http_json(self._sim_url("state"))
        got = {f[0] for f in fills}
        new_lead = await self._leader()
        return {"killed": lead.name, "new_leader": new_lead.name, "observer_on": survivor.name,
                "seconds": round(failover_s, 2), "fills_sent": len(ids),
                "fills_during_failover": len(ids) - FILLED_BEFORE_KILL, "fills_received": len(fills),
                "fills_lost": len(set(ids) - got), "fill_duplicates": len(fills) - len(got),
                "reconciled": sum(1 for f in fills if f[1]), "session_refusals": state.get("session_refusals")}


class Observer:
    """The failover's client: reads everything, notes fills and the first trade stamped after the kill."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.snapshot = False
        self.fills: list[tuple[str, bool]] = []  # (order id, reconciled)
        self.killed_ns: int | None = None
        self.resumed_ns: int | None = None
        self.changed = asyncio.Event()

    def fill_ids(self) -> set[str]:
        return {f[0] for f in self.fills}

    async def read(self) -> None:
        async for raw in self.ws:
            now = time.time_ns()
            for msg in (m for m in _messages(raw) if isinstance(m, dict)):
                kind = msg.get("type")
                if kind == "orders_snapshot":
                    self.snapshot = True
                elif kind == "order_update" and msg.get("event") == "fill":
                    self.fills.append((msg["data"]["order_id"], bool(msg.get("reconciled"))))
                elif (kind == "trade" and self.killed_ns is not None and self.resumed_ns is None
                      and ts_ns(str(msg["data"]["timestamp"]).encode()) > self.killed_ns):
                    self.resumed_ns = now
            self.changed.set()

    async def wait(self, done: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"no {what} within {timeout:.0f} s")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)


def _messages(raw: str | bytes) -> list[Any]:
    msg = orjson.loads(raw)
    return msg if isinstance(msg, list) else [msg]
