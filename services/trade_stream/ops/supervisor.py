"""Every long-lived task runs under ``Supervisor.start``: an exception is logged with its traceback, counted, and
the task is started again after a backoff, instead of the task dying quietly while everything looks fine.

The supervisor also remembers each task's state, so /healthz and the status view can say which task is failing
and how often it has been restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("trade_stream.ops.supervisor")

Factory = Callable[[], Coroutine[Any, Any, Any]]
Supervise = Callable[[str, Factory], asyncio.Task[None]]  # Supervisor.start, as the edges take it


@dataclass
class TaskHealth:
    state: str = "running"  # running | restarting | finished
    restarts: int = 0
    last_error: str | None = None
    failing_since: float | None = None  # first failure of the current run of failures

    def view(self) -> dict[str, Any]:
        return {"state": self.state, "restarts": self.restarts, "last_error": self.last_error}


class Supervisor:
    def __init__(self, min_delay: float = 1.0, max_delay: float = 30.0) -> None:
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.tasks: dict[str, TaskHealth] = {}
        self._running: dict[str, asyncio.Task[None]] = {}

    def start(self, name: str, factory: Factory) -> asyncio.Task[None]:
        """Run ``factory()`` as task ``name``; run it again whenever it raises. A normal return ends it."""
        self.tasks[name] = TaskHealth()
        task = asyncio.create_task(self._supervise(name, factory), name=name)
        self._running[name] = task
        return task

    async def _supervise(self, name: str, factory: Factory) -> None:
        health = self.tasks[name]
        delay = self.min_delay
        while True:
            started = time.monotonic()
            try:
                await factory()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                health.restarts += 1
                health.last_error = f"{type(exc).__name__}: {exc}"[:300]
                now = time.monotonic()
                if now - started > self.max_delay or health.failing_since is None:
                    delay = self.min_delay  # it ran fine for a while: this is a new failure, not a loop
                    health.failing_since = now
                health.state = "restarting"
                log.exception("task_failed task=%s restarts=%d restarting_in=%.1fs", name, health.restarts, delay)
                await asyncio.sleep(delay)
                delay = min(self.max_delay, delay * 2)
                health.state = "running"
                log.warning("task_restarted task=%s restarts=%d", name, health.restarts)
                continue
            health.state = "finished"
            return

    def failing(self, grace: float, now: float | None = None) -> list[str]:
        """Tasks waiting to restart after failing over and over for longer than ``grace`` seconds."""
        now = time.monotonic() if now is None else now
        return sorted(n for n, h in self.tasks.items() if h.state == "restarting" and h.failing_since is not None
                      and now - h.failing_since > grace)

    def view(self) -> dict[str, dict[str, Any]]:
        return {name: health.view() for name, health in sorted(self.tasks.items())}

    def restarts(self) -> dict[str, int]:
        return {name: health.restarts for name, health in sorted(self.tasks.items())}

    async def stop(self) -> None:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
