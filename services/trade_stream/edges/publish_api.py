"""``POST /api/publish``: an app publishes events to app channels (core/channels.py), on the main port and on the
SSE side-port of any node.

- ``Authorization: Bearer <TRADE_STREAM_PUBLISH_KEY>``, compared in constant time; or the credential of an
  admin user (users file, JWT with ``admin: true``, ``TRADE_STREAM_TOKEN``) through ``Identity.resolve``. A
  wrong credential is 401 and counts for the failed-auth throttle (429 with Retry-After once throttled); a
  valid one of a user who is not an admin is 403. Only the header counts: the session cookie
  (``TRADE_STREAM_AUTH_COOKIE``) is no publish credential, since a page of any site can make a browser send it
  with a simple POST.
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


# --- `trade-stream publish` ------------------------------------------------------------------------------------

def main(argv: list[str]) -> int:
    """``trade-stream publish --channel C --event E [--data JSON] [--user NAME]…``: one event through the
    daemon's ``POST /api/publish``; prints its id. Exit 1 when the daemon refused it or could not be reached,
    2 for a mistake on the command line."""
    import argparse
    import os
    import sys
    from pathlib import Path

    import httpx
    import orjson
    from dotenv import dotenv_values

    from trade_stream import config

    def fail(message: str, code: int) -> int:
        print(f"trade-stream publish: {message}", file=sys.stderr)
        return code

    parser = argparse.ArgumentParser(prog="trade-stream publish", description="Publish one event to an app "
                                     "channel through a running daemon (POST /api/publish).")
    parser.add_argument("--channel", required=True, help="strategies:<id>, app:<name>, ai-decisions, alerts or "
                        "agent-status")
    parser.add_argument("--event", required=True, help="the event name, e.g. strategy:update")
    parser.add_argument("--data", default="{}", help="the event's data, a JSON object (default {})")
    parser.add_argument("--user", action="append", dest="users", metavar="NAME",
                        help="address the event to this user only (repeat for several; default everyone on the "
                             "channel)")
    parser.add_argument("--url", help="the daemon (default http://127.0.0.1:TRADE_STREAM_PORT)")
    parser.add_argument("--key", help="the publish key (default TRADE_STREAM_PUBLISH_KEY)")
    parser.add_argument("--env-file", metavar="PATH", help=".env file to read (default .env in the working "
                        "directory, then the repo root)")
    args = parser.parse_args(argv)
    try:
        env_file = config.find_env_file(args.env_file, Path.cwd())
    except config.ConfigError as exc:
        return fail(str(exc), 2)
    merged = {**(dotenv_values(env_file) if env_file else {}), **os.environ}
    key = args.key or merged.get("TRADE_STREAM_PUBLISH_KEY") or ""
    if not key:
        return fail("no publish key: set TRADE_STREAM_PUBLISH_KEY (environment or .env) or pass --key", 2)
    try:
        data = orjson.loads(args.data)
    except orjson.JSONDecodeError:
        return fail(f"--data is not JSON: {args.data[:80]!r}", 2)
    url = args.url or f"http://127.0.0.1:{merged.get('TRADE_STREAM_PORT') or config.Config.port}"
    body: dict[str, object] = {"channel": args.channel, "event": args.event, "data": data}
    if args.users:
        body["users"] = args.users
    try:
        resp = httpx.post(url.rstrip("/") + PATH, content=orjson.dumps(body), timeout=10,
                          headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    except httpx.HTTPError as exc:
        return fail(f"cannot reach {url} ({type(exc).__name__}: {exc}); is the daemon running? (--url)", 1)
    try:
        answer = resp.json()
    except ValueError:
        answer = {}
    if resp.status_code != 200:
        message = answer.get("message") if isinstance(answer, dict) else None
        return fail(f"{resp.status_code} {message or resp.reason_phrase}", 1)
    print(answer["id"])
    return 0
