"""The single-process engine, the default: this node is the cluster. Always the leader, interest goes straight
to the local upstream, batches go straight to the node's handler (no copy, no encoding), and the order log is
the SQLite journal (and the preferences, addresses and push subscriptions SQLite files) in the state directory,
and price alerts an SQLite file beside it. App channels keep their history in bounded rings (core/channels.Rings)
and a publication reaches the node's handler before ``publish_channels`` returns.

The hot path has no hop of its own: ``publish``, ``request`` and ``upstream_wanted`` *are* the handler's
callables, taken once when the engine is built."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from trade_stream.core.addresses import AddressStore, SqliteAddressStore
from trade_stream.core.alert_store import AlertStore, SqliteAlertStore
from trade_stream.core.channels import ChannelEvent, Publication, Reset, Rings
from trade_stream.core.engine import Done, NodeHandler, OrderLog, Stream, Supervise
from trade_stream.core.hub import Change, Key
from trade_stream.core.journal import Journal
from trade_stream.core.preferences import PreferenceStore, SqlitePreferenceStore
from trade_stream.core.push_subscriptions import PushSubscriptionStore, SqlitePushSubscriptions


class MemoryEngine:
    """Every seam of core/engine.py for one process."""

    publish: Callable[[list[dict[str, Any]], float], None]
    publish_source: Callable[[str, list[dict[str, Any]], float], None]
    upstream_state: Callable[[dict[str, Any]], None]
    upstream_wanted: Callable[[], set[Key]]
    refused: Callable[[list[Key], int | None, str], None]

    def __init__(self, handler: NodeHandler, node_id: str = "",
                 on_leader: Callable[[bool], None] = lambda leading: None, *, channel_history: int = 100,
                 channel_ttl: float = 300.0, max_channels: int = 10_000) -> None:
        self.node_id = node_id or f"{socket.gethostname()}-{os.getpid()}"
        self.handler = handler
        self.on_leader = on_leader
        self.publish = handler.on_data
        self.publish_source = handler.on_source_data
        self.upstream_state = handler.on_status
        self.upstream_wanted = handler.local_wanted
        self.refused = handler.on_rejected
        self._request = handler.upstream_request
        self.rings = Rings(channel_history, int(channel_ttl * 1000), max_channels, held=handler.local_channels)
        self.channel_published = 0

    # --- lifecycle ----------------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Nothing to reach: the state directory is this node's."""

    async def start(self, supervise: Supervise) -> None:
        self.on_leader(True)

    async def stop(self) -> None:
        """Nothing to leave."""

    # --- leadership ---------------------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return True

    async def while_leader(self, run: Callable[[], Awaitable[None]], stream: Stream) -> None:
        await run()

    # --- interest -----------------------------------------------------------------------------------------

    def request(self, change: Change, on_done: Done | None = None) -> bool:
        return self._request(change, on_done)

    # --- webhook deliveries ---------------------------------------------------------------------------------

    async def settle(self, delivery_id: str, outcome: str) -> bool:
        """The outbox on this node is the record: no other node will ask."""
        return True

    async def settled(self, delivery_ids: list[str]) -> dict[str, str]:
        return {}

    # --- app channels ---------------------------------------------------------------------------------------

    async def publish_channels(self, pubs: list[Publication]) -> list[str]:
        now_ms = int(time.time() * 1000)
        ids = []
        for pub in pubs:
            event = self.rings.append(pub, now_ms)
            ids.append(event.id)
            self.handler.on_channel_event(event)
        self.channel_published += len(ids)
        return ids

    async def channel_history(self, channel: str, since: str, limit: int) -> list[ChannelEvent] | Reset:
        return self.rings.since(channel, since, limit, int(time.time() * 1000))

    async def channel_tail(self, channel: str, limit: int) -> list[ChannelEvent]:
        return self.rings.tail(channel, limit, int(time.time() * 1000))

    # --- order log and status -----------------------------------------------------------------------------

    def open_order_log(self, path: Path, retention_days: float) -> OrderLog:
        return Journal(path, retention_days)

    def open_preferences(self, path: Path) -> PreferenceStore:
        return SqlitePreferenceStore(path)

    def open_addresses(self, path: Path) -> AddressStore:
        return SqliteAddressStore(path)

    def open_alert_store(self, path: Path) -> AlertStore:
        return SqliteAlertStore(path)

    def open_push_subscriptions(self, path: Path, per_user: int) -> PushSubscriptionStore:
        return SqlitePushSubscriptions(path, per_user)

    def view(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "leader": self.node_id, "nodes": [self.node_id], "redis": "n/a"}

    def metrics(self) -> dict[str, float]:
        return {"leader": 1, "nodes": 1, "leader_changes": 0, "channel_published": self.channel_published}
