"""The simulator as the bench runs it: ``trade-stream simulate`` plus a count of the trades it generated.

"Fraction delivered" needs the number of trades each symbol got inside the measurement window, which the plain
simulator does not keep. This runner wraps ``Market.trade`` (the only place generated trades are built) and adds
two control endpoints next to the simulator's own ``/_sim/*``:

  /_sim/bench_window?start_ns=…&end_ns=…   count trades stamped in [start, end) from now on
  /_sim/bench_counts                        {"symbol": count, …} for that window

With ``--broker-accounts N`` it also runs the simulator's Broker API (``simulator/broker.py``) in the same
process, with N accounts, and three more endpoints for the broker scenario:

  /_sim/broker_accounts                     the account ids
  /_sim/broker_generate?rate=R&seconds=S    paced: fills in random accounts at R trade events/s (each fill is a
                                            ``new`` then a ``fill`` event), sent every tick; ``burst=N``: N at once
  /_sim/broker_counts                       {"events": trade events published so far}

Everything else (rate control via /_sim/rate, the wire protocol, stamping ``t`` at send time) is the stock
simulator, so the relay is measured against exactly what tests and demos use.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import random
import signal
from collections import Counter
from typing import Any

import uvloop

from trade_stream.simulator.broker import BrokerSim
from trade_stream.simulator.config import SimConfig
from trade_stream.simulator.server import CONTROL, Simulator


class TradeCounter:
    """Counts generated trades per symbol whose timestamp falls in the current window."""

    def __init__(self, sim: Simulator) -> None:
        self.start_ns = 0
        self.end_ns = 0
        self.counts: Counter[str] = Counter()
        original = sim.market.trade

        def counted(symbol: str, *args: Any, **kwargs: Any) -> Any:
            msg, ns = original(symbol, *args, **kwargs)
            if self.start_ns <= ns < self.end_ns:
                self.counts[symbol] += 1
            return msg, ns

        sim.market.trade = counted  # type: ignore[method-assign]  # counts in place: the simulator has no hook

    def set_window(self, query: dict[str, str]) -> dict[str, Any]:
        self.start_ns, self.end_ns = int(query["start_ns"]), int(query["end_ns"])
        self.counts.clear()
        return {"ok": True}

    def report(self, _query: dict[str, str]) -> dict[str, int]:
        return dict(self.counts)


class BrokerLoad:
    """Drives the Broker API for the bench: fills in random accounts, paced or all at once."""

    def __init__(self, bsim: BrokerSim, tick: float, seed: int) -> None:
        self.bsim, self.tick = bsim, tick
        self.rng = random.Random(seed)
        self.ids = list(bsim.accounts)
        self.task: asyncio.Task[None] | None = None

    def _fills(self, events: int) -> None:
        for _ in range(events // 2):
            self.bsim.fill(self.rng.choice(self.ids), "AAPL", self.rng.randint(1, 9), 100 + self.rng.random())

    def generate(self, query: dict[str, str]) -> dict[str, Any]:
        if query.get("burst"):
            self._fills(int(query["burst"]))
            return {"ok": True}
        if self.task is not None:
            self.task.cancel()
        self.task = asyncio.get_running_loop().create_task(
            self._paced(float(query["rate"]), float(query["seconds"])))
        return {"ok": True}

    async def _paced(self, rate: float, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        done = 0
        while (now := loop.time()) - began < seconds:
            due = int(rate * (now - began)) - done
            due -= due % 2
            self._fills(due)
            done += due
            await asyncio.sleep(self.tick)

    def counts(self, _query: dict[str, str]) -> dict[str, int]:
        return {"events": len(self.bsim.events["trades"])}


async def serve(config: SimConfig, broker_accounts: int = 0) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    sim = Simulator(config)
    counter = TradeCounter(sim)
    CONTROL["bench_window"] = lambda _s, q: counter.set_window(q)
    CONTROL["bench_counts"] = lambda _s, q: counter.report(q)
    bsim = None
    if broker_accounts:
        [(key, secret)] = config.accounts.items()
        bsim = await BrokerSim(key=key, secret=secret, accounts=broker_accounts, seed=config.seed,
                               heartbeat=5.0).start()
        load = BrokerLoad(bsim, config.tick_interval, config.seed or 0)
        CONTROL["broker_accounts"] = lambda _s, q: load.ids
        CONTROL["broker_generate"] = lambda _s, q: load.generate(q)
        CONTROL["broker_counts"] = lambda _s, q: load.counts(q)
    try:
        async with sim:
            print(f"ready {sim.port} {bsim.port if bsim else 0}", flush=True)
            await stop.wait()
            with contextlib.suppress(Exception):
                sim.cut_all()
    finally:
        if bsim is not None:
            await bsim.stop()


def main() -> None:
    # The simulator keeps every trade for REST history; with 20k trades/s the cyclic GC's full collections walk
    # hundreds of thousands of dicts and stall the tick for 100s of ms, which then sends one huge catch-up frame.
    # Bench runs are minutes long and the simulator makes no reference cycles worth collecting: no GC.
    gc.disable()
    parser = argparse.ArgumentParser(prog="python -m trade_stream.bench.simproc")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--key", default="BENCH_KEY")
    parser.add_argument("--secret", default="BENCH_SECRET")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tick", type=float, default=0.05, help="seconds between the generator's frames")
    parser.add_argument("--broker-accounts", type=int, default=0, help="also run the Broker API with N accounts")
    args = parser.parse_args()
    # Only trades, stamped when sent: late trades (stamped up to a minute back) would read as latency, and the
    # rare corrections, cancels and halts would make runs differ for nothing.
    config = SimConfig(host="127.0.0.1", port=args.port, accounts={args.key: args.secret}, rate_per_symbol=0.0,
                       seed=args.seed, tick_interval=args.tick, correction_rate=0.0, cancel_error_rate=0.0,
                       late_trade_rate=0.0, halt_rate=0.0, market_hours=False)  # stocks trade at any hour
    uvloop.run(serve(config, args.broker_accounts))


if __name__ == "__main__":
    main()
