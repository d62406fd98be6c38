"""Webhook delivery: each trade notification POSTed to the configured targets, signed, durable, retried.

Never in the relay's path: the notifier only wakes this worker (a supervised task). The worker queues the new
notifications from the notification store into the outbox (outbox.py, one transaction with its cursor), and one
lane per target sends them, several at once, but the deliveries of one order in order. So a slow or dead target
holds up nobody else, and an order's ``filled`` never overtakes its ``accepted``.

Each request: ``Content-Type: application/json``, ``X-Trade-Stream-Event`` (the notification type),
``X-Trade-Stream-Delivery`` (the same id on every retry: receivers deduplicate on it) and, when the target has a
secret, ``X-Trade-Stream-Signature: sha256=<hex HMAC-SHA256 of the raw body>`` (as GitHub signs its webhooks).
2xx is delivered. Timeouts, connection errors, 429 and 5xx are retried with exponential backoff and full jitter
(honouring ``Retry-After``, seconds or an HTTP date) for up to 24 hours; any other answer (4xx, 3xx) is given up
at once. Either way it is logged, and counted in status and metrics. Pending deliveries survive a restart (the
same delivery id is sent again: a receiver may see a delivery it already had, which is why the id exists).
"""

from __future__ import annotations

import argparse
import asyncio
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
from pathlib import Path
from typing import Any

import httpx
import orjson

from trade_stream import __version__
from trade_stream.config import Timings
from trade_stream.edges.outbox import Delivery, Outbox
from trade_stream.edges.webhook_targets import WebhookTarget

log = logging.getLogger("trade_stream.edges.webhooks")

CONCURRENCY = 4  # requests in flight per target (different orders)
CATCH_UP_PAGE = 500
PRUNE_EVERY = 3600.0
RESPONSE_SNIPPET = 200
HIDDEN_FIELDS = ("read", "unread")  # per-user state, not part of the event


def sign(secret: str, body: bytes) -> str:
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
    out = {"Content-Type": "application/json", "User-Agent": f"trade-stream/{__version__}",
           "X-Trade-Stream-Event": event, "X-Trade-Stream-Delivery": delivery_id}
    if target.secret:
        out["X-Trade-Stream-Signature"] = sign(target.secret, body)
    return out


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
                 max_pending: int | None = None) -> None:
        self.targets = targets
        self.path = path
        self.max_pending = max_pending  # per target
        self.source = source  # the Notifier: since(after_id, limit, user=None), last_id()
        self.timings = timings
        self.outbox: Outbox | None = None
        self.stats = {t.name: TargetStats() for t in targets}
        self._pending: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._lane_wake = {t.name: asyncio.Event() for t in targets}
        self.fault: str | None = None

    def wake(self, _msg: Any = None) -> None:
        self._wake.set()

    # --- status and metrics ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {t.name: {"url": _safe_url(t.url), "format": t.format,
                         **self.stats[t.name].view(self._pending.get(t.name, 0))} for t in self.targets}

    def _refresh_pending(self) -> None:
        if self.outbox is not None:
            self._pending = self.outbox.pending()

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
                    if time.monotonic() - last_prune > PRUNE_EVERY:
                        last_prune = time.monotonic()
                        self.outbox.prune()
                    self._refresh_pending()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), 60.0)  # and once a minute: a faulted store is back
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
                stats.last_error = f"dropped {count} oldest: more than {self.max_pending} pending"
                log.error("webhook_dropped target=%s count=%d max_pending=%s: the target is not taking deliveries",
                          name, count, self.max_pending)
            if queued:
                for event in self._lane_wake.values():
                    event.set()
            if len(notes) < CATCH_UP_PAGE:
                return

    def _rows_of(self, note: dict[str, Any]) -> list[tuple[str, str, str, str, bytes]]:
        """(delivery id, target, order key, event, body) for each target that wants this notification."""
        rows = []
        kind = str(note.get("type") or "order_other")
        for t in self.targets:
            if t.wants(kind, str(note.get("account", ""))):
                delivery_id = str(uuid.uuid4())
                rows.append((delivery_id, t.name, str(note.get("trade_id") or note.get("id")), kind,
                             payload(t, delivery_id, note)))
        return rows

    async def _lane(self, target: WebhookTarget, client: httpx.AsyncClient) -> None:
        """Send ``target``'s deliveries: up to CONCURRENCY orders at once, each order's deliveries in order."""
        wake = self._lane_wake[target.name]
        inflight: dict[str, asyncio.Task[None]] = {}
        while True:
            try:
                assert self.outbox is not None
                now = time.time()
                next_due: float | None = None
                for row in self.outbox.heads(target.name, set(inflight)):
                    if len(inflight) >= CONCURRENCY:
                        break
                    if row.next_at <= now:
                        task = asyncio.create_task(self._attempt(target, client, row))
                        inflight[row.order_key] = task
                        task.add_done_callback(lambda _t, k=row.order_key: inflight.pop(k, None))
                    else:
                        next_due = row.next_at if next_due is None else min(next_due, row.next_at)
            except Exception as exc:  # the outbox failed: say so, try again shortly
                self.stats[target.name].last_error = f"outbox: {type(exc).__name__}: {exc}"[:300]
                log.exception("webhook_lane_error target=%s", target.name)
                next_due = time.time() + max(1.0, self.timings.webhook_backoff)
            wait = None if next_due is None else max(0.0, next_due - time.time())
            waiter = asyncio.create_task(wake.wait())
            try:
                await asyncio.wait([waiter, *inflight.values()], timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
            wake.clear()

    async def _attempt(self, target: WebhookTarget, client: httpx.AsyncClient, row: Delivery) -> None:
        delivery_id, body = row.delivery_id, row.body
        status: int | None = None
        wait_hint: float | None = None
        try:
            resp = await client.post(target.url, content=body, headers=headers(target, row.event, delivery_id, body),
                                     timeout=target.timeout)
            status = resp.status_code
            if 200 <= status < 300:
                self._done(target, row, status)
                return
            error = f"HTTP {status}: {resp.text[:RESPONSE_SNIPPET]}"
            retryable = status == 429 or status >= 500
            wait_hint = retry_after(resp.headers.get("retry-after"), time.time()) if retryable else None
        except httpx.TimeoutException:
            error, retryable = f"timeout after {target.timeout:g} s", True
        except httpx.HTTPError as exc:
            error, retryable = f"{type(exc).__name__}: {exc}"[:300], True
        except Exception as exc:  # anything else (a bug, a broken URL): keep the delivery, try later
            log.exception("webhook_attempt_crashed target=%s delivery=%s", target.name, delivery_id)
            error, retryable = f"{type(exc).__name__}: {exc}"[:300], True
        self._failed(target, row, delivery_id, status, error, retryable, wait_hint)

    def _done(self, target: WebhookTarget, row: Delivery, status: int) -> None:
        stats = self.stats[target.name]
        stats.delivered += 1
        stats.last_status = status
        stats.last_delivered_at = time.time()
        if self.outbox is not None:
            self.outbox.delivered(row, status)
            self._refresh_pending()
        log.info("webhook_delivered target=%s event=%s attempts=%d status=%d", target.name, row.event,
                 row.attempts + 1, status)

    def _failed(self, target: WebhookTarget, row: Delivery, delivery_id: str, status: int | None, error: str,
                retryable: bool, wait_hint: float | None) -> None:
        stats = self.stats[target.name]
        stats.errors += 1
        stats.last_error, stats.last_status = error, status
        t = self.timings
        attempts = row.attempts + 1
        delay = random.uniform(0, min(t.webhook_backoff_max, t.webhook_backoff * 2 ** (attempts - 1)))
        if wait_hint is not None:
            delay = max(wait_hint, 0.0)
        next_at = time.time() + delay
        if retryable and next_at - row.created <= t.webhook_give_up:
            log.warning("webhook_retry target=%s delivery=%s attempts=%d in=%.2fs error=%s", target.name,
                        delivery_id, attempts, delay, error)
            if self.outbox is not None:
                self.outbox.retry(row, next_at, status, error)
            return
        why = error if not retryable else f"gave up after {attempts} attempts: {error}"
        stats.failed += 1
        stats.last_error = why
        log.error("webhook_failed target=%s delivery=%s event=%s attempts=%d error=%s", target.name, delivery_id,
                  row.event, attempts, why)
        if self.outbox is not None:
            self.outbox.give_up(row, status, why)
            self._refresh_pending()

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


def _safe_url(url: str) -> str:
    """Scheme, host and path only: Slack and Discord webhook URLs carry their secret in the path, so cut that."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    path = parts.path if len(parts.path) <= 24 else parts.path[:20] + "…"
    return f"{parts.scheme}://{parts.hostname or ''}{path}"


# --- `trade-stream webhook test NAME` -----------------------------------------------------------------------


def sample(target: WebhookTarget) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return {"id": 0, "account": "default", "trade_id": "00000000-0000-4000-8000-000000000000", "symbol": "AAPL",
            "action": "BUY", "type": "test", "status": "filled",
            "message": "trade-stream test: Buy 100 AAPL filled at $150.25", "fill_price": "150.25",
            "quantity": "100", "timestamp": now, "level": "info", "event": "fill"}


async def send_test(target: WebhookTarget) -> tuple[int, str]:
    delivery_id = str(uuid.uuid4())
    body = payload(target, delivery_id, sample(target))
    async with httpx.AsyncClient(follow_redirects=False) as client:
        resp = await client.post(target.url, content=body, headers=headers(target, "test", delivery_id, body),
                                 timeout=target.timeout)
    return resp.status_code, resp.text


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
