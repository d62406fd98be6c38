"""Plain HTTP on the WebSocket port: the static page, health, status, metrics (one response per connection, as
websockets' process_request allows; see stack notes §1.1)."""

from __future__ import annotations

import mimetypes
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

import orjson
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

Handler = Callable[[Request], Response | Awaitable[Response]]  # awaitable: the route calls out
PeerHandler = Callable[[Request, str], Response]  # also given the client's address (failed-auth throttling)
# Any method, with the request body (see http_body.py): (method, request, ip, body, body_error) -> a response,
# or None when the path is not its own.
ApiHandler = Callable[[str, Request, str, bytes | None, int | None], Response | None]
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml", ".json": "application/json"}


def response(status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-cache"), ("Connection", "close")])
    for k, v in (extra or {}).items():
        headers[k] = v
    return Response(status, HTTPStatus(status).phrase, headers, body)


def json_response(status: int, payload: Any, extra: dict[str, str] | None = None) -> Response:
    return response(status, orjson.dumps(payload), "application/json", extra)


def error(status: int, message: str, extra: dict[str, str] | None = None) -> Response:
    return json_response(status, {"error": HTTPStatus(status).phrase, "message": message}, extra)


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
    """Routes requests: API handlers (any method) first, then GET/HEAD exact paths, then static files, then 404."""

    def __init__(self, static: StaticFiles, routes: dict[str, Handler],
                 peer_routes: dict[str, PeerHandler] | None = None, api: list[ApiHandler] | None = None) -> None:
        self.static = static
        self.routes = routes
        self.peer_routes = peer_routes or {}
        self.api = api or []

    def handle(self, request: Request, ip: str = "?", method: str = "GET", body: bytes | None = None,
               body_error: int | None = None) -> Response | Awaitable[Response]:
        path = request.path.split("?", 1)[0]
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in path):
            return error(400, "control characters are not allowed in a path")
        for api in self.api:
            answer = api(method, request, ip, body, body_error)
            if answer is not None:
                return answer
        if method not in ("GET", "HEAD"):
            return error(405, f"{method} is not supported here", {"Allow": "GET, HEAD"})
        handler = self.routes.get(path)
        if handler is not None:
            return handler(request)
        peer_handler = self.peer_routes.get(path)
        if peer_handler is not None:
            return peer_handler(request, ip)
        if path.startswith("/api/"):
            return error(404, f"no such endpoint {path}")
        found = self.static.get(path)
        return found if found is not None else error(404, f"not found: {path}")
