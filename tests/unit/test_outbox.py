"""The delivery outbox on a real SQLite file: which deliveries are heads, per lane (channel, target), and what
finding them costs."""

from __future__ import annotations

import sqlite3
import uuid

import pytest

from trade_stream.bench.outbox import vm_steps
from trade_stream.edges.outbox import Outbox, Row

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


def test_each_channel_has_its_own_lanes_bounds_and_pending_counts(tmp_path):
    """The same target name in two channels is two lanes: heads, pending counts and the bound are per lane."""
    outbox = Outbox(tmp_path / "o.sqlite3", max_pending=10, bounds={"email": 2})
    try:
        notes = [{"n": k} for k in range(3)]
        rows = lambda n: [Row(f"e-{n['n']}", "alice", "alice", f"e{n['n']}", b"{}", "email"),  # noqa: E731
                          Row(f"w-{n['n']}", "alice", "o1", f"e{n['n']}", b"{}")]
        queued, dropped = outbox.enqueue(notes, rows, 3)
        assert (queued, dropped) == (6, {("email", "alice"): 1})  # the email lane's bound is 2, webhooks' 10
        assert outbox.pending() == {"alice": 3} and outbox.pending("email") == {"alice": 2}
        assert outbox.lanes() == {("webhook", "alice"): 3, ("email", "alice"): 2}
        email = outbox.heads("alice", set(), channel="email")
        assert [(h.delivery_id, h.channel) for h in email] == [("e-1", "email")]  # e-0 dropped, e-1 its head
        assert [h.delivery_id for h in outbox.queued("alice", "alice", 10, channel="email")] == ["e-1", "e-2"]
        outbox.delivered(email[0], 250)
        assert [h.delivery_id for h in outbox.heads("alice", set(), channel="email")] == ["e-2"]
        assert [h.delivery_id for h in outbox.heads("alice", set())] == ["w-0"]  # the webhook lane untouched
        assert outbox.settled_elsewhere("alice", {"w-0": "delivered"}, channel="email") == 0  # not that lane's
        assert outbox.pending() == {"alice": 3} and outbox.pending("email") == {"alice": 1}
    finally:
        outbox.close()


def test_a_deferred_delivery_waits_without_an_attempt_counted(tmp_path):
    outbox = Outbox(tmp_path / "o.sqlite3")
    try:
        outbox.enqueue([{}], lambda n: [Row("d", "bob", "bob", "order_filled", b"{}", "email")], 1)
        (head,) = outbox.heads("bob", set(), channel="email")
        outbox.defer(head, head.next_at + 60, "rate limited")
        (later,) = outbox.heads("bob", set(), channel="email")
        assert (later.attempts, later.next_at) == (0, head.next_at + 60)
    finally:
        outbox.close()


def test_another_channels_backlog_leaves_the_webhook_head_query_cost_alone(tmp_path):
    quiet, busy = Outbox(tmp_path / "quiet.sqlite3"), Outbox(tmp_path / "busy.sqlite3")
    try:
        for outbox in (quiet, busy):
            fill(outbox, 50)
        notes = [{"n": k} for k in range(20_000)]
        busy.enqueue(notes, lambda n: [Row(str(uuid.uuid4()), f"u{n['n'] % 7}", f"u{n['n'] % 7}", "e", b"{}",
                                           "email")], 0)
        cost_quiet = vm_steps(quiet.db, lambda: quiet.heads("desk", set()))
        cost_busy = vm_steps(busy.db, lambda: busy.heads("desk", set()))
        assert cost_busy < 1.2 * cost_quiet
    finally:
        quiet.close()
        busy.close()


def test_an_outbox_written_before_deliveries_had_channels_gets_them_at_open(tmp_path):
    """Its rows are webhooks, in the lanes they were in, and the head query runs on the lane index."""
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE deliveries (id INTEGER PRIMARY KEY AUTOINCREMENT, delivery_id TEXT NOT NULL UNIQUE,
            target TEXT NOT NULL, order_key TEXT NOT NULL, event TEXT NOT NULL, body BLOB NOT NULL,
            created REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending', last_status INTEGER, last_error TEXT, done_at REAL,
            head INTEGER NOT NULL DEFAULT 0);
        CREATE INDEX deliveries_lane ON deliveries(target, state, order_key, id);
        CREATE INDEX deliveries_heads ON deliveries(target, next_at, id) WHERE state = 'pending' AND head = 1;
        CREATE INDEX deliveries_queue ON deliveries(target, id) WHERE state = 'pending';
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """)
    db.execute("INSERT INTO deliveries(delivery_id, target, order_key, event, body, created, next_at, head) "
               "VALUES ('d0', 'desk', 'a', 'e0', x'7b7d', 0, 0, 1)")
    db.commit()
    db.close()
    outbox = Outbox(path)
    try:
        assert [(h.delivery_id, h.channel) for h in outbox.heads("desk", set())] == [("d0", "webhook")]
        assert outbox.pending() == {"desk": 1}
        plan = " ".join(str(r) for r in outbox.db.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM deliveries WHERE channel = 'webhook' AND target = 'desk' AND "
            "state = 'pending' AND head = 1 ORDER BY next_at, id LIMIT 5").fetchall())
        assert "deliveries_heads" in plan
    finally:
        outbox.close()
