"""Fixtures shared by the integration tests (the simulator fixture is in tests/conftest.py)."""

import pytest

from tests.support.redis_server import REDIS_SERVER, RedisServer
from tests.support.relay import free_port, relay_config, running, wait_until


@pytest.fixture
async def app_sse(sim, tmp_path):
    """A relay with the SSE side-port on, once both Alpaca streams are up."""
    async with running(relay_config(sim, tmp_path, sse_port=free_port())) as a:
        await wait_until(lambda: a.relay.sources.default.upstream.connected and a.tradings["default"].connected,
                         what="both streams up")
        yield a


@pytest.fixture
def redis_server(tmp_path):
    """A real redis-server of the test's own, on a free port (the cluster tests' shared store)."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server not installed (tests/run.sh installs it)")
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()
