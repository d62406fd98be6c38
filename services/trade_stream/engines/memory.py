"""The single-process engine, the default: this node is the cluster. Always the leader, interest goes straight
to the local upstream, batches go straight to the router (no copy, no encoding), and the order log is the SQLite
journal in the state directory. Exactly what the relay did before engines existed."""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from trade_stream.core.hub import Change, Key
from trade_stream.core.journal import Journal
from trade_stream.engines.base import Done, Engine, Hooks, OrderLog, Stream


class MemoryEngine(Engine):
    def __init__(self, node_id: str = "") -> None:
        self.node_id = node_id or f"{socket.gethostname()}-{os.getpid()}"

    def bind(self, hooks: Hooks) -> None:
        self.hooks = hooks
        self.publish = hooks.on_data  # type: ignore[method-assign]  # the hot path: no hop at all
        self.upstream_wanted = hooks.local_wanted  # type: ignore[method-assign]
        self.request = hooks.upstream_request  # type: ignore[method-assign]

    @property
    def is_leader(self) -> bool:
        return True

    async def start(self, supervise: Callable[[str, Callable[[], Awaitable[Any]]], Any]) -> None:
        self.hooks.on_leader(True)

    async def while_leader(self, run: Callable[[], Awaitable[None]], stream: Stream) -> None:
        await run()

    def request(self, change: Change, on_done: Done | None = None) -> bool:
        return self.hooks.upstream_request(change, on_done)

    def upstream_wanted(self) -> set[Key]:
        return self.hooks.local_wanted()

    def refused(self, keys: list[Key], code: int | None, msg: str) -> None:
        self.hooks.on_rejected(keys, code, msg)

    def publish(self, batch: list[dict[str, Any]], now: float) -> None:
        self.hooks.on_data(batch, now)

    def publish_source(self, prefix: str, batch: list[dict[str, Any]], now: float) -> None:
        self.hooks.on_source_data(prefix, batch, now)

    def upstream_state(self, msg: dict[str, Any]) -> None:
        self.hooks.on_status(msg)

    def open_order_log(self, path: Path, retention_days: float) -> OrderLog:
        return Journal(path, retention_days)  # type: ignore[return-value]

    def view(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "leader": self.node_id, "nodes": [self.node_id], "redis": "n/a"}

    def metrics(self) -> dict[str, float]:
        return {"leader": 1, "nodes": 1, "leader_changes": 0}
