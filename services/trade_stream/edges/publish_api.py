"""``POST /api/publish``: an app publishes events to app channels (core/channels.py), on the main port and on the
SSE side-port of any node.

- ``Authorization: Bearer <TRADE_STREAM_PUBLISH_KEY>``, compared in constant time; or the credential of an
  admin user (users file, JWT with ``admin: true``, ``TRADE_STREAM_TOKEN``) through ``Identity.resolve``. A
  wrong credential is 401 and counts for the failed-auth throttle (429 with Retry-After once throttled); a
  valid one of a user who is not an admin is 403.
- The body: one ``{"channel","event","data"[,"users"]}`` → 200 ``{"id": "<ms>-<seq>"}``, or a JSON array of them,
  published in order → 200 ``{"ids": [...]}``. Bad JSON, an unknown channel, a missing event: 400; a body over
  ``TRADE_STREAM_PUBLISH_MAX_BYTES``: 413; the cluster store down: 503 (retry), each with a one-line message.
- ``OPTIONS``: the CORS preflight (204); answers carry the CORS headers of every REST route.

One handler serves both ports: the main port's bodies come through http_body.py, the side-port's through h11.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable

from trade_stream.core.channels import Publication, Refusal, parse_body
from trade_stream.core.engine import ChannelBus, ChannelsUnavailable
from trade_stream.core.orders import AuthThrottled
from trade_stream.core.protocol import ClientError
from trade_stream.core.users import User
from trade_stream.edges.http.request import Request
from trade_stream.edges.http.responses import Response, error, json, preflight, response

log = logging.getLogger("trade_stream.edges.publish")

PATH = "/api/publish"
PREFLIGHT = preflight("POST, OPTIONS", "Content-Type, Authorization")


class PublishApi:
    def __init__(self, bus: ChannelBus, key: str, resolve: Callable[[str, str], User | ClientError],
                 cors: Callable[[Request], dict[str, str]], max_bytes: int) -> None:
        self.bus = bus
        self._key = key.encode("utf-8", "surrogatepass") if key else b""
        self.resolve = resolve
        self.cors = cors
        self.max_bytes = max_bytes
        self.published = 0  # events accepted

    def __call__(self, request: Request) -> Response | Awaitable[Response]:
        headers = self.cors(request)
        if request.method == "OPTIONS":
            return response(204, b"", "text/plain", {**headers, **PREFLIGHT})
        if request.method != "POST":
            return error(405, f"{request.method} is not supported here: POST events",
                         {**headers, "Allow": "POST, OPTIONS"})
        refused = self._auth(request, headers)
        if refused is not None:
            return refused
        if request.body_error == 413 or (request.body is not None and len(request.body) > self.max_bytes):
            return error(413, f"the body is over {self.max_bytes} bytes (TRADE_STREAM_PUBLISH_MAX_BYTES): send "
                         "fewer events per request", headers)
        if request.body_error is not None or not request.body:
            return error(400, 'send a JSON body with a Content-Length: {"channel": …, "event": …, "data": {…}}',
                         headers)
        pubs = parse_body(request.body)
        if isinstance(pubs, Refusal):
            return error(pubs.status, pubs.message, headers)
        return self._publish(pubs, request.body.lstrip()[:1] == b"[", headers)

    def authorize(self, request: Request, headers: dict[str, str]) -> Response | None:
        """The publisher's credential check, for the ports' other publisher-only routes (POST
        /api/stream/test): None when the request may go on, else the 401/403/429 to answer."""
        return self._auth(request, headers)

    def _auth(self, request: Request, headers: dict[str, str]) -> Response | None:
        token = request.bearer()
        if not token:
            return json(401, {"error": "Unauthorized", "message": "missing Authorization: Bearer <publish key>"},
                        {**headers, "WWW-Authenticate": "Bearer"})
        if self._key and hmac.compare_digest(token.encode("utf-8", "surrogatepass"), self._key):
            return None
        found = self.resolve(token, request.ip)  # counts a wrong one for the failed-auth throttle
        if isinstance(found, User):
            if found.admin:
                return None
            return error(403, f"user {found.name} is not an admin: publish with TRADE_STREAM_PUBLISH_KEY", headers)
        if isinstance(found, AuthThrottled):
            return json(429, {"error": "Too Many Requests", "message": found.message},
                        {**headers, "Retry-After": str(found.retry_after)})
        return json(401, {"error": "Unauthorized", "message": "wrong publish key"},
                    {**headers, "WWW-Authenticate": "Bearer"})

    async def _publish(self, pubs: list[Publication], batch: bool, headers: dict[str, str]) -> Response:
        try:
            ids = await self.bus.publish_channels(pubs)
        except ChannelsUnavailable as exc:
            log.warning("publish_unavailable events=%d error=%s", len(pubs), exc)
            return error(503, f"cannot publish now ({exc}); retry", {**headers, "Retry-After": "1"})
        self.published += len(ids)
        return json(200, {"ids": ids} if batch else {"id": ids[0]}, headers)
