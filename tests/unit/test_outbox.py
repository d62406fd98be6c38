"""The webhook outbox on a real SQLite file: which deliveries are heads, and what finding them costs."""

from __future__ import annotations

import sqlite3
import uuid

import pytest

from trade_stream.bench.outbox import vm_steps
from trade_stream.edges.outbox import Outbox

pytestmark = pytest.mark.timeout(60)


def fill(outbox: Outbox, orders: int, per_order: int = 2, target: str = "desk") -> None:
    """``orders`` orders of ``per_order`` pending deliveries each, interleaved as a live stream queues them."""
    notes = [{"order": f"o{i}", "n": k} for k in range(per_order) for i in range(orders)]
    rows = lambda n: [(str(uuid.uuid4()), target, n["order"], f"e{n['n']}", b"{}")]  # noqa: E731
    outbox.enqueue(notes, rows, 0)


def test_the_head_query_costs_the_same_at_1k_and_40k_pending_rows(tmp_path):
    small, large = Outbox(tmp_path / "small.sqlite3"), Outbox(tmp_path / "large.sqlite3")
    try:
        fill(small, 500)
        fill(large, 20_000)
        assert small.pending() == {"desk": 1_000} and large.pending() == {"desk": 40_000}
        busy = {"o1", "o2", "o3"}
        cost_small = vm_steps(small.db, lambda: small.heads("desk", busy))
        cost_large = vm_steps(large.db, lambda: large.heads("desk", busy))
        assert cost_large < 2 * cost_small, (cost_small, cost_large)
    finally:
        small.close()
        large.close()


def test_heads_are_each_orders_oldest_pending_delivery(tmp_path):
    outbox = Outbox(tmp_path / "o.sqlite3")
    try:
        fill(outbox, 3, per_order=3)
        heads = outbox.heads("desk", set())
        assert [(h.order_key, h.event) for h in heads] == [("o0", "e0"), ("o1", "e0"), ("o2", "e0")]
        assert [h.order_key for h in outbox.heads("desk", {"o1"})] == ["o0", "o2"]
        outbox.delivered(heads[0], 200)
        outbox.give_up(heads[1], 400, "HTTP 400")
        assert [(h.order_key, h.event) for h in outbox.heads("desk", set())] == [
            ("o2", "e0"), ("o0", "e1"), ("o1", "e1")]
        assert outbox.heads("other", set()) == []
    finally:
        outbox.close()


def test_the_bound_gives_up_the_oldest_and_the_next_of_their_orders_become_heads(tmp_path):
    outbox = Outbox(tmp_path / "o.sqlite3")
    try:
        fill(outbox, 2, per_order=3)  # o0 e0, o1 e0, o0 e1, o1 e1, o0 e2, o1 e2
        assert outbox.trim("desk", 4) == 2
        assert outbox.pending() == {"desk": 4}
        assert [(h.order_key, h.event) for h in outbox.heads("desk", set())] == [("o0", "e1"), ("o1", "e1")]
        assert outbox.trim("desk", 4) == 0
    finally:
        outbox.close()


def test_an_outbox_written_before_heads_were_kept_gets_them_at_open(tmp_path):
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE deliveries (id INTEGER PRIMARY KEY AUTOINCREMENT, delivery_id TEXT NOT NULL UNIQUE,
            target TEXT NOT NULL, order_key TEXT NOT NULL, event TEXT NOT NULL, body BLOB NOT NULL,
            created REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending', last_status INTEGER, last_error TEXT, done_at REAL);
        CREATE INDEX deliveries_lane ON deliveries(target, state, order_key, id);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """)
    for i, (order, state) in enumerate([("a", "delivered"), ("a", "pending"), ("a", "pending"), ("b", "pending")]):
        db.execute("INSERT INTO deliveries(delivery_id, target, order_key, event, body, created, next_at, state) "
                   "VALUES (?, 'desk', ?, ?, x'7b7d', 0, 0, ?)", (f"d{i}", order, f"e{i}", state))
    db.commit()
    db.close()
    outbox = Outbox(path)
    try:
        assert [(h.order_key, h.event) for h in outbox.heads("desk", set())] == [("a", "e1"), ("b", "e3")]
    finally:
        outbox.close()


def test_a_delivery_queued_again_under_its_id_is_queued_once(tmp_path):
    outbox = Outbox(tmp_path / "o.sqlite3")
    try:
        notes = [{"order": "o0", "n": 0}, {"order": "o0", "n": 1}]
        rows = lambda n: [(f"id-{n['n']}", "desk", n["order"], f"e{n['n']}", b"{}")]  # noqa: E731
        assert outbox.enqueue(notes, rows, 2) == (2, {})
        assert outbox.enqueue(notes, rows, 2) == (0, {})  # the store recreated, or another node's copy
        assert outbox.pending() == {"desk": 2}
        assert [(h.delivery_id, h.event) for h in outbox.heads("desk", set())] == [("id-0", "e0")]
    finally:
        outbox.close()


def test_deliveries_settled_elsewhere_leave_unsent_and_pass_their_orders_head_on(tmp_path):
    outbox = Outbox(tmp_path / "o.sqlite3")
    try:
        fill(outbox, 2, per_order=2)  # o0 e0, o1 e0, o0 e1, o1 e1
        page = outbox.pending_ids("desk")
        assert len(page) == 4 and outbox.pending_ids("desk", after=page[1][0]) == page[2:]
        first_o0, first_o1 = page[0][1], page[1][1]
        assert outbox.settled_elsewhere("desk", {first_o0: "delivered", first_o1: "failed", "unknown": "failed"}) == 2
        assert outbox.settled_elsewhere("desk", {first_o0: "delivered"}) == 0  # once
        assert outbox.pending() == {"desk": 2}
        assert [(h.order_key, h.event) for h in outbox.heads("desk", set())] == [("o0", "e1"), ("o1", "e1")]
        states = dict(outbox.db.execute("SELECT delivery_id, state FROM deliveries").fetchall())
        assert (states[first_o0], states[first_o1]) == ("delivered", "failed")
    finally:
        outbox.close()
