"""Webhooks: each trade notification POSTed to the configured targets, signed, durable, retried.

The webhook channel of the outbox (delivery.py: one lane per target, several orders at once, each order's
deliveries in order, so a slow or dead target holds up nobody else, and an order's ``filled`` never overtakes
its ``accepted``; retries, give-up, the bound, the cluster's leader sending). This module says what a delivery
to a target is and what its answer means.

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
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson

from trade_stream import __version__
from trade_stream.config import Timings
from trade_stream.core.delivery_stats import ChannelStats
from trade_stream.edges import delivery
from trade_stream.edges.delivery import Deliveries, Outcome, Retry
from trade_stream.edges.outbox import WEBHOOK, Delivery, Outbox, Row
from trade_stream.records.webhook_targets import WebhookTarget

log = logging.getLogger("trade_stream.edges.webhooks")

CONCURRENCY = 4  # requests in flight per target (different orders)
RESPONSE_SNIPPET = 200  # bytes of an answer's body read, for the error message; the rest is never read
HIDDEN_FIELDS = ("read", "unread", "source", "users")  # per-user state, what names the delivery, whom it is for
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


def retry_rule(t: Timings) -> Retry:
    return Retry(t.webhook_backoff, t.webhook_backoff_max, t.webhook_wait_min, t.webhook_give_up)


def retry_wait(attempts: int, hint: float | None, t: Timings) -> float:
    """Seconds before attempt ``attempts + 1``: the target's ``Retry-After`` if it gave one, else exponential
    backoff with full jitter; either way within [webhook_wait_min, webhook_backoff_max], so neither
    ``Retry-After: 0`` (a hot loop) nor ``Retry-After: 99999999`` (past the give-up) is taken as it comes."""
    return delivery.retry_wait(attempts, hint, retry_rule(t))


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


class WebhookSender:
    """The webhook channel: one lane per configured target."""

    channel = WEBHOOK
    concurrency = CONCURRENCY

    def __init__(self, targets: tuple[WebhookTarget, ...], timings: Timings, source: Any) -> None:
        self.by_name = {t.name: t for t in targets}
        self.source = source  # the Notifier: to_webhooks(note), whether the users it is for want it here
        self.retry = retry_rule(timings)
        self._client: httpx.AsyncClient | None = None

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(self.by_name)

    def rows(self, note: dict[str, Any]) -> list[Row]:
        """A row for each target that wants this notification, keyed by its order."""
        rows: list[Row] = []
        kind = str(note.get("type") or "order_other")
        if not self.source.to_webhooks(note):  # the users it is for turned webhooks off for its kind
            return rows
        for t in self.by_name.values():
            if t.wants(kind, str(note.get("account", ""))):
                delivery_id = delivery_id_of(note, t)
                rows.append(Row(delivery_id, t.name, str(note.get("trade_id") or note.get("id")), kind,
                                payload(t, delivery_id, note)))
        return rows

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        async with httpx.AsyncClient(follow_redirects=False) as client:
            self._client = client
            try:
                yield
            finally:
                self._client = None

    async def send(self, row: Delivery) -> Outcome:
        target, client = self.by_name[row.target], self._client
        assert client is not None
        try:
            status, hint, snippet = await post(client, target, row.event, row.delivery_id, row.body)
        except (TimeoutError, httpx.TimeoutException):
            return Outcome.failed(f"timeout after {target.timeout:g} s")
        except httpx.HTTPError as exc:
            return Outcome.failed(f"{type(exc).__name__}: {exc}"[:300])
        if 200 <= status < 300:
            return Outcome.ok(status)
        retryable = status == 429 or status >= 500
        return Outcome.failed(f"HTTP {status}: {snippet}", status, retryable,
                              retry_after(hint, time.time()) if retryable else None)


class Webhooks:
    """What the rest of the daemon sees of webhooks: the targets' status and metrics, over the outbox's lanes."""

    def __init__(self, targets: tuple[WebhookTarget, ...], deliveries: Deliveries) -> None:
        self.targets = targets
        self.deliveries = deliveries

    @property
    def outbox(self) -> Outbox | None:
        return self.deliveries.outbox

    @property
    def channel(self) -> ChannelStats:
        """Every target's deliveries together, in the shape every channel shows (core/channels.py)."""
        return self.deliveries.channels[WEBHOOK]

    def status(self) -> dict[str, Any]:
        pending = self.deliveries.pending(WEBHOOK)
        return {t.name: {"url": _safe_url(t.url), "format": t.format,
                         **self.deliveries.lane_stats(WEBHOOK, t.name).view(pending.get(t.name, 0))}
                for t in self.targets}

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
    """One signed delivery to ``target`` (``post_capped``)."""
    return await post_capped(client, target.url, body, headers(target, event, delivery_id, body), target.timeout,
                             snippet)


async def post_capped(client: httpx.AsyncClient, url: str, body: bytes, head: dict[str, str], timeout: float,
                      snippet: int = 0) -> tuple[int, str | None, str]:
    """One POST under one deadline for all of it: (status, Retry-After, the answer's first bytes: up to
    ``snippet``, or RESPONSE_SNIPPET when it is not a 2xx). The rest of the answer is never read; leaving the
    stream early closes the connection. Webhooks and Web Push send through it."""
    async with asyncio.timeout(timeout):
        async with client.stream("POST", url, content=body, timeout=timeout, headers=head) as resp:
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
