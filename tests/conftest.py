"""Shared test setup: every async test runs on uvloop, like the daemon; one simulator fixture for all."""

import pytest
import uvloop

from tests.support.relay import KEY, SECRET
from trade_stream.simulator import SimConfig, Simulator


def pytest_asyncio_loop_factories(config, item):
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture
async def sim():
    """A deterministic simulator (no automatic data) that knows the relay's key."""
    async with Simulator(SimConfig(host="127.0.0.1", port=0, accounts={KEY: SECRET}, rate_per_symbol=0.0)) as s:
        yield s
