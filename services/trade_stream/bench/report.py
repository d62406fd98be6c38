"""Turning run results into the one table (or JSON) the bench prints, and checking the issue's targets."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from trade_stream.bench.runner import RunResult


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for pkg in ("websockets", "uvloop", "orjson"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"nproc": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "kernel": platform.release(), **versions}


@dataclass
class Target:
    what: str
    value: str
    met: bool | None  # None: not measurable in this invocation (e.g. no --compare)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.what, "measured": self.value, "met": self.met}


def first(runs: list[RunResult], relay: str) -> RunResult | None:
    """The run of ``relay`` the single-run targets judge: its first, or the one with the staller."""
    return next((r for r in runs if r.relay == relay and r.label != "no-staller"), None)


def cpu_ratio(ours: RunResult | None, base: RunResult | None) -> float | None:
    if ours is None or base is None or not ours.cpu_s_per_million or not base.cpu_s_per_million:
        return None
    return round(ours.cpu_s_per_million / base.cpu_s_per_million, 3)


def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def cluster_targets(scenario: str, single: RunResult, cluster: RunResult) -> list[Target]:
    """The cluster run beside the single-process run of the same plan (issue 14's targets)."""
    out: list[Target] = []
    if single.latency_p99_ms is not None and cluster.latency_p99_ms is not None:
        added = cluster.latency_p99_ms - single.latency_p99_ms
        out.append(Target(f"cluster: Redis hop adds <= 5 ms to p99 ({scenario})",
                          f"{cluster.latency_p99_ms:.2f} vs {single.latency_p99_ms:.2f} ms ({added:+.2f} ms)",
                          added <= 5))
    per_node = [n["cpu_s_per_million"] for n in cluster.nodes or [] if n["cpu_s_per_million"]]
    if per_node and single.cpu_s_per_million:
        worst = max(per_node) / single.cpu_s_per_million
        out.append(Target("cluster: node CPU/delivery <= 1.3x single-process (worst node)",
                          " / ".join(f"{v:.2f}" for v in per_node) + f" vs {single.cpu_s_per_million:.2f} s/M "
                          f"({worst:.2f}x)", worst <= 1.3))
    fo = cluster.failover
    out.append(Target("cluster: failover < 10 s", "not measured" if fo is None else f"{fo['seconds']:.2f} s",
                      fo is not None and fo["seconds"] < 10))
    out.append(Target("cluster: no fill lost, none twice", "not measured" if fo is None else
                      f"{fo['fills_received']} of {fo['fills_sent']} ({fo['fills_during_failover']} during the "
                      f"failover), lost {fo['fills_lost']}, duplicates {fo['fill_duplicates']}",
                      fo is not None and fo["fills_lost"] == 0 and fo["fill_duplicates"] == 0))
    return out


def cluster_lines(r: RunResult) -> list[str]:
    out = [f"cluster: redis-server CPU {_fmt(r.redis_cpu_pct)} % of a core "
           f"({_fmt(r.redis_cpu_s_per_million, '.3f')} s per M deliveries)"]
    for n in r.nodes or []:
        out.append(f"  node {n['node']}{' (leader)' if n['leader'] else ''}: {n['deliveries']} deliveries, "
                   f"CPU {n['cpu_pct']:.1f} % of a core, {_fmt(n['cpu_s_per_million'], '.2f')} s per M deliveries")
    fo = r.failover
    if fo:
        out.append(f"  failover: SIGKILL {fo['killed']} -> trades again at a client on {fo['observer_on']} after "
                   f"{fo['seconds']:.2f} s (new leader {fo['new_leader']}); fills {fo['fills_received']}/"
                   f"{fo['fills_sent']} received, {fo['fills_lost']} lost, {fo['fill_duplicates']} duplicates, "
                   f"{fo['reconciled']} marked reconciled; simulator session refusals (406): {fo['session_refusals']}")
    return out


def round_targets(scenario: str, summary: dict[str, Any]) -> list[Target]:
    """Issue 26's targets on the medians of interleaved rounds: ours against the Node relay and the floor."""
    n, meds, ratios = summary["rounds"], summary["medians"], summary["ratios"]
    out: list[Target] = []
    lowest = meds["ours"]["lowest_fraction_delivered"]
    out.append(Target(f"ours: every message delivered in each of {n} round(s)",
                      _fmt(None if lowest is None else 100 * lowest, ".3f") + " % in the worst round",
                      lowest is not None and lowest >= 1.0))
    if scenario in ("hot", "spread", "mix"):
        p99 = meds["ours"]["latency_p99_ms"]
        out.append(Target(f"p99 <= 25 ms (median of {n} round(s))", _fmt(p99, ".2f") + " ms",
                          p99 is not None and p99 <= 25))
    wanted = {"hot": (("node", 0.9), ("raw", 1.05)), "mix": (("node", 0.9),)}.get(scenario, ())
    for peer, bound in wanted:
        ratio = ratios.get(f"ours/{peer}")
        out.append(Target(f"CPU/delivery <= {bound:g}x the {PEER_NAMES[peer]}'s (medians of {n} round(s))",
                          _fmt(ratio, ".3f") + " x", None if ratio is None else ratio <= bound))
    return out


PEER_NAMES = {"node": "Node ws relay", "raw": "raw-write floor", "baseline": "baseline"}


def targets(scenario: str, runs: list[RunResult], summary: dict[str, Any] | None = None) -> list[Target]:
    """The issue's targets for ``scenario``, judged on these runs (meaningful at the issue's sizes)."""
    ours = first(runs, "ours")
    base = first(runs, "baseline")
    if ours is None:
        return []
    out: list[Target] = []
    frac = ours.fraction_delivered
    if scenario in ("hot", "spread", "mix"):
        if summary is None:  # with rounds, round_targets judges delivery and p99 on every round's figures
            out.append(Target(">= 99.9 % delivered", _fmt(None if frac is None else 100 * frac, ".3f") + " %",
                              frac is not None and frac >= 0.999))
            out.append(Target("p99 <= 25 ms", _fmt(ours.latency_p99_ms, ".2f") + " ms",
                              ours.latency_p99_ms is not None and ours.latency_p99_ms <= 25))
        ratio = cpu_ratio(ours, base) if summary is None else summary["ratios"].get("ours/baseline")
        out.append(Target("relay CPU/delivery <= 1/3 of baseline", _fmt(ratio, ".3f") + " x",
                          None if ratio is None else ratio <= 1 / 3))
    elif scenario == "idle":
        out.append(Target("<= 30 KB relay RSS per connection", _fmt(ours.rss_per_client_kb, ".1f") + " KB",
                          ours.rss_per_client_kb is not None and ours.rss_per_client_kb <= 30))
    elif scenario == "firehose":
        out.append(Target("keeps up (>= 99.9 % delivered)", _fmt(None if frac is None else 100 * frac, ".3f") + " %",
                          frac is not None and frac >= 0.999))
        out.append(Target("<= 60 % of one core", _fmt(ours.relay_cpu_pct) + " %", ours.relay_cpu_pct <= 60))
    elif scenario == "stall":
        control = next((r for r in runs if r.relay == "ours" and r.label == "no-staller"), None)
        cut = ours.stall_cutoff_s
        out.append(Target("staller cut off within 5 s", "not cut off" if cut is None else f"{cut:.2f} s",
                          cut is not None and cut <= 5))
        if control is not None and control.latency_p99_ms and ours.latency_p99_ms is not None:
            ratio = ours.latency_p99_ms / control.latency_p99_ms
            out.append(Target("others' p99 within 2x of the run without staller",
                              f"{ours.latency_p99_ms:.2f} vs {control.latency_p99_ms:.2f} ms ({ratio:.2f}x)",
                              ratio <= 2))
    cluster = next((r for r in runs if r.relay == "cluster"), None)
    if cluster is not None:
        out += cluster_targets(scenario, ours, cluster)
    if summary is not None:
        out += round_targets(scenario, summary)
    return out


COLUMNS = ("run", "clients", "up msg/s", "deliv/s", "delivered %", "worst %", "p50 ms", "p99 ms", "max ms",
           "relay CPU %", "CPU s/M deliv", "writes/deliv", "RSS MB", "RSS/client KB", "cut-offs", "stall cut s",
           "load CPU %", "foreign CPU %")


def row(r: RunResult) -> list[str]:
    name = r.relay + (f" ({r.label})" if r.label and r.label != "stall" else "")
    pct = None if r.fraction_delivered is None else 100 * r.fraction_delivered
    worst = None if r.worst_client_fraction is None else 100 * r.worst_client_fraction
    clients = f"{r.connected}/{r.clients}" if r.connected != r.clients else str(r.clients)
    stall = "-" if r.stall_cut is None else (_fmt(r.stall_cutoff_s, ".2f") if r.stall_cut else "never")
    return [name, clients, _fmt(r.upstream_msgs_per_s, ".0f"), _fmt(r.deliveries_per_s, ".0f"), _fmt(pct, ".3f"),
            _fmt(worst, ".2f"), _fmt(r.latency_p50_ms, ".2f"), _fmt(r.latency_p99_ms, ".2f"),
            _fmt(r.latency_max_ms, ".1f"), _fmt(r.relay_cpu_pct),
            _fmt(r.cpu_s_per_million, ".2f"), _fmt(r.writes_per_delivery, ".3f"), _fmt(r.rss_mb),
            _fmt(r.rss_per_client_kb, ".2f"), "-" if r.slow_client_cutoffs is None else str(r.slow_client_cutoffs),
            stall, _fmt(r.load_cpu_pct, ".0f"), _fmt(r.foreign_cpu_pct, ".0f")]


def markdown(rows: list[list[str]]) -> str:
    """A markdown table of a header row and data rows (readable in a terminal, pasteable into README)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(rows[0], widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
              + " |" for r in rows[1:]]
    return "\n".join(lines)


def table(runs: list[RunResult]) -> str:
    return markdown([list(COLUMNS)] + [row(r) for r in runs])


ROUND_COLUMNS = ("relay", "rounds", "CPU us/deliv", "deliveries", "lowest delivered %", "p50 ms", "p99 ms",
                 "relay CPU %", "writes/deliv", "ours / it")


def rounds_table(summary: dict[str, Any]) -> str:
    """The medians of ``--rounds``, one row per relay, with ours' CPU per delivery over each one's."""
    rows = [list(ROUND_COLUMNS)]
    for relay, m in summary["medians"].items():
        lowest = m["lowest_fraction_delivered"]
        rows.append([relay, str(m["rounds"]), _fmt(m["us_per_delivery"], ".2f"), f"{m['deliveries']:,.0f}",
                     _fmt(None if lowest is None else 100 * lowest, ".3f"), _fmt(m["latency_p50_ms"], ".2f"),
                     _fmt(m["latency_p99_ms"], ".2f"), _fmt(m["relay_cpu_pct"]),
                     _fmt(m.get("writes_per_delivery"), ".3f"),
                     "1" if relay == "ours" else _fmt(summary["ratios"].get(f"ours/{relay}"), ".3f")])
    return markdown(rows)


def text_report(header: dict[str, Any], runs: list[RunResult], checks: list[Target], ratio: float | None,
                summary: dict[str, Any] | None = None) -> str:
    m = header["machine"]
    out = [f"trade-stream bench: scenario {header['scenario']} ({header['description']})",
           f"machine: {m['nproc']} cores, {m['cpu_model']}, Python {m['python']}, websockets {m['websockets']}, "
           f"uvloop {m['uvloop']}",
           f"pinning: {header['pinning']}",
           f"window: {header['duration']} s after {header['warmup']} s warm-up; clients: {header['clients']}, "
           f"rate: {header['rate']} ({header['rate_meaning']}){', batch frames' if header['batch'] else ''}, "
           f"a simulator frame every {header['sim_tick'] * 1000:g} ms; "
           f"load clients in {header.get('load_client', 'python')}",
           "", table(runs), ""]
    if summary is not None:
        n = summary["rounds"]
        out += [f"medians of {n} interleaved round{'s' if n != 1 else ''} ({', '.join(summary['medians'])} in turn); "
                "ours / it = ours' CPU per delivery over its:", rounds_table(summary), ""]
    if ratio is not None:
        out.append(f"relay CPU per delivery, ours / baseline: {ratio:.3f} ({1 / ratio:.1f}x less CPU per delivery)")
    for r in runs:
        if r.relay_exited:
            out.append(f"{r.relay} {r.label}: THE RELAY EXITED during the window (numbers cover it while alive)")
        if r.errors:
            out.append(f"{r.relay} {r.label}: errors: " + "; ".join(r.errors[:3]))
        if r.connect_failed:
            out.append(f"{r.relay} {r.label}: {r.connect_failed} clients failed to connect/subscribe")
        if r.profile:
            out.append(f"profile of {r.relay} written to {r.profile}")
        if r.relay == "cluster":
            out += cluster_lines(r)
    if checks:
        out.append("targets" + ("" if header["target_size"] else " (NOTE: not run at the issue's sizes)") + ":")
        for t in checks:
            mark = "n/a (needs --compare)" if t.met is None else ("MET" if t.met else "MISSED")
            out.append(f"  {t.what}: {t.value} -> {mark}")
    out.append("columns: delivered % = received / (trades the simulator stamped in the window x holders); "
               "latency = receive time in the load client - trade t; relay CPU = its user+system time over the "
               "window; writes/deliv = the relay's write system calls (syscw) per delivered message, under 1 "
               "when writes merge; RSS/client = (RSS - idle RSS) / connections; load CPU % = simulator + load "
               "clients, of one core (near 100 = client-bound); foreign CPU % = other processes on this machine "
               "during the window (noise), of one core")
    return "\n".join(out)
