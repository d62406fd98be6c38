"""The seams between one node and the rest of the cluster, drawn as Centrifugo draws its engines: one narrow
protocol per concern, each with a memory implementation (one process is the whole cluster) and a Redis one (many
nodes share one Redis).

- ``Leadership``: exactly one node holds Alpaca's market-data and trading sessions. ``while_leader(run, stream)``
  runs an upstream only while this node leads and closes it at once (fencing) when it stops leading.
- ``Interest``: a node declares what its own clients hold (``request``); the leader subscribes upstream to what
  every node holds (``upstream_wanted``), and refusals (``refused``) come back to whichever node holds the key.
- ``MarketBus``: the leader hands each upstream batch to ``publish`` (``publish_source`` for the other sources);
  every node gets the messages its clients hold. Upstream state changes go through ``upstream_state``, so every
  client on every node sees the shared upstream's ``status``.
- ``OrderLogStore``: ``open_order_log`` returns the journal the order side writes to and replays from: ids are
  the same on every node, appends are deduplicated, entries written anywhere arrive through ``on_entry``.
- ``DeliveryLedger``: ``settle`` a webhook delivery's outcome, ask which were ``settled`` (by any node).
- ``SharedPreferences``: ``open_preferences`` returns every user's notification preferences
  (core/preferences.py ``PreferenceStore``): read from memory on every node, a change saved on any node seen on
  all of them, so the leader's webhooks and every node's pushes follow what the user chose wherever they chose it.
- ``SharedAddresses``: ``open_addresses`` returns the email address each JWT user last presented
  (core/addresses.py ``AddressStore``): remembered on the node that saw the token, known on every node, so the
  leader mails a JWT user whichever node they connected to.
- ``AlertStores``: ``open_alert_store`` returns where price alerts are kept (core/alert_store.py): the SQLite
  file on one process, a Redis hash in a cluster, where every node keeps all of them and only the leader
  evaluates them (it sees every upstream message), storing each fire once (``AlertStore.fire``).
- ``SharedPushSubscriptions``: ``open_push_subscriptions`` returns the browsers' Web Push subscriptions
  (core/push_subscriptions.py ``PushSubscriptionStore``): taken by any node, held by every node, so the leader
  pushes to a browser whichever node it subscribed through, and a subscription the leader finds gone (404/410)
  is removed on all of them.
- ``ClusterView``: ``view`` (the ``cluster`` part of ``/api/stream/status``) and ``metrics``.
- ``ChannelBus``: app channels (core/channels.py). ``publish_channels`` records publications (from any node) and
  hands each, as a ``ChannelEvent``, to ``ChannelHandler.on_channel_event`` on every node, exactly once per
  node, in publish order per channel; ``channel_history`` reads a channel's retained events after an id.

What an engine calls back into on this node is a ``NodeHandler``, given to the engine when it is built, so no
callback is set on a half-built object. The relay, the order side and the edges are typed against the seam they
use, never against an engine class; ``Engine`` is every seam plus the lifecycle, for the composition root. The
protocols live in core, beside the relay and the order side that call through them, so core never imports an
engine: ``trade_stream.engines`` implements them and app.py picks one.

Webhooks: every node derives the same deliveries from the shared order log, under ids derived from the event
and the target, and queues them in its own outbox; only the leader sends. ``DeliveryLedger`` is what makes that
one sender across failovers: the leader settles each outcome there, a node that leads next skips what is settled
and sends the rest under the same ids (at least once per target, one id per event and target), and the others
let settled deliveries go.

What is *not* shared, and lives on each node in its state directory: the notifications and their read
state, and the Broker API journal. Every node derives its own notifications from the shared order log's entries
(the same ones on every node, under each node's own ids) and keeps read state for the users who mark them on
that node. Every node also consumes the Broker API's event streams itself, into its own journal. One copy of any
of these across the cluster is a store added here (a protocol with a memory and a Redis implementation, as
``OrderLogStore``), not a branch on the mode.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from trade_stream.core.addresses import AddressStore
from trade_stream.core.alert_store import AlertStore
from trade_stream.core.channels import ChannelEvent, Publication, Reset
from trade_stream.core.hub import Change, Key
from trade_stream.core.journal import Entry
from trade_stream.core.preferences import PreferenceStore
from trade_stream.core.push_subscriptions import PushSubscriptionStore

Done = Callable[[bool, int | None, str], None]
#: The supervisor's ``start(name, factory)``: runs a long-lived task, restarting it when it fails.
Supervise = Callable[[str, Callable[[], Coroutine[Any, Any, Any]]], Any]


class EngineUnavailable(Exception):
    """The cluster store cannot be reached at start: a configuration error (exit 2, one line)."""


class ChannelsUnavailable(Exception):
    """A publication could not be recorded (the cluster store is down). When the store's answer was lost rather
    than its request, the batch may have been recorded all the same: a publisher's retry can repeat it. The
    message is one line, for the publisher (503: retry)."""


class Stream(Protocol):
    """An upstream connection that can be cut at once (the market-data and trading streams)."""

    def fence(self, reason: str) -> None: ...


# --- what an engine calls back into on this node -------------------------------------------------------------


class MarketHandler(Protocol):
    """Where the market bus delivers on this node."""

    def on_data(self, batch: list[dict[str, Any]], now: float) -> None:
        """Market messages of the default stock feed, for this node's holders."""

    def on_source_data(self, prefix: str, batch: list[dict[str, Any]], now: float) -> None:
        """Market messages of another source (crypto, news, options...), ``prefix`` its key prefix."""

    def on_status(self, shared: dict[str, Any], mirror: bool = False) -> None:
        """The shared upstream's state changed (``mirror``: held by another node): tell this node's clients."""

    def on_rejected(self, keys: list[Key], code: int | None, msg: str) -> None:
        """Upstream (or the cluster's symbol cap) refused ``keys``: tell this node's holders."""


class LocalInterest(Protocol):
    """What this node holds, and its own upstream connections (used while it leads)."""

    def local_wanted(self) -> set[Key]:
        """What this node's clients hold (or let linger)."""

    def upstream_request(self, change: Change, on_done: Done | None) -> bool:
        """Send ``change`` to this node's upstream connections; True when ``on_done`` will get their answer."""


class ChannelHandler(Protocol):
    """Where app-channel events are delivered on this node."""

    def on_channel_event(self, event: ChannelEvent) -> None:
        """One event, published on any node: called once per event on each node, in publish order per channel,
        never awaited."""

    def local_channels(self) -> set[str]:
        """The channels this node's clients are subscribed to."""

    def on_channel_gap(self, channel: str) -> None:
        """Events of ``channel`` were lost to this node (trimmed while it was cut off from the cluster store):
        its subscribers get a reset."""


class NodeHandler(MarketHandler, LocalInterest, ChannelHandler, Protocol):
    """Everything an engine calls back into on this node: given to the engine when it is built."""


# --- the seams -----------------------------------------------------------------------------------------------


class Leadership(Protocol):
    @property
    def is_leader(self) -> bool: ...

    async def while_leader(self, run: Callable[[], Awaitable[None]], stream: Stream) -> None:
        """Run ``run()`` (an upstream's reconnect loop) whenever this node leads; fence ``stream`` when it stops.
        Returns when ``run()`` returns (the stream was stopped)."""


class Interest(Protocol):
    def request(self, change: Change, on_done: Done | None = None) -> bool:
        """This node's holdings changed by ``change``. True when ``on_done`` will get upstream's answer."""

    def upstream_wanted(self) -> set[Key]:
        """What the upstream session should hold: what every node holds."""

    def refused(self, keys: list[Key], code: int | None, msg: str) -> None:
        """Upstream refused ``keys`` (405, a 400 for a symbol): their holders on every node are told."""


class MarketBus(Protocol):
    def publish(self, batch: list[dict[str, Any]], now: float) -> None:
        """One upstream batch (leader only): to every node whose clients hold its keys."""

    def publish_source(self, prefix: str, batch: list[dict[str, Any]], now: float) -> None:
        """The same for another source's upstream (``prefix`` is its key prefix, e.g. ``crypto:us:``): every
        node hands it to ``MarketHandler.on_source_data``."""

    def upstream_state(self, shared: dict[str, Any]) -> None:
        """The local upstream changed state: every client of the cluster sees the shared upstream's state."""


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


class OrderLogStore(Protocol):
    def open_order_log(self, path: Path, retention_days: float) -> OrderLog:
        """The order log of one account; ``path`` is its journal file (its name names the log)."""


class DeliveryLedger(Protocol):
    """Webhook deliveries settled (delivered, or given up) anywhere in the cluster, by delivery id. One process
    keeps no ledger: its own outbox is the only record, so nothing is ever settled elsewhere."""

    async def settle(self, delivery_id: str, outcome: str) -> bool:
        """Record ``outcome`` (``delivered`` or ``failed``) for every node; False when it could not be recorded
        (a node that leads next then sends it again, under the same id)."""

    async def settled(self, delivery_ids: list[str]) -> dict[str, str]:
        """The outcome of each of ``delivery_ids`` that was settled; empty when the store cannot be reached."""


class SharedAddresses(Protocol):
    def open_addresses(self, path: Path) -> AddressStore:
        """The email address each JWT user last presented (core/addresses.py); ``path`` is where one process keeps
        them (its state directory). Opened before ``connect``, which loads them in a cluster."""


class SharedPreferences(Protocol):
    def open_preferences(self, path: Path) -> PreferenceStore:
        """Every user's notification preferences; ``path`` is where one process keeps them (its state directory).
        Opened before ``connect``, which loads them in a cluster."""


class AlertStores(Protocol):
    def open_alert_store(self, path: Path) -> AlertStore:
        """Where price alerts are kept; ``path`` is the single-process file (a cluster keeps them shared)."""


class SharedPushSubscriptions(Protocol):
    def open_push_subscriptions(self, path: Path, per_user: int) -> PushSubscriptionStore:
        """The browsers' push subscriptions, at most ``per_user`` per user; ``path`` is where one process keeps
        them (its state directory). Opened before ``connect``, which loads them in a cluster."""


class ClusterView(Protocol):
    node_id: str

    def view(self) -> dict[str, Any]:
        """``cluster`` in /api/stream/status: node_id, leader, nodes, redis."""

    def metrics(self) -> dict[str, float]:
        """Numbers for Prometheus: leader, nodes, leader_changes (Redis: published, received, rtt_seconds)."""


class ChannelBus(Protocol):
    """App channels for the cluster: a publish on any node reaches every node, and each channel keeps its recent
    events (a count and an age) so a client resumes from the last id it saw."""

    async def publish_channels(self, pubs: list[Publication]) -> list[str]:
        """Record ``pubs`` in order and deliver each to every node; their ids, in order. Raises
        ``ChannelsUnavailable`` when they could not be recorded."""

    async def channel_history(self, channel: str, since: str, limit: int) -> list[ChannelEvent] | Reset:
        """The retained events of ``channel`` after ``since`` (at most ``limit``, oldest first), or a ``Reset``
        when ``since`` is not a retained id younger than the history's age (core/channels.replay). Raises
        ``ChannelsUnavailable`` when the history cannot be read."""

    async def channel_tail(self, channel: str, limit: int) -> list[ChannelEvent]:
        """The newest ``limit`` retained events of ``channel``, oldest first (none: an empty list): where a client
        that names no id starts, and whether a channel holds anything at all. Raises ``ChannelsUnavailable``
        when the history cannot be read."""


class UpstreamSide(Leadership, Interest, MarketBus, Protocol):
    """What the upstream connections use: run while this node leads, hold what the cluster holds, hand on
    batches, refusals and state."""


class WebhookSide(Leadership, DeliveryLedger, Protocol):
    """What the webhook outbox uses: send only while this node leads, and settle each outcome for the cluster."""


class Engine(Leadership, Interest, MarketBus, OrderLogStore, DeliveryLedger, SharedPreferences, SharedAddresses,
             AlertStores, SharedPushSubscriptions, ClusterView, ChannelBus, Protocol):
    """Every seam of one engine, and its lifecycle: what the composition root holds."""

    async def connect(self) -> None:
        """Reach the shared store and load shared state (open the order logs and the preferences first); raise
        EngineUnavailable if it cannot be reached."""

    async def start(self, supervise: Supervise) -> None:
        """Start background tasks under the supervisor; tells the leadership listener where this node starts."""

    async def stop(self) -> None:
        """Leave the cluster: give up the lease, withdraw interest, close connections."""


#: How a relay gets its engine: built with the relay's handler, so the engine never waits for one to be set.
EngineFactory = Callable[[NodeHandler], Engine]


@dataclass(frozen=True)
class ClusterProbe:
    """What ``trade-stream check`` learns of a cluster from outside it: the store's round trip, the node that
    leads (None: no node leads right now) and the nodes whose heartbeat is live or recent."""

    rtt: float  # seconds
    leader: str | None
    nodes: list[str]
