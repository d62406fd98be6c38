"""Interleaved rounds: the order of the runs, and each relay's medians with the ratios between them.

One window on a shared machine differs from the next by about 20 %, so a single run of each relay compares
windows as much as relays. ``--rounds N`` runs the relays in turn, N times over (ABCABC…), so that a busy stretch
of the machine falls on every relay alike, and compares the medians. Pure logic: the runs come in, numbers out.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from trade_stream.bench.runner import RunResult


def schedule(relays: Sequence[str], rounds: int) -> list[tuple[int, str]]:
    """``(round, relay)`` in the order they run: every relay once per round, rounds numbered from 1."""
    return [(n, relay) for n in range(1, rounds + 1) for relay in relays]


def label(round_no: int) -> str:
    return f"round {round_no}"


@dataclass
class Medians:
    """One relay over its rounds: medians, except ``lowest_fraction_delivered`` (the worst round)."""

    relay: str
    rounds: int
    us_per_delivery: float | None  # relay CPU µs per delivered message (= CPU s per million deliveries)
    deliveries: float
    lowest_fraction_delivered: float | None
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    relay_cpu_pct: float
    writes_per_delivery: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def medians(runs: Sequence[RunResult]) -> dict[str, Medians]:
    """Per relay, in the order the relays first ran."""
    by_relay: dict[str, list[RunResult]] = {}
    for run in runs:
        by_relay.setdefault(run.relay, []).append(run)
    out: dict[str, Medians] = {}
    for relay, mine in by_relay.items():
        fractions = [r.fraction_delivered for r in mine if r.fraction_delivered is not None]
        out[relay] = Medians(
            relay=relay, rounds=len(mine), us_per_delivery=_median([r.cpu_s_per_million for r in mine]),
            deliveries=statistics.median(r.deliveries for r in mine),
            lowest_fraction_delivered=min(fractions) if fractions else None,
            latency_p50_ms=_median([r.latency_p50_ms for r in mine]),
            latency_p99_ms=_median([r.latency_p99_ms for r in mine]),
            relay_cpu_pct=statistics.median(r.relay_cpu_pct for r in mine),
            writes_per_delivery=_median([r.writes_per_delivery for r in mine]))
    return out


def ratios(meds: dict[str, Medians], ours: str = "ours") -> dict[str, float | None]:
    """``"ours/<relay>"``: ours' median CPU per delivery over each other relay's (None when one is missing)."""
    mine = meds[ours].us_per_delivery if ours in meds else None
    out: dict[str, float | None] = {}
    for relay, m in meds.items():
        if relay != ours:
            out[f"{ours}/{relay}"] = (round(mine / m.us_per_delivery, 3)
                                      if mine is not None and m.us_per_delivery else None)
    return out


def summary(runs: Sequence[RunResult], rounds: int) -> dict[str, Any]:
    """What ``--json`` reports under ``"rounds"``."""
    meds = medians(runs)
    return {"rounds": rounds, "order": [r.relay for r in runs],
            "medians": {k: m.to_dict() for k, m in meds.items()}, "ratios": ratios(meds)}
