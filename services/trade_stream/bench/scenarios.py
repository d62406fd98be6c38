"""Scenario plans: who subscribes to what, and how fast the simulator generates.

A plan is pure data (lists of symbols per client and a per-symbol rate), built from a seeded RNG so two runs of
the same scenario, ours and the baseline's, see the same subscriptions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

HOT_SYMBOL = "AAPL"


@dataclass(frozen=True)
class Defaults:
    clients: int
    rate: float  # msg/s: per symbol for hot/stall, total upstream for spread/idle/firehose/mix
    duration: float
    per_process: int = 500
    tick: float = 0.05  # seconds between the simulator's frames: with the rate, how many trades one frame holds


DEFAULTS: dict[str, Defaults] = {
    "hot": Defaults(clients=1000, rate=100, duration=30),
    "spread": Defaults(clients=1000, rate=2000, duration=30),
    "idle": Defaults(clients=10_000, rate=0, duration=10, per_process=2500),
    "firehose": Defaults(clients=10, rate=20_000, duration=30, per_process=5),
    "stall": Defaults(clients=1000, rate=100, duration=30),
    "broker": Defaults(clients=100, rate=2000, duration=20),
    "mix": Defaults(clients=500, rate=2500, duration=10, tick=0.004),  # 2,500/s in 250 frames/s: 10 a frame
}
BROKER_ACCOUNTS = 10_000

DESCRIPTIONS: dict[str, str] = {
    "hot": "N clients on one symbol at R msg/s",
    "spread": "N clients x 10 random symbols of 200, R msg/s in total upstream",
    "idle": "N connections, 5 quiet symbols each (of 500): relay memory per connection",
    "firehose": "R msg/s upstream across 1,000 symbols, N clients each holding all 1,000: parse/route cost",
    "stall": "hot, plus one client that stops reading: time to cut-off, and the others' p99 vs a run without it",
    "broker": "Broker API mode: R trade events/s over SSE across 10,000 accounts (--accounts), journaled and "
              "routed to N WebSocket users; then a backlog burst (--backlog) for events per daemon CPU second",
    "mix": "N clients x 20 random symbols of 500, R msg/s in total upstream, a frame every 4 ms (10 trades a "
           "frame and 50,000 deliveries/s at the defaults): what a dashboard's clients hold",
}


@dataclass
class Plan:
    scenario: str
    clients: list[list[str]]  # symbols of each normal client
    per_symbol_rate: float  # what /_sim/rate gets
    stallers: list[list[str]] = field(default_factory=list)
    description: str = ""

    @property
    def symbols(self) -> set[str]:
        return {s for syms in self.clients + self.stallers for s in syms}

    @property
    def upstream_rate(self) -> float:
        return self.per_symbol_rate * len(self.symbols)


def build(scenario: str, clients: int, rate: float, seed: int = 7, with_staller: bool = True) -> Plan:
    """The plan for ``scenario`` with ``clients`` normal clients at ``rate`` (see ``Defaults.rate``)."""
    rng = random.Random(seed)
    desc = DESCRIPTIONS[scenario]
    if scenario in ("hot", "stall"):
        plan = Plan(scenario, [[HOT_SYMBOL]] * clients, rate, description=desc)
        if scenario == "stall" and with_staller:
            plan.stallers = [[HOT_SYMBOL]]
        return plan
    if scenario == "spread":
        return _spread(scenario, [f"S{i:03d}" for i in range(200)], 10, clients, rate, rng, desc)
    if scenario == "mix":
        return _spread(scenario, [f"M{i:03d}" for i in range(500)], 20, clients, rate, rng, desc)
    if scenario == "idle":
        return _spread(scenario, [f"Q{i:03d}" for i in range(500)], 5, clients, rate, rng, desc)
    if scenario == "firehose":
        universe = [f"F{i:04d}" for i in range(1000)]
        return Plan(scenario, [universe] * clients, rate / len(universe), description=desc)
    raise ValueError(f"unknown scenario {scenario!r}; choose from {', '.join(DEFAULTS)}")


def _spread(name: str, universe: list[str], each: int, clients: int, total_rate: float, rng: random.Random,
            desc: str) -> Plan:
    subs = [sorted(rng.sample(universe, each)) for _ in range(clients)]
    used = {s for syms in subs for s in syms}
    return Plan(name, subs, total_rate / len(used) if used else 0.0, description=desc)
