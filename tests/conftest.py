"""Shared test setup: every async test runs on uvloop, like the daemon; one simulator fixture for all."""

import pytest
import uvloop

from tests.support.relay import sim_config
from trade_stream.simulator import Simulator


def pytest_asyncio_loop_factories(config, item):
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture
async def sim():
    """A simulator as ``sim_config`` describes (tests/support/relay.py)."""
    async with Simulator(sim_config()) as s:
        yield s
