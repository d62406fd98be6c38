"""The simulator's fault bookkeeping (simulator/faults.py) without sockets: which attempt a queued failure hits,
what clearing drops, and plan changes that keep what they are not told to change."""

from __future__ import annotations

import pytest

from trade_stream.simulator import BASIC_PLAN
from trade_stream.simulator.faults import Faults, changed_plan

pytestmark = pytest.mark.timeout(10)

IEX, SIP, TRADING = "/v2/iex", "/v2/sip", "/stream"


def test_auth_failures_are_taken_in_order_by_the_paths_they_target():
    faults = Faults()
    faults.fail_next_auth(406, times=2)  # any market-data endpoint
    faults.fail_next_auth(402, path=TRADING)
    assert faults.take_auth_failure(TRADING) == 402  # the trading one, though queued after the data ones
    assert faults.take_auth_failure(TRADING) is None  # an untargeted failure never hits the trading stream
    assert [faults.take_auth_failure(IEX), faults.take_auth_failure(SIP), faults.take_auth_failure(IEX)] == [
        406, 406, None]


def test_a_failure_for_one_data_path_spares_the_others():
    faults = Faults()
    faults.fail_next_auth(409, path=SIP)
    assert faults.take_auth_failure(IEX) is None and faults.take_auth_failure(SIP) == 409


def test_clearing_drops_only_the_failures_that_would_hit_the_path():
    faults = Faults()
    faults.fail_next_auth(402, times=3)
    faults.fail_next_auth(402, times=2, path=TRADING)
    faults.fail_next_auth(409, path=SIP)
    assert faults.clear_auth_failures(TRADING) == 2
    assert faults.clear_auth_failures(SIP) == 4  # the untargeted three and its own
    faults.fail_next_auth(402, times=5)
    assert faults.clear_auth_failures() == 5 and faults.auth_failures == []


def test_handshake_rejections_in_order_then_accept():
    faults = Faults()
    faults.reject_handshakes(429, times=2)
    faults.reject_handshakes(503)
    assert [faults.take_rejection() for _ in range(4)] == [429, 429, 503, None]


def test_state_counts_what_is_pending_and_read_delay_is_never_negative():
    faults = Faults()
    faults.fail_next_auth(times=3)
    faults.reject_handshakes(times=2)
    faults.set_read_delay(-1)
    faults.set_rest_delay("/v2/orders", 1.5)
    faults.set_rest_delay("/v2/positions", 2)
    faults.set_rest_delay("/v2/positions", 0)  # back to at once
    assert faults.state() == {"read_delay": 0.0, "rest_delays": {"/v2/orders": 1.5}, "pending_auth_failures": 3,
                              "pending_handshake_rejections": 2}


def test_changed_plan_keeps_unnamed_settings_and_can_set_none():
    plan = changed_plan(BASIC_PLAN, feeds=["sip"], max_connections=3)
    assert (plan.feeds, plan.max_connections) == (frozenset({"sip"}), 3)
    assert (plan.symbol_limit, plan.wildcard) == (BASIC_PLAN.symbol_limit, BASIC_PLAN.wildcard)
    unlimited = changed_plan(BASIC_PLAN, symbol_limit=None)
    assert unlimited.symbol_limit is None and unlimited.feeds == BASIC_PLAN.feeds
