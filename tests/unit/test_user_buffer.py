"""The per-user SSE event buffer (core/user_buffer.py) and the compound ids of streams carrying app channels
(core/event_ids.py): pure, the clock passed in."""

from __future__ import annotations

import pytest

from trade_stream.core.event_ids import (
    NOTIFICATIONS,
    channel_part,
    channel_positions,
    compound,
    parse_compound,
)
from trade_stream.core.user_buffer import UserBuffers

pytestmark = pytest.mark.timeout(10)
ALICE, BOB = ("alice", "alerts"), ("bob", "alerts")


def test_a_users_buffer_keeps_the_last_events_in_order_and_is_per_user_and_stream():
    b = UserBuffers(size=3, linger=60)
    assert b.opened(ALICE, "tab1") == []
    b.opened(BOB, "tab1")
    for n in range(5):
        b.record(ALICE, f"{n}-0", f"a{n}".encode())
    b.record(BOB, "9-0", b"b9")
    assert b.opened(ALICE, "tab2") == [b"a2", b"a3", b"a4"]  # the oldest evicted
    assert b.opened(("alice", "strategies:x"), "tab3") == []  # another stream of hers: its own buffer
    assert b.opened(BOB, "tab2") == [b"b9"]


def test_an_event_sent_to_two_tabs_is_kept_once_even_when_one_tab_gets_it_later():
    b = UserBuffers(size=10, linger=60)
    b.opened(ALICE, "tab1")
    b.opened(ALICE, "tab2")
    b.record(ALICE, "notifications:5", b"e5 as tab1 saw it")
    b.record(ALICE, "@alerts:7-0", b"e7")
    b.record(ALICE, "notifications:5", b"e5 as tab2 saw it")  # tab2 under throttle_ms: written after e7
    assert b.opened(ALICE, "tab3") == [b"e5 as tab1 saw it", b"e7"]


def test_nothing_is_recorded_for_a_user_without_a_connection():
    b = UserBuffers(size=10, linger=60)
    b.record(ALICE, "1-0", b"e1")
    assert ALICE not in b.buffers


def test_a_buffer_is_dropped_linger_seconds_after_the_users_last_connection_closed():
    b = UserBuffers(size=10, linger=300)
    b.opened(ALICE, "tab1")
    b.opened(ALICE, "tab2")
    b.record(ALICE, "1-0", b"e1")
    b.closed(ALICE, "tab1", now=1000.0)
    assert b.sweep(now=2000.0) == []  # tab2 is still open
    b.closed(ALICE, "tab2", now=2000.0)
    assert b.sweep(now=2299.0) == []
    assert b.opened(ALICE, "tab3") == [b"e1"]  # back within the linger: the buffer is still there
    b.closed(ALICE, "tab3", now=2300.0)
    assert b.sweep(now=2600.0) == [(ALICE, 1)]
    assert b.buffers == {}
    assert b.opened(ALICE, "tab4") == []


def test_the_table_is_bounded_the_user_gone_longest_goes_first():
    b = UserBuffers(size=10, linger=300, max_buffers=2)
    b.opened(("u1", "alerts"), "c1")
    b.opened(("u2", "alerts"), "c2")
    b.closed(("u2", "alerts"), "c2", now=10.0)
    b.closed(("u1", "alerts"), "c1", now=20.0)
    b.opened(("u3", "alerts"), "c3")
    assert set(b.buffers) == {("u1", "alerts"), ("u3", "alerts")}
    b.opened(("u1", "alerts"), "c4")  # back: every buffer has a connection
    assert b.opened(("u4", "alerts"), "c5") == [] and ("u4", "alerts") not in b.buffers
    assert len(b.buffers) == 2


def test_size_zero_is_off():
    b = UserBuffers(size=0, linger=300)
    assert b.opened(ALICE, "tab") == []
    b.record(ALICE, "1-0", b"e1")
    assert b.buffers == {}


def test_compound_ids_name_channels_apart_from_accounts():
    raw = compound({NOTIFICATIONS: "41", channel_part("agent-status"): "1700000000000-3",
                    channel_part("alerts"): "0-0"})
    assert raw == "@agent-status:1700000000000-3,@alerts:0-0,notifications:41"
    assert {k: v.n for k, v in parse_compound(raw).items()} == {NOTIFICATIONS: 41}
    assert channel_positions(raw) == {"agent-status": "1700000000000-3", "alerts": "0-0"}
    # a channel whose name holds a ':' (strategies:<id>): the position is what follows the last ':'
    assert channel_positions("@strategies:abc:5-1,paper:E-3") == {"strategies:abc": "5-1"}
    assert {k: (v.epoch, v.n) for k, v in parse_compound("@strategies:abc:5-1,paper:E-3").items()} == \
        {"paper": ("E", 3)}
    assert channel_positions("E-3") == {} and channel_positions(None) == {}
    assert channel_positions("@:1-0,@x") == {}  # no name, no position: nothing to resume
