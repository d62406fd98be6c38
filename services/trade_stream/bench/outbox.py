"""``trade-stream bench outbox``: what the webhook outbox costs as a dead target's backlog grows.

For each backlog size it builds an outbox file (in a temporary directory) holding that many pending deliveries
for one target, two per order as a live stream queues them (accepted, then filled), with real bodies, then times
``Outbox.heads`` (what each wake of a delivery lane runs on the event loop) and counts the SQLite
virtual-machine steps it takes (the work, whatever the machine's speed). ``--compare`` then runs the query the
outbox used before heads were flagged on the same rows, with the indexes it had then. It also reports the bytes
on disk per pending delivery and per stored notification, the numbers README's sizing is made of.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from trade_stream.bench import report
from trade_stream.core.journal import durable_size
from trade_stream.core.notification_store import SqliteNotificationStore
from trade_stream.edges.outbox import COLUMNS, Delivery, Outbox
from trade_stream.edges.webhooks import CONCURRENCY, payload
from trade_stream.records.webhook_targets import WebhookTarget

# The head query before heads were flagged: each order's oldest pending row by a correlated MIN(id).
BASELINE = (f"SELECT {COLUMNS} FROM deliveries d WHERE channel = 'webhook' AND target = ? AND state = 'pending' AND "
            "id = (SELECT MIN(id) FROM deliveries e WHERE e.channel = d.channel AND e.target = d.target AND "
            "e.state = 'pending' AND e.order_key = d.order_key) ORDER BY id LIMIT ?")
NOTE = {"account": "default", "symbol": "AAPL", "action": "BUY", "type": "order_filled", "status": "filled",
        "message": "Buy 100 AAPL filled at $150.25", "fill_price": "150.25", "quantity": "100",
        "timestamp": "2026-01-02T15:04:05.123456789Z", "level": "info", "event": "fill"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="trade-stream bench outbox", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pending", default="20000,200000",
                   help="backlog sizes, comma-separated (default 20000,200000)")
    p.add_argument("--calls", type=int, default=200, help="head queries timed per size (default 200)")
    p.add_argument("--compare", action="store_true", help="also time the query used before heads were flagged")
    p.add_argument("--json", action="store_true", help="print JSON results instead of the table")
    return p.parse_args(argv)


def build(path: Path, pending: int) -> tuple[Outbox, float]:
    """An outbox with ``pending`` deliveries for target "desk"; returns it and the seconds queueing took."""
    target = WebhookTarget("desk", "http://127.0.0.1/hook")
    orders = [str(uuid.uuid4()) for _ in range((pending + 1) // 2)]
    notes = [{"id": i, **NOTE, "trade_id": orders[i % len(orders)]} for i in range(pending)]

    def rows(note: dict[str, Any]) -> list[tuple[str, str, str, str, bytes]]:
        delivery_id = str(uuid.uuid4())
        return [(delivery_id, "desk", note["trade_id"], note["type"], payload(target, delivery_id, note))]

    outbox = Outbox(path)
    started = time.perf_counter()
    for first in range(0, pending, 500):  # the worker's catch-up page
        outbox.enqueue(notes[first:first + 500], rows, first)
    return outbox, time.perf_counter() - started


def timed(call: Any, calls: int) -> dict[str, float]:
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {"median_ms": round(statistics.median(samples), 3),
            "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 3)}


def vm_steps(db: Any, call: Any) -> int:
    count = 0

    def tick() -> int:
        nonlocal count
        count += 1
        return 0

    db.set_progress_handler(tick, 1)
    try:
        call()
    finally:
        db.set_progress_handler(None, 1)
    return count


def measure(size: int, calls: int, compare: bool, where: Path) -> dict[str, Any]:
    outbox, queue_s = build(where / f"outbox-{size}.sqlite3", size)
    try:
        outbox.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        busy = {r.order_key for r in outbox.heads("desk", set(), CONCURRENCY)}  # as if in flight
        heads = lambda: outbox.heads("desk", busy)  # noqa: E731
        out: dict[str, Any] = {"pending": size, "heads": {**timed(heads, calls), "vm_steps": vm_steps(outbox.db,
                                                                                                         heads)},
                               "queue_per_s": round(size / queue_s),
                               "bytes_per_delivery": round(durable_size(outbox.path) / size)}
        if compare:  # on the indexes the outbox had then
            outbox.db.executescript("DROP INDEX deliveries_heads; DROP INDEX deliveries_queue;")

            def old() -> list[Delivery]:
                rows = outbox.db.execute(BASELINE, ("desk", 100 + len(busy))).fetchall()
                return [Delivery(*r) for r in rows if r[3] not in busy][:100]
            out["before"] = {**timed(old, max(5, calls // 20)), "vm_steps": vm_steps(outbox.db, old)}
        return out
    finally:
        outbox.close()


def notification_bytes(where: Path, count: int = 20_000) -> int:
    store = SqliteNotificationStore(where / "notifications.sqlite3")
    try:
        store.db.execute("PRAGMA synchronous=OFF")  # each add commits on its own: no fsync each, the size is the same
        for i in range(count):
            store.add(f"bench-{i}", "default", {**NOTE, "trade_id": str(uuid.uuid4())})
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return round(durable_size(store.path) / count)
    finally:
        store.close()


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    sizes = [int(s) for s in args.pending.split(",") if s.strip()]
    with tempfile.TemporaryDirectory(prefix="trade-stream-bench-outbox-") as tmp:
        runs = [measure(size, args.calls, args.compare, Path(tmp)) for size in sizes]
        per_note = notification_bytes(Path(tmp))
    result = {"machine": report.machine(), "runs": runs, "bytes_per_notification": per_note}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print("pending   heads median  p99      VM steps  | before: median  p99       VM steps  | queued/s  B/delivery")
    for r in runs:
        h, b = r["heads"], r.get("before")
        before = (f"{b['median_ms']:9.2f} ms {b['p99_ms']:8.2f} ms {b['vm_steps']:10d}" if b else " " * 33)
        print(f"{r['pending']:>8d}  {h['median_ms']:9.3f} ms {h['p99_ms']:7.3f} ms {h['vm_steps']:9d}  | {before} | "
              f"{r['queue_per_s']:8d}  {r['bytes_per_delivery']:10d}")
    print(f"notification store: {per_note} B per notification")
    return 0
