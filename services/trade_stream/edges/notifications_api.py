"""REST for trade notifications on the main port (token required: ``Authorization: Bearer`` or the session cookie):

- ``GET  /api/notifications/trades?limit=20&unread_only=true``: newest first, ``limit`` 1..200;
- ``POST /api/notifications/trades/{id}/read``: one notification read;
- ``POST /api/notifications/trades/read`` with ``{"ids":[…]}`` or ``{"all":true}``;
- ``OPTIONS`` on any of them: the CORS preflight (204).

The credential is read by edges/http/credentials.py (a foreign page's cookie is refused there, so a cross-site
POST cannot mark anyone's notifications read) and goes through ``Identity.resolve`` (edges/identity.py), the one
credential check, so failed-auth throttling applies (429 with Retry-After); the user it names sees only their
accounts' notifications and keeps their own read state. Request bodies reach us through http_body.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import orjson

from trade_stream.core.notifier import TradeNotifier
from trade_stream.core.users import Credentials, User
from trade_stream.edges.http.credentials import RequestCredentials, refusal
from trade_stream.edges.http.request import Request
from trade_stream.edges.http.responses import Response, error, json, preflight, response

PREFIX = "/api/notifications/trades"
ONE_RE = re.compile(re.escape(PREFIX) + r"/([0-9]{1,18})/read")
PREFLIGHT = preflight("GET, POST, OPTIONS", "Content-Type, Authorization")
MAX_IDS = 1000
TRUE = ("1", "true", "yes")


class NotificationsApi:
    def __init__(self, notifier: TradeNotifier, identity: Credentials, credentials: RequestCredentials,
                 cors: Callable[[Request], dict[str, str]]) -> None:
        self.notifier = notifier
        self.identity = identity
        self.credentials = credentials
        self.cors = cors

    def __call__(self, request: Request) -> Response:
        """Every method of every path under PREFIX (its route takes them all: it answers its own 405s)."""
        path, method = request.path, request.method
        headers = self.cors(request)
        one = ONE_RE.fullmatch(path)
        allowed = "GET, OPTIONS" if path == PREFIX else "POST, OPTIONS"
        if path not in (PREFIX, PREFIX + "/read") and one is None:
            return error(404, f"no such endpoint {path}", headers)
        if method == "OPTIONS":
            return response(204, b"", "text/plain", {**headers, **PREFLIGHT})
        if method not in allowed.split(", ") and not (method == "HEAD" and path == PREFIX):
            return error(405, f"{method} is not supported here", {**headers, "Allow": allowed})
        user = self._auth(request, headers)
        if not isinstance(user, User):
            return user
        if path == PREFIX:
            query = request.query
            try:
                limit = int(query.get("limit", "20"))
            except ValueError:
                return error(400, "limit must be a whole number from 1 to 200", headers)
            status, payload = self.notifier.list(user, limit, query.get("unread_only", "").lower() in TRUE)
            return json(status, payload, headers)
        if request.body_error is not None:
            return error(request.body_error, "the body must be JSON of at most 64 KiB with a Content-Length", headers)
        if one is not None:
            status, payload = self.notifier.mark_read(user, [int(one.group(1))])
            return json(status, payload, headers)
        ids = _ids(request.body)
        if isinstance(ids, str):
            return error(400, ids, headers)
        status, payload = self.notifier.mark_read(user, ids)
        return json(status, payload, headers)

    def _auth(self, request: Request, headers: dict[str, str]) -> Response | User:
        user = self.credentials.user(self.identity, request)
        return user if isinstance(user, User) else refusal(user, headers)


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
