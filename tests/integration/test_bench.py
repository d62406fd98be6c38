"""Smoke runs of ``trade-stream bench``: short, small, and checking only that the numbers are sane.

The real measurements take minutes on an idle machine (README, "Performance"); CI only proves the harness works
end to end: processes start, clients subscribe, the window is counted, and every child is gone afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trade_stream.bench import peers

pytestmark = pytest.mark.timeout(120)
NODE_READY = shutil.which("node") is not None and (peers.NODE_DIR / "node_modules" / "ws").is_dir()

BENCH = [str(Path(sys.executable).with_name("trade-stream")), "bench"]


def run_bench(logs: Path, *args: str) -> dict:
    proc = subprocess.run([*BENCH, *args, "--json", "--keep-logs", str(logs)], capture_output=True, text=True,
                          timeout=100)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes containing ``text``: the daemon's --state-dir and the load clients' spec
    files live under the run's log directory, so any survivor of the bench shows up here."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline)
    return found


def assert_sane(run: dict) -> None:
    assert run["connected"] == run["clients"], run["errors"]
    assert run["deliveries_per_s"] > 0
    assert run["expected"] > 0
    assert 0 < run["fraction_delivered"] <= 1
    assert 0 <= run["latency_p50_ms"] <= run["latency_p99_ms"] <= run["latency_max_ms"]
    assert run["cpu_s_per_million"] > 0
    assert run["rss_mb"] > 0 and run["rss_idle_mb"] > 0


def test_hot_smoke(tmp_path):
    out = run_bench(tmp_path, "--scenario", "hot", "--clients", "20", "--rate", "20", "--duration", "2")
    assert out["scenario"] == "hot" and out["clients"] == 20
    [run] = out["runs"]
    assert run["relay"] == "ours"
    assert_sane(run)
    assert run["slow_client_cutoffs"] == 0
    assert run["upstream_msgs_per_s"] > 0
    assert {t["target"] for t in out["targets"]} >= {"p99 <= 25 ms", ">= 99.9 % delivered"}
    assert processes_mentioning(str(tmp_path)) == []


def test_compare_smoke(tmp_path):
    out = run_bench(tmp_path, "--scenario", "hot", "--clients", "20", "--rate", "20", "--duration", "2",
                    "--warmup", "1", "--compare")
    ours, base = out["runs"]
    assert (ours["relay"], base["relay"]) == ("ours", "baseline")
    assert_sane(ours)
    assert_sane(base)
    assert base["slow_client_cutoffs"] is None  # the baseline has no slow-client policy to count
    assert out["cpu_per_delivery_ratio"] > 0
    assert processes_mentioning(str(tmp_path)) == []


@pytest.mark.timeout(90)
@pytest.mark.skipif(not NODE_READY, reason="node or the bench's ws missing (tests/run.sh installs them)")
def test_rounds_mix_smoke(tmp_path):
    """The mix scenario, tiny, one round of ours, the Node ws relay and the raw-write floor: each delivers every
    message through the same load clients, the medians and ratios are reported, and no relay is left running."""
    before = set(processes_mentioning(str(peers.NODE_RELAY)))
    out = run_bench(tmp_path, "--scenario", "mix", "--clients", "6", "--rate", "250", "--duration", "1",
                    "--warmup", "0.5", "--rounds", "1")
    assert (out["scenario"], out["clients"], out["sim_tick"], out["rounds"]["rounds"]) == ("mix", 6, 0.004, 1)
    assert [(r["relay"], r["label"]) for r in out["runs"]] == [("ours", "round 1"), ("node", "round 1"),
                                                                  ("raw", "round 1")]
    for run in out["runs"]:
        assert_sane(run)
        assert run["deliveries"] == run["expected"], run["relay"]
        assert run["clients_lost"] == 0 and run["relay_exited"] is False
    summary = out["rounds"]
    assert summary["order"] == ["ours", "node", "raw"]
    for relay, m in summary["medians"].items():
        assert m["rounds"] == 1 and m["lowest_fraction_delivered"] == 1.0, relay
        assert m["us_per_delivery"] > 0 and 0 <= m["latency_p50_ms"] <= m["latency_p99_ms"]
    assert set(summary["ratios"]) == {"ours/node", "ours/raw"} and all(v > 0 for v in summary["ratios"].values())
    targets = {t["target"]: t["met"] for t in out["targets"]}
    assert targets["ours: every message delivered in each of 1 round(s)"] is True
    assert "CPU/delivery <= 0.9x the Node ws relay's (medians of 1 round(s))" in targets
    assert processes_mentioning(str(tmp_path)) == []
    assert set(processes_mentioning(str(peers.NODE_RELAY))) <= before


@pytest.mark.timeout(90)
@pytest.mark.skipif(shutil.which("node") is None, reason="node missing (tests/run.sh installs it)")
def test_mix_with_the_node_load_client_smoke(tmp_path):
    """The mix scenario through Node load-client processes (two of them, so the parent merges their reports):
    every message the simulator stamped in the window is counted once, latencies come out, nothing is left."""
    out = run_bench(tmp_path, "--scenario", "mix", "--clients", "50", "--duration", "2", "--warmup", "1",
                    "--per-process", "25", "--load-client", "node")
    assert (out["scenario"], out["load_client"]) == ("mix", "node")
    [run] = out["runs"]
    assert_sane(run)
    assert run["deliveries"] == run["expected"] and run["fraction_delivered"] == 1.0
    assert run["clients_lost"] == 0 and run["late_messages"] >= 0 and run["errors"] == []
    assert run["load_cpu_pct"] > 0
    logs = list(tmp_path.glob("mix-ours-run-*/load-*.json"))
    assert len(logs) == 2
    assert processes_mentioning(str(tmp_path)) == []


@pytest.mark.timeout(30)
def test_node_load_client_without_node_stops_at_start_with_one_line(tmp_path):
    proc = subprocess.run([*BENCH, "--scenario", "mix", "--load-client", "node"], capture_output=True, text=True,
                          timeout=20, env={**os.environ, "PATH": str(tmp_path)})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "trade-stream bench: the Node load client needs node (18 or newer) on PATH: apt-get install nodejs npm, "
        "or use --load-client python"]


@pytest.mark.timeout(30)
def test_rounds_without_node_stop_at_start_with_one_line(tmp_path):
    proc = subprocess.run([*BENCH, "--scenario", "mix", "--rounds", "1"], capture_output=True, text=True,
                          timeout=20, env={**os.environ, "PATH": str(tmp_path)})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "trade-stream bench: the Node relay needs node (18 or newer) on PATH: apt-get install nodejs npm, "
        "or drop --rounds"]


@pytest.mark.skipif(shutil.which("redis-server") is None and not Path("/usr/bin/redis-server").exists(),
                    reason="redis-server not installed (tests/run.sh installs it)")
def test_cluster_smoke(tmp_path):
    """Two nodes on a redis-server beside the single-process run, then a failover: the fields are there and
    sane (no timing asserted), every fill arrives once, and nothing is left running."""
    out = run_bench(tmp_path, "--scenario", "hot", "--clients", "20", "--rate", "20", "--duration", "2",
                    "--warmup", "1", "--cluster", "2")
    single, cluster = out["runs"]
    assert (single["relay"], cluster["relay"]) == ("ours", "cluster")
    assert_sane(single)
    assert_sane(cluster)
    assert cluster["redis_cpu_pct"] >= 0 and cluster["redis_cpu_s_per_million"] >= 0
    nodes = cluster["nodes"]
    assert len(nodes) == 2 and sum(n["leader"] for n in nodes) == 1
    assert all(n["deliveries"] > 0 and n["cpu_s_per_million"] > 0 for n in nodes)
    assert sum(n["deliveries"] for n in nodes) == cluster["deliveries"]
    fo = cluster["failover"]
    assert fo is not None, cluster["errors"]
    assert fo["killed"] != fo["new_leader"] and fo["seconds"] > 0
    assert (fo["fills_received"], fo["fills_lost"], fo["fill_duplicates"]) == (fo["fills_sent"], 0, 0)
    assert fo["session_refusals"] == 0
    assert {t["target"] for t in out["targets"]} >= {"cluster: failover < 10 s", "cluster: no fill lost, none twice"}
    assert processes_mentioning(str(tmp_path)) == []


def test_broker_smoke(tmp_path):
    """The broker scenario end to end, small: Broker API accounts, the daemon in Broker mode, WebSocket users."""
    out = run_bench(tmp_path, "--scenario", "broker", "--accounts", "200", "--clients", "4", "--rate", "100",
                    "--duration", "2", "--warmup", "0.5", "--backlog", "200")
    assert out["scenario"] == "broker" and out["accounts"] == 200
    [run] = out["runs"]
    assert run["connected"] == run["users"] == 4, run["errors"]
    assert run["offered"] > 0 and run["journaled"] > 0 and run["deliveries"] > 0
    # Deliveries over events journaled in the window: events already journaled but still on their way when the
    # window opens are delivered inside it, so a busy machine can read a little over 1.
    assert 0 < run["fraction_delivered"] <= 1.05
    assert run["relay_cpu_s"] > 0 and run["cpu_ms_per_event"] > 0
    assert run["backlog_journaled"] == run["backlog_events"] == 200
    assert run["backlog_events_per_cpu_s"] > 0
    assert processes_mentioning(str(tmp_path)) == []


@pytest.mark.timeout(60)
def test_outbox_smoke():
    """`trade-stream bench outbox`, small: the head query, before and after, and the sizes per row."""
    proc = subprocess.run([*BENCH, "outbox", "--pending", "1000,4000", "--calls", "5", "--compare", "--json"],
                          capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    small, large = out["runs"]
    assert (small["pending"], large["pending"]) == (1000, 4000)
    assert large["heads"]["vm_steps"] < 1.5 * small["heads"]["vm_steps"]  # flat in the backlog
    assert large["before"]["vm_steps"] > 2 * small["before"]["vm_steps"]  # the old query was not
    assert 300 < small["bytes_per_delivery"] < 2000 and 200 < out["bytes_per_notification"] < 1000


@pytest.mark.timeout(60)
def test_bench_auth_counts_one_hash_per_check_with_token_ids_and_one_per_user_without():
    proc = subprocess.run([*BENCH, "auth", "--users", "1,20", "--checks", "30", "--json"], capture_output=True,
                          text=True, timeout=100)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {(r["users"], r["format"], r["case"]): r for r in json.loads(proc.stdout)["runs"]}
    assert len(rows) == 12
    for users in (1, 20):
        assert rows[(users, "id", "right token")]["hashes_per_check"] == 1
        assert rows[(users, "id", "wrong token")]["hashes_per_check"] == 0
        assert rows[(users, "legacy", "wrong token")]["hashes_per_check"] == users
        assert rows[(users, "legacy", "wrong token, throttled source")]["hashes_per_check"] == 0
    assert all(r["median_us"] > 0 and r["p99_us"] >= r["median_us"] for r in rows.values())


@pytest.mark.timeout(90)
@pytest.mark.parametrize("via", ["sse", "ws"])
def test_bench_publish_smoke(via):
    """`trade-stream bench publish`, tiny, with SSE streams and with WebSockets: events are taken in and every
    subscriber of a channel gets each (the SSE streams' warm-up events are not counted)."""
    proc = subprocess.run([*BENCH, "publish", "--via", via, "--clients", "6", "--channels", "3", "--publishers", "2",
                           "--batch", "4", "--duration", "0.5", "--json"], capture_output=True, text=True, timeout=80)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["via"] == via and out["accepted"] > 0 and out["accepted"] % 4 == 0
    assert out["deliveries"] == 2 * out["accepted"] and out["missing"] == 0  # two subscribers per channel
    assert out["accepted_per_s"] > 0 and out["deliveries_per_s"] > 0


@pytest.mark.timeout(60)
def test_bench_alerts_keeps_the_book_full_and_the_index_cheaper_than_a_scan():
    proc = subprocess.run([*BENCH, "alerts", "--alerts", "200,1000", "--symbols", "10", "--trades", "300",
                           "--compare", "--json"], capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["scenario"] == "alerts" and [r["alerts"] for r in out["runs"]] == [200, 1000]
    for r in out["runs"]:
        assert r["symbols"] == 10 and r["trades"] == 300 and 0 <= r["fired_per_trade"] < 5
        assert 0 < r["median_us"] <= r["p99_us"] and 0 < r["scan"]["median_us"] <= r["scan"]["p99_us"]
