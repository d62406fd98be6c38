"""Events over SSE from the journals, on the SSE side-port: Alpaca's own events API, and the per-user Broker stream.

``GET /v2/events/trades`` (and ``/v1/events/accounts/status``, ``/v2beta1/events/activities`` in Broker API mode)
speak Alpaca's events API, so a client written for it (httpx-sse, the Go SDK's ``StreamTradeUpdates``) reads
trade-stream unchanged: each event a ``data:`` line of Alpaca's JSON with a ULID ``event_id`` and ``at``;
``since``/``until`` (RFC 3339 or a date) or ``since_id``/``until_id`` (ULIDs; ``since_ulid``/``until_ulid`` on
``/v1``), since and since_id exclusive and not together, ``since_X`` required with ``until_X``, no history without a
cursor (live only), the response ending with 200 once ``until`` is reached; ``:heartbeat`` comments while quiet.
Credentials: HTTP Basic with any key id and the user's token as the secret, or the Go SDK's
``APCA-API-KEY-ID``/``APCA-API-SECRET-KEY`` headers (the secret is the token), or ``Authorization: Bearer``;
without a valid one, 401 with Alpaca's error body. The events are those of the user's accounts only: in Broker
API mode the Broker journal (core/broker.py), in trading-API mode each account's order journal (``account_id``
is then the account's name).

``GET /api/stream/broker`` is the browser-friendly stream of Broker mode: ``order:update``, ``account:status``,
``activity:new`` for the user's accounts, ``id: <epoch>-<n>`` of the Broker journal, ``Last-Event-ID`` replay.

Both are stream kinds like the side-port's others (streams.py); ``EventsApi`` holds what they share: the
credential rule of Alpaca's clients, the live streams, and the fan-out from the journals.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import partial
from typing import Any

import orjson

from trade_stream.core import event_ids
from trade_stream.core.accounts import Accounts
from trade_stream.core.broker import BrokerEntry, BrokerEvents
from trade_stream.core.journal import Entry
from trade_stream.core.orders import AuthThrottled, alpaca_fields
from trade_stream.core.users import User
from trade_stream.edges.http.request import Request
from trade_stream.edges.http.responses import Response, json
from trade_stream.edges.http.routes import Route
from trade_stream.edges.sse.channel import STREAM_HEADERS, Channel, Shared
from trade_stream.edges.sse.client import SseClient
from trade_stream.edges.sse.codecs import SseCodec
from trade_stream.edges.sse.streams import Seated, Stream, admit

#: path -> (stream, since-id parameter, until-id parameter)
ALPACA_PATHS: dict[str, tuple[str, str, str]] = {
    "/v2/events/trades": ("trades", "since_id", "until_id"),
    "/v1/events/accounts/status": ("accounts", "since_ulid", "until_ulid"),
    "/v2beta1/events/activities": ("activities", "since_id", "until_id"),
    "/v1/events/nta": ("nta", "since_ulid", "until_ulid"),
}
BROKER_PATH = "/api/stream/broker"
SSE_NAMES = {"trades": "order:update", "accounts": "account:status", "activities": "activity:new",
             "nta": "activity:new"}
UNAUTHORIZED = {"code": 40110000, "message": "request is not authorized"}
HISTORY_LIMIT = 100_000


def parse_time(raw: str) -> float:
    if len(raw) == 10:
        return datetime.combine(date.fromisoformat(raw), datetime.min.time(), UTC).timestamp()
    text = raw.replace("Z", "+00:00")
    if "." in text:
        head, _, rest = text.partition(".")
        digits = rest[:len(rest) - len(rest.lstrip("0123456789"))]
        text = f"{head}.{digits[:6]}{rest[len(digits):]}"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError("needs a time zone (Z or +hh:mm)")
    return parsed.timestamp()


class Window:
    """The query rules of Alpaca's events API, checked once; ``wants``/``past`` test one event."""

    def __init__(self, query: dict[str, str], since_name: str, until_name: str) -> None:
        self.since_id, self.until_id = query.get(since_name) or None, query.get(until_name) or None
        try:
            self.since = parse_time(query["since"]) if query.get("since") else None
            self.until = parse_time(query["until"]) if query.get("until") else None
        except ValueError as exc:
            raise ValueError(f"since/until must be RFC 3339 or a date (YYYY-MM-DD): {exc}") from None
        if self.since is not None and self.since_id is not None:
            raise ValueError(f"since and {since_name} can't be used at the same time")
        if self.until is not None and self.since is None:
            raise ValueError("since required if until specified")
        if self.until_id is not None and self.since_id is None:
            raise ValueError(f"{since_name} required if {until_name} specified")

    @property
    def history(self) -> bool:
        return self.since is not None or self.since_id is not None

    def wants(self, data: dict[str, Any]) -> bool:
        if self.since_id is not None:
            return str(data.get("event_id") or "") > self.since_id
        if self.since is not None:
            return _at(data) > self.since
        return True

    def past(self, data: dict[str, Any]) -> bool:
        if self.until_id is not None and str(data.get("event_id") or "") > self.until_id:
            return True
        return self.until is not None and _at(data) > self.until

    def ended(self) -> bool:
        return self.until is not None and time.time() >= self.until


def _at(data: dict[str, Any]) -> float:
    try:
        return parse_time(str(data.get("at") or data.get("timestamp")))
    except ValueError:
        return 0.0


@dataclass(eq=False)
class EventsState(Seated):
    stream: str  # "trades", "accounts", "activities", "nta", or "broker"
    window: Window | None = None  # the Alpaca paths only


class EventsApi:
    """What the events streams share, and their routes (which paths exist depends on Broker mode)."""

    def __init__(self, accounts: Accounts | None, broker: BrokerEvents | None, shared: Shared,
                 codec: SseCodec) -> None:
        self.accounts = accounts
        self.broker = broker
        self.shared = shared
        self.codec = codec
        self.live: dict[SseClient, tuple[str, User, Window | None]] = {}  # client -> stream, user, window
        self.paths = {p for p, (s, _, _) in ALPACA_PATHS.items() if broker is not None or s == "trades"}
        self.alpaca = AlpacaEventsStream(self)
        self.broker_stream = BrokerEventsStream(self) if broker is not None else None
        if broker is not None:
            self.paths.add(BROKER_PATH)

    def routes(self) -> list[Route]:
        out = [Route(path, self.alpaca, methods=("GET",)) for path in sorted(self.paths - {BROKER_PATH})]
        if self.broker_stream is not None:
            out.append(Route(BROKER_PATH, self.broker_stream, methods=("GET",)))
        return out

    # --- credentials --------------------------------------------------------------------------------------

    def user(self, request: Request) -> User | Response:
        """HTTP Basic (the secret is the token), the Go SDK's headers, or Bearer; else Alpaca's 401 (or 429)."""
        found = self._user(request)
        if isinstance(found, AuthThrottled):
            return json(429, {"code": 42910000, "message": found.message},
                        {"Retry-After": str(found.retry_after)})
        if found is None:
            return json(401, UNAUTHORIZED, {"WWW-Authenticate": 'Basic realm="trade-stream"'})
        return found

    def _user(self, request: Request) -> User | AuthThrottled | None:
        accounts = self.accounts
        if accounts is None:
            return None
        h = request.headers
        auth = h.get("authorization", "")
        token = ""
        if auth[:6].lower() == "basic ":
            try:
                token = base64.b64decode(auth[6:]).decode("utf-8").partition(":")[2]
            except ValueError:
                token = ""
        elif auth[:7].lower() == "bearer ":
            token = auth[7:]
        else:
            token = h.get("apca-api-secret-key", "")
        if not token:
            return None
        found = accounts.identity.resolve(token, request.ip)
        if isinstance(found, AuthThrottled | User):
            return found
        return None

    def admit(self, state: EventsState, request: Request) -> Response | None:
        assert self.accounts is not None  # a user was found
        kind = state.stream if state.stream == "broker" else f"events-{state.stream}"  # as the stream's kind
        return admit(self.accounts.identity, state, request, kind)

    def release(self, client: SseClient, state: EventsState) -> None:
        self.live.pop(client, None)
        client.finish()
        assert self.accounts is not None
        self.accounts.identity.sessions.release(state.user.name, state)

    def history(self, stream: str, user: User, window: Window) -> list[dict[str, Any]]:
        if self.broker is not None:
            db = self.broker.journal.db
            sql = "SELECT payload FROM events WHERE stream = ?"
            args: list[Any] = [stream]
            if window.since_id is not None:
                sql += " AND event_id > ?"
                args.append(window.since_id)
            if user.accounts is not None:
                sql += f" AND account_id IN ({','.join('?' * len(user.accounts))})"
                args += sorted(user.accounts)
            rows = db.execute(sql + " ORDER BY event_id LIMIT ?", (*args, HISTORY_LIMIT)).fetchall()
            return [d for d in (orjson.loads(r[0]) for r in rows) if window.wants(d)]
        out: list[dict[str, Any]] = []
        for orders in self.accounts or ():
            if not user.sees(orders.account) or orders.journal is None:
                continue
            out += [d for d in (trade_event(e, orders.account) for e in orders.journal.since(0, HISTORY_LIMIT))
                    if window.wants(d)]
        return sorted(out, key=lambda d: str(d.get("event_id") or ""))

    async def pump(self, channel: Channel, client: SseClient, window: Window | None,
                   expires_at: float | None) -> None:
        """Heartbeats while quiet (Alpaca's ``:heartbeat``), the end at ``until``, the end of a JWT."""
        every = self.shared.cfg.sse_keepalive
        while not client.closed:
            wait = every - (time.monotonic() - client.last_write)
            if window is not None and window.until is not None:
                wait = min(wait, window.until - time.time())
                if window.ended():
                    client.end()
                    return
            if expires_at is not None and time.time() >= expires_at:
                client.end()
                return
            if wait <= 0:
                client.write(b":heartbeat\n\n")
                continue
            if not await channel.wait_read(max(0.01, wait)):
                return

    # --- the fan-out from the journals (subscribed by the server) ------------------------------------------

    def _deliver(self, stream: str, account: str, data: dict[str, Any], sse_event: Callable[[], bytes]) -> None:
        frame: bytes | None = None
        for client, (s, user, window) in list(self.live.items()):
            if s != stream and s != "broker":
                continue
            if not user.sees(account):
                continue
            if s == "broker":
                client.write(sse_event(), 1)
                continue
            assert window is not None
            if window.past(data):
                client.end()
                continue
            frame = frame or _data(data)
            client.write(frame, 1)

    def on_broker(self, entries: list[BrokerEntry]) -> None:
        broker = self.broker
        assert broker is not None
        for entry in entries:
            self._deliver(entry.stream, entry.account_id, entry.data, partial(_broker_event, broker, entry))

    def on_order(self, entry: Entry, account: str) -> None:
        data = trade_event(entry, account)
        self._deliver("trades", account, data, lambda: b"")


class AlpacaEventsStream(Stream[EventsState]):
    """Alpaca's events API: the history the window asks for, then live until ``until``; no ``connected``
    event, no gzip, Alpaca's heartbeats."""

    def __init__(self, api: EventsApi) -> None:
        self.api = api

    def accept(self, request: Request) -> Response | EventsState:
        user = self.api.user(request)
        if isinstance(user, Response):
            return user
        stream, since_name, until_name = ALPACA_PATHS[request.path]
        try:
            window = Window(request.query, since_name, until_name)
        except ValueError as exc:
            return json(400, {"code": 40010000, "message": str(exc)})
        state = EventsState(user, stream, window)
        refused = self.api.admit(state, request)
        return refused if refused is not None else state

    def warning(self, message: str) -> bytes:
        """A comment: Alpaca's clients read every ``data:`` line as one of Alpaca's events, and skip comments."""
        return f": warning connection_limit {message}\n\n".encode()

    def open(self, channel: Channel, state: EventsState) -> SseClient:
        return channel.start(self.api.codec, f"events-{state.stream}",
                             [(b"Content-Type", b"text/event-stream"), *STREAM_HEADERS[1:]])

    async def hold(self, channel: Channel, client: SseClient, state: EventsState) -> bool:
        window = state.window
        assert window is not None
        done = False
        events: list[dict[str, Any]] = []
        if window.history:
            events = self.api.history(state.stream, state.user, window)
            for data in events:
                if window.past(data):
                    done = True
                    break
                client.write(_data(data), 1)
        if done or window.ended() or (window.until_id is not None and any(
                str(e.get("event_id")) >= window.until_id for e in events)):
            client.end()
            return False
        self.api.live[client] = (state.stream, state.user, window)  # no await since the history read: no gap
        return True

    async def pump(self, channel: Channel, client: SseClient, state: EventsState) -> None:
        await self.api.pump(channel, client, state.window, state.user.expires_at)

    def release(self, client: SseClient, state: EventsState) -> None:
        self.api.release(client, state)


class BrokerEventsStream(Stream[EventsState]):
    """/api/stream/broker: the Broker journal's events of the user's accounts, ``Last-Event-ID`` replay."""

    kind = "broker"

    def __init__(self, api: EventsApi) -> None:
        self.api = api

    def accept(self, request: Request) -> Response | EventsState:
        user = self.api.user(request)
        if isinstance(user, Response):
            return user
        state = EventsState(user, "broker")
        refused = self.api.admit(state, request)
        return refused if refused is not None else state

    def open(self, channel: Channel, state: EventsState) -> SseClient:
        return channel.open(self.api.codec, self.kind, state.user.name)

    async def hold(self, channel: Channel, client: SseClient, state: EventsState) -> bool:
        broker, request = self.api.broker, channel.request
        assert broker is not None
        last = event_ids.parse(request.headers.get("last-event-id") or request.query.get("lastEventId"))
        if last is not None:
            if last.known and last.epoch in (None, broker.epoch):
                after = last.n
                while True:
                    page = broker.journal.since(after, state.user.accounts, 5000)
                    if page:
                        client.write(b"".join(_broker_event(broker, e) for e in page), len(page))
                        after = page[-1].id
                    if len(page) < 5000:
                        break
            else:
                client.write(_event("reset", {"reason": "unknown event id; refetch state",
                                              "epoch": broker.epoch}))
        self.api.live[client] = ("broker", state.user, None)
        return True

    async def pump(self, channel: Channel, client: SseClient, state: EventsState) -> None:
        await self.api.pump(channel, client, None, state.user.expires_at)

    def release(self, client: SseClient, state: EventsState) -> None:
        self.api.release(client, state)


def trade_event(entry: Entry, account: str) -> dict[str, Any]:
    """A trading-API journal entry in the events API's shape: ``account_id`` is the relay's account name."""
    data = alpaca_fields(entry.data)
    return {"account_id": account, **data}


def _data(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def _event(name: str, data: dict[str, Any], event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {name}\n".encode() + b"data: " + orjson.dumps(data) + b"\n\n"


def _broker_event(broker: BrokerEvents, entry: BrokerEntry) -> bytes:
    return _event(SSE_NAMES[entry.stream], broker.message(entry), event_ids.cursor(broker.epoch, entry.id))
