"""REST for Web Push subscriptions on the main port (user auth: ``Authorization: Bearer`` or the session cookie):

- ``POST   /api/push/subscriptions`` with the browser's ``PushSubscription`` JSON: kept for this user (201), the
  user's oldest replaced beyond ``TRADE_STREAM_PUSH_MAX_SUBSCRIPTIONS`` (their ids in ``replaced``);
- ``DELETE /api/push/subscriptions`` with ``{"endpoint": "…"}``: that subscription of this user removed (200, or
  404 when they have none for it);
- ``GET    /api/push/subscriptions``: this user's subscriptions (id, push service origin, created), and the
  VAPID public key;
- ``OPTIONS``: the CORS preflight (204).

When Web Push is not configured every method but OPTIONS answers 404 naming the settings. A request's credential
goes through ``Identity.resolve`` as every other (failed-auth throttling included); a foreign page's cookie is
refused by edges/http/credentials.py, so another site cannot subscribe a visitor's browser to their trades.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson

from trade_stream.core.push_subscriptions import PushStoreUnavailable, PushSubscriptionStore
from trade_stream.core.users import Credentials, User
from trade_stream.edges.http.credentials import RequestCredentials, refusal
from trade_stream.edges.http.request import Request
from trade_stream.edges.http.responses import Response, error, json, preflight, response
from trade_stream.edges.push_subscriptions import parse, parse_endpoint
from trade_stream.records.vapid import SETTINGS

log = logging.getLogger("trade_stream.edges.push_api")

PATH = "/api/push/subscriptions"
ALLOWED = "GET, POST, DELETE, OPTIONS"
PREFLIGHT = preflight(ALLOWED, "Content-Type, Authorization")


class PushApi:
    def __init__(self, subscriptions: PushSubscriptionStore | None, public_key: str, identity: Credentials,
                 credentials: RequestCredentials, cors: Callable[[Request], dict[str, str]]) -> None:
        self.subscriptions = subscriptions
        self.public_key = public_key
        self.identity = identity
        self.credentials = credentials
        self.cors = cors

    def __call__(self, request: Request) -> Response | Awaitable[Response]:
        """Every method of PATH; a POST or DELETE is answered once the store has it."""
        headers = self.cors(request)
        method = request.method
        if method == "OPTIONS":
            return response(204, b"", "text/plain", {**headers, **PREFLIGHT})
        if method not in ALLOWED.split(", ") and method != "HEAD":
            return error(405, f"{method} is not supported here", {**headers, "Allow": ALLOWED})
        subs = self.subscriptions
        if subs is None:
            return error(404, f"Web Push is not configured: set {', '.join(SETTINGS)} (trade-stream push keys)",
                         headers)
        user = self.credentials.user(self.identity, request)
        if not isinstance(user, User):
            return refusal(user, headers)
        if method in ("GET", "HEAD"):
            return json(200, {"public_key": self.public_key,
                              "subscriptions": [s.view() for s in subs.of(user.name)]}, headers)
        if request.body_error is not None:
            return error(request.body_error, "the body must be JSON of at most 64 KiB with a Content-Length", headers)
        try:
            body = orjson.loads(request.body or b"")
        except orjson.JSONDecodeError:
            return error(400, "the body is not JSON", headers)
        if method == "POST":
            try:
                endpoint, p256dh, auth = parse(body)
            except ValueError as exc:
                return error(400, str(exc), headers)
            return self._add(subs, user, endpoint, p256dh, auth, headers)
        try:
            endpoint = parse_endpoint(body.get("endpoint") if isinstance(body, dict) else None)
        except ValueError as exc:
            return error(400, f'{exc}; send {{"endpoint": "…"}}', headers)
        return self._remove(subs, user, endpoint, headers)

    async def _add(self, subs: PushSubscriptionStore, user: User, endpoint: str, p256dh: str, auth: str,
                   headers: dict[str, str]) -> Response:
        try:
            sub, replaced = await subs.add(user.name, endpoint, p256dh, auth, user.accounts)
        except PushStoreUnavailable as exc:
            log.error("push_subscription_store_fault user=%s error=%s", user.name, exc)
            return error(503, str(exc), headers)
        return json(201, {**sub.view(), "replaced": replaced}, headers)

    async def _remove(self, subs: PushSubscriptionStore, user: User, endpoint: str,
                      headers: dict[str, str]) -> Response:
        try:
            removed = await subs.remove(user.name, endpoint)
        except PushStoreUnavailable as exc:
            log.error("push_subscription_store_fault user=%s error=%s", user.name, exc)
            return error(503, str(exc), headers)
        if not removed:
            return error(404, "no subscription of yours has that endpoint", headers)
        return json(200, {"removed": True}, headers)
