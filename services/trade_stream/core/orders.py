"""Order updates: private, journaled before they are relayed, replayable with ``since``, reconciled after gaps.

Flow of one event: trading stream → ``publish`` → journal (durable, deduplicated, id assigned) → every subscribed
authenticated client (one frame for all) → listeners (the SSE side) → positions. A client that subscribes gets a
REST snapshot, then the journal from its ``since``, then live events.

Replay (``plan`` + ``replay``, shared by WebSocket and SSE) reads the journal in pages and waits for the client's
socket to drain between them, so a long replay neither blocks the loop nor piles up in one client's buffer.
Live events that arrive meanwhile are in the journal already and come in a later page; the last page is read and
the client joins the live set with no await in between, so nothing is lost or sent twice. When the replay cannot
be complete (unknown id, another journal, past retention, over ``replay_limit``) the client is told to reset.

The journal can fail (corrupt file, unwritable directory, full disk). That must not take market data down or end
the trading task: the orders side reports the fault (``health``, logs, metrics), keeps events that could not be
written in memory, reopens the journal every ``retry`` seconds, then writes and relays what it kept and
reconciles over REST for anything beyond what it could keep.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from trade_stream.core.event_ids import EventId, new_ulid, rfc3339_now
from trade_stream.core.fanout import Client, Codec, Peer
from trade_stream.core.framing import text_frame
from trade_stream.core.journal import Entry, Journal, fault_message
from trade_stream.core.positions import Positions, dec
from trade_stream.core.protocol import ClientError, encode
from trade_stream.core.relay import Relay
from trade_stream.core.stats import Stats
from trade_stream.upstream.rest import AlpacaRest

log = logging.getLogger("trade_stream.core.orders")

CONVENIENCES = ("order_id", "symbol", "side", "status")  # the relay's, copied from the order; not Alpaca's
STATUS_EVENT = {"filled": "fill", "partially_filled": "partial_fill", "canceled": "canceled", "expired": "expired",
                "rejected": "rejected", "replaced": "replaced", "new": "new", "accepted": "accepted",
                "done_for_day": "done_for_day", "pending_new": "pending_new", "pending_cancel": "pending_cancel"}
#: statuses an order reaches only after it was accepted: a ``new`` event came before them
PAST_NEW = frozenset(("partially_filled", "filled", "canceled", "expired", "replaced", "done_for_day",
                      "pending_cancel", "pending_replace"))
ENDED_AT = ("canceled_at", "expired_at", "failed_at", "replaced_at")  # unset at the time of an earlier event
POSITION_INTERVAL = 0.25  # at most 4 position updates per second per symbol
SEEN_KEY = "trading_seen_at"
REST_TIMEOUT = 10.0  # alpaca-py sets no request timeout; a hung call must not hold a client back
JOURNAL_ERRORS = (sqlite3.Error, OSError)
PENDING_LIMIT = 10_000  # events kept in memory while the journal is down; beyond that, REST reconciliation
REPLAY_PAGE = 500  # journal rows read per step of a replay
REPLAY_LIMIT = 100_000  # a longer replay is cut short with a reset: the client refetches state instead


@dataclass(frozen=True)
class Resume:
    """Where a client's replay starts, and why it cannot be complete (a reset), if it cannot."""

    start: int | None  # replay the journal after this id; None: no journal to replay from
    reset: str | None = None


@dataclass(frozen=True)
class AuthThrottled(ClientError):
    """A wrong credential from a source that has sent too many: answer 429 with Retry-After."""

    retry_after: int = 60


def sanitize(data: dict[str, Any]) -> dict[str, Any]:
    """Every field of Alpaca's event, those it adds later too (SDK clients of the compatible ``/stream`` get them
    all), plus the relay's ``CONVENIENCES`` from the order for browser clients; ``alpaca_fields`` undoes that."""
    out = {k: v for k, v in data.items() if k not in CONVENIENCES}
    order = data.get("order") if isinstance(data.get("order"), dict) else {}
    out.update(order_id=order.get("id"), symbol=order.get("symbol"), side=order.get("side"),
               status=order.get("status"))
    return out


def parse_ts(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(_trim_ns(value)).timestamp()
    except ValueError:
        return None


def _trim_ns(value: str) -> str:
    """Python parses at most microseconds: cut nanoseconds, keep the zone."""
    value = value.replace("Z", "+00:00")
    if "." in value:
        head, _, rest = value.partition(".")
        digits = rest[:len(rest) - len(rest.lstrip("0123456789"))]  # the fraction: the leading digits only
        zone = rest[len(digits):]
        value = f"{head}.{digits[:6]}{zone}"
    return value


class _PriceTap:
    """A hub holder that takes live trades for held symbols, so positions are marked to market."""

    def __init__(self, on_trades: Callable[[list[dict[str, Any]]], None]) -> None:
        self.codec = _TapCodec()
        self._on_trades = on_trades

    def send(self, bodies: list[dict[str, Any]], count: int = 1) -> bool:
        self._on_trades(bodies)
        return True


class _TapCodec(Codec):
    def body(self, m: dict[str, Any]) -> Any:
        return m if m.get("T") == "t" else None

    def frames(self, bodies: list[Any]) -> Any:
        return bodies


class Orders:
    def __init__(self, journal_path: Path, rest: AlpacaRest, relay: Relay, stats: Stats,
                 retention_days: float = 7.0, retry: float = 5.0, account: str = "default",
                 open_log: Callable[[Path, float], Journal] | None = None) -> None:
        self.account = account  # every message this emits names it (core/accounts.py scopes by it)
        self._open_log = open_log or Journal  # the engine's order log: SQLite here, shared in a cluster
        self.journal_path = journal_path
        self.retention_days = retention_days
        self.retry = retry
        self.replay_limit = REPLAY_LIMIT
        self.journal: Journal | None = None
        self.fault: str | None = None
        self._fault_since: float | None = None  # monotonic time the current fault episode began
        self._pending: deque[tuple[dict[str, Any], bool, str | None]] = deque()
        self._overflowed = False
        self._recovering = False
        self.rest = rest
        self.relay = relay
        self.stats = stats
        self.positions = Positions()
        self.authed: set[Client] = set()
        self.subscribers: set[Client] = set()
        self._starting: dict[Client, object] = {}  # client -> the start under way (a re-subscribe is another)
        self.listeners: list[Callable[[Entry], None]] = []
        self.reset_listeners: list[Callable[[str], None]] = []  # the journal changed under live clients
        self.position_listeners: list[Callable[[dict[str, Any]], None]] = []
        self.watchers: set[object] = set()  # SSE position streams: like subscribers, they need prices
        self._tap = _PriceTap(self._on_trades)
        self._tapped: set[str] = set()
        self._last_push: dict[str, float] = {}
        self._scheduled: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reconcile_lock = asyncio.Lock()
        self._live = False
        self._epoch_seen: str | None = None
        if self._open_journal():
            self._epoch_seen = self.epoch
            self.stats.journal_ok = 1

    # --- the journal and its faults -----------------------------------------------------------------------

    @property
    def epoch(self) -> str | None:
        return self.journal.epoch if self.journal is not None else None

    def health(self) -> dict[str, Any]:
        """For status, healthz and metrics: is the order journal usable, and if not, what to do."""
        fault_for = None if self._fault_since is None else round(time.monotonic() - self._fault_since, 1)
        return {"state": "fault" if self.fault else "ok", "journal": str(self.journal_path), "epoch": self.epoch,
                "error": self.fault, "fault_for": fault_for, "pending_events": len(self._pending)}

    def _open_journal(self) -> bool:
        try:
            self.journal = self._open_log(self.journal_path, self.retention_days)
        except JOURNAL_ERRORS as exc:
            self._fail(exc)
            return False
        self.journal.on_entry = self._relay  # entries another node appended to a shared log
        self.journal.on_reset = self._log_reset  # a shared log recreated under us (Redis restarted empty)
        return True

    def _fail(self, exc: BaseException) -> None:
        """Note a journal fault once per episode (one line naming the file and the fix), and start recovery."""
        message = fault_message(self.journal_path, exc)
        self.stats.journal_errors += 1
        self.stats.journal_ok = 0
        if self.fault != message:  # once per episode, and again only if the reason changes
            log.error("journal_fault %s", message)
        self.fault = message
        if self._fault_since is None:
            self._fault_since = time.monotonic()
        journal, self.journal = self.journal, None
        if journal is not None:
            try:
                journal.close()
            except JOURNAL_ERRORS:
                pass
        if not self._recovering:
            self._spawn(self._recover())

    async def _recover(self) -> None:
        if self._recovering:
            return
        self._recovering = True
        try:
            while self.journal is None or self._pending:
                await asyncio.sleep(self.retry)
                before = self._epoch_seen
                if (self.journal is None and not self._open_journal()) or not self._flush():
                    continue
                log.info("journal_recovered path=%s epoch=%s", self.journal_path, self.epoch)
                self.fault = self._fault_since = None
                self.stats.journal_ok = 1
                if before is not None and before != self.epoch:
                    self._announce_reset(f"the order journal was recreated (epoch {self.epoch}); refetch state")
                self._epoch_seen = self.epoch
                self._spawn(self.reconcile())  # whatever could not be kept in memory comes back over REST
        finally:
            self._recovering = False

    def _flush(self) -> bool:
        """Write and relay the events kept while the journal was down, in order; False if it fails again."""
        while self._pending:
            data, reconciled, dedupe = self._pending[0]
            if self.journal is None:
                return False
            try:
                self._write(self.journal, data, reconciled, dedupe)
            except JOURNAL_ERRORS as exc:
                self._fail(exc)
                return False
            self._pending.popleft()
        self._overflowed = False
        return True

    def _log_reset(self, reason: str) -> None:
        """The shared log started a new epoch: clients refetch, and the node holding the trading stream
        reconciles over REST into the new log."""
        self._epoch_seen = self.epoch
        self._announce_reset(reason)
        if self._live:
            self._spawn(self.reconcile())

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
            self._sync_tap()

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
            self._sync_tap()

        client.send_message(snapshot)
        if plan.reset:
            reset(plan.reset)
        await self.replay(client, plan.start, lambda e: text_frame(encode(self.message(e))), client.send, reset,
                          join, current)

    def plan(self, since: EventId | None) -> Resume:
        """Where to resume a client that last saw ``since`` (None: it asks for live events only)."""
        journal = self.journal
        if journal is None:
            return Resume(None, f"order journal unavailable, nothing to replay: {self.fault}" if since else None)
        try:
            journal.check()
            last, first = journal.last_id(), journal.first_id()
        except JOURNAL_ERRORS as exc:
            self._fail(exc)
            return self.plan(since)
        if since is None:
            return Resume(last)
        if not since.known:
            return Resume(0, "unknown event id; refetch state")
        if since.epoch is not None and since.epoch != journal.epoch:
            return Resume(0, f"event id from another journal (epoch {since.epoch}; this one is {journal.epoch}): "
                             "it was recreated; refetch state")
        if since.n > last:
            return Resume(0, f"event id {since.n} is past the journal's last id {last}: it was recreated; "
                             "refetch state")
        if first and since.n < first - 1:
            return Resume(since.n, f"events before id {first} are past retention; refetch state")
        return Resume(since.n)

    async def replay(self, peer: Peer, start: int | None, frame: Callable[[Entry], bytes],
                     write: Callable[[bytes, int], bool], reset: Callable[[str], None], join: Callable[[], None],
                     alive: Callable[[], bool]) -> None:
        """The journal after ``start`` to one client, page by page, then ``join`` the live set (see the top)."""
        budget = max(1, peer.cap // 4)  # what one step may add to the client's buffer
        try:
            if start is not None and self.journal is not None:
                if self.journal.count_after(start, self.replay_limit + 1) > self.replay_limit:
                    reset(f"more than {self.replay_limit} events to replay; refetch state")
                    start = self.journal.last_id()
            while start is not None and self.journal is not None:
                entries = self.journal.since(start, REPLAY_PAGE)
                frames: list[bytes] = []
                size = 0
                for entry in entries:
                    data = frame(entry)
                    if frames and size + len(data) > budget:
                        break
                    frames.append(data)
                    size += len(data)
                if frames:
                    if not write(b"".join(frames), len(frames)):
                        return  # cut off or gone
                    start = entries[len(frames) - 1].id
                if len(frames) == len(entries) < REPLAY_PAGE:
                    break  # caught up: join with no await since that read
                # Poll: WebSocket and SSE clients write to their transports directly, outside any drain().
                while peer.transport.get_write_buffer_size() > budget and not peer.transport.is_closing():  # noqa: ASYNC110
                    await asyncio.sleep(0.005)
                await asyncio.sleep(0)  # let the loop run between pages even when the socket keeps up
                if not alive():
                    return
            if start is None:
                reset(f"order journal unavailable, nothing to replay: {self.fault}")
        except JOURNAL_ERRORS as exc:
            self._fail(exc)
            reset(f"order journal failed during the replay: {self.fault}")
        join()

    def message(self, entry: Entry) -> dict[str, Any]:
        """The journal entry as clients get it: ``order_update`` naming this account."""
        return {**entry.to_message(), "account": self.account}

    def _last_id(self) -> int | None:
        try:
            return self.journal.last_id() if self.journal is not None else None
        except JOURNAL_ERRORS as exc:
            self._fail(exc)
            return None

    async def snapshot(self) -> dict[str, Any]:
        msg: dict[str, Any] = {"type": "orders_snapshot", "orders": [], "positions": self.positions.views(),
                               "portfolio": self.positions.portfolio(), "last_id": self._last_id() or 0,
                               "epoch": self.epoch, "account": self.account}
        if self.fault:
            msg["journal_error"] = self.fault
        try:
            orders = await asyncio.wait_for(self.rest.orders(limit=50), REST_TIMEOUT)
            msg["orders"] = [sanitize_order(o) for o in orders]
        except Exception as exc:
            log.warning("orders_snapshot_failed error=%r", exc)
            msg["error"] = f"could not fetch orders from Alpaca: {type(exc).__name__}"
        return msg

    def events_since(self, since: EventId, limit: int = 1000) -> tuple[int, dict[str, Any]]:
        """The REST answer: (status, body). ``cursor`` is what to pass as ``since`` next time."""
        plan = self.plan(since)
        try:
            if plan.start is None or self.journal is None:
                raise sqlite3.OperationalError("journal not open")
            entries = self.journal.since(plan.start, limit)
        except JOURNAL_ERRORS as exc:
            if self.journal is not None:
                self._fail(exc)
            return 503, {"error": "Service Unavailable", "message": self.fault or str(exc)}
        epoch = self.journal.epoch
        last = entries[-1].id if entries else plan.start
        body = {"events": [self.message(e) for e in entries], "last_id": last, "epoch": epoch, "account": self.account,
                "cursor": f"{epoch}-{last}", "more": len(entries) == limit, "reset": plan.reset is not None}
        if plan.reset:
            body["reason"] = plan.reset
        return 200, body

    # --- upstream side ----------------------------------------------------------------------------------

    def on_event(self, data: dict[str, Any]) -> None:
        self._set_seen()
        self.publish(data)

    def _set_seen(self) -> None:
        if self.journal is None:
            return
        try:
            self.journal.set_meta(SEEN_KEY, repr(time.time()))
        except JOURNAL_ERRORS as exc:
            self._fail(exc)

    def on_state(self, connected: bool) -> None:
        """Remember when a live trading stream went away: reconciliation looks for changes since then."""
        if connected:
            self._live = True
        elif self._live:
            self._live = False
            self._set_seen()

    def publish(self, data: dict[str, Any], reconciled: bool = False, dedupe: str | None = None) -> Entry | None:
        """Journal first, then relay. Returns None for a duplicate (nothing is relayed twice) and for an event
        kept back because the journal is down (it is relayed when the journal is back)."""
        data = sanitize(data)
        if not data.get("event_id"):  # Alpaca's events API shape everywhere: a ULID event_id and at
            data["event_id"] = new_ulid()
        if not data.get("at"):
            data["at"] = rfc3339_now()
        if self.journal is None or self._pending:  # behind the ones already waiting, in order
            self._keep(data, reconciled, dedupe)
            return None
        try:
            self.journal.check()
            return self._write(self.journal, data, reconciled, dedupe)
        except JOURNAL_ERRORS as exc:
            self._keep(data, reconciled, dedupe)
            self._fail(exc)
            return None

    def _keep(self, data: dict[str, Any], reconciled: bool, dedupe: str | None) -> None:
        if len(self._pending) < PENDING_LIMIT:
            self._pending.append((data, reconciled, dedupe))
        elif not self._overflowed:
            self._overflowed = True
            log.error("journal_backlog_full kept=%d: later events come back by REST reconciliation", PENDING_LIMIT)
        if not self._recovering:
            self._spawn(self._recover())

    def _write(self, journal: Journal, data: dict[str, Any], reconciled: bool, dedupe: str | None) -> Entry | None:
        """Append and relay; raises the journal's error, with nothing relayed, when the append fails."""
        entry = journal.append(data, reconciled, dedupe)
        if entry is not None:
            self._relay(entry)
        return entry

    def _relay(self, entry: Entry) -> None:
        """A new entry of the order log: to every subscribed client, the listeners and positions."""
        reconciled = entry.reconciled
        self.stats.order_events += 1
        log.info("order_event id=%d event=%s symbol=%s reconciled=%s", entry.id, entry.event,
                 entry.data.get("symbol"), reconciled)
        frame = text_frame(encode(self.message(entry)))
        for client in list(self.subscribers):
            client.send(frame)
        for listener in self.listeners:
            listener(entry)
        if entry.event in ("fill", "partial_fill"):
            self._apply_fill(entry.data)

    async def reconcile(self) -> None:
        """After (re)connecting: emit what changed while the stream was down, once each, marked reconciled."""
        async with self._reconcile_lock:
            journal = self.journal
            if journal is None:
                return  # the journal's recovery reconciles once it is back
            # A shared log: what the previous leader wrote must be known before comparing. If that cannot be
            # read, the error ends the trading session, which is retried: better than relaying twice.
            await journal.sync()
            try:
                seen = journal.get_meta(SEEN_KEY)
                open_ids = journal.open_orders()
            except JOURNAL_ERRORS as exc:
                self._fail(exc)
                return
            cutoff = None if seen is None else float(seen) - 2.0  # margin for clock skew between Alpaca and us
            try:
                if cutoff is None:
                    orders = await asyncio.wait_for(self.rest.orders(limit=500), REST_TIMEOUT)
                else:
                    orders = await self._changed_since(cutoff, open_ids)
                positions = await asyncio.wait_for(self.rest.positions(), REST_TIMEOUT)
            except Exception as exc:
                log.warning("reconcile_failed error=%r", exc)
                return
            try:
                if self.journal is not journal:
                    return
                if cutoff is None:  # first start: what exists now is the baseline, not news
                    for order in orders:
                        journal.remember(order)
                else:
                    for order in sorted(orders, key=lambda o: str(o.get("updated_at"))):
                        self._reconcile_order(journal, order, cutoff)
                journal.set_meta(SEEN_KEY, repr(time.time()))
            except JOURNAL_ERRORS as exc:
                self._fail(exc)
            self.positions.load(positions)
            self._sync_tap()
            self._push_all()

    async def load_positions(self) -> None:
        """Positions from REST, for a node that does not hold the trading stream (fills then keep them live)."""
        try:
            positions = await asyncio.wait_for(self.rest.positions(), REST_TIMEOUT)
        except Exception as exc:
            log.warning("positions_load_failed error=%r", exc)
            return
        self.positions.load(positions)
        self._sync_tap()
        self._push_all()

    async def _changed_since(self, cutoff: float, open_ids: list[str]) -> list[dict[str, Any]]:
        """Every order that may have changed since ``cutoff``: Alpaca filters orders on submission time only, so
        that is the orders submitted since then (every page), plus each order clients last saw open (a GTC order
        submitted long ago can fill during the gap behind any number of newer orders), fetched by id."""
        orders = await asyncio.wait_for(self.rest.orders_submitted_since(cutoff), REST_TIMEOUT * 6)
        known = {o.get("id") for o in orders}
        for order_id in open_ids:
            if order_id in known:
                continue
            try:
                orders.append(await asyncio.wait_for(self.rest.order(order_id), REST_TIMEOUT))
            except Exception as exc:  # e.g. gone from Alpaca: the others still count
                log.warning("reconcile_order_failed order_id=%s error=%r", order_id, exc)
        return orders

    def _reconcile_order(self, journal: Journal, order: dict[str, Any], cutoff: float) -> None:
        updated = parse_ts(order.get("updated_at"))
        if updated is None or updated < cutoff:
            return
        status, filled, last_updated = journal.order_state(str(order.get("id")))
        if (status, filled) == (order.get("status"), str(order.get("filled_qty"))):
            return
        if last_updated and (parse_ts(last_updated) or 0) >= updated:
            return  # we already relayed something as new as this
        for data, dedupe in missed_lifecycle(order, status, dec(filled) or Decimal(0)):
            self.publish(data, reconciled=True, dedupe=dedupe)

    # --- positions --------------------------------------------------------------------------------------

    def _apply_fill(self, data: dict[str, Any]) -> None:
        order = data.get("order") or {}
        qty, price = dec(data.get("qty")), dec(data.get("price"))
        symbol = order.get("symbol")
        if not symbol or qty is None or price is None:
            return
        self.positions.apply_fill(symbol, str(order.get("side")), qty, price, dec(data.get("position_qty")))
        self._sync_tap()
        self._push(symbol, force=True)

    def _on_trades(self, trades: list[dict[str, Any]]) -> None:
        for t in trades:
            price = dec(t.get("p"))
            if price is not None and self.positions.mark(t.get("S", ""), price):
                self._push(t["S"])

    def _push(self, symbol: str, force: bool = False) -> None:
        now = time.monotonic()
        wait = self._last_push.get(symbol, 0) + POSITION_INTERVAL - now
        if wait > 0 and not force:
            if symbol not in self._scheduled:
                self._scheduled.add(symbol)
                asyncio.get_running_loop().call_later(wait, self._push_later, symbol)
            return
        pos = self.positions.by_symbol.get(symbol)
        if pos is not None:
            self._last_push[symbol] = now
        else:
            self._last_push.pop(symbol, None)  # a closed position leaves no per-symbol state behind
        view = pos.to_dict() if pos else {"symbol": symbol, "qty": "0", "avg_entry_price": "0",
                                          "current_price": None, "market_value": 0.0, "unrealized_pl": 0.0}
        msg = {"type": "position_update", **view, "portfolio": self.positions.portfolio(), "account": self.account}
        frame = text_frame(encode(msg))
        for client in list(self.subscribers):
            client.send(frame)
        for listener in self.position_listeners:
            listener(msg)

    def _push_later(self, symbol: str) -> None:
        self._scheduled.discard(symbol)
        self._push(symbol, force=True)

    def _push_all(self) -> None:
        for symbol in list(self.positions.by_symbol):
            self._push(symbol, force=True)

    def watch(self, holder: object) -> None:
        """Someone outside the subscribers (an SSE position stream) follows positions: mark them to market."""
        self.watchers.add(holder)
        self._sync_tap()

    def unwatch(self, holder: object) -> None:
        self.watchers.discard(holder)
        self._sync_tap()

    def _sync_tap(self) -> None:
        """Hold upstream trades for held symbols while anyone watches positions, and only then."""
        want = set(self.positions.by_symbol) if (self.subscribers or self.watchers) else set()
        add, drop = want - self._tapped, self._tapped - want
        if drop:
            self.relay.unsubscribe(self._tap, [("trades", s) for s in drop])  # type: ignore[arg-type]
        if add:
            self.relay.subscribe(self._tap, [("trades", s) for s in add], _log_tap_error,  # type: ignore[arg-type]
                                 private=True)  # positions are nobody else's business: not in public status
        self._tapped = want

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def prune(self) -> int:
        if self.journal is None:
            return 0
        try:
            return self.journal.prune()
        except JOURNAL_ERRORS as exc:
            self._fail(exc)
            return 0

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self.journal is not None:
            self.journal.close()


def alpaca_fields(data: dict[str, Any]) -> dict[str, Any]:
    """A journaled event as Alpaca sent it: without the relay's conveniences."""
    return {k: v for k, v in data.items() if k not in CONVENIENCES}


def missed_lifecycle(order: dict[str, Any], journaled_status: str | None,
                     journaled_filled: Decimal) -> list[tuple[dict[str, Any], str]]:
    """The events a consumer would have had live, from what REST shows of ``order`` now and what the journal last
    had of it: (event data, dedupe key) in order. REST carries only the final state, so what it implies comes
    first: ``new`` for an order the journal never saw that went past it, and a ``partial_fill`` for quantity
    filled before a final state that is not a fill (canceled, expired, replaced). Each is built from the order's
    own fields as they were then, so a client, a notification or a webhook keyed on ``new`` sees it."""
    status = str(order.get("status"))
    now_filled = dec(order.get("filled_qty")) or Decimal(0)
    events: list[tuple[dict[str, Any], str]] = []
    if journaled_status is None and status in PAST_NEW:
        at = order.get("submitted_at") or order.get("created_at") or order.get("updated_at")
        was = {**order, "status": "new", "filled_qty": "0", "filled_avg_price": None, "updated_at": at,
               **{k: None for k in ENDED_AT if k in order}}
        events.append(({"event": "new", "order": was, "timestamp": at}, f"r:{order.get('id')}:new"))
    event = STATUS_EVENT.get(status, status)
    if now_filled > journaled_filled and event not in ("fill", "partial_fill"):
        at = order.get("filled_at") or order.get("updated_at")
        was = {**order, "status": "partially_filled", "updated_at": at, **{k: None for k in ENDED_AT if k in order}}
        events.append(({"event": "partial_fill", "order": was, "timestamp": at,
                        "qty": str(now_filled - journaled_filled), "price": order.get("filled_avg_price")},
                       f"r:{order.get('id')}:partially_filled:{order.get('filled_qty')}"))
    data: dict[str, Any] = {"event": event, "order": order, "timestamp": order.get("updated_at")}
    if now_filled > journaled_filled and event in ("fill", "partial_fill"):
        data.update(qty=str(now_filled - journaled_filled), price=order.get("filled_avg_price"))
    events.append((data, f"r:{order.get('id')}:{order.get('status')}:{order.get('filled_qty')}"))
    return events


def sanitize_order(order: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in order.items() if not any(w in k.lower() for w in ("secret", "token", "key_id"))}


def _log_tap_error(err: ClientError | None) -> None:
    if err is not None:
        log.warning("positions_price_subscription_failed code=%s message=%s", err.code, err.message)
