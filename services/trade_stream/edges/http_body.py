"""Small HTTP request bodies on the WebSocket port, which websockets alone cannot take.

websockets 17 parses only a request's head: ``Request.parse`` refuses any ``Content-Length`` other than 0
("unsupported request body") before ``process_request`` runs, and the connection is closed with no answer. The
JSON API on the main port (``POST /api/notifications/trades/read``) needs a body.

``serve(create_connection=…)`` is websockets' documented hook for customising the connection class. This one
reads the first request's head itself; when it declares a small body, the body is read, kept as
``request_body``, and the head is passed on without its ``Content-Length`` line, so websockets sees a body-less
request and ``process_request`` finds the body on the connection. Everything after the first request (a
WebSocket's frames) goes straight through, untouched. A body over ``max_body`` is not read: ``body_error`` is
413 and the route answers that. Browsers and curl send ``Content-Length`` for a fixed body.

websockets also closes the connection without a word when it cannot parse a request head (a control character
in a header value, a line that is not ``Name: value``, a chunked body). Such a head is checked here with
websockets' own parser first and answered 400 (501 for a chunked body), so a client learns what it did wrong.
"""

from __future__ import annotations

import re
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import SecurityError
from websockets.http11 import Request
from websockets.streams import StreamReader

from trade_stream.edges.http.responses import error
from trade_stream.edges.web import to_websockets

MAX_BODY = 64 * 1024
MAX_HEAD = 16 * 1024  # websockets refuses longer heads itself (431): pass such heads on untouched
LENGTH_RE = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)


class BodyConnection(ServerConnection):
    max_body = MAX_BODY  # a server may take larger bodies (POST /api/publish): a subclass with its own
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
        refusal = unparsable(LENGTH_RE.sub(b"", head))
        if refusal is not None:
            return self._refuse(*refusal)
        lengths = LENGTH_RE.findall(head)
        if not lengths:
            return self._pass(head + rest)
        values = {v.strip() for v in lengths}
        if len(values) != 1 or not next(iter(values)).isdigit():
            return self._strip(head, 400)
        size = int(next(iter(values)))
        if size == 0:
            return self._pass(head + rest)
        if size > self.max_body:
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

    def _refuse(self, status: int, message: str) -> None:
        """Answer a head websockets would drop unanswered, and close; nothing of it reaches websockets."""
        self._head = None
        self._discard = True
        self.transport.write(to_websockets(error(status, message)).serialize())
        self.transport.close()


def unparsable(head: bytes) -> tuple[int, str] | None:
    """(status, message) when websockets cannot parse this request head (Content-Length already taken out);
    None when it can, or when it answers the problem itself (a line or head too long: 414, 431)."""
    reader = StreamReader()
    reader.feed_data(head)
    reader.feed_eof()
    try:
        next(Request.parse(reader.read_line))
    except StopIteration:
        return None
    except SecurityError:
        return None
    except NotImplementedError:
        return 501, "chunked request bodies are not supported: send Content-Length"
    except Exception:  # websockets' parser raises ValueError (and EOFError) for whatever is not HTTP/1.1
        return 400, ("malformed HTTP request: the request line or a header is not valid HTTP/1.1 (a header "
                     "must be Name: value, without control characters)")
    return None
