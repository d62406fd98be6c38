"""Webhook delivery: each trade notification POSTed to the configured targets, signed, durable, retried.

Never in the relay's path: the notifier only wakes this worker (a supervised task). The worker queues the new
notifications from the notification store into the outbox (outbox.py, one transaction with its cursor), and one
lane per target sends them, several at once, but the deliveries of one order in order. So a slow or dead target
holds up nobody else, and an order's ``filled`` never overtakes its ``accepted``.

Each request follows the Standard Webhooks specification, so a receiver verifies it with one call of the
``standardwebhooks`` library in any language: ``webhook-id`` (the delivery id: a UUID derived from the order
event and the target, so it is the same on every retry and from every node of a cluster: receivers deduplicate
on it), ``webhook-timestamp`` (Unix seconds of this attempt) and, when the target has a secret,
``webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``. Signing the id and the time with the
body is what lets a receiver refuse a captured delivery replayed later (the libraries allow 5 minutes of skew).
Also ``X-Trade-Stream-Event`` (the notification type), ``X-Trade-Stream-Delivery`` (the id again) and, for a
target with ``legacy_signature = true``, ``X-Trade-Stream-Signature: sha256=<hex HMAC of the body alone>`` for
receivers written against that header.

2xx is delivered. Timeouts, connection errors, 429 and 5xx are retried with exponential backoff and full jitter,
or after ``Retry-After`` (seconds or an HTTP date), every wait held between ``webhook_wait_min`` and
``webhook_backoff_max`` whatever the target asks, for up to 24 hours; any other answer (4xx, 3xx) is given up at
once. Either way it is logged, and counted in status and metrics. Pending deliveries survive a restart (the same
delivery id is sent again: a receiver may see a delivery it already had, which is why the id exists).

In a cluster every node queues every delivery (each derives the notifications from the shared order log) but
only the leader sends, and it settles each outcome with the cluster (``DeliveryLedger``, core/engine.py). A
follower lets the settled deliveries go; a node that becomes leader sends what is still unsettled, under the
same ids. So a target gets each event at least once, and never under a second id; it gets one again only when
a leader stops (or loses Redis) between the target's answer and settling it.

A target cannot hold a lane or the daemon's memory: each attempt has one deadline (the target's ``timeout``) for
connecting, sending and the answer together, and of the answer's body only a snippet is read (for the error
message), the rest is never read: the connection is closed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import random
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson

from trade_stream import __version__
from trade_stream.config import Timings
from trade_stream.core.channels import ChannelStats
from trade_stream.core.engine import WebhookSide
from trade_stream.edges.outbox import Delivery, Outbox
from trade_stream.records.webhook_targets import WebhookTarget

log = logging.getLogger("trade_stream.edges.webhooks")

CONCURRENCY = 4  # requests in flight per target (different orders)
CATCH_UP_PAGE = 500
PRUNE_EVERY = 3600.0
RESPONSE_SNIPPET = 200  # bytes of an answer's body read, for the error message; the rest is never read
MAX_EXPONENT = 40  # 2 ** 40 s is far past any ceiling; 2 ** 1024 does not fit a float
HIDDEN_FIELDS = ("read", "unread", "source", "users")  # per-user state, what names the delivery, whom it is for
FOLLOW_EVERY = 1.0  # seconds between a follower's looks at what the leader settled, while it holds pending rows
#: The namespace of delivery ids: uuid5 of the order event and the target in it.
DELIVERY_NAMESPACE = uuid.UUID("6d1c3c52-1f0e-4a52-9a7e-5b0b8f3e2a41")


def delivery_id_of(note: dict[str, Any], target: WebhookTarget) -> str:
    """The delivery id of ``note`` for ``target``: the same for the same order event (``source``, the order log's
    ``<epoch>-<id>``, the same on every node of a cluster) and target, wherever and however often it is queued."""
    return str(uuid.uuid5(DELIVERY_NAMESPACE, f"{note.get('account')}/{note['source']}/{target.name}"))


def signing_key(secret: str) -> bytes:
    """Standard Webhooks' rule: a ``whsec_<base64>`` secret is the key it encodes; any other secret its bytes."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    return secret.encode()


def sign(secret: str, delivery_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: id, timestamp and body signed together."""
    mac = hmac.new(signing_key(secret), f"{delivery_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def sign_body(secret: str, body: bytes) -> str:
    """The ``X-Trade-Stream-Signature`` value (``legacy_signature``): the body alone, so it can be replayed."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def payload(target: WebhookTarget, delivery_id: str, note: dict[str, Any]) -> bytes:
    """The body: Slack's or Discord's incoming-webhook shape, or our JSON envelope."""
    if target.format == "slack":
        return orjson.dumps({"text": note["message"]})
    if target.format == "discord":
        return orjson.dumps({"content": note["message"]})
    data = {k: v for k, v in note.items() if k not in HIDDEN_FIELDS}
    return orjson.dumps({"delivery_id": delivery_id, "event": note.get("type"),
                         "sent_by": f"trade-stream/{__version__}", "notification": data})


def headers(target: WebhookTarget, event: str, delivery_id: str, body: bytes) -> dict[str, str]:
    """One attempt's headers: the timestamp is the attempt's, so each retry is signed anew."""
    timestamp = int(time.time())
    out = {"Content-Type": "application/json", "User-Agent": f"trade-stream/{__version__}",
           "Accept-Encoding": "identity",  # the snippet read of an answer is its first bytes, not a decoder's
           "webhook-id": delivery_id, "webhook-timestamp": str(timestamp),
           "X-Trade-Stream-Event": event, "X-Trade-Stream-Delivery": delivery_id}
    if target.secret:
        out["webhook-signature"] = sign(target.secret, delivery_id, timestamp, body)
        if target.legacy_signature:
            out["X-Trade-Stream-Signature"] = sign_body(target.secret, body)
    return out


def retry_wait(attempts: int, hint: float | None, t: Timings) -> float:
    """Seconds before attempt ``attempts + 1``: the target's ``Retry-After`` if it gave one, else exponential
    backoff with full jitter; either way within [webhook_wait_min, webhook_backoff_max], so neither
    ``Retry-After: 0`` (a hot loop) nor ``Retry-After: 99999999`` (past the give-up) is taken as it comes."""
    if hint is None:
        hint = random.uniform(0, min(t.webhook_backoff_max, t.webhook_backoff * 2.0 ** min(attempts - 1, MAX_EXPONENT)))
    return min(max(hint, t.webhook_wait_min), t.webhook_backoff_max)


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def _forget(inflight: dict[str, asyncio.Task[None]], order_key: str, _done: asyncio.Task[None]) -> None:
    """A finished attempt leaves its lane's in-flight table."""
    inflight.pop(order_key, None)


@dataclass
class TargetStats:
    delivered: int = 0
    failed: int = 0  # given up
    dropped: int = 0  # given up unsent because the outbox held more than its bound for this target (in failed)
    errors: int = 0  # attempts that failed (retried or not)
    last_error: str | None = None
    last_status: int | None = None
    last_delivered_at: float | None = None

    def view(self, pending: int) -> dict[str, Any]:
        return {"delivered": self.delivered, "failed": self.failed, "dropped": self.dropped, "pending": pending,
                "errors": self.errors, "last_error": self.last_error, "last_status": self.last_status,
                "last_delivered_at": self.last_delivered_at}


class Webhooks:
    def __init__(self, targets: tuple[WebhookTarget, ...], path: Path, source: Any, timings: Timings,
                 cluster: WebhookSide, max_pending: int | None = None, channel: ChannelStats | None = None) -> None:
        self.targets = targets
        self.channel = channel or ChannelStats("webhooks")  # every target's deliveries together (core/channels.py)
        self.cluster = cluster  # sends only while it leads; settles each outcome for the other nodes
        self.path = path
        self.max_pending = max_pending  # per target
        self.source = source  # the Notifier: since(after_id, limit, user=None), last_id(), to_webhooks(note)
        self.timings = timings
        self.outbox: Outbox | None = None
        self.stats = {t.name: TargetStats() for t in targets}
        self._pending: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._lane_wake = {t.name: asyncio.Event() for t in targets}
        # Rows whose outcome could not be written (the outbox failed): not sent again before this time.
        self._hold: dict[int, float] = {}
        self.fault: str | None = None

    def wake(self, _msg: Any = None) -> None:
        self._wake.set()

    def on_leader(self, leading: bool) -> None:
        """Leadership changed: lanes start (or stop starting) attempts, the loop starts (or stops) following."""
        self._wake.set()
        for event in self._lane_wake.values():
            event.set()

    # --- status and metrics ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {t.name: {"url": _safe_url(t.url), "format": t.format,
                         **self.stats[t.name].view(self._pending.get(t.name, 0))} for t in self.targets}

    def _refresh_pending(self) -> None:
        if self.outbox is not None:
            self._pending = self.outbox.pending()
            self.channel.pending = sum(self._pending.values())

    # --- the supervised task --------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            self.outbox = Outbox(self.path, self.max_pending)
        except Exception as exc:
            self.fault = f"webhook outbox {self.path} cannot be opened ({exc}): make TRADE_STREAM_STATE_DIR writable"
            raise
        self.fault = None
        lanes: list[asyncio.Task[None]] = []
        async with httpx.AsyncClient(follow_redirects=False) as client:
            try:
                lanes = [asyncio.create_task(self._lane(t, client), name=f"webhook-{t.name}") for t in self.targets]
                last_prune = 0.0
                while True:
                    self._catch_up()
                    following = not self.cluster.is_leader
                    if following:
                        await self._follow()
                    if time.monotonic() - last_prune > PRUNE_EVERY:
                        last_prune = time.monotonic()
                        self.outbox.prune()
                    self._refresh_pending()
                    # Once a minute: a faulted store is back; a follower with pending rows looks far more often.
                    every = FOLLOW_EVERY if following and self._pending else 60.0
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), every)
                    self._wake.clear()
            finally:
                for lane in lanes:
                    lane.cancel()
                for lane in lanes:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await lane
                self.outbox.close()
                self.outbox = None

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
                log.warning("webhook_cursor_reset cursor=%d store_last_id=%d: the notification store was recreated",
                            cursor, last)
            outbox.set_cursor(last)
            return
        while True:
            notes = self.source.since(cursor, CATCH_UP_PAGE, user=None)
            if not notes:
                return
            cursor = notes[-1]["id"]
            queued, dropped = outbox.enqueue(notes, self._rows_of, cursor)
            for name, count in dropped.items():
                stats = self.stats[name]
                stats.dropped += count
                stats.failed += count
                self.channel.given_up += count
                stats.last_error = f"dropped {count} oldest: more than {self.max_pending} pending"
                log.error("webhook_dropped target=%s count=%d max_pending=%s: the target is not taking deliveries",
                          name, count, self.max_pending)
            if queued:
                for event in self._lane_wake.values():
                    event.set()
            if len(notes) < CATCH_UP_PAGE:
                return

    async def _follow(self) -> None:
        """While another node sends: let go of the pending deliveries it has settled, oldest first, a page at a
        time while whole pages are settled (one round trip per page)."""
        outbox = self.outbox
        assert outbox is not None
        for target in self.targets:
            after = 0
            while True:
                page = outbox.pending_ids(target.name, after)
                if not page:
                    break
                outcomes = await self.cluster.settled([d for _, d in page])
                if outcomes:
                    outbox.settled_elsewhere(target.name, outcomes)
                if len(outcomes) < len(page):
                    break
                after = page[-1][0]

    def _rows_of(self, note: dict[str, Any]) -> list[tuple[str, str, str, str, bytes]]:
        """(delivery id, target, order key, event, body) for each target that wants this notification."""
        rows: list[tuple[str, str, str, str, bytes]] = []
        kind = str(note.get("type") or "order_other")
        if not self.source.to_webhooks(note):  # the users it is for turned webhooks off for its kind
            return rows
        for t in self.targets:
            if t.wants(kind, str(note.get("account", ""))):
                delivery_id = delivery_id_of(note, t)
                rows.append((delivery_id, t.name, str(note.get("trade_id") or note.get("id")), kind,
                             payload(t, delivery_id, note)))
        return rows

    async def _lane(self, target: WebhookTarget, client: httpx.AsyncClient) -> None:
        """Send ``target``'s deliveries: up to CONCURRENCY orders at once, each order's deliveries in order."""
        wake = self._lane_wake[target.name]
        inflight: dict[str, asyncio.Task[None]] = {}
        try:
            while True:
                next_due = self._start_due(target, client, inflight)
                wait = None if next_due is None else max(0.0, next_due - time.time())
                waiter = asyncio.create_task(wake.wait())
                try:
                    await asyncio.wait([waiter, *inflight.values()], timeout=wait,
                                       return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                wake.clear()
        finally:
            for task in inflight.values():
                task.cancel()

    def _start_due(self, target: WebhookTarget, client: httpx.AsyncClient,
                   inflight: dict[str, asyncio.Task[None]]) -> float | None:
        """Start the heads that are due (up to CONCURRENCY in flight); returns when the next one falls due. Only
        while this node leads: gaining the lead wakes the lane."""
        if not self.cluster.is_leader:
            return None
        try:
            assert self.outbox is not None
            now = time.time()
            self._hold = {k: until for k, until in self._hold.items() if until > now}
            held = min(self._hold.values(), default=None)
            for row in self.outbox.heads(target.name, set(inflight)):
                if row.next_at > now:  # heads come soonest first: none after this one is due either
                    return row.next_at if held is None else min(row.next_at, held)
                if row.id in self._hold:
                    continue
                if len(inflight) >= CONCURRENCY:
                    return None  # a finishing attempt wakes the lane
                task = asyncio.create_task(self._attempt(target, client, row), name=f"webhook-{target.name}-send")
                inflight[row.order_key] = task
                task.add_done_callback(partial(_forget, inflight, row.order_key))
            return held
        except Exception as exc:  # the outbox failed: say so, try again shortly
            self.stats[target.name].last_error = f"outbox: {type(exc).__name__}: {exc}"[:300]
            log.exception("webhook_lane_error target=%s", target.name)
            return time.time() + max(1.0, self.timings.webhook_wait_min)

    async def _attempt(self, target: WebhookTarget, client: httpx.AsyncClient, row: Delivery) -> None:
        """One attempt, as a task of its lane: never raises, and the row is always moved out of the due set (in
        the outbox, or, when the outbox cannot be written, held here for a while) so it cannot be sent in a loop."""
        try:
            await self._send(target, client, row)
        except Exception:
            log.exception("webhook_outcome_not_recorded target=%s delivery=%s", target.name, row.delivery_id)
            self._hold[row.id] = time.time() + max(1.0, self.timings.webhook_wait_min)

    async def _send(self, target: WebhookTarget, client: httpx.AsyncClient, row: Delivery) -> None:
        delivery_id = row.delivery_id
        outcome = (await self.cluster.settled([delivery_id])).get(delivery_id)
        if outcome is not None:  # a previous leader settled it after this node last looked
            assert self.outbox is not None
            self.outbox.settled_elsewhere(target.name, {delivery_id: outcome})
            self._refresh_pending()
            return
        status: int | None = None
        wait_hint: float | None = None
        delivered = False
        try:
            status, hint, snippet = await post(client, target, row.event, delivery_id, row.body)
            delivered = 200 <= status < 300
            error = f"HTTP {status}: {snippet}"
            retryable = status == 429 or status >= 500
            wait_hint = retry_after(hint, time.time()) if retryable else None
        except (TimeoutError, httpx.TimeoutException):
            error, retryable = f"timeout after {target.timeout:g} s", True
        except httpx.HTTPError as exc:
            error, retryable = f"{type(exc).__name__}: {exc}"[:300], True
        except Exception as exc:  # anything else (a bug, a broken URL): keep the delivery, try later
            log.exception("webhook_attempt_crashed target=%s delivery=%s", target.name, delivery_id)
            error, retryable = f"{type(exc).__name__}: {exc}"[:300], True
        if delivered:
            assert status is not None
            self._done(target, row, status)
            await self._settle(target, delivery_id, "delivered")
        elif self._failed(target, row, delivery_id, status, error, retryable, wait_hint):
            await self._settle(target, delivery_id, "failed")

    async def _settle(self, target: WebhookTarget, delivery_id: str, outcome: str) -> None:
        if not await self.cluster.settle(delivery_id, outcome):
            log.warning("webhook_settle_failed target=%s delivery=%s outcome=%s: a node that leads next sends it "
                        "again, under the same id", target.name, delivery_id, outcome)

    def _done(self, target: WebhookTarget, row: Delivery, status: int) -> None:
        stats = self.stats[target.name]
        stats.delivered += 1
        self.channel.sent += 1
        stats.last_status = status
        stats.last_delivered_at = time.time()
        if self.outbox is not None:
            self.outbox.delivered(row, status)
            self._refresh_pending()
        log.info("webhook_delivered target=%s event=%s attempts=%d status=%d", target.name, row.event,
                 row.attempts + 1, status)

    def _failed(self, target: WebhookTarget, row: Delivery, delivery_id: str, status: int | None, error: str,
                retryable: bool, wait_hint: float | None) -> bool:
        """Retry later, or give up (True)."""
        stats = self.stats[target.name]
        stats.errors += 1
        self.channel.failed += 1
        stats.last_error, stats.last_status = error, status
        self.channel.last_error = f"{target.name}: {error}"
        t = self.timings
        attempts = row.attempts + 1
        delay = retry_wait(attempts, wait_hint, t)
        next_at = time.time() + delay
        if retryable and next_at - row.created <= t.webhook_give_up:
            log.warning("webhook_retry target=%s delivery=%s attempts=%d in=%.2fs error=%s", target.name,
                        delivery_id, attempts, delay, error)
            if self.outbox is not None:
                self.outbox.retry(row, next_at, status, error)
            return False
        why = error if not retryable else f"gave up after {attempts} attempts: {error}"
        stats.failed += 1
        self.channel.given_up += 1
        stats.last_error = why
        log.error("webhook_failed target=%s delivery=%s event=%s attempts=%d error=%s", target.name, delivery_id,
                  row.event, attempts, why)
        if self.outbox is not None:
            self.outbox.give_up(row, status, why)
            self._refresh_pending()
        return True

    # --- metrics --------------------------------------------------------------------------------------

    def collector(self) -> Any:
        return _Collector(self)


class _Collector:
    """Prometheus families read at scrape time."""

    def __init__(self, hooks: Webhooks) -> None:
        self.hooks = hooks

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        view = self.hooks.status()
        families = (
            (CounterMetricFamily, "trade_stream_webhook_deliveries", "Webhook deliveries acknowledged (2xx)",
             "delivered"),
            (CounterMetricFamily, "trade_stream_webhook_failures", "Webhook deliveries given up", "failed"),
            (CounterMetricFamily, "trade_stream_webhook_dropped",
             "Webhook deliveries given up unsent: more than TRADE_STREAM_WEBHOOK_MAX_PENDING pending", "dropped"),
            (CounterMetricFamily, "trade_stream_webhook_attempt_errors",
             "Webhook attempts that failed (timeouts, connection errors, non-2xx), retried or not", "errors"),
            (GaugeMetricFamily, "trade_stream_webhook_outbox_pending", "Webhook deliveries waiting in the outbox",
             "pending"),
        )
        for kind, name, doc, key in families:
            family = kind(name, doc, labels=["target"])
            for target, row in sorted(view.items()):
                family.add_metric([target], row[key])
            yield family
        outbox = self.hooks.outbox
        if outbox is not None:
            yield GaugeMetricFamily("trade_stream_webhook_outbox_bytes",
                                    "Bytes on disk of the webhook outbox (database and write-ahead log)",
                                    value=outbox.size())


async def post(client: httpx.AsyncClient, target: WebhookTarget, event: str, delivery_id: str, body: bytes,
               snippet: int = 0) -> tuple[int, str | None, str]:
    """One POST under one deadline for all of it: (status, Retry-After, the answer's first bytes: up to
    ``snippet``, or RESPONSE_SNIPPET when it is not a 2xx). The rest of the answer is never read; leaving the
    stream early closes the connection."""
    async with asyncio.timeout(target.timeout):
        async with client.stream("POST", target.url, content=body, timeout=target.timeout,
                                 headers=headers(target, event, delivery_id, body)) as resp:
            want = snippet or (0 if 200 <= resp.status_code < 300 else RESPONSE_SNIPPET)
            read = b""
            if want:
                async for chunk in resp.aiter_raw():
                    read += chunk
                    if len(read) >= want:
                        break
            return resp.status_code, resp.headers.get("retry-after"), read[:want].decode("utf-8", "replace")


def _safe_url(url: str) -> str:
    """Scheme, host, port and the start of the path: Slack and Discord webhook URLs carry their secret in the
    path, so cut that, and any user or password in the URL is left out; no query."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    path = parts.path if len(parts.path) <= 24 else parts.path[:20] + "…"
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{path}"


# --- `trade-stream webhook test NAME` -----------------------------------------------------------------------


def sample(target: WebhookTarget) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return {"id": 0, "account": "default", "trade_id": "00000000-0000-4000-8000-000000000000", "symbol": "AAPL",
            "action": "BUY", "type": "test", "status": "filled",
            "message": "trade-stream test: Buy 100 AAPL filled at $150.25", "fill_price": "150.25",
            "quantity": "100", "timestamp": now, "level": "info", "event": "fill"}


async def send_test(target: WebhookTarget) -> tuple[int, str]:
    """(status, the start of the answer's body) for a test event, sent as every delivery is."""
    delivery_id = str(uuid.uuid4())
    body = payload(target, delivery_id, sample(target))
    async with httpx.AsyncClient(follow_redirects=False) as client:
        status, _, snippet = await post(client, target, "test", delivery_id, body, snippet=2000)
    return status, snippet


def main(argv: list[str]) -> int:
    from trade_stream import config

    parser = argparse.ArgumentParser(prog="trade-stream webhook",
                                     description="Webhook tools: `test NAME` sends a test event to that target and "
                                                 "prints the receiver's status and body.")
    parser.add_argument("command", choices=["test"])
    parser.add_argument("name", help="target name from TRADE_STREAM_WEBHOOKS_FILE")
    config.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        cfg = config.load(args) if args.demo or args.api_key else _load_without_keys(config, args)
    except config.ConfigError as exc:
        print(f"trade-stream webhook: {exc}", file=sys.stderr)
        return 2
    target = next((t for t in cfg.webhooks if t.name == args.name), None)
    if target is None:
        names = ", ".join(t.name for t in cfg.webhooks) or "none (set TRADE_STREAM_WEBHOOKS_FILE)"
        print(f"trade-stream webhook: no target named {args.name!r}; targets: {names}", file=sys.stderr)
        return 2
    print(f"POST {_safe_url(target.url)} (format {target.format}, signed: {'yes' if target.secret else 'no'})",
          flush=True)
    try:
        status, text = asyncio.run(send_test(target))
    except httpx.HTTPError as exc:
        print(f"FAIL no answer: {type(exc).__name__}: {exc}")
        return 1
    print(f"{'OK  ' if 200 <= status < 300 else 'FAIL'} HTTP {status}")
    if text:
        print(text[:2000])
    return 0 if 200 <= status < 300 else 1


def _load_without_keys(config: Any, args: argparse.Namespace) -> Any:
    """Testing a webhook needs no Alpaca keys: load as demo when they are missing (only the targets are used)."""
    try:
        return config.load(args)
    except config.ConfigError as exc:
        if "ALPACA_" not in str(exc) or "is not set" not in str(exc):
            raise
        args.demo = True
        return config.load(args)
