"""Small HTTP request bodies on the WebSocket port, which websockets alone cannot take.

websockets 17 parses only a request's head: ``Request.parse`` refuses any ``Content-Length`` other than 0
("unsupported request body") before ``process_request`` runs, and the connection is closed with no answer
(stack notes §1.1). The JSON API on the main port (``POST /api/notifications/trades/read``) needs a body.

``serve(create_connection=…)`` is websockets' documented hook for customising the connection class. This one
reads the first request's head itself; when it declares a small body, the body is read, kept as
``request_body``, and the head is passed on without its ``Content-Length`` line, so websockets sees a body-less
request and ``process_request`` finds the body on the connection. Everything after the first request (a
WebSocket's frames) goes straight through, untouched. A body over ``MAX_BODY`` is not read: ``body_error`` is
413 and the route answers that. Chunked bodies are not supported (websockets closes such a request, as before);
browsers and curl send ``Content-Length`` for a fixed body.
"""

from __future__ import annotations

import re
from typing import Any

from websockets.asyncio.server import ServerConnection

MAX_BODY = 64 * 1024
MAX_HEAD = 16 * 1024  # websockets refuses longer heads itself (431): pass such heads on untouched
LENGTH_RE = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)


class BodyConnection(ServerConnection):
    request_body: bytes | None = None  # the first request's body, when it had one
    body_error: int | None = None  # 413 (too large) or 400 (unreadable Content-Length)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head: bytearray | None = bytearray()  # None once the first request has been passed on
        self._discard = False

    def data_received(self, data: bytes) -> None:
        if self._head is None:
            if not self._discard:
                super().data_received(data)
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_HEAD:
                self._pass(bytes(self._head))
            return
        head, rest = bytes(self._head[:end + 4]), bytes(self._head[end + 4:])
        lengths = LENGTH_RE.findall(head)
        if not lengths:
            return self._pass(head + rest)
        values = {v.strip() for v in lengths}
        if len(values) != 1 or not next(iter(values)).isdigit():
            return self._strip(head, 400)
        size = int(next(iter(values)))
        if size == 0:
            return self._pass(head + rest)
        if size > MAX_BODY:
            return self._strip(head, 413)
        if len(rest) < size:
            return  # wait for the rest of the body
        self.request_body = rest[:size]
        self._strip(head, None)

    def eof_received(self) -> None:
        if self._head is not None and self._head:
            self._pass(bytes(self._head))  # an incomplete request: websockets answers it as it always has
        super().eof_received()

    def _pass(self, data: bytes) -> None:
        self._head = None
        super().data_received(data)

    def _strip(self, head: bytes, error: int | None) -> None:
        """Pass the head on without Content-Length; whatever else arrives on this connection is dropped (one
        response per connection: websockets half-closes after answering a plain HTTP request)."""
        self.body_error = error
        self._discard = True
        self._pass(LENGTH_RE.sub(b"", head))
