"""REST for price alerts on the main port (token required: ``Authorization: Bearer`` or the session cookie):

- ``POST   /api/alerts`` ``{"symbol":"AAPL","condition":"crosses_above","price":230}`` → 201 with the alert;
- ``GET    /api/alerts``: the user's alerts, armed and triggered, oldest first;
- ``PATCH  /api/alerts/{id}`` ``{"state":"armed"}`` and/or the condition's number: re-arm;
- ``DELETE /api/alerts/{id}``;
- ``OPTIONS`` on any of them: the CORS preflight (204).

A bad value is a 400 naming the ``field`` (core/alerts.py says which); the per-user cap and a symbol the relay
cannot hold upstream (the symbol cap) are a 409 with a ``code`` and the reason. The credential goes through the
one credential path (edges/http/credentials.py, then ``Identity.resolve``), and a user sees and changes only
their own alerts: another user's id is a 404 like a missing one.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import orjson

from trade_stream.core.price_alerts import PriceAlerts
from trade_stream.core.users import Credentials, User
from trade_stream.edges.http.credentials import RequestCredentials, refusal
from trade_stream.edges.http.request import Request
from trade_stream.edges.http.responses import Response, error, json, preflight, response

PREFIX = "/api/alerts"
ONE_RE = re.compile(re.escape(PREFIX) + r"/([0-9a-f]{1,40})")
PREFLIGHT = preflight("GET, POST, PATCH, DELETE, OPTIONS", "Content-Type, Authorization")


class AlertsApi:
    def __init__(self, alerts: PriceAlerts, identity: Credentials, credentials: RequestCredentials,
                 cors: Callable[[Request], dict[str, str]]) -> None:
        self.alerts = alerts
        self.identity = identity
        self.credentials = credentials
        self.cors = cors

    def __call__(self, request: Request) -> Response | Awaitable[Response]:
        path, method = request.path, request.method
        headers = self.cors(request)
        one = ONE_RE.fullmatch(path)
        if path != PREFIX and one is None:
            return error(404, f"no such endpoint {path}", headers)
        allowed = "GET, POST, OPTIONS" if one is None else "PATCH, DELETE, OPTIONS"
        if method == "OPTIONS":
            return response(204, b"", "text/plain", {**headers, **PREFLIGHT})
        if method not in allowed.split(", ") and not (method == "HEAD" and one is None):
            return error(405, f"{method} is not supported here", {**headers, "Allow": allowed})
        user = self.credentials.user(self.identity, request)
        if not isinstance(user, User):
            return refusal(user, headers)
        if method in ("GET", "HEAD"):
            return json(200, {"alerts": self.alerts.list(user), "limit": self.alerts.max_per_user}, headers)
        if method == "DELETE":
            assert one is not None
            return self._answer(self.alerts.delete(user, one.group(1)), headers)
        if request.body_error is not None:
            return error(request.body_error, "the body must be JSON of at most 64 KiB with a Content-Length", headers)
        try:
            body = orjson.loads(request.body or b"")
        except orjson.JSONDecodeError:
            return json(400, {"error": "Bad Request", "field": "body", "message": "the body is not JSON"}, headers)
        if one is None:
            return self._answer(self.alerts.create(user, body), headers)
        return self._answer(self.alerts.patch(user, one.group(1), body), headers)

    async def _answer(self, call: Awaitable[tuple[int, dict[str, object]]], headers: dict[str, str]) -> Response:
        status, payload = await call
        return json(status, payload, headers)
