"""REST for trade notifications on the main port (token required, ``Authorization: Bearer``):

- ``GET  /api/notifications/trades?limit=20&unread_only=true``: newest first, ``limit`` 1..200;
- ``POST /api/notifications/trades/{id}/read``: one notification read;
- ``POST /api/notifications/trades/read`` with ``{"ids":[…]}`` or ``{"all":true}``;
- ``OPTIONS`` on any of them: the CORS preflight (204).

The credential goes through ``Identity.resolve`` (edges/identity.py), the one credential check, so failed-auth
throttling applies (429 with Retry-After); the user it names sees only their accounts' notifications and keeps
their own read state. Request bodies reach us through http_body.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.http11 import Request, Response

from trade_stream.core.notifier import TradeNotifier
from trade_stream.core.orders import AuthThrottled
from trade_stream.core.protocol import ClientError
from trade_stream.edges.identity import User
from trade_stream.edges.web import error, json_response, response

PREFIX = "/api/notifications/trades"
ONE_RE = re.compile(re.escape(PREFIX) + r"/([0-9]{1,18})/read")
PREFLIGHT = {"Access-Control-Allow-Methods": "GET, POST, OPTIONS",
             "Access-Control-Allow-Headers": "Content-Type, Authorization", "Access-Control-Max-Age": "600"}
MAX_IDS = 1000
TRUE = ("1", "true", "yes")


class NotificationsApi:
    def __init__(self, notifier: TradeNotifier, resolve: Callable[[str, str], User | ClientError],
                 cors: Callable[[Any], dict[str, str]]) -> None:
        self.notifier = notifier
        self.resolve = resolve
        self.cors = cors

    def __call__(self, method: str, request: Request, ip: str, body: bytes | None,
                 body_error: int | None) -> Response | None:
        parts = urlsplit(request.path)
        path = parts.path
        if path != PREFIX and not path.startswith(PREFIX + "/"):
            return None
        headers = self.cors(request)
        one = ONE_RE.fullmatch(path)
        allowed = "GET, OPTIONS" if path == PREFIX else "POST, OPTIONS"
        if path not in (PREFIX, PREFIX + "/read") and one is None:
            return error(404, f"no such endpoint {path}", headers)
        if method == "OPTIONS":
            return response(204, b"", "text/plain", {**headers, **PREFLIGHT})
        if method not in allowed.split(", ") and not (method == "HEAD" and path == PREFIX):
            return error(405, f"{method} is not supported here", {**headers, "Allow": allowed})
        user = self._auth(request, ip, headers)
        if not isinstance(user, User):
            return user
        if path == PREFIX:
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            try:
                limit = int(query.get("limit", "20"))
            except ValueError:
                return error(400, "limit must be a whole number from 1 to 200", headers)
            status, payload = self.notifier.list(user, limit, query.get("unread_only", "").lower() in TRUE)
            return json_response(status, payload, headers)
        if body_error is not None:
            return error(body_error, "the body must be JSON of at most 64 KiB with a Content-Length", headers)
        if one is not None:
            status, payload = self.notifier.mark_read(user, [int(one.group(1))])
            return json_response(status, payload, headers)
        ids = _ids(body)
        if isinstance(ids, str):
            return error(400, ids, headers)
        status, payload = self.notifier.mark_read(user, ids)
        return json_response(status, payload, headers)

    def _auth(self, request: Request, ip: str, headers: dict[str, str]) -> Response | User:
        auth = request.headers.get("Authorization", "")
        token = auth[7:] if auth[:7].lower() == "bearer " else ""
        err = self.resolve(token, ip) if token else ClientError("unauthorized", "missing bearer token")
        if isinstance(err, User):
            return err
        if isinstance(err, AuthThrottled):
            return json_response(429, {"error": "Too Many Requests", "message": err.message},
                                 {**headers, "Retry-After": str(err.retry_after)})
        return json_response(401, {"error": "Unauthorized", "message": err.message},
                             {**headers, "WWW-Authenticate": "Bearer"})


def _ids(body: bytes | None) -> list[int] | str | None:
    """The ids to mark read (None: all), or what is wrong with the body."""
    usage = 'send {"ids":[1,2]} or {"all":true}'
    try:
        data = orjson.loads(body or b"")
    except orjson.JSONDecodeError:
        return f"the body is not JSON: {usage}"
    if not isinstance(data, dict):
        return usage
    if data.get("all") is True and "ids" not in data:
        return None
    ids = data.get("ids")
    if not isinstance(ids, list) or not ids or len(ids) > MAX_IDS or "all" in data:
        return f"{usage} (at most {MAX_IDS} ids)"
    if not all(isinstance(i, int) and not isinstance(i, bool) and 0 < i < 2**63 for i in ids):
        return "ids must be positive whole numbers"
    return ids
