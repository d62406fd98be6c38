"""``POST /api/stream/test``: a ``test`` event on every open stream of this node, so an operator (or an app's
health check) sees the whole path to the browsers work, on the main port and on the SSE side-port.

Only whoever may publish may send it: the publish key or an admin user, checked by the publish API's one
credential check (``authorize``). Every SSE stream of the side-port gets ``event: test`` with
``{"message","timestamp"}`` and no id (it is no source's event, so no client's Last-Event-ID moves), every
browser WebSocket client ``{"type":"test","message","timestamp"}``. The answer counts them:
``{"sent": n, "sse": n, "websocket": n}``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from trade_stream.core.event_ids import rfc3339_now
from trade_stream.edges.http.request import Request
from trade_stream.edges.http.responses import Response, error, json, preflight, response

PATH = "/api/stream/test"
PREFLIGHT = preflight("POST, OPTIONS", "Content-Type, Authorization")
MESSAGE = "test event from POST /api/stream/test"


class StreamTest:
    def __init__(self, authorize: Callable[[Request, dict[str, str]], Response | None],
                 sse: Callable[[str, str], int] | None, browsers: Callable[[], Iterable[Any]],
                 cors: Callable[[Request], dict[str, str]]) -> None:
        """``sse``: the side-port's ``send_test`` (None: no side-port); ``browsers``: the open WebSocket
        clients (each with ``send_message``)."""
        self.authorize = authorize
        self.sse = sse
        self.browsers = browsers
        self.cors = cors

    def __call__(self, request: Request) -> Response:
        headers = self.cors(request)
        if request.method == "OPTIONS":
            return response(204, b"", "text/plain", {**headers, **PREFLIGHT})
        if request.method != "POST":
            return error(405, f"{request.method} is not supported here: POST to send a test event",
                         {**headers, "Allow": "POST, OPTIONS"})
        refused = self.authorize(request, headers)
        if refused is not None:
            return refused
        timestamp = rfc3339_now()
        sse = self.sse(MESSAGE, timestamp) if self.sse is not None else 0
        msg = {"type": "test", "message": MESSAGE, "timestamp": timestamp}
        websocket = sum(1 for client in list(self.browsers()) if client.send_message(msg))
        return json(200, {"sent": sse + websocket, "sse": sse, "websocket": websocket}, headers)
