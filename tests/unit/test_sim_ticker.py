"""The simulator's ticker (simulator/ticker.py) without sockets: what one tick generates, by market phase at a
pinned clock, by feed and by subscription, counted from the ``Tick`` it returns."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

import pytest

from tests.support.clocks import HOLIDAY, OPEN, OVERNIGHT, POST, PRE, WEEKEND
from trade_stream.simulator import Clock, SimConfig, calendar, protocol
from trade_stream.simulator.config import DATA_PATHS, feed_kind
from trade_stream.simulator.connection import Conn
from trade_stream.simulator.market import Market
from trade_stream.simulator.ticker import EXTENDED_SHARE, Ticker

pytestmark = pytest.mark.timeout(10)

IEX, BOATS, CRYPTO, INDICATIVE = "/v2/iex", "/v1beta1/boats", "/v1beta3/crypto/us", "/v1beta1/indicative"
#: No randomness on top of the rate: no late trades, corrections, cancels or trading pauses.
QUIET: dict[str, Any] = dict(late_trade_rate=0.0, correction_rate=0.0, cancel_error_rate=0.0, halt_rate=0.0)


def ticker_at(instant: datetime, **settings: Any) -> Ticker:
    config = SimConfig(seed=1, clock=Clock.frozen_at(instant), **{**QUIET, **settings})
    assert config.clock is not None
    return Ticker(config, Market(config.seed, clock=config.clock), config.clock)


def conn(path: str, conn_id: int = 1, **subs: list[str]) -> Conn:
    """An authenticated connection record; the ticker reads its state and never touches the socket."""
    c = Conn(conn_id, cast(Any, None), path, DATA_PATHS[path], use_msgpack=False, key="K")
    c.subs = protocol.empty_subs(kind=feed_kind(DATA_PATHS[path]))
    for channel, symbols in subs.items():
        c.subs[channel] = set(symbols)
    return c


def messages(tick: Any, type_: str) -> list[dict]:
    return [o.msg for _, outs in tick.deliver for o in outs if o.msg["T"] == type_]


@pytest.mark.parametrize(("instant", "iex", "boats", "crypto", "options"), [
    (OPEN, 1.0, 0.0, 1.0, 1.0),
    (PRE, EXTENDED_SHARE, 0.0, 1.0, 0.0),
    (POST, EXTENDED_SHARE, 0.0, 1.0, 0.0),
    (OVERNIGHT, 0.0, EXTENDED_SHARE, 1.0, 0.0),
    (HOLIDAY, 0.0, 0.0, 1.0, 0.0),
    (WEEKEND, 0.0, 0.0, 1.0, 0.0),
])
def test_session_share_by_phase(instant: datetime, iex: float, boats: float, crypto: float, options: float):
    ticker = ticker_at(instant)
    phase = calendar.phase(instant)
    shares = [ticker.session_share(f, phase) for f in ("iex", "boats", "crypto-us", "indicative")]
    assert shares == [iex, boats, crypto, options]
    assert ticker.session_share("news", phase) == ticker.session_share("test", phase) == 1.0


def test_without_market_hours_every_feed_runs_fully():
    ticker = ticker_at(HOLIDAY, market_hours=False)
    assert [ticker.session_share(f, "closed") for f in ("iex", "boats", "indicative")] == [1.0, 1.0, 1.0]


def test_a_regular_session_tick_makes_the_rate_of_trades():
    ticker = ticker_at(OPEN, rate_per_symbol=20.0)
    tick = ticker.tick([conn(IEX, trades=["AAPL", "MSFT"])], 1.0, now=100.0)
    trades = messages(tick, "t")
    assert len(trades) == 40 and {t["S"] for t in trades} == {"AAPL", "MSFT"}
    assert not all(t["c"][:2] == ["@", "T"] for t in trades)  # not every one marked extended-hours


def test_before_the_open_a_tenth_of_the_rate_marked_form_t():
    ticker = ticker_at(PRE, rate_per_symbol=100.0)
    trades = messages(ticker.tick([conn(IEX, trades=["AAPL"])], 1.0, now=100.0), "t")
    assert len(trades) == 100 * EXTENDED_SHARE
    assert all(t["c"][:2] == ["@", "T"] for t in trades)
    assert all(("I" in t["c"]) == (t["s"] < 100) for t in trades)  # odd lots are marked I


def test_a_shut_feed_gets_nothing_while_crypto_trades_on():
    ticker = ticker_at(HOLIDAY, rate_per_symbol=10.0)
    tick = ticker.tick([conn(IEX, 1, trades=["AAPL"]), conn(CRYPTO, 2, trades=["BTC/USD"])], 1.0, now=100.0)
    assert [c.path for conns, _ in tick.deliver for c in conns] == [CRYPTO]
    assert {t["S"] for t in messages(tick, "t")} == {"BTC/USD"}


def test_rate_zero_unauthenticated_and_muted_connections_get_nothing():
    assert ticker_at(OPEN, rate_per_symbol=0.0).tick([conn(IEX, trades=["AAPL"])], 1.0, 100.0).deliver == []
    ticker = ticker_at(OPEN, rate_per_symbol=10.0)
    anonymous, muted = conn(IEX, 1, trades=["AAPL"]), conn(IEX, 2, trades=["AAPL"])
    anonymous.key, muted.muted = None, True
    tick = ticker.tick([anonymous, muted], 1.0, 100.0)
    assert tick.deliver == [] and tick.announce == []


def test_status_and_luld_subscribers_are_announced_the_current_state_once():
    ticker = ticker_at(OPEN, rate_per_symbol=1.0)
    c = conn(IEX, statuses=["AAPL"], lulds=["AAPL"])
    first = ticker.tick([c], 0.1, 100.0)
    assert [(who.id, sorted(o.msg["T"] for o in outs)) for who, outs in first.announce] == [(1, ["l", "s"])]
    assert ticker.tick([c], 0.1, 100.1).announce == []
    c.subs["statuses"] = {"AAPL", "MSFT"}
    again = ticker.tick([c], 0.1, 100.2).announce
    assert [[(o.msg["T"], o.msg["S"]) for o in outs] for _, outs in again] == [[("s", "MSFT")]]


def test_a_trading_pause_stops_trades_until_it_ends():
    ticker = ticker_at(OPEN, rate_per_symbol=10.0, halt_rate=1000.0, halt_seconds=5.0)
    c = conn(IEX, trades=["AAPL"], statuses=["AAPL"])
    halted = ticker.tick([c], 1.0, now=100.0)
    assert [m["sc"] for m in messages(halted, "s")] == ["H"] and ticker.halted_until == {"AAPL": 105.0}
    ticker.config.halt_rate = 0.0
    assert messages(ticker.tick([c], 1.0, now=104.0), "t") == []
    resumed = ticker.tick([c], 1.0, now=105.0)
    assert [m["sc"] for m in messages(resumed, "s")] == ["T"] and len(messages(resumed, "t")) == 10
    assert ticker.halted_until == {}
