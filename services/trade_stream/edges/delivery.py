"""Delivery of notifications beyond the page: one outbox, one lane discipline, for every channel.

A channel (webhooks, email, push) is a ``Sender``: it says which deliveries a notification makes (``rows``: a
target within the channel, an order key, a body each) and sends one of them (``send`` → ``Outcome``). Everything
else is here, the same for all of them:

- Never in the relay's path: the notifier only wakes this worker (a supervised task). The worker queues the new
  notifications from the notification store into the outbox (outbox.py, one transaction with its cursor), so a
  crash loses nothing and a restart sends what is still pending, under the same delivery ids.
- One lane per (channel, target), each with its own attempts in flight (up to the channel's ``concurrency``,
  different orders), each order's deliveries in order. So a slow or dead target, or a whole channel down, holds up
  nobody else: its rows wait in its own lanes, with its own backoff.
- A failed attempt the sender calls retryable waits (exponential backoff with full jitter, or the receiver's own
  hint, held within the channel's ``Retry`` bounds) and is tried again until ``give_up`` seconds after it was
  queued; anything else is given up at once. Each lane's backlog is bounded in the outbox (the oldest dropped).
- In a cluster every node queues every delivery (each derives the notifications from the shared order log) but
  only the leader sends, and it settles each outcome with the cluster (``DeliveryLedger``, core/engine.py). A
  follower lets the settled deliveries go; a node that becomes leader sends what is still unsettled, under the
  same ids. So a target gets each delivery at least once, and never under a second id; it gets one again only
  when a leader stops (or loses Redis) between the target's answer and settling it.

A sender may also hold a delivery back without an attempt (``Outcome.defer``: a rate limit), and may carry more
than its head in one message (``Outcome.covers``: a digest); those rows are settled with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from trade_stream.core.channels import ChannelStats
from trade_stream.core.engine import WebhookSide
from trade_stream.edges.outbox import Delivery, Lane, Outbox, Row

log = logging.getLogger("trade_stream.edges.delivery")

CATCH_UP_PAGE = 500
PRUNE_EVERY = 3600.0
MAX_EXPONENT = 40  # 2 ** 40 s is far past any ceiling; 2 ** 1024 does not fit a float
FOLLOW_EVERY = 1.0  # seconds between a follower's looks at what the leader settled, while it holds pending rows
#: An outbox channel's name among the notification channels (core/preferences.py ``CHANNELS``, core/channels.py).
CHANNEL_NAMES = {"webhook": "webhooks", "email": "email", "push": "push"}


@dataclass(frozen=True)
class Retry:
    """A channel's retry rule: the first wait (doubling), the bounds of any one wait, and when to give up."""
    backoff: float
    backoff_max: float
    wait_min: float
    give_up: float


def retry_wait(attempts: int, hint: float | None, rule: Retry) -> float:
    """Seconds before attempt ``attempts + 1``: the receiver's hint if it gave one, else exponential backoff with
    full jitter; either way within [wait_min, backoff_max], so neither a hint of 0 (a hot loop) nor one of years
    (past the give-up) is taken as it comes."""
    if hint is None:
        hint = random.uniform(0, min(rule.backoff_max, rule.backoff * 2.0 ** min(attempts - 1, MAX_EXPONENT)))
    return min(max(hint, rule.wait_min), rule.backoff_max)


@dataclass(frozen=True)
class Outcome:
    """What one ``Sender.send`` came to."""
    delivered: bool
    status: int | None = None  # the receiver's status code, where it has one (HTTP, SMTP)
    error: str = ""
    retryable: bool = True
    wait_hint: float | None = None  # the receiver's own wait before the next attempt (Retry-After)
    covers: tuple[Delivery, ...] = ()  # further pending rows of the lane this message carried (a digest)
    defer_until: float | None = None  # not attempted: held by the channel until then, no attempt counted

    @classmethod
    def ok(cls, status: int | None = None, covers: tuple[Delivery, ...] = ()) -> Outcome:
        return cls(True, status, covers=covers)

    @classmethod
    def failed(cls, error: str, status: int | None = None, retryable: bool = True,
               wait_hint: float | None = None) -> Outcome:
        return cls(False, status, error, retryable, wait_hint)

    @classmethod
    def defer(cls, until: float, why: str) -> Outcome:
        return cls(False, None, why, True, None, (), until)


@dataclass
class LaneStats:
    delivered: int = 0
    failed: int = 0  # given up
    dropped: int = 0  # given up unsent because the lane held more than its bound (in failed)
    errors: int = 0  # attempts that failed (retried or not)
    deferred: int = 0  # times the channel held a delivery back without an attempt (a rate limit)
    last_error: str | None = None
    last_status: int | None = None
    last_delivered_at: float | None = None

    def view(self, pending: int) -> dict[str, Any]:
        return {"delivered": self.delivered, "failed": self.failed, "dropped": self.dropped, "pending": pending,
                "errors": self.errors, "last_error": self.last_error, "last_status": self.last_status,
                "last_delivered_at": self.last_delivered_at}


class Sender(Protocol):
    """One channel, as the lanes see it."""

    channel: str  # "webhook", "email", "push": the outbox's channel column and the prefix of its log events
    concurrency: int  # attempts in flight per lane (different orders)
    retry: Retry

    @property
    def targets(self) -> tuple[str, ...] | None:
        """The lanes that always run (every configured webhook target); None: a lane runs for each target that
        has pending rows (users, subscriptions), and stops when it has none."""

    def rows(self, note: dict[str, Any]) -> Iterable[Row]:
        """The deliveries ``note`` makes in this channel (none when nobody in it wants it); ids derived from the
        notification and the target, the same on every node."""

    def session(self) -> contextlib.AbstractAsyncContextManager[None]:
        """What the channel holds open while the worker runs (an HTTP client pool)."""

    async def send(self, row: Delivery) -> Outcome:
        """One attempt at ``row``: never raises for the receiver's faults, says what came of it."""


@dataclass
class _Lane:
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


def _forget(inflight: dict[str, asyncio.Task[None]], order_key: str, _done: asyncio.Task[None]) -> None:
    """A finished attempt leaves its lane's in-flight table."""
    inflight.pop(order_key, None)


class Deliveries:
    """The outbox worker: queue from the notification store, run the lanes, follow the leader."""

    def __init__(self, path: Path, source: Any, cluster: WebhookSide, senders: Iterable[Sender],
                 max_pending: int | None = None, bounds: dict[str, int | None] | None = None,
                 channels: dict[str, ChannelStats] | None = None) -> None:
        self.path = path
        self.source = source  # the Notifier: since(after_id, limit, user=None), last_id()
        self.cluster = cluster  # sends only while it leads; settles each outcome for the other nodes
        self.senders = {s.channel: s for s in senders}
        self.max_pending = max_pending
        self.bounds = dict(bounds or {})
        self.outbox: Outbox | None = None
        self.stats: dict[str, dict[str, LaneStats]] = {c: {} for c in self.senders}
        # Each channel's counts in the one shape every channel shows (sent, failed, given up, pending).
        self.channels = {c: (channels or {}).get(c) or ChannelStats(CHANNEL_NAMES.get(c, c)) for c in self.senders}
        for channel, sender in self.senders.items():
            for target in sender.targets or ():
                self.stats[channel][target] = LaneStats()
        self._pending: dict[Lane, int] = {}
        self._wake = asyncio.Event()
        self._lanes: dict[Lane, _Lane] = {}
        # Rows whose outcome could not be written (the outbox failed): not sent again before this time.
        self._hold: dict[int, float] = {}
        self.fault: str | None = None

    def wake(self, _msg: Any = None) -> None:
        self._wake.set()

    def on_leader(self, leading: bool) -> None:
        """Leadership changed: lanes start (or stop starting) attempts, the loop starts (or stops) following."""
        self._wake.set()
        for lane in self._lanes.values():
            lane.wake.set()

    def lane_stats(self, channel: str, target: str) -> LaneStats:
        return self.stats[channel].setdefault(target, LaneStats())

    def pending(self, channel: str) -> dict[str, int]:
        return {t: n for (c, t), n in self._pending.items() if c == channel and n}

    def _refresh_pending(self) -> None:
        if self.outbox is not None:
            self._pending = self.outbox.lanes()
            totals = dict.fromkeys(self.channels, 0)
            for (channel, _), n in self._pending.items():
                if channel in totals:
                    totals[channel] += n
            for channel, n in totals.items():
                self.channels[channel].pending = n

    # --- the supervised task --------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            self.outbox = Outbox(self.path, self.max_pending, self.bounds)
        except Exception as exc:
            self.fault = (f"delivery outbox {self.path} cannot be opened ({exc}): make TRADE_STREAM_STATE_DIR "
                          "writable")
            raise
        self.fault = None
        try:
            async with contextlib.AsyncExitStack() as stack:
                for sender in self.senders.values():
                    await stack.enter_async_context(sender.session())
                try:
                    await self._work()
                finally:  # before the sessions close: no attempt is left holding a closed client
                    await self._stop_lanes()
        finally:
            self.outbox.close()
            self.outbox = None

    async def _work(self) -> None:
        outbox = self.outbox
        assert outbox is not None
        for channel, sender in self.senders.items():
            for target in sender.targets or ():
                self._open_lane((channel, target))
        last_prune = 0.0
        while True:
            self._catch_up()
            following = not self.cluster.is_leader
            if following:
                await self._follow()
            if time.monotonic() - last_prune > PRUNE_EVERY:
                last_prune = time.monotonic()
                outbox.prune()
            self._refresh_pending()
            if not following:
                for lane in self._pending:
                    self._open_lane(lane)
            # Once a minute: a faulted store is back; a follower with pending rows looks far more often.
            every = FOLLOW_EVERY if following and self._pending else 60.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), every)
            self._wake.clear()

    def _open_lane(self, key: Lane) -> None:
        """Run the lane ``key`` unless it runs already, or its channel sends to configured targets only and this
        is not one of them (a target removed from the file keeps its rows, unsent)."""
        sender = self.senders.get(key[0])
        if sender is None or (sender.targets is not None and key[1] not in sender.targets):
            return
        lane = self._lanes.setdefault(key, _Lane())
        if lane.task is None or lane.task.done():
            lane.task = asyncio.create_task(self._lane(sender, key[1], lane, sender.targets is None),
                                            name=f"{key[0]}-{key[1]}")

    async def _stop_lanes(self) -> None:
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._lanes.clear()

    def _catch_up(self) -> None:
        """Queue every notification after the cursor (first start: nothing from before, only what comes next)."""
        outbox = self.outbox
        assert outbox is not None
        cursor = outbox.cursor()
        last = self.source.last_id()
        if last is None:
            return  # the notification store is faulted: its recovery wakes us
        if cursor is None or cursor > last:  # first start, or the notification store was recreated
            if cursor is not None:
                log.warning("delivery_cursor_reset cursor=%d store_last_id=%d: the notification store was recreated",
                            cursor, last)
            outbox.set_cursor(last)
            return
        while True:
            notes = self.source.since(cursor, CATCH_UP_PAGE, user=None)
            if not notes:
                return
            cursor = notes[-1]["id"]
            queued, dropped = outbox.enqueue(notes, self._rows_of, cursor)
            for (channel, target), count in dropped.items():
                stats = self.lane_stats(channel, target)
                stats.dropped += count
                stats.failed += count
                if channel in self.channels:
                    self.channels[channel].given_up += count
                bound = outbox.bound(channel)
                stats.last_error = f"dropped {count} oldest: more than {bound} pending"
                log.error("%s_dropped target=%s count=%d max_pending=%s: the target is not taking deliveries",
                          channel, target, count, bound)
            if queued:
                for lane in self._lanes.values():
                    lane.wake.set()
            if len(notes) < CATCH_UP_PAGE:
                return

    def _rows_of(self, note: dict[str, Any]) -> list[Row]:
        rows: list[Row] = []
        for sender in self.senders.values():
            try:
                rows.extend(sender.rows(note))
            except Exception:  # one channel's bug must not stop the others' deliveries, nor the cursor
                log.exception("%s_rows_failed notification=%s", sender.channel, note.get("id"))
        return rows

    async def _follow(self) -> None:
        """While another node sends: let go of the pending deliveries it has settled, oldest first, a page at a
        time while whole pages are settled (one round trip per page)."""
        outbox = self.outbox
        assert outbox is not None
        for channel, target in self._followed():
            after = 0
            while True:
                page = outbox.pending_ids(target, after, channel=channel)
                if not page:
                    break
                outcomes = await self.cluster.settled([d for _, d in page])
                if outcomes:
                    outbox.settled_elsewhere(target, outcomes, channel=channel)
                if len(outcomes) < len(page):
                    break
                after = page[-1][0]

    def _followed(self) -> list[Lane]:
        assert self.outbox is not None
        out: list[Lane] = []
        for channel, sender in self.senders.items():
            if sender.targets is not None:
                out.extend((channel, t) for t in sender.targets)
        out.extend(lane for lane in self.outbox.lanes() if lane[0] in self.senders
                   and self.senders[lane[0]].targets is None)
        return out

    # --- a lane ---------------------------------------------------------------------------------------

    async def _lane(self, sender: Sender, target: str, lane: _Lane, ends_when_idle: bool) -> None:
        """Send the lane's deliveries: up to the channel's concurrency of orders at once, each order's in order."""
        inflight: dict[str, asyncio.Task[None]] = {}
        try:
            while True:
                next_due = self._start_due(sender, target, inflight)
                if next_due is None and not inflight and ends_when_idle and self._idle(sender.channel, target):
                    return  # the loop opens it again when rows come, or when this node leads again
                wait = None if next_due is None else max(0.0, next_due - time.time())
                waiter = asyncio.create_task(lane.wake.wait())
                try:
                    await asyncio.wait([waiter, *inflight.values()], timeout=wait,
                                       return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                lane.wake.clear()
        finally:
            for task in inflight.values():
                task.cancel()

    def _idle(self, channel: str, target: str) -> bool:
        return not self.cluster.is_leader or self.outbox is None or not self.outbox.pending(channel).get(target)

    def _start_due(self, sender: Sender, target: str, inflight: dict[str, asyncio.Task[None]]) -> float | None:
        """Start the heads that are due (up to the concurrency in flight); returns when the next one falls due.
        Only while this node leads: gaining the lead wakes the lane."""
        if not self.cluster.is_leader:
            return None
        try:
            assert self.outbox is not None
            now = time.time()
            self._hold = {k: until for k, until in self._hold.items() if until > now}
            held = min(self._hold.values(), default=None)
            for row in self.outbox.heads(target, set(inflight), channel=sender.channel):
                if row.next_at > now:  # heads come soonest first: none after this one is due either
                    return row.next_at if held is None else min(row.next_at, held)
                if row.id in self._hold:
                    continue
                if len(inflight) >= sender.concurrency:
                    return None  # a finishing attempt wakes the lane
                task = asyncio.create_task(self._attempt(sender, row), name=f"{sender.channel}-{target}-send")
                inflight[row.order_key] = task
                task.add_done_callback(partial(_forget, inflight, row.order_key))
            return held
        except Exception as exc:  # the outbox failed: say so, try again shortly
            self.lane_stats(sender.channel, target).last_error = f"outbox: {type(exc).__name__}: {exc}"[:300]
            log.exception("%s_lane_error target=%s", sender.channel, target)
            return time.time() + max(1.0, sender.retry.wait_min)

    async def _attempt(self, sender: Sender, row: Delivery) -> None:
        """One attempt, as a task of its lane: never raises, and the row is always moved out of the due set (in
        the outbox, or, when the outbox cannot be written, held here for a while) so it cannot be sent in a loop."""
        try:
            await self._send(sender, row)
        except Exception:
            log.exception("%s_outcome_not_recorded target=%s delivery=%s", sender.channel, row.target,
                          row.delivery_id)
            self._hold[row.id] = time.time() + max(1.0, sender.retry.wait_min)

    async def _send(self, sender: Sender, row: Delivery) -> None:
        assert self.outbox is not None
        delivery_id = row.delivery_id
        outcome = (await self.cluster.settled([delivery_id])).get(delivery_id)
        if outcome is not None:  # a previous leader settled it after this node last looked
            self.outbox.settled_elsewhere(row.target, {delivery_id: outcome}, channel=row.channel)
            self._refresh_pending()
            return
        try:
            result = await sender.send(row)
        except Exception as exc:  # a bug in the channel: keep the delivery, try later
            log.exception("%s_attempt_crashed target=%s delivery=%s", row.channel, row.target, delivery_id)
            result = Outcome.failed(f"{type(exc).__name__}: {exc}"[:300])
        if result.defer_until is not None:
            self.lane_stats(row.channel, row.target).deferred += 1
            self.outbox.defer(row, result.defer_until, result.error)
            return
        if result.delivered:
            for each in (row, *result.covers):
                self._done(each, result.status)
                await self._settle(each, "delivered")
        elif self._failed(sender, row, result):
            await self._settle(row, "failed")

    async def _settle(self, row: Delivery, outcome: str) -> None:
        if not await self.cluster.settle(row.delivery_id, outcome):
            log.warning("%s_settle_failed target=%s delivery=%s outcome=%s: a node that leads next sends it "
                        "again, under the same id", row.channel, row.target, row.delivery_id, outcome)

    def _done(self, row: Delivery, status: int | None) -> None:
        stats = self.lane_stats(row.channel, row.target)
        stats.delivered += 1
        self.channels[row.channel].sent += 1
        stats.last_status = status
        stats.last_delivered_at = time.time()
        if self.outbox is not None:
            self.outbox.delivered(row, status)
            self._refresh_pending()
        log.info("%s_delivered target=%s event=%s attempts=%d status=%s", row.channel, row.target, row.event,
                 row.attempts + 1, status)

    def _failed(self, sender: Sender, row: Delivery, result: Outcome) -> bool:
        """Retry later, or give up (True)."""
        stats = self.lane_stats(row.channel, row.target)
        stats.errors += 1
        stats.last_error, stats.last_status = result.error, result.status
        channel = self.channels[row.channel]
        channel.failed += 1
        channel.last_error = f"{row.target}: {result.error}"
        attempts = row.attempts + 1
        delay = retry_wait(attempts, result.wait_hint, sender.retry)
        next_at = time.time() + delay
        if result.retryable and next_at - row.created <= sender.retry.give_up:
            log.warning("%s_retry target=%s delivery=%s attempts=%d in=%.2fs error=%s", row.channel, row.target,
                        row.delivery_id, attempts, delay, result.error)
            if self.outbox is not None:
                self.outbox.retry(row, next_at, result.status, result.error)
            return False
        why = result.error if not result.retryable else f"gave up after {attempts} attempts: {result.error}"
        stats.failed += 1
        stats.last_error = why
        channel.given_up += 1
        log.error("%s_failed target=%s delivery=%s event=%s attempts=%d error=%s", row.channel, row.target,
                  row.delivery_id, row.event, attempts, why)
        if self.outbox is not None:
            self.outbox.give_up(row, result.status, why)
            self._refresh_pending()
        return True


@contextlib.asynccontextmanager
async def nothing_held() -> AsyncIterator[None]:
    """A channel's ``session`` when it holds nothing open between attempts."""
    yield
