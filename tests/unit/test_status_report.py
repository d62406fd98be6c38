"""The status report names each part as the operator reads it: the first account's stream is ``trading``, the
others ``trading:<account>``; a store in fault is down at once while an upstream gets the grace period."""

import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from trade_stream.core.upstream_state import LinkState, UpstreamState
from trade_stream.ops.status import StatusReport, Upstream
from trade_stream.ops.supervisor import Supervisor

pytestmark = pytest.mark.timeout(10)


def up() -> UpstreamState:
    return UpstreamState(state=LinkState.CONNECTED, down_since=None)


def down_for(seconds: float) -> UpstreamState:
    return UpstreamState(state=LinkState.DISCONNECTED, error="refused", down_since=time.monotonic() - seconds)


@dataclass
class FakeUpstream:
    status: UpstreamState


@dataclass
class FakeStore:
    fault_for: float | None = None

    def health(self) -> dict[str, Any]:
        return {"state": "ok" if self.fault_for is None else "fault", "fault_for": self.fault_for}


@dataclass
class FakeMarket:
    default: FakeUpstream = field(default_factory=lambda: FakeUpstream(up()))
    others: dict[str, UpstreamState] = field(default_factory=dict)

    def status(self) -> dict[str, Any]:
        return {"alpaca_connected": self.default.status.state == "connected"}

    def upstream_view(self) -> dict[str, Any]:
        return self.default.status.to_dict()

    def default_upstream(self) -> Upstream:
        return self.default

    def source_health(self) -> dict[str, UpstreamState]:
        return self.others

    def line(self) -> str:
        return "clients=3 symbols=2"


def build(tradings: dict[str, FakeUpstream], orders: FakeStore | None = None,
          market: FakeMarket | None = None) -> StatusReport:
    return StatusReport(market or FakeMarket(), tradings, Supervisor(), grace=30.0, orders=orders or FakeStore(),
                        notifications=FakeStore())


def test_the_first_account_is_plain_trading_and_the_others_carry_their_name():
    report = build({"paper": FakeUpstream(up()), "live": FakeUpstream(down_for(60))})
    health = report.health()
    assert set(health["upstreams"]) == {"market_data", "trading", "trading:live"}
    assert health["ok"] is False and health["down"] == ["trading:live"]
    status = report.status()
    assert status["trading"]["state"] == "connected" and set(status["tradings"]) == {"paper", "live"}
    assert "webhooks" not in status and "broker" not in status


def test_one_account_has_no_per_account_table():
    status = build({"default": FakeUpstream(up())}).status()
    assert "tradings" not in status and status["health"]["ok"] is True


def test_an_upstream_inside_the_grace_is_up_but_a_store_in_fault_is_down_at_once():
    report = build({"default": FakeUpstream(down_for(5))}, orders=FakeStore(fault_for=0.1))
    health = report.health()
    assert health["upstreams"]["trading"]["ok"] is True
    assert health["ok"] is False and health["down"] == ["orders"]
    code, body = report.healthz()
    assert code == 503 and body["status"] == "down" and body["upstream"]["state"] == "connected"


def test_the_status_line_names_both_streams_and_what_is_down():
    market = FakeMarket(others={"crypto:us": down_for(60)})
    line = build({"default": FakeUpstream(up())}, market=market).line()
    assert line == "upstream=connected trading=connected clients=3 symbols=2 health=down down=crypto:us"
    assert build({}).line().startswith("upstream=connected trading=off ")
