"""Shared test setup: every async test runs on uvloop, like the daemon; one simulator fixture for all."""

import pytest
import uvloop

from tests.support.relay import KEY, SECRET
from trade_stream.simulator import SimConfig, Simulator
from trade_stream.simulator.clock import Clock


def pytest_asyncio_loop_factories(config, item):
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture
async def sim():
    """A deterministic simulator (no automatic data) that knows the relay's key. Its clock is in a regular session
    (the wall clock from an hour after the open to an hour before the close, else a session's 10:30), so a test
    that turns the generator on gets stock trades at any real hour; tests about other hours pin their own clock
    (tests/support/clocks.py)."""
    config = SimConfig(host="127.0.0.1", port=0, accounts={KEY: SECRET}, rate_per_symbol=0.0,
                       clock=Clock.in_session())
    async with Simulator(config) as s:
        yield s
