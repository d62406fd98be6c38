"""Shared test setup: every async test runs on uvloop, like the daemon."""

import uvloop


def pytest_asyncio_loop_factories(config, item):
    return {"uvloop": uvloop.new_event_loop}
