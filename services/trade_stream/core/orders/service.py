"""``Orders``: one account's order updates, the one object the rest of the daemon holds for them.

A thin façade: it keeps the subscription front (who is authenticated, who is subscribed, starting a subscriber
with snapshot → replay → live) and the fan-out of each new journal entry, and hands everything else to the
single-role pieces beside it — ``JournalWriter`` (append, keep, retry, fault), ``replay`` (plan and paging),
``Reconciler`` (REST after gaps) and ``PositionMarker`` (positions and their price tap). Its methods and
attributes are those the edges, the accounts registry and the app use, so none of them knows about the pieces.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trade_stream.core.engine import OrderLog
from trade_stream.core.event_ids import EventId, new_ulid, rfc3339_now
from trade_stream.core.fanout import Client, Paced
from trade_stream.core.framing import text_frame
from trade_stream.core.journal import Entry
from trade_stream.core.orders import replay as replays
from trade_stream.core.orders.events import sanitize, sanitize_order
from trade_stream.core.orders.journal_writer import JOURNAL_ERRORS, JournalWriter
from trade_stream.core.orders.marking import PositionMarker
from trade_stream.core.orders.reconcile import REST_TIMEOUT, OrdersRest, Reconciler
from trade_stream.core.orders.replay import REPLAY_LIMIT, Reader, Resume
from trade_stream.core.positions import Positions
from trade_stream.core.protocol import ClientError, encode
from trade_stream.core.relay import Relay
from trade_stream.core.stats import Stats
from trade_stream.core.upstream import MarketUpstream

log = logging.getLogger("trade_stream.core.orders")  # one logger for the whole order side


@dataclass(frozen=True)
class AuthThrottled(ClientError):
    """A wrong credential from a source that has sent too many: answer 429 with Retry-After."""

    retry_after: int = 60


class Orders:
    """Order updates of one account: journaled before they are relayed, replayable, reconciled after gaps.

    Flow of one event: trading stream → ``on_event`` → ``publish`` → journal (durable, deduplicated, id assigned)
    → every subscribed authenticated client (one frame for all) → listeners (the SSE side, notifications,
    webhooks) → positions. A client that subscribes gets a REST snapshot, then the journal from its ``since``,
    then live events."""

    def __init__(self, journal_path: Path, rest: OrdersRest, relay: Relay[MarketUpstream], stats: Stats,
                 retention_days: float = 7.0, retry: float = 5.0, account: str = "default",
                 open_log: Callable[[Path, float], OrderLog] | None = None) -> None:
        self.account = account  # every message this emits names it (core/accounts.py scopes by it)
        self.relay = relay
        self.stats = stats
        self.replay_limit = REPLAY_LIMIT
        self.positions = Positions()
        self.authed: set[Client] = set()
        self.subscribers: set[Client] = set()
        self._starting: dict[Client, object] = {}  # client -> the start under way (a re-subscribe is another)
        self.listeners: list[Callable[[Entry], None]] = []
        self.reset_listeners: list[Callable[[str], None]] = []  # the journal changed under live clients
        self._tasks: set[asyncio.Task[Any]] = set()
        self.marker = PositionMarker(relay, self.positions, account, self.subscribers)
        self.position_listeners = self.marker.listeners
        self.watchers = self.marker.watchers
        self.writer = JournalWriter(journal_path, stats, self, self._spawn, retention_days, retry, open_log)
        self.reconciler = Reconciler(rest, self.writer, self.publish, self.marker)
        self.writer.start()

    # --- what the pieces hold, under the names the rest of the daemon uses ----------------------------------

    @property
    def journal(self) -> OrderLog | None:
        return self.writer.journal

    @property
    def journal_path(self) -> Path:
        return self.writer.path

    @property
    def retention_days(self) -> float:
        return self.writer.retention_days

    @property
    def retry(self) -> float:
        return self.writer.retry

    @property
    def fault(self) -> str | None:
        return self.writer.fault

    @property
    def epoch(self) -> str | None:
        return self.writer.epoch

    @property
    def rest(self) -> OrdersRest:
        return self.reconciler.rest

    @rest.setter
    def rest(self, rest: OrdersRest) -> None:
        self.reconciler.rest = rest

    def health(self) -> dict[str, Any]:
        """For status, healthz and metrics: is the order journal usable, and if not, what to do."""
        return self.writer.health()

    # --- what the journal writer tells us (journal_writer.WriterListener) ----------------------------------

    def on_entry(self, entry: Entry) -> None:
        """A new entry of the order log: to every subscribed client, the listeners and positions."""
        self.stats.order_events += 1
        log.info("order_event id=%d event=%s symbol=%s reconciled=%s", entry.id, entry.event,
                 entry.data.get("symbol"), entry.reconciled)
        frame = text_frame(encode(self.message(entry)))
        for client in list(self.subscribers):
            client.send(frame)
        for listener in self.listeners:
            listener(entry)
        if entry.event in ("fill", "partial_fill"):
            self.marker.apply_fill(entry.data)

    def on_log_reset(self, reason: str) -> None:
        """The shared log started a new epoch: clients refetch, and the node holding the trading stream
        reconciles over REST into the new log."""
        self._announce_reset(reason)
        if self.reconciler.live:
            self._spawn(self.reconcile())

    def on_recovered(self, reset: str | None) -> None:
        if reset is not None:
            self._announce_reset(reset)
        self._spawn(self.reconcile())  # whatever could not be kept in memory comes back over REST

    def _announce_reset(self, reason: str) -> None:
        frame = text_frame(encode({"type": "orders_reset", "message": reason, "epoch": self.epoch,
                                   "account": self.account}))
        for client in list(self.subscribers):
            client.send(frame, 0)
        for listener in self.reset_listeners:
            listener(reason)

    # --- client side (the ws_server's PrivateStreams) -----------------------------------------------------

    def subscribe(self, client: Client, since: EventId | None) -> ClientError | None:
        if client not in self.authed:
            return ClientError("unauthorized", 'order updates are private: send {"action":"auth","token":…} first')
        if client in self.subscribers or client in self._starting:
            return ClientError("already_subscribed", "already subscribed to orders")
        self._starting[client] = ticket = object()
        client.send_message({"type": "subscribed", "channel": "orders", "account": self.account})
        self._spawn(self._start(client, self.plan(since), ticket))
        return None

    def unsubscribe(self, client: Client) -> None:
        self._starting.pop(client, None)  # a replay under way stops and does not join
        if client in self.subscribers:
            self.subscribers.discard(client)
            self.marker.sync()

    def forget(self, client: Client) -> None:
        self.authed.discard(client)
        self._starting.pop(client, None)
        self.unsubscribe(client)

    async def _start(self, client: Client, plan: Resume, ticket: object) -> None:
        def current() -> bool:
            return client.open and self._starting.get(client) is ticket

        def drop() -> None:
            if self._starting.get(client) is ticket:
                del self._starting[client]

        try:
            snapshot = await self.snapshot()
        except BaseException:
            drop()
            raise
        if not current():
            drop()
            return

        def reset(reason: str) -> None:
            client.send_message({"type": "orders_reset", "message": reason, "epoch": self.epoch,
                                 "last_id": self._last_id(), "account": self.account})

        def join() -> None:
            drop()
            self.subscribers.add(client)
            self.marker.catch_up(client, snapshot["positions"])  # what changed while the journal was replayed
            self.marker.sync()

        client.send_message(snapshot)
        if plan.reset:
            reset(plan.reset)
        await self.replay(client, plan.start, lambda e: text_frame(encode(self.message(e))), client.send, reset,
                          join, current)

    def plan(self, since: EventId | None) -> Resume:
        """Where to resume a client that last saw ``since`` (None: it asks for live events only)."""
        return replays.plan(self.writer, since)

    async def replay(self, peer: Paced, start: int | None, frame: Callable[[Entry], bytes],
                     write: Callable[[bytes, int], bool], reset: Callable[[str], None], join: Callable[[], None],
                     alive: Callable[[], bool]) -> None:
        """The journal after ``start`` to one client, page by page, then ``join`` the live set (replay.py)."""
        await replays.replay(self.writer, start, Reader(peer, frame, write, reset, join, alive), self.replay_limit)

    def events_since(self, since: EventId, limit: int = 1000) -> tuple[int, dict[str, Any]]:
        """The REST answer: (status, body). ``cursor`` is what to pass as ``since`` next time."""
        return replays.page(self.writer, since, limit, self.message, self.account)

    def message(self, entry: Entry) -> dict[str, Any]:
        """The journal entry as clients get it: ``order_update`` naming this account."""
        return {**entry.to_message(), "account": self.account}

    def _last_id(self) -> int | None:
        try:
            return self.journal.last_id() if self.journal is not None else None
        except JOURNAL_ERRORS as exc:
            self.writer.fail(exc)
            return None

    async def snapshot(self) -> dict[str, Any]:
        """Alpaca's open orders, then the positions as they stand once REST has answered: a fill during that call
        is pushed to the subscribers of that moment only, so the positions are read after it."""
        msg: dict[str, Any] = {"type": "orders_snapshot", "orders": [], "last_id": self._last_id() or 0,
                               "epoch": self.epoch, "account": self.account}
        if self.fault:
            msg["journal_error"] = self.fault
        try:
            orders = await asyncio.wait_for(self.rest.orders(limit=50), REST_TIMEOUT)
            msg["orders"] = [sanitize_order(o) for o in orders]
        except Exception as exc:
            log.warning("orders_snapshot_failed error=%r", exc)
            msg["error"] = f"could not fetch orders from Alpaca: {type(exc).__name__}"
        msg["positions"], msg["portfolio"] = self.positions.views(), self.positions.portfolio()
        return msg

    # --- positions (marking.py) ---------------------------------------------------------------------------

    def watch(self, holder: object) -> None:
        """Someone outside the subscribers (an SSE position stream) follows positions: mark them to market."""
        self.marker.watch(holder)

    def unwatch(self, holder: object) -> None:
        self.marker.unwatch(holder)

    # --- upstream side ----------------------------------------------------------------------------------

    def on_event(self, data: dict[str, Any]) -> None:
        self.reconciler.mark_seen()
        self.publish(data)

    def on_state(self, connected: bool) -> None:
        """Remember when a live trading stream went away: reconciliation looks for changes since then."""
        self.reconciler.on_state(connected)

    def publish(self, data: dict[str, Any], reconciled: bool = False, dedupe: str | None = None) -> Entry | None:
        """Journal first, then relay. Returns None for a duplicate (nothing is relayed twice) and for an event
        kept back because the journal is down (it is relayed when the journal is back)."""
        data = sanitize(data)
        if not data.get("event_id"):  # Alpaca's events API shape everywhere: a ULID event_id and at
            data["event_id"] = new_ulid()
        if not data.get("at"):
            data["at"] = rfc3339_now()
        return self.writer.append(data, reconciled, dedupe)

    async def reconcile(self) -> None:
        """After (re)connecting: emit what changed while the stream was down, once each, marked reconciled."""
        await self.reconciler.reconcile()

    async def load_positions(self) -> None:
        """Positions from REST, for a node that does not hold the trading stream (fills then keep them live)."""
        await self.reconciler.load_positions()

    # --- lifecycle ----------------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def prune(self) -> int:
        if self.journal is None:
            return 0
        try:
            return self.journal.prune()
        except JOURNAL_ERRORS as exc:
            self.writer.fail(exc)
            return 0

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self.writer.close()
