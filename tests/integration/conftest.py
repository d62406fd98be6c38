"""Fixtures shared by the integration tests (the simulator fixture is in tests/conftest.py)."""

import pytest

from tests.support.relay import free_port, relay_config, running, wait_until


@pytest.fixture
async def app_sse(sim, tmp_path):
    """A relay with the SSE side-port on, once both Alpaca streams are up."""
    async with running(relay_config(sim, tmp_path, sse_port=free_port())) as a:
        await wait_until(lambda: a.relay.sources.default.upstream.connected and a.tradings["default"].connected,
                         what="both streams up")
        yield a
