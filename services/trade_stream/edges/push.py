"""Web Push: each notification a person wants on ``push`` sent to their browsers' subscriptions (RFC 8030).

The push channel of the outbox (delivery.py: lanes, retries, give-up, the bound, only the cluster's leader
sending). A lane is one subscription (core/push_subscriptions.py); ``rows`` makes one delivery per subscription of
each user who wants the notification's kind on ``push`` (core/preferences.py, through ``TradeNotifier.recipients``),
its body the JSON the service worker shows (``public_html/sw.js``). The relay can name the users who see an account
only when they are configured (the users file, ``TRADE_STREAM_TOKEN``); a JWT user's subscription carries the
accounts their token named, so a notification of one of those accounts finds them too.

Each attempt is one POST to the subscription's endpoint, built with the two libraries the Python Web Push
implementations are made of (web-push-libs): the body encrypted to the browser's keys with ``http_ece``
(``Content-Encoding: aes128gcm``, RFC 8291: a fresh ECDH key and salt per message), and a VAPID token signed with
the daemon's key (``Authorization: vapid t=<JWT>,k=<public key>``, RFC 8292: ``aud`` the endpoint's origin,
``exp`` 12 hours ahead, within the 24 hours push services allow even with some clock skew, ``sub`` the
operator's contact). It goes out through httpx, the daemon's HTTP client, under one deadline per attempt.

``TTL`` and ``Urgency`` follow the notification's level: an error (a rejection) is ``high`` and worth little an
hour later, so it lives 15 minutes in the push service; a warning (a price alert) ``high`` for an hour; the rest
``normal`` for a day. An attempt's TTL is what is left of that since the notification was queued, and a
delivery past it is given up instead of sent.

Answers: 2xx (a push service answers 201) delivered. 404 and 410 say the subscription is gone (the browser
unsubscribed, or it expired): it is removed, and its deliveries given up. 429, 5xx, timeouts and connection
errors are retried as the other channels are (``Retry-After`` honoured within the bounds); any other answer
(400, 401/403 for a token the service refuses, 413) is given up at once, logged and counted.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import http_ece
import httpx
import orjson
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02

from trade_stream import __version__
from trade_stream.config import Timings
from trade_stream.core.notifications import kind_of
from trade_stream.core.preferences import wants
from trade_stream.core.push_subscriptions import PushStoreUnavailable, PushSubscriptionStore
from trade_stream.edges.delivery import Deliveries, Outcome, Retry
from trade_stream.edges.outbox import Delivery, Row
from trade_stream.edges.webhooks import post_capped, retry_after
from trade_stream.records import vapid
from trade_stream.records.vapid import VapidKeys, b64url_decode

log = logging.getLogger("trade_stream.edges.push")

PUSH = "push"
CONCURRENCY = 2  # attempts in flight per subscription (different orders)
TIMEOUT = 10.0  # one attempt: connect, send, answer
TOKEN_LIFETIME = 12 * 3600
TOKEN_RENEW = 3600  # a cached token is signed anew when it has less than this left
#: level -> (Urgency, TTL seconds)
DELIVERY = {"error": ("high", 900), "warning": ("high", 3600), "info": ("normal", 86400)}
MAX_TTL = max(ttl for _, ttl in DELIVERY.values())
# A push service takes at most 4096 bytes of body: aes128gcm adds a header (86 bytes with the key id), a tag (16)
# and a padding delimiter (1), so this is what a message may hold in plain text.
MAX_PLAINTEXT = 4096 - 86 - 16 - 1
TITLES = {"order_filled": "Order filled", "order_partial_fill": "Partial fill", "order_rejected": "Order rejected",
          "order_canceled": "Order canceled", "price_alert": "Price alert", "account_status": "Account status",
          "activity": "Account activity"}
SHOWN_FIELDS = ("id", "type", "kind", "level", "account", "symbol", "trade_id", "timestamp")
DELIVERY_NAMESPACE = uuid.UUID("0b7e6f1c-5a0d-4c1b-8f57-2c9a4e1d7b30")


def message(note: dict[str, Any]) -> bytes:
    """What the service worker gets: a title, the plain sentence, a tag and the notification's identifying fields;
    within a push message. The tag is the one the page gives its own desktop alert of the same notification
    (js/notifications.js), so a tab open when it comes and the push show it once, not twice."""
    kind = str(note.get("type") or "")
    data: dict[str, Any] = {"title": TITLES.get(kind, "trade-stream"), "body": str(note.get("message") or ""),
                            "tag": f"trade-stream-{note.get('id')}", **{k: note[k] for k in SHOWN_FIELDS if k in note}}
    body = orjson.dumps(data)
    while len(body) > MAX_PLAINTEXT:  # only a very long sentence: cut it, and say so
        data["body"] = data["body"][:max(0, len(data["body"]) - (len(body) - MAX_PLAINTEXT) - 8)] + "…"
        body = orjson.dumps(data)
    return body


def urgency_and_ttl(level: object) -> tuple[str, int]:
    return DELIVERY.get(str(level), DELIVERY["info"])


def retry_rule(t: Timings) -> Retry:
    """The webhook timings, but never retried past the longest TTL: the push service would drop it anyway."""
    return Retry(t.webhook_backoff, t.webhook_backoff_max, t.webhook_wait_min, min(t.webhook_give_up, MAX_TTL))


class VapidSigner:
    """VAPID ``Authorization`` headers, one per push service origin, cached until close to their expiry."""

    def __init__(self, keys: VapidKeys) -> None:
        self.keys = keys
        self.vapid = Vapid02(keys.private_key)
        self._cache: dict[str, tuple[float, str]] = {}

    def header(self, audience: str, now: float | None = None) -> str:
        now = time.time() if now is None else now
        cached = self._cache.get(audience)
        if cached is not None and cached[0] - now > TOKEN_RENEW:
            return cached[1]
        exp = int(now) + TOKEN_LIFETIME
        value = str(self.vapid.sign({"aud": audience, "exp": exp, "sub": self.keys.subject})["Authorization"])
        if len(self._cache) > 1000:  # a handful of push services in practice; never unbounded
            self._cache.clear()
        self._cache[audience] = (exp, value)
        return value


class PushSender:
    """The push channel: one lane per subscription, run while it has pending deliveries."""

    channel = PUSH
    concurrency = CONCURRENCY

    def __init__(self, keys: VapidKeys, subscriptions: PushSubscriptionStore, notifier: Any,
                 configured: Callable[[], Iterable[str]], timings: Timings, timeout: float = TIMEOUT) -> None:
        self.subscriptions = subscriptions
        self.notifier = notifier  # TradeNotifier: recipients(note, channel), preferences
        self.configured = configured  # the users file's users: their accounts are the file's
        self.signer = VapidSigner(keys)
        self.retry = retry_rule(timings)
        self.timeout = timeout
        self.gone = 0  # subscriptions removed on a 404/410
        self._client: httpx.AsyncClient | None = None

    @property
    def targets(self) -> None:
        return None

    def users(self, note: dict[str, Any]) -> list[str]:
        """Who gets ``note`` by push: the users it is for who want its kind there, and for a notification of an
        account, the JWT users whose subscriptions saw that account (a configured user's accounts are the users
        file's, not what their subscription remembers)."""
        names = list(self.notifier.recipients(note, PUSH))
        account = note.get("account")
        if note.get("users") is not None or account is None:
            return names
        configured, kind = set(self.configured()), str(note.get("kind") or kind_of(str(note.get("type"))))
        prefs = self.notifier.preferences
        for sub in self.subscriptions:
            user = sub.user
            if user not in configured and user not in names and sub.sees(str(account)) and (
                    wants(None, kind, PUSH) if prefs is None else prefs.wants(user, kind, PUSH)):
                names.append(user)
        return names

    def rows(self, note: dict[str, Any]) -> list[Row]:
        rows = []
        body = message(note)
        order = str(note.get("trade_id") or note.get("id"))
        for user in self.users(note):
            for sub in self.subscriptions.of(user):
                delivery_id = str(uuid.uuid5(DELIVERY_NAMESPACE, f"{note.get('account')}/{note['source']}/{sub.id}"))
                rows.append(Row(delivery_id, sub.id, order, str(note.get("type")), body, PUSH))
        return rows

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        async with httpx.AsyncClient(follow_redirects=False, headers={"User-Agent": f"trade-stream/{__version__}"}
                                     ) as client:
            self._client = client
            try:
                yield
            finally:
                self._client = None

    def request(self, row: Delivery, now: float) -> tuple[str, dict[str, str], bytes] | Outcome:
        """(endpoint, headers, encrypted body) of one attempt, or why there is none to make."""
        sub = self.subscriptions.get(row.target)
        if sub is None:
            return Outcome.failed("the subscription was removed", retryable=False)
        urgency, ttl = urgency_and_ttl(orjson.loads(row.body).get("level"))
        left = int(ttl - (now - row.created))
        if left <= 0:
            return Outcome.failed(f"expired: not delivered within its TTL of {ttl} s", retryable=False)
        body = http_ece.encrypt(row.body, private_key=ec.generate_private_key(ec.SECP256R1()),
                                dh=b64url_decode(sub.p256dh), auth_secret=b64url_decode(sub.auth),
                                version="aes128gcm")
        headers = {"TTL": str(left), "Urgency": urgency, "Content-Encoding": "aes128gcm",
                   "Content-Type": "application/octet-stream", "Authorization": self.signer.header(sub.origin)}
        return sub.endpoint, headers, body

    async def send(self, row: Delivery) -> Outcome:
        client = self._client
        assert client is not None
        prepared = self.request(row, time.time())
        if isinstance(prepared, Outcome):
            return prepared
        endpoint, headers, body = prepared
        try:
            status, hint, text = await post_capped(client, endpoint, body, headers, self.timeout)
        except (TimeoutError, httpx.TimeoutException):
            return Outcome.failed(f"timeout after {self.timeout:g} s")
        except httpx.HTTPError as exc:
            return Outcome.failed(f"{type(exc).__name__}: {exc}"[:300])
        if 200 <= status < 300:
            return Outcome.ok(status)
        if status in (404, 410):
            try:
                if await self.subscriptions.gone(row.target):
                    self.gone += 1
                    log.info("push_subscription_gone subscription=%s status=%d: removed", row.target, status)
            except PushStoreUnavailable as exc:
                log.warning("push_subscription_gone subscription=%s status=%d: not removed (%s); its next push "
                            "tries again", row.target, status, exc)
            return Outcome.failed(f"HTTP {status}: the subscription is gone (removed)", status, retryable=False)
        retryable = status == 429 or status >= 500
        return Outcome.failed(f"HTTP {status}: {text}", status, retryable,
                              retry_after(hint, time.time()) if retryable else None)


class Push:
    """What the rest of the daemon sees of Web Push: its subscriptions and its deliveries' counts."""

    def __init__(self, sender: PushSender, deliveries: Deliveries) -> None:
        self.sender = sender
        self.deliveries = deliveries

    def status(self) -> dict[str, Any]:
        lanes = self.deliveries.stats.get(PUSH, {})
        total: dict[str, Any] = {"subscriptions": len(self.sender.subscriptions), "gone": self.sender.gone,
                                 "pending": sum(self.deliveries.pending(PUSH).values())}
        for key in ("delivered", "failed", "dropped", "errors"):
            total[key] = sum(getattr(s, key) for s in lanes.values())
        last = max(lanes.values(), key=lambda s: s.last_delivered_at or 0.0, default=None)
        total["last_error"] = next((s.last_error for s in lanes.values() if s.last_error), None)
        total["last_delivered_at"] = last.last_delivered_at if last is not None else None
        return total


# --- `trade-stream push keys` -------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="trade-stream push",
        description="Web Push tools: `keys` prints a new VAPID key pair and contact as env-file lines "
                    "(TRADE_STREAM_VAPID_PRIVATE_KEY, _PUBLIC_KEY, _SUBJECT).")
    parser.add_argument("command", choices=["keys"])
    parser.add_argument("--subject", default=f"mailto:trade-stream@{socket.getfqdn()}",
                        help="mailto:you@example.com or an https:// URL where push services can reach you "
                             "(default mailto:trade-stream@<this host>)")
    args = parser.parse_args(argv)
    try:
        subject = vapid.check_subject(args.subject)
    except ValueError as exc:
        print(f"trade-stream push: --subject {exc}", file=sys.stderr)
        return 2
    print("\n".join(vapid.env_lines(vapid.generate(subject))))
    return 0
