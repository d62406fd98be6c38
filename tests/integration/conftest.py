"""Fixtures shared by the integration tests."""

import pytest

from tests.support.relay import KEY, SECRET
from trade_stream.simulator import SimConfig, Simulator


@pytest.fixture
async def sim():
    """A deterministic simulator (no automatic data) that knows the relay's key."""
    async with Simulator(SimConfig(host="127.0.0.1", port=0, accounts={KEY: SECRET}, rate_per_symbol=0.0)) as s:
        yield s
