"""The seam between one node and the rest of the cluster, as Centrifugo draws it with its engines.

Everything that crosses a process boundary goes through an ``Engine``; the hub, the relay, the order side and the
edges talk to this interface only and never ask which engine they have.

- **Leadership**: exactly one node holds Alpaca's market-data and trading sessions. ``while_leader(run, stream)``
  runs an upstream only while this node leads and closes it at once (fencing) when it stops leading.
- **Interest**: a node declares what its own clients hold (``request``); the leader subscribes upstream to what
  every node holds (``upstream_wanted``), and refusals come back to whichever node holds the key.
- **Market data**: the leader hands each upstream batch to ``publish``; every node gets, through ``Hooks.on_data``,
  the messages its clients hold. Upstream state changes go through ``upstream_state``, so every client on every
  node sees the shared upstream's ``status``.
- **Order log**: ``open_order_log`` returns the journal the order side writes to and replays from: ids are the
  same on every node, appends are deduplicated, entries written anywhere arrive through ``on_entry``.
- **Status**: ``view`` (the ``cluster`` part of ``/api/stream/status``) and ``metrics``.

``memory.py`` is one process with no cluster (today's behaviour, no extra copies); ``redis.py`` is many nodes
sharing one Redis.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from trade_stream.core.hub import Change, Key
from trade_stream.core.journal import Entry

Done = Callable[[bool, int | None, str], None]


class EngineUnavailable(Exception):
    """The cluster store cannot be reached at start: a configuration error (exit 2, one line)."""


@dataclass
class Hooks:
    """What an engine calls back into on this node (wired by the relay and the app)."""

    local_wanted: Callable[[], set[Key]]  # what this node's clients hold (or let linger)
    on_data: Callable[[list[dict[str, Any]], float], None]  # market messages for this node's holders
    on_status: Callable[..., None]  # (shared, mirror=False): the shared upstream's state changed: tell clients
    on_rejected: Callable[[list[Key], int | None, str], None]  # upstream refused these keys
    upstream_request: Callable[[Change, Done | None], bool]  # the local upstream's request()
    # market messages of another source than the default stock feed (crypto, news, options...), by key prefix
    on_source_data: Callable[[str, list[dict[str, Any]], float], None] = lambda prefix, batch, now: None
    on_leader: Callable[[bool], None] = lambda leading: None


class Stream(Protocol):
    """An upstream connection that can be cut at once (the market-data and trading streams)."""

    def fence(self, reason: str) -> None: ...


class OrderLog(Protocol):
    """What the order side needs from its journal (core/journal.Journal is the single-process one)."""

    epoch: str
    on_entry: Callable[[Entry], None] | None
    on_reset: Callable[[str], None] | None  # the shared log was recreated under running nodes (a new epoch)

    def append(self, data: dict[str, Any], reconciled: bool = False, dedupe: str | None = None) -> Entry | None:
        """Record one event. The entry when it was recorded here and now; None for a duplicate, or when the
        entry will arrive through ``on_entry`` once the shared log has it."""

    def since(self, after_id: int, limit: int = 10_000) -> list[Entry]: ...
    def count_after(self, after_id: int, limit: int) -> int: ...
    def last_id(self) -> int: ...
    def first_id(self) -> int: ...
    def remember(self, order: dict[str, Any]) -> None: ...
    def order_state(self, order_id: str) -> tuple[str | None, str | None, str | None]: ...
    def open_orders(self) -> list[str]: ...
    def prune(self, now: float | None = None) -> int: ...
    def get_meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...
    async def sync(self) -> None:
        """Catch up with the shared log (before reconciling against it)."""
    def check(self) -> None:
        """Raise the journal's error (an OSError) when it can no longer be written where clients read it."""
    def close(self) -> None: ...


class Engine:
    """The interface; see the module docstring."""

    node_id: str = "local"

    def bind(self, hooks: Hooks) -> None:
        self.hooks = hooks

    async def connect(self) -> None:
        """Reach the shared store and load shared state; raise EngineUnavailable if it cannot be reached."""

    async def start(self, supervise: Callable[[str, Callable[[], Awaitable[Any]]], Any]) -> None:
        """Connect and start background tasks under the supervisor (``supervise(name, factory)``)."""

    async def stop(self) -> None:
        """Leave the cluster: give up the lease, withdraw interest, close connections."""

    # --- leadership ---------------------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        raise NotImplementedError

    async def while_leader(self, run: Callable[[], Awaitable[None]], stream: Stream) -> None:
        """Run ``run()`` (an upstream's reconnect loop) whenever this node leads; fence ``stream`` when it stops."""
        raise NotImplementedError

    # --- interest -----------------------------------------------------------------------------------------

    def request(self, change: Change, on_done: Done | None = None) -> bool:
        """This node's holdings changed by ``change``. True when ``on_done`` will get upstream's answer."""
        raise NotImplementedError

    def upstream_wanted(self) -> set[Key]:
        """What the upstream session should hold: what every node holds."""
        raise NotImplementedError

    def refused(self, keys: list[Key], code: int | None, msg: str) -> None:
        """Upstream refused ``keys`` (405, a 400 for a symbol): their holders on every node are told."""
        raise NotImplementedError

    # --- market data --------------------------------------------------------------------------------------

    def publish(self, batch: list[dict[str, Any]], now: float) -> None:
        """One upstream batch (leader only): to every node whose clients hold its keys."""
        raise NotImplementedError

    def publish_source(self, prefix: str, batch: list[dict[str, Any]], now: float) -> None:
        """The same for another source's upstream (``prefix`` is its key prefix, e.g. ``crypto:us:``): every
        node hands it to ``Hooks.on_source_data``."""
        raise NotImplementedError

    def upstream_state(self, msg: dict[str, Any]) -> None:
        """The local upstream changed state: every client of the cluster sees the shared upstream's state."""
        raise NotImplementedError

    # --- order log ----------------------------------------------------------------------------------------

    def open_order_log(self, path: Path, retention_days: float) -> OrderLog:
        raise NotImplementedError

    # --- status -------------------------------------------------------------------------------------------

    def view(self) -> dict[str, Any]:
        """``cluster`` in /api/stream/status: node_id, leader, nodes, redis."""
        raise NotImplementedError

    def metrics(self) -> dict[str, float]:
        """Numbers for Prometheus: leader, nodes, leader_changes, published, received, rtt_seconds."""
        return {}
