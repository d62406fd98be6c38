"""The supervisor restarts a task that raises, counts it, and reports a task that keeps failing."""

import asyncio

import pytest

from tests.support.relay import wait_until
from trade_stream.ops.supervisor import Supervisor

pytestmark = pytest.mark.timeout(10)


async def test_a_task_that_raises_is_restarted_counted_and_reported():
    sup = Supervisor(min_delay=0.01, max_delay=0.05)
    runs: list[int] = []
    settled = asyncio.Event()

    async def flaky() -> None:
        runs.append(1)
        if len(runs) <= 2:
            raise RuntimeError(f"boom {len(runs)}")
        settled.set()
        await asyncio.sleep(3600)

    sup.start("flaky", flaky)
    await asyncio.wait_for(settled.wait(), 5)
    assert sup.view()["flaky"] == {"state": "running", "restarts": 2, "last_error": "RuntimeError: boom 2"}
    assert sup.restarts() == {"flaky": 2}
    assert sup.failing(grace=0.0) == []

    async def broken() -> None:
        raise ValueError("always")

    sup.start("broken", broken)
    await wait_until(lambda: "broken" in sup.failing(grace=0.0))  # waiting to restart, failing since the 1st time
    assert sup.tasks["broken"].restarts >= 1 and sup.failing(grace=3600) == []
    await sup.stop()
