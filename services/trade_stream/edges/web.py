"""Plain HTTP on the WebSocket port: one declared route table, the static page behind it.

websockets' ``process_request`` allows one response per connection, which is all these routes need. The gate
(ws_server.py) turns websockets' request into the shared ``Request``; ``Web`` routes it and returns the shared
``Response`` (or an awaitable of one, for a route that calls out), which ``to_websockets`` writes in websockets'
framing with the headers every answer on this port carries.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Awaitable, Iterable
from pathlib import Path
from urllib.parse import urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Request as WsRequest
from websockets.http11 import Response as WsResponse

from trade_stream.edges.http.request import Request, query_of
from trade_stream.edges.http.responses import Response, error, response
from trade_stream.edges.http.routes import GET, Route, Router

TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml", ".json": "application/json"}


def request_of(raw: WsRequest, ip: str, method: str = "GET", body: bytes | None = None,
               body_error: int | None = None) -> Request:
    """The shared request from websockets' (which knows only the target: its ``path`` carries the query)."""
    return Request(method, raw.path.split("?", 1)[0], raw.headers, query_of(urlsplit(raw.path).query), ip, body,
                   body_error)


def to_websockets(resp: Response, head: bool = False) -> WsResponse:
    """websockets' response: Content-Type and -Length, no caching, one response per connection; no body for
    HEAD (the length stays that of the GET)."""
    headers = Headers([("Content-Type", resp.content_type or "text/plain"),
                       ("Content-Length", str(len(resp.body))), ("Cache-Control", "no-cache"),
                       ("Connection", "close")])
    for k, v in resp.headers.items():
        headers[k] = v
    return WsResponse(resp.status, resp.reason, headers, b"" if head else resp.body)


class StaticFiles:
    """Serves files under ``root``; ``/`` is index.html. Never escapes ``root``."""

    def __init__(self, root: str) -> None:
        self.root = Path(root).resolve()

    def get(self, path: str) -> Response | None:
        rel = path.lstrip("/") or "index.html"
        try:
            target = (self.root / rel).resolve()
            if not target.is_relative_to(self.root) or not target.is_file():
                return None
        except (OSError, ValueError):  # e.g. a NUL byte, or a name too long for the file system
            return None
        ctype = TYPES.get(target.suffix) or mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        return response(200, target.read_bytes(), ctype)


class Web:
    """Routes a request: a route taking every method first (it answers its own 405s), then GET/HEAD routes,
    then static files, then 404."""

    def __init__(self, static: StaticFiles, routes: Iterable[Route]) -> None:
        self.static = static
        self.router = Router(routes)

    def handle(self, request: Request) -> Response | Awaitable[Response]:
        path, method = request.path, request.method
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in path):
            return error(400, "control characters are not allowed in a path")
        route = self.router.find(path)
        if route is not None and route.methods is None:
            return route.handler(request)
        allowed = route.methods if route is not None and route.methods is not None else GET
        if method not in allowed:
            return error(405, f"{method} is not supported here", {"Allow": ", ".join(allowed)})
        if route is not None:
            return route.handler(request)
        if path.startswith("/api/"):
            return error(404, f"no such endpoint {path}")
        found = self.static.get(path)
        return found if found is not None else error(404, f"not found: {path}")
