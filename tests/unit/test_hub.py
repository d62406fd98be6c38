"""The subscription hub: refcounting, linger, cap and rejection, with a hand-driven clock."""

import pytest

from trade_stream.core.hub import Hub, SymbolLimit, group

T, Q = "trades", "quotes"


def test_first_holder_subscribes_and_second_does_not():
    hub = Hub(linger=5)
    assert hub.subscribe("a", [(T, "AAPL")], 0).subscribe == [(T, "AAPL")]
    assert hub.subscribe("b", [(T, "AAPL")], 0).subscribe == []
    assert hub.holders[(T, "AAPL")] == {"a", "b"}


def test_same_client_twice_holds_once():
    hub = Hub(linger=0)
    hub.subscribe("a", [(T, "AAPL")], 0)
    assert not hub.subscribe("a", [(T, "AAPL")], 0)
    assert hub.unsubscribe("a", [(T, "AAPL")], 1).unsubscribe == [(T, "AAPL")]


def test_one_unsubscribe_keeps_symbol_for_others():
    hub = Hub(linger=0)
    hub.subscribe("a", [(T, "AAPL")], 0)
    hub.subscribe("b", [(T, "AAPL")], 0)
    assert not hub.unsubscribe("a", [(T, "AAPL")], 1)
    assert hub.wanted() == {(T, "AAPL")}


def test_last_holder_lingers_then_expires():
    hub = Hub(linger=5)
    hub.subscribe("a", [(T, "AAPL")], 0)
    assert not hub.unsubscribe("a", [(T, "AAPL")], 10)
    assert hub.wanted() == {(T, "AAPL")}
    assert hub.next_deadline() == 15
    assert not hub.expire(14.9)
    assert hub.expire(15).unsubscribe == [(T, "AAPL")]
    assert hub.wanted() == set()


def test_resubscribe_within_linger_sends_nothing():
    hub = Hub(linger=5)
    hub.subscribe("a", [(T, "AAPL")], 0)
    hub.unsubscribe("a", [(T, "AAPL")], 1)
    assert not hub.subscribe("b", [(T, "AAPL")], 2)
    assert not hub.expire(100)
    assert hub.wanted() == {(T, "AAPL")}


def test_drop_releases_everything_the_client_held():
    hub = Hub(linger=0)
    hub.subscribe("a", [(T, "AAPL"), (Q, "AAPL"), (T, "MSFT")], 0)
    hub.subscribe("b", [(T, "MSFT")], 0)
    assert sorted(hub.drop("a", 1).unsubscribe) == [(Q, "AAPL"), (T, "AAPL")]
    assert hub.wanted() == {(T, "MSFT")}
    assert hub.held_by("a") == set()


def test_symbol_cap_counts_symbols_across_channels_and_changes_nothing_when_refused():
    hub = Hub(linger=0, max_symbols=2)
    hub.subscribe("a", [(T, "AAPL"), (Q, "AAPL"), (T, "MSFT")], 0)
    with pytest.raises(SymbolLimit):
        hub.subscribe("b", [(T, "TSLA"), (T, "AAPL")], 0)
    assert hub.held_by("b") == set()
    assert hub.wanted_symbols() == {"AAPL", "MSFT"}


def test_symbol_cap_evicts_lingering_symbols_first():
    hub = Hub(linger=5, max_symbols=1)
    hub.subscribe("a", [(T, "AAPL")], 0)
    hub.unsubscribe("a", [(T, "AAPL")], 1)
    change = hub.subscribe("a", [(T, "MSFT")], 2)
    assert change.unsubscribe == [(T, "AAPL")]
    assert change.subscribe == [(T, "MSFT")]


def test_reject_drops_every_holder_without_linger():
    hub = Hub(linger=5)
    hub.subscribe("a", [(T, "AAPL")], 0)
    hub.subscribe("b", [(T, "AAPL"), (T, "MSFT")], 0)
    affected = hub.reject([(T, "AAPL")])
    assert affected == {"a": [(T, "AAPL")], "b": [(T, "AAPL")]}
    assert hub.wanted() == {(T, "MSFT")}
    assert hub.held_by("a") == set()


def test_group_is_sorted_alpaca_shape():
    assert group([(T, "MSFT"), (Q, "AAPL"), (T, "AAPL")]) == {"quotes": ["AAPL"], "trades": ["AAPL", "MSFT"]}


def test_private_holders_are_not_visible_and_a_public_release_lingers_in_view_as_usual():
    hub = Hub(linger=5, max_symbols=0)
    tap, page = object(), object()
    hub.subscribe(tap, [(T, "NVDA")], 0, private=True)
    assert hub.wanted() == {(T, "NVDA")} and hub.visible() == set() and hub.holder_counts() == {}
    hub.subscribe(page, [(T, "NVDA")], 1)
    assert hub.visible() == {(T, "NVDA")} and hub.holder_counts() == {"NVDA": {T: 1}}
    hub.unsubscribe(page, [(T, "NVDA")], 2)
    assert hub.visible() == {(T, "NVDA")} and hub.next_deadline() == 7  # shown while it would linger
    hub.expire(7)
    assert hub.visible() == set() and hub.wanted() == {(T, "NVDA")}
    hub.unsubscribe(tap, [(T, "NVDA")], 8)  # the private holder's own linger is not shown either
    assert hub.wanted() == {(T, "NVDA")} and hub.visible() == set()
    assert hub.expire(13).unsubscribe == [(T, "NVDA")]
    assert hub._private == set() and hub._shown_until == {}


def test_weak_holds_give_way_to_the_symbol_cap_and_say_whose():
    hub = Hub(linger=5, max_symbols=2)
    ghost, other_ghost, page = object(), object(), object()
    hub.subscribe(ghost, [(T, "AAPL"), (T, "MSFT")], 0, weak=True)
    with pytest.raises(SymbolLimit):  # weak holds do not evict each other
        hub.subscribe(other_ghost, [(T, "TSLA")], 0, weak=True)
    change = hub.subscribe(page, [(T, "TSLA"), (T, "MSFT")], 1)
    assert change.evicted == {ghost: [(T, "AAPL")]} and change.unsubscribe == [(T, "AAPL")]
    assert hub.wanted_symbols() == {"TSLA", "MSFT"} and hub.held_by(ghost) == {(T, "MSFT")}
    with pytest.raises(SymbolLimit):  # MSFT is held by the page too: not evictable
        hub.subscribe(object(), [(T, "IBM")], 2)
