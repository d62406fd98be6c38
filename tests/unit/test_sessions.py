"""The per-user connection count (``edges.identity.Sessions``): who is the oldest, what each policy does with one
more, and that a slot is freed exactly once. Pure logic: each seat's ``close`` records what it was told."""

from __future__ import annotations

import pytest

from trade_stream.core.users import Seat
from trade_stream.edges.identity import Sessions

pytestmark = pytest.mark.timeout(10)


class Conn:
    """A counted connection; ``closed`` holds the warnings its seat was given."""

    def __init__(self, name: str, kind: str = "websocket") -> None:
        self.name = name
        self.closed: list[str] = []
        self.seat = Seat(kind, f"10.0.0.{len(name)}", self.closed.append)

    def __repr__(self) -> str:
        return self.name


def admit_all(sessions: Sessions, user: str, conns: list[Conn]) -> None:
    for c in conns:
        assert sessions.admit(user, c, c.seat) is None


def test_one_over_the_limit_closes_the_oldest_admitted_of_that_user_only():
    sessions = Sessions(3)
    a, b, c, d = (Conn(n) for n in "abcd")
    other = Conn("other")
    admit_all(sessions, "bob", [other])
    admit_all(sessions, "alice", [a, b, c, d])
    assert [len(x.closed) for x in (a, b, c, d, other)] == [1, 0, 0, 0, 0]
    assert "at most 3 connections per user" in a.closed[0] and "TRADE_STREAM_MAX_CONNECTIONS_PER_USER" in a.closed[0]
    assert list(sessions.by_user["alice"]) == [b, c, d] and sessions.counts() == [3, 1]
    assert sessions.closed_oldest == 1


def test_the_closed_ones_own_release_later_frees_nothing_more():
    sessions = Sessions(2)
    a, b, c = Conn("a"), Conn("b"), Conn("c")
    admit_all(sessions, "alice", [a, b, c])
    sessions.release("alice", a)  # a's teardown, after it was closed for c
    assert list(sessions.by_user["alice"]) == [b, c]
    sessions.release("alice", b)
    sessions.release("alice", b)
    assert list(sessions.by_user["alice"]) == [c]
    sessions.release("alice", c)
    assert sessions.by_user == {} and sessions.counts() == []


def test_a_holder_admitted_again_keeps_its_place_and_closes_nobody():
    sessions = Sessions(2)
    a, b = Conn("a"), Conn("b")
    admit_all(sessions, "alice", [a, b, a])  # a WebSocket refreshing its token
    assert list(sessions.by_user["alice"]) == [a, b] and not a.closed and not b.closed


def test_a_close_that_releases_its_own_slot_again_does_not_disturb_the_count():
    """The WebSocket side's close forgets the client, which releases it: already freed, so nothing happens."""
    sessions = Sessions(1)
    a, b = Conn("a"), Conn("b")
    a.seat = Seat("websocket", "ip", lambda message: sessions.release("alice", a))
    admit_all(sessions, "alice", [a, b])
    assert list(sessions.by_user["alice"]) == [b]


def test_refuse_refuses_and_closes_nobody():
    sessions = Sessions(2, "refuse")
    a, b, c = Conn("a"), Conn("b"), Conn("c")
    admit_all(sessions, "alice", [a, b])
    refused = sessions.admit("alice", c, c.seat)
    assert refused is not None and refused.code == "too_many_connections"
    assert "TRADE_STREAM_MAX_CONNECTIONS_PER_USER" in refused.message
    assert list(sessions.by_user["alice"]) == [a, b] and not a.closed and sessions.closed_oldest == 0


def test_a_lower_limit_and_another_policy_apply_from_the_next_admission():
    sessions = Sessions(4, "refuse")
    conns = [Conn(n) for n in "abcd"]
    admit_all(sessions, "alice", conns)
    sessions.reload(2, "close_oldest")
    assert sessions.counts() == [4] and not any(c.closed for c in conns)  # nobody closed by the reload itself
    e = Conn("e")
    admit_all(sessions, "alice", [e])  # room for e within the new limit: the three oldest go
    assert [bool(c.closed) for c in conns] == [True, True, True, False]
    assert list(sessions.by_user["alice"]) == [conns[3], e] and sessions.closed_oldest == 3
