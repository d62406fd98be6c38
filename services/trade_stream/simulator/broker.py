"""Alpaca's Broker API, simulated: partner credentials, many customer accounts, their orders and fills, account
status changes and activities, served as Alpaca serves them: Server-Sent Events with ULID cursors, plus the REST
activities endpoint a consumer polls when the event streams are down.

It runs its own small HTTP/1.1 server (h11), not the websockets server of ``server.py``: an SSE body is a
response that never ends, which websockets' ``process_request`` cannot stream.

The event streams follow Alpaca's query rules (protocol notes §6): ``since``/``until`` (RFC 3339 or a date) or
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
import random
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import h11
import orjson

from .market import format_ts
from .orders import Ulids, dstr

#: path -> (stream name, ULID cursor parameter names)
STREAMS: dict[str, tuple[str, str, str]] = {
    "/v2/events/trades": ("trades", "since_id", "until_id"),
    "/v1/events/accounts/status": ("accounts", "since_ulid", "until_ulid"),
    "/v2beta1/events/activities": ("activities", "since_id", "until_id"),
    "/v1/events/nta": ("nta", "since_ulid", "until_ulid"),  # legacy non-trade activities: the same bookings
}
ACTIVITIES_PATH = "/v1/accounts/activities"


def parse_time(raw: str) -> float:
    """RFC 3339 or a date (``2024-01-31``: its midnight UTC), as epoch seconds; ValueError otherwise."""
    if len(raw) == 10:
        return datetime.combine(date.fromisoformat(raw), datetime.min.time(), UTC).timestamp()
    text = raw.replace("Z", "+00:00")
    if "." in text:  # at most microseconds for Python
        head, _, rest = text.partition(".")
        digits = rest[:len(rest) - len(rest.lstrip("0123456789"))]
        text = f"{head}.{digits[:6]}{rest[len(digits):]}"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError("needs a time zone")
    return parsed.timestamp()


@dataclass(eq=False)
class _Listener:
    stream: str
    queue: asyncio.Queue[bytes | None]
    until_id: str | None
    until: float | None
    sent: int = 0
    cut_after: int | None = None
    writer: asyncio.StreamWriter | None = None


@dataclass
class BrokerAccount:
    id: str
    number: str
    status: str = "ACTIVE"
    positions: dict[str, Decimal] = field(default_factory=dict)


class BrokerSim:
    """The Broker API: ``start()`` listens on its own port; the methods below drive it (control API)."""

    def __init__(self, key: str = "BROKER_KEY", secret: str = "BROKER_SECRET", accounts: int = 3,
                 seed: int | None = None, heartbeat: float = 10.0, host: str = "127.0.0.1", port: int = 0) -> None:
        self.key, self.secret = key, secret
        self.host, self.port = host, port
        self.heartbeat = heartbeat
        self._rng = random.Random(seed)
        self._ulids = Ulids(self._rng)
        self.accounts: dict[str, BrokerAccount] = {}
        self.events: dict[str, list[dict[str, Any]]] = {s: [] for s, _, _ in STREAMS.values()}
        self.activities: list[dict[str, Any]] = []  # the REST view: fills and non-trade activities
        self._listeners: set[_Listener] = set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.unavailable = False  # SSE paths answer 503 (REST keeps working)
        self.connections: dict[str, int] = {s: 0 for s, _, _ in STREAMS.values()}
        self.requests: list[str] = []  # request targets, for tests
        self._cut_next: int | None = None
        self._slow_next: int = 0
        self.add_accounts(accounts)

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
        ids = []
        for _ in range(n):
            acct = BrokerAccount(str(uuid.UUID(int=self._rng.getrandbits(128), version=4)),
                                 f"{900000000 + len(self.accounts)}")
            self.accounts[acct.id] = acct
            ids.append(acct.id)
        return ids

    def _stamp(self) -> tuple[str, str]:
        ns = time.time_ns()
        return format_ts(ns), self._ulids.next(ns)

    def _publish(self, stream: str, event: dict[str, Any]) -> dict[str, Any]:
        self.events[stream].append(event)
        frame = b"data: " + orjson.dumps(event) + b"\n\n"
        for listener in list(self._listeners):
            if listener.stream == stream:
                listener.queue.put_nowait(frame if not self._past_until(listener, event) else None)
        return event

    @staticmethod
    def _past_until(listener: _Listener, event: dict[str, Any]) -> bool:
        if listener.until_id is not None and event["event_id"] > listener.until_id:
            return True
        return listener.until is not None and parse_time(event["at"]) > listener.until

    def fill(self, account_id: str, symbol: str = "AAPL", qty: float | str = 1, price: float | str = 100.0,
             side: str = "buy", partial_of: float | str | None = None) -> dict[str, Any]:
        """A market order for the account: ``new`` then ``fill`` (or ``partial_fill`` when ``partial_of`` gives a
        larger order quantity); returns the fill event. Also booked as a FILL activity for the REST poll."""
        if account_id not in self.accounts:
            raise ValueError(f"unknown account {account_id}")
        q, p = Decimal(str(qty)), Decimal(str(price))
        total = Decimal(str(partial_of)) if partial_of is not None else q
        at, _ = self._stamp()
        order = {"id": str(uuid.UUID(int=self._rng.getrandbits(128), version=4)), "client_order_id": uuid.uuid4().hex,
                 "symbol": symbol, "side": side, "qty": dstr(total), "type": "market", "time_in_force": "day",
                 "status": "new", "filled_qty": "0", "filled_avg_price": None, "created_at": at, "updated_at": at,
                 "submitted_at": at, "asset_class": "us_equity"}
        at, eid = self._stamp()
        self._publish("trades", {"account_id": account_id, "at": at, "event": "new", "event_id": eid,
                                 "timestamp": at, "order": dict(order)})
        return self.fill_order(account_id, order, q, p)

    def fill_order(self, account_id: str, order: dict[str, Any], qty: Decimal, price: Decimal) -> dict[str, Any]:
        acct = self.accounts[account_id]
        signed = qty if order["side"] == "buy" else -qty
        acct.positions[order["symbol"]] = acct.positions.get(order["symbol"], Decimal(0)) + signed
        filled = Decimal(order["filled_qty"]) + qty
        done = filled >= Decimal(order["qty"])
        at, eid = self._stamp()
        order.update(filled_qty=dstr(filled), filled_avg_price=dstr(price), updated_at=at,
                     status="filled" if done else "partially_filled", **({"filled_at": at} if done else {}))
        execution = str(uuid.uuid4())
        event = {"account_id": account_id, "at": at, "event": "fill" if done else "partial_fill", "event_id": eid,
                 "execution_id": execution, "order": dict(order), "price": dstr(price), "qty": dstr(qty),
                 "position_qty": dstr(acct.positions[order["symbol"]]), "timestamp": at}
        self.activities.append({
            "id": f"{at[:10].replace('-', '')}000000000::{execution}", "account_id": account_id,
            "activity_type": "FILL", "transaction_time": at, "type": event["event"], "price": dstr(price),
            "qty": dstr(qty), "side": order["side"], "symbol": order["symbol"],
            "leaves_qty": dstr(Decimal(order["qty"]) - filled), "order_id": order["id"], "cum_qty": dstr(filled),
            "order_status": order["status"]})
        return self._publish("trades", event)

    def set_status(self, account_id: str, status: str) -> dict[str, Any]:
        acct = self.accounts[account_id]
        at, eid = self._stamp()
        event = {"account_id": account_id, "account_number": acct.number, "at": at, "event_id": eid,
                 "kyc_results": None, "status_from": acct.status, "status_to": status}
        acct.status = status
        return self._publish("accounts", event)

    def dividend(self, account_id: str, symbol: str = "AAPL", per_share: float | str = "0.24",
                 qty: float | str = 10) -> dict[str, Any]:
        per, q = Decimal(str(per_share)), Decimal(str(qty))
        return self._activity(account_id, "DIV", symbol=symbol, qty=dstr(q), per_share_amount=dstr(per),
                              net_amount=dstr(per * q), description="Cash DIV @ " + dstr(per))

    def split(self, account_id: str, symbol: str = "AAPL", ratio: int = 4, qty: float | str = 10) -> dict[str, Any]:
        q = Decimal(str(qty))
        return self._activity(account_id, "SPLIT", symbol=symbol, qty=dstr(q * (ratio - 1)), net_amount="0",
                              description=f"{ratio}:1 forward split")

    def _activity(self, account_id: str, kind: str, **fields: Any) -> dict[str, Any]:
        at, eid = self._stamp()
        activity = {"id": f"{at[:10].replace('-', '')}000000000::{uuid.uuid4()}", "account_id": account_id,
                    "activity_type": kind, "date": at[:10], "status": "executed", **fields}
        self.activities.append({**activity, "transaction_time": at})
        event = self._publish("activities", {**activity, "at": at, "event_id": eid})
        nta_at, nta_eid = self._stamp()  # the legacy stream numbers its events itself
        self._publish("nta", {**activity, "at": nta_at, "event_id": nta_eid})
        return event

    def publish_raw(self, stream: str, event: dict[str, Any]) -> dict[str, Any]:
        """Send an event exactly as given (a broken or hostile upstream: any ``event_id``), live and in replays."""
        return self._publish(stream, event)

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
            return self._reply(conn, writer, *self._rest_activities(query))
        if parts.path not in STREAMS:
            return self._reply(conn, writer, 404, {"code": 40410000, "message": "endpoint not found"})
        if self.unavailable:
            return self._reply(conn, writer, 503, {"code": 50300000, "message": "service unavailable"})
        stream, since_name, until_name = STREAMS[parts.path]
        try:
            history, until_id, until = self._select(stream, query, since_name, until_name)
        except ValueError as exc:
            return self._reply(conn, writer, 400, {"code": 40010000, "message": str(exc)})
        await self._stream(conn, writer, stream, history, until_id, until)

    def _select(self, stream: str, q: dict[str, str], since_name: str, until_name: str
                ) -> tuple[list[dict[str, Any]] | None, str | None, float | None]:
        since_id, until_id = q.get(since_name), q.get(until_name)
        since = parse_time(q["since"]) if q.get("since") else None
        until = parse_time(q["until"]) if q.get("until") else None
        if since is not None and since_id is not None:
            raise ValueError(f"since and {since_name} can't be used at the same time")
        if until is not None and since is None:
            raise ValueError("since required if until specified")
        if until_id is not None and since_id is None:
            raise ValueError(f"{since_name} required if {until_name} specified")
        events = self.events[stream]
        if since_id is not None:
            history = [e for e in events if e["event_id"] > since_id]
        elif since is not None:
            history = [e for e in events if parse_time(e["at"]) > since]
        else:
            return None, until_id, until
        return history, until_id, until

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
            if self._past_until(listener, event):
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

    def _rest_activities(self, q: dict[str, str]) -> tuple[int, Any]:
        """``GET /v1/accounts/activities`` across all accounts: ``activity_types``, ``after`` (exclusive),
        ``direction=asc``, ``page_size`` (max 100), ``page_token`` (the last id of the previous page)."""
        kinds = set(q["activity_types"].split(",")) if q.get("activity_types") else None
        after = parse_time(q["after"]) if q.get("after") else None
        size = min(100, int(q.get("page_size", "100")))
        rows = [a for a in self.activities if (kinds is None or a["activity_type"] in kinds)
                and (after is None or parse_time(a["transaction_time"]) > after)]
        token = q.get("page_token")
        if token:
            ids = [a["id"] for a in rows]
            rows = rows[ids.index(token) + 1:] if token in ids else []
        return 200, rows[:size]

    def accounts_list(self) -> Iterable[str]:
        return list(self.accounts)
