"""Alpaca's Broker API, simulated: partner credentials, many customer accounts, their orders and fills, account
status changes and activities, served as Alpaca serves them: Server-Sent Events with ULID cursors, plus the REST
activities endpoint a consumer polls when the event streams are down.

The books and the query rules are broker_ledger.py's; this module serves them. It runs its own small HTTP/1.1
server (h11), not the websockets server of ``server.py``: an SSE body is a
response that never ends, which websockets' ``process_request`` cannot stream.

The event streams follow Alpaca's query rules: ``since``/``until`` (RFC 3339 or a date) or
``since_id``/``until_id`` (ULIDs; ``since_ulid``/``until_ulid`` on the ``/v1`` account-status stream), since and
since_id exclusive, no history without a cursor, the stream ending with 200 at ``until``. Comments carry meaning:
``:heartbeat`` every ``heartbeat`` seconds, ``: you are reading too slowly, dropped N messages`` when a test asks
for a gap (the dropped events are skipped on that connection, as Alpaca skips them), ``: internal server error``
before a close. Faults for tests: ``cut_after`` (drop the next connection after N events, mid-replay),
``unavailable`` (503 on the SSE paths, for the polling fallback), ``cut_all``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import h11
import orjson

from .broker_ledger import STREAMS, BrokerLedger, past_until

ACTIVITIES_PATH = "/v1/accounts/activities"


@dataclass(eq=False)
class _Listener:
    stream: str
    queue: asyncio.Queue[bytes | None]
    until_id: str | None
    until: float | None
    sent: int = 0
    cut_after: int | None = None
    writer: asyncio.StreamWriter | None = None


class BrokerSim:
    """The Broker API: ``start()`` listens on its own port; the methods below drive it (control API)."""

    def __init__(self, key: str = "BROKER_KEY", secret: str = "BROKER_SECRET", accounts: int = 3,
                 seed: int | None = None, heartbeat: float = 10.0, host: str = "127.0.0.1", port: int = 0) -> None:
        self.key, self.secret = key, secret
        self.host, self.port = host, port
        self.heartbeat = heartbeat
        self.ledger = BrokerLedger(seed, self._on_event)
        #: The ledger's books, under the names callers read.
        self.accounts = self.ledger.accounts
        self.events = self.ledger.events
        self.activities = self.ledger.activities
        self._listeners: set[_Listener] = set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.unavailable = False  # SSE paths answer 503 (REST keeps working)
        self.connections: dict[str, int] = {s: 0 for s, _, _ in STREAMS.values()}
        self.requests: list[str] = []  # request targets, for tests
        self._cut_next: int | None = None
        self._slow_next: int = 0
        self.ledger.add_accounts(accounts)

    # -- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> BrokerSim:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        self.cut_all()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 1.0)
        self._server = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- control API -----------------------------------------------------------------------------------

    def add_accounts(self, n: int) -> list[str]:
        return self.ledger.add_accounts(n)

    def fill(self, account_id: str, symbol: str = "AAPL", qty: float | str = 1, price: float | str = 100.0,
             side: str = "buy", partial_of: float | str | None = None) -> dict[str, Any]:
        """A market order for the account: ``new`` then ``fill`` (or ``partial_fill`` when ``partial_of`` gives a
        larger order quantity); returns the fill event. Also booked as a FILL activity for the REST poll."""
        return self.ledger.fill(account_id, symbol, qty, price, side, partial_of)

    def fill_order(self, account_id: str, order: dict[str, Any], qty: Decimal, price: Decimal) -> dict[str, Any]:
        return self.ledger.fill_order(account_id, order, qty, price)

    def set_status(self, account_id: str, status: str) -> dict[str, Any]:
        return self.ledger.set_status(account_id, status)

    def dividend(self, account_id: str, symbol: str = "AAPL", per_share: float | str = "0.24",
                 qty: float | str = 10) -> dict[str, Any]:
        return self.ledger.dividend(account_id, symbol, per_share, qty)

    def split(self, account_id: str, symbol: str = "AAPL", ratio: int = 4, qty: float | str = 10) -> dict[str, Any]:
        return self.ledger.split(account_id, symbol, ratio, qty)

    def publish_raw(self, stream: str, event: dict[str, Any]) -> dict[str, Any]:
        """Send an event exactly as given (a broken or hostile upstream: any ``event_id``), live and in replays."""
        return self.ledger.publish_raw(stream, event)

    def slow_once(self, dropped: int = 3) -> None:
        """On the next live events of the trades stream: skip ``dropped`` of them on every connection, then say
        ``: you are reading too slowly, dropped N messages`` (what Alpaca sends a consumer that fell behind)."""
        self._slow_next = dropped

    def cut_after(self, n: int) -> None:
        """The next trades connection is dropped (no end, no comment) after sending ``n`` events."""
        self._cut_next = n

    def internal_error(self) -> None:
        for listener in list(self._listeners):
            listener.queue.put_nowait(b": internal server error\n\n")
            listener.queue.put_nowait(None)

    def cut_all(self) -> None:
        for listener in list(self._listeners):
            if listener.writer is not None:
                listener.writer.transport.abort()

    def listening(self, stream: str = "trades") -> int:
        return sum(1 for lst in self._listeners if lst.stream == stream)

    # -- HTTP ------------------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        conn = h11.Connection(h11.SERVER)
        try:
            request = None
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(8192)
                    if not data:
                        return
                    conn.receive_data(data)
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
            if request is None:
                return
            await self._serve(conn, request, writer)
        except (ConnectionError, h11.ProtocolError):
            pass
        except asyncio.CancelledError:
            # stop() cancels every handler (an event stream waits on its queue). A handler task that ends
            # cancelled makes asyncio's stream server log "Exception in callback ... CancelledError" (Python
            # 3.11), so at shutdown the cancel stops here; at any other time it goes on.
            if self._server is not None and self._server.is_serving():
                raise
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()

    def _reply(self, conn: h11.Connection, writer: asyncio.StreamWriter, status: int, body: Any) -> None:
        data = orjson.dumps(body)
        writer.write(conn.send(h11.Response(status_code=status, headers=[
            (b"Content-Type", b"application/json"), (b"Content-Length", str(len(data)).encode()),
            (b"Connection", b"close")])))
        writer.write(conn.send(h11.Data(data=data)))
        writer.write(conn.send(h11.EndOfMessage()))

    def _authorized(self, request: h11.Request) -> bool:
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in request.headers}
        auth = headers.get("authorization", "")
        if auth[:6].lower() != "basic ":
            return False
        try:
            key, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        except ValueError:
            return False
        return key == self.key and secret == self.secret

    async def _serve(self, conn: h11.Connection, request: h11.Request, writer: asyncio.StreamWriter) -> None:
        target = request.target.decode("latin-1")
        self.requests.append(target)
        parts = urlsplit(target)
        query = dict(parse_qsl(parts.query))
        if not self._authorized(request):
            return self._reply(conn, writer, 401, {"code": 40110000, "message": "request is not authorized"})
        if parts.path == ACTIVITIES_PATH:
            return self._reply(conn, writer, *self.ledger.rest_activities(query))
        if parts.path not in STREAMS:
            return self._reply(conn, writer, 404, {"code": 40410000, "message": "endpoint not found"})
        if self.unavailable:
            return self._reply(conn, writer, 503, {"code": 50300000, "message": "service unavailable"})
        stream, since_name, until_name = STREAMS[parts.path]
        try:
            history, until_id, until = self.ledger.select(stream, query, since_name, until_name)
        except ValueError as exc:
            return self._reply(conn, writer, 400, {"code": 40010000, "message": str(exc)})
        await self._stream(conn, writer, stream, history, until_id, until)

    async def _stream(self, conn: h11.Connection, writer: asyncio.StreamWriter, stream: str,
                      history: list[dict[str, Any]] | None, until_id: str | None, until: float | None) -> None:
        self.connections[stream] += 1
        writer.write(conn.send(h11.Response(status_code=200, headers=[
            (b"Content-Type", b"text/event-stream"), (b"Cache-Control", b"no-cache"),
            (b"Transfer-Encoding", b"chunked")])))
        listener = _Listener(stream, asyncio.Queue(), until_id, until, writer=writer)
        if stream == "trades" and self._cut_next is not None:
            listener.cut_after, self._cut_next = self._cut_next, None
        ended = False
        for event in history or ():
            if past_until(event, until_id, until):
                ended = True
                break
            if not self._write(conn, writer, listener, b"data: " + orjson.dumps(event) + b"\n\n"):
                return
        if ended or (until is not None and until <= time.time()) or (
                until_id is not None and history and any(e["event_id"] >= until_id for e in history)):
            writer.write(conn.send(h11.EndOfMessage()))
            return
        self._listeners.add(listener)
        try:
            await writer.drain()
            while True:
                timeout = self.heartbeat
                if until is not None:
                    timeout = min(timeout, max(0.0, until - time.time()))
                try:
                    frame = await asyncio.wait_for(listener.queue.get(), timeout)
                except TimeoutError:
                    if until is not None and time.time() >= until:
                        break
                    frame = b":heartbeat\n\n"
                if frame is None:
                    break
                if stream == "trades" and self._slow_next and frame.startswith(b"data:"):
                    self._skip(listener)
                    continue
                if not self._write(conn, writer, listener, frame):
                    return
                await writer.drain()
            writer.write(conn.send(h11.EndOfMessage()))
        finally:
            self._listeners.discard(listener)

    def _skip(self, listener: _Listener) -> None:
        """Drop this frame and the next ones until ``_slow_next`` are dropped, then say so."""
        dropped = 1
        while dropped < self._slow_next and not listener.queue.empty():
            nxt = listener.queue.get_nowait()
            if nxt is None:
                break
            dropped += 1
        self._slow_next = 0
        listener.queue.put_nowait(f": you are reading too slowly, dropped {dropped} messages\n\n".encode())

    def _write(self, conn: h11.Connection, writer: asyncio.StreamWriter, listener: _Listener, frame: bytes) -> bool:
        if writer.is_closing():
            return False
        writer.write(conn.send(h11.Data(data=frame)))
        if frame.startswith(b"data:"):
            listener.sent += 1
            if listener.cut_after is not None and listener.sent >= listener.cut_after:
                writer.transport.abort()
                return False
        return True

    def accounts_list(self) -> Iterable[str]:
        return list(self.accounts)

    def _on_event(self, stream: str, event: dict[str, Any]) -> None:
        """Hand a newly booked event to this stream's live listeners (None ends a listener past its until)."""
        frame = b"data: " + orjson.dumps(event) + b"\n\n"
        for listener in list(self._listeners):
            if listener.stream == stream:
                listener.queue.put_nowait(None if past_until(event, listener.until_id, listener.until) else frame)
