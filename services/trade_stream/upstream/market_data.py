"""The one upstream market-data connection to Alpaca, on websockets' asyncio client.

Lifecycle per session: connect → ``connected`` greeting → auth → subscribe the hub's whole current set (chunked)
→ read loop. The reader never waits on a browser: it decodes a frame, hands the data to the router (which only
queues bytes on sockets) and goes back to reading. Failures map to a ``backoff.Failure`` and a wait.

The option streams speak msgpack only (``use_msgpack``): frames are decoded to the same dicts the JSON path
gives, msgpack Timestamps turned back into RFC-3339 strings, by a read loop of their own, so the JSON loop that
carries the stock and crypto load stays as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

from trade_stream.config import Timings
from trade_stream.core.hub import Change, Key, group
from trade_stream.core.stats import Stats
from trade_stream.core.upstream_state import LinkState, UpstreamState
from trade_stream.upstream.backoff import Backoff, Failure

log = logging.getLogger("trade_stream.upstream.market_data")

CONTROL = {"success", "error", "subscription"}
CHUNK_SYMBOLS = 2000  # symbols per subscribe message when resubscribing a large set
MAX_FRAME = 64 * 1024 * 1024  # news and batched frames can be large
REQUEST_ERRORS = {400, 405, 410, 413}  # errors that answer a subscribe/unsubscribe


class UpstreamError(Exception):
    def __init__(self, failure: Failure, code: int | None, message: str) -> None:
        super().__init__(message)
        self.failure = failure
        self.code = code


@dataclass
class Request:
    """A subscribe/unsubscribe sent upstream, waiting for Alpaca's reply (replies come back in order)."""

    action: str
    keys: list[Key]
    on_done: Callable[[bool, int | None, str], None] | None = None


class ReconnectingStream:
    """Connect, serve a session, back off, repeat, until stop(): the discipline both Alpaca streams share."""

    name = "stream"

    def __init__(self, *, url: str, timings: Timings, on_state: Callable[[UpstreamState], None],
                 backoff: Backoff | None = None, stats: Stats | None = None) -> None:
        self.url = url
        self.timings = timings
        self._on_state = on_state
        self.stats = stats or Stats()
        self.backoff = backoff or Backoff(timings)
        self.status = UpstreamState()
        self._ws: ClientConnection | None = None
        self._stopping = asyncio.Event()
        self._headers: dict[str, str] | None = None  # extra handshake headers (msgpack mode's Content-Type)

    @property
    def connected(self) -> bool:
        return self.status.state is LinkState.CONNECTED

    async def run(self) -> None:
        while not self._stopping.is_set():
            failure = Failure.NETWORK
            started = time.monotonic()
            try:
                await self._connect_and_serve()
            except UpstreamError as exc:
                failure = exc.failure
                state = LinkState.ERROR if failure is Failure.CONFIG else LinkState.DISCONNECTED
                self._set_state(state, str(exc), exc.code)
            except InvalidStatus as exc:
                status = exc.response.status_code
                failure = Failure.RATE_LIMITED if status == 429 else Failure.NETWORK
                self._set_state(LinkState.DISCONNECTED, f"handshake refused with HTTP {status}", status)
            except (OSError, TimeoutError, WebSocketException) as exc:
                self._set_state(LinkState.DISCONNECTED, f"{type(exc).__name__}: {exc}"[:200], None)
            except Exception as exc:  # a bug, or what we hand events to failed (e.g. the journal's disk is full)
                log.exception("upstream_session_failed stream=%s", self.name)
                self._count(self.stats.upstream_errors)
                self._set_state(LinkState.DISCONNECTED, f"{type(exc).__name__}: {exc}"[:200], None)
            finally:
                self._ws = None
                self._session_ended()
            if self._stopping.is_set():
                break
            if time.monotonic() - started > self.timings.reconnect_max:
                self.backoff.reset()
            delay = self.backoff.delay(failure)
            level = logging.ERROR if failure is Failure.CONFIG else logging.WARNING
            log.log(level, "upstream_retry stream=%s failure=%s delay=%.1fs error=%r", self.name, failure.value,
                    delay, self.status.error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
        self._set_state(LinkState.DISCONNECTED, None, None)

    def resume(self) -> None:
        """Allow run() again after stop(): an on-demand source (upstream/sources.py) closes and reopens the same
        stream, keeping its counters. Down time counts from now, not from the last close, for health."""
        self._stopping = asyncio.Event()
        self.status.down_since = time.monotonic()
        self._set_state(LinkState.CONNECTING, None, None)  # not the last session's end (a 409 then may not hold now)

    async def stop(self) -> None:
        """Close the socket properly so Alpaca frees the slot now rather than after its 90 s reaper."""
        self._stopping.set()
        ws = self._ws
        if ws is not None:
            try:
                await asyncio.wait_for(ws.close(1000, "relay shutting down"), self.timings.shutdown_grace)
            except (TimeoutError, OSError, WebSocketException):
                ws.transport.abort()

    def fence(self, reason: str) -> None:
        """Cut the session at once, without a closing handshake: this node may no longer hold the stream (its
        cluster lease is gone), and the next holder must never meet this session (a 406)."""
        ws = self._ws
        if ws is not None:
            ws.transport.abort()
            log.warning("upstream_fenced stream=%s reason=%s", self.name, reason)
        self._set_state(LinkState.DISCONNECTED, reason, None)

    async def _connect_and_serve(self) -> None:
        self._set_state(LinkState.CONNECTING, None, None)
        log.info("upstream_connecting stream=%s url=%s", self.name, self.url)
        async with connect(self.url, compression=None, max_size=MAX_FRAME, open_timeout=self.timings.open_timeout,
                           ping_interval=20, ping_timeout=20, close_timeout=self.timings.shutdown_grace,
                           user_agent_header="trade-stream", additional_headers=self._headers) as ws:
            self._ws = ws
            if not self._stopping.is_set():
                await self._session(ws)

    async def _session(self, ws: ClientConnection) -> None:
        raise NotImplementedError

    def _session_ended(self) -> None:
        """Hook: the socket is gone."""

    def _authenticated(self) -> None:
        self.status.reconnects += int(self.status.connected_once)
        self.status.connected_once = True
        self._set_state(LinkState.CONNECTED, None, None)
        log.info("upstream_authenticated stream=%s url=%s", self.name, self.url)

    def _set_state(self, state: LinkState, error: str | None, code: int | None) -> None:
        s = self.status
        if (s.state, s.error, s.error_code) == (state, error, code):
            return
        s.state, s.error, s.error_code, s.since = state, error, code, time.time()
        if state is LinkState.CONNECTED:
            s.down_since = None
        elif s.down_since is None:
            s.down_since = time.monotonic()
        try:
            self._on_state(s)
        except Exception:  # a listener's failure must not take the connection down with it
            log.exception("upstream_state_listener_failed stream=%s state=%s", self.name, state)

    def _count(self, table: dict[str, int]) -> None:
        table[self.name] = table.get(self.name, 0) + 1

    def _bad_message(self, what: str, raw: Any, exc_info: bool = False) -> None:
        """A malformed upstream frame or message: skipped, logged (the first ten, then one in a thousand, so
        a flood cannot fill the disk), counted."""
        count = self.stats.bad_messages.get(self.name, 0)
        self._count(self.stats.bad_messages)
        if count < 10 or count % 1000 == 0:
            log.warning("upstream_bad_message stream=%s what=%s count=%d sample=%r", self.name, what, count + 1,
                        repr(raw)[:200], exc_info=exc_info)


class MarketDataUpstream(ReconnectingStream):
    name = "market_data"

    def __init__(self, *, url: str, key: str, secret: str, wanted: Callable[[], set[Key]],
                 on_data: Callable[[list[dict[str, Any]], float], None],
                 on_state: Callable[[UpstreamState], None], timings: Timings, stale_after: float = 0.0,
                 probe_after: float = 0.0, backoff: Backoff | None = None, stats: Stats | None = None,
                 on_rejected: Callable[[list[Key], int | None, str], None] | None = None,
                 use_msgpack: bool = False) -> None:
        super().__init__(url=url, timings=timings, on_state=on_state, backoff=backoff, stats=stats)
        self.use_msgpack = use_msgpack
        if use_msgpack:
            self._headers = {"Content-Type": "application/msgpack"}
        self._on_rejected = on_rejected or (lambda keys, code, msg: None)
        self._key = key
        self._secret = secret
        self._wanted = wanted
        self._on_data = on_data
        self.stale_after = stale_after
        self.probe_after = probe_after
        self.held: dict[str, set[str]] = {}  # Alpaca's last `subscription` reply: the truth
        self._outbox: asyncio.Queue[Request] = asyncio.Queue()
        self._pending: deque[Request] = deque()
        self._last_data = 0.0  # last data, or session start: what the stale watchdog measures from
        self._last_message = 0.0  # last data ever: what status reports
        self._last_frame = 0.0  # last frame of any kind, or session start: what the liveness probe measures from
        self._reconciles = 0

    def request(self, change: Change, on_done: Callable[[bool, int | None, str], None] | None = None) -> bool:
        """Send a hub change upstream. True when ``on_done`` will be called with Alpaca's answer; False when
        there is nothing to wait for (not connected: the next session subscribes the whole set anyway)."""
        if not self.connected:
            return False
        if change.unsubscribe:
            self._enqueue("unsubscribe", change.unsubscribe, None)
        if change.subscribe:
            self._enqueue("subscribe", change.subscribe, on_done)
            return on_done is not None
        return False

    def last_message_age(self) -> float | None:
        return None if not self._last_message else max(0.0, time.monotonic() - self._last_message)

    async def _session(self, ws: ClientConnection) -> None:
        await self._handshake(ws)
        self._last_data = self._last_frame = time.monotonic()
        self.held = {}
        self._outbox = asyncio.Queue()
        self._reconciles = 0
        self._authenticated()
        self._subscribe_all()
        writer = asyncio.create_task(self._write_loop(ws))
        writer.add_done_callback(lambda task: self._writer_done(task, ws))
        watchdog = asyncio.create_task(self._watch(ws)) if self.stale_after or self.probe_after else None
        try:
            await (self._read_loop_msgpack(ws) if self.use_msgpack else self._read_loop(ws))
        finally:
            writer.cancel()
            if watchdog:
                watchdog.cancel()

    def _session_ended(self) -> None:
        self._fail_pending()

    def _writer_done(self, task: asyncio.Task[None], ws: ClientConnection) -> None:
        """A writer that died would leave every later subscribe unsent: end the session, so it starts over."""
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if not isinstance(exc, WebSocketException | OSError):
                log.error("upstream_writer_failed error=%r", exc, exc_info=exc)
                self._count(self.stats.upstream_errors)
            ws.transport.abort()

    async def _recv_control(self, ws: ClientConnection) -> dict[str, Any]:
        raw = await asyncio.wait_for(ws.recv(), self.timings.open_timeout)
        try:
            msgs = _from_msgpack(raw) if self.use_msgpack else orjson.loads(raw)
        except Exception as exc:  # orjson's and msgpack's decode errors, whatever their class

            raise UpstreamError(Failure.NETWORK, None, f"undecodable frame {str(raw)[:100]}") from exc
        if not isinstance(msgs, list) or not msgs or not isinstance(msgs[0], dict):
            raise UpstreamError(Failure.NETWORK, None, f"unexpected frame {str(raw)[:100]}")
        return msgs[0]

    async def _handshake(self, ws: ClientConnection) -> None:
        greeting = await self._recv_control(ws)
        if greeting.get("T") != "success" or greeting.get("msg") != "connected":
            raise UpstreamError(Failure.NETWORK, None, f"unexpected greeting {greeting}")
        for attempt in range(self.timings.auth_retries + 1):
            await ws.send(self._encode({"action": "auth", "key": self._key, "secret": self._secret}))
            reply = await self._recv_control(ws)
            if reply.get("T") == "success" and reply.get("msg") == "authenticated":
                return
            code, msg = reply.get("code"), reply.get("msg", "")
            if code == 406 and attempt < self.timings.auth_retries:
                log.warning("upstream_auth_406 attempt=%d retrying on the same socket", attempt + 1)
                await asyncio.sleep(self.timings.auth_retry_delay)
                continue
            raise _auth_error(code, msg)

    def _subscribe_all(self) -> None:
        wanted = sorted(self._wanted())
        for start in range(0, len(wanted), CHUNK_SYMBOLS):
            self._enqueue("subscribe", wanted[start:start + CHUNK_SYMBOLS], None)

    async def _read_loop(self, ws: ClientConnection) -> None:
        """Nothing Alpaca sends can end this loop: a malformed frame or message is skipped (logged, counted) and
        the well-formed messages of the same frame still go out."""
        loop = asyncio.get_running_loop()
        async for raw in ws:
            self._last_frame = time.monotonic()
            try:
                msgs = orjson.loads(raw)
            except orjson.JSONDecodeError:
                self._bad_message("undecodable frame", raw)
                continue
            if not isinstance(msgs, list):
                self._bad_message("frame is not a JSON array", msgs)
                continue
            data = msgs
            for m in msgs:  # the common case is all plain data: check it in one pass, sort out the rest apart
                if type(m) is not dict or type(m.get("T")) is not str or type(m.get("S")) is not str \
                        or m["T"] in CONTROL:
                    data = self._sort_out(msgs)
                    break
            if data:
                if self.backoff.attempt:
                    self.backoff.reset()
                self._last_data = self._last_message = time.monotonic()
                self._deliver(data, loop.time())

    async def _read_loop_msgpack(self, ws: ClientConnection) -> None:
        """_read_loop for a msgpack session (the option streams): binary frames, Timestamps made RFC-3339."""
        loop = asyncio.get_running_loop()
        async for raw in ws:
            self._last_frame = time.monotonic()
            try:
                msgs = _from_msgpack(raw)
            except Exception:  # msgpack's unpack errors are not all ValueErrors
                self._bad_message("undecodable msgpack frame", raw)
                continue
            if not isinstance(msgs, list):
                self._bad_message("frame is not an array", msgs)
                continue
            data = self._sort_out(msgs)
            if data:
                if self.backoff.attempt:
                    self.backoff.reset()
                self._last_data = self._last_message = time.monotonic()
                self._deliver(data, loop.time())

    def _encode(self, msg: dict[str, Any]) -> str | bytes:
        """A control message in this session's codec: JSON text, or msgpack binary."""
        return msgpack.packb(msg) if self.use_msgpack else orjson.dumps(msg).decode()

    def _sort_out(self, msgs: list[Any]) -> list[dict[str, Any]]:
        """Handle the control messages of a frame and return its well-formed data messages."""
        data = []
        for m in msgs:
            kind = m.get("T") if type(m) is dict else None
            if kind in CONTROL:
                try:
                    self._on_control(m)
                except Exception:
                    self._bad_message("unusable control message", m, exc_info=True)
            elif type(kind) is str and (type(m.get("S")) is str or (kind == "n" and type(m.get("symbols")) is list)):
                data.append(m)  # news names its symbols instead of one S
            else:
                self._bad_message("message without a string T and S", m)
        return data

    def _deliver(self, data: list[dict[str, Any]], now: float) -> None:
        try:
            self._on_data(data, now)
        except Exception:
            if len(data) == 1:  # nothing else to save; a batch is encoded before any of it is written
                self._bad_message("unroutable message", data[0], exc_info=True)
                return
            for m in data:
                self._deliver([m], now)

    async def _write_loop(self, ws: ClientConnection) -> None:
        while True:
            request = await self._outbox.get()
            self._pending.append(request)  # before sending: the reply may come back before send() returns
            await ws.send(self._encode({"action": request.action, **group(request.keys)}))

    async def _watch(self, ws: ClientConnection) -> None:
        """Notice a session that is up but useless, and end it (the reconnect loop starts a fresh one).

        Two rules. ``stale_after`` (opt-in): subscribed channels carried no data for that long. Off by default,
        because a quiet symbol, a closed market or daily bars are silent for hours on a healthy session (alpaca-py
        made its ``data_timeout`` opt-in for the same reason). ``probe_after`` (on by default): nothing at all
        came for that long, so ask: a subscribe of one symbol already held changes nothing upstream and must be
        answered with a ``subscription`` message. A quiet market answers; a session whose server side is gone
        while something still answers WebSocket pings (the case in alpaca-py#740) does not, and is reconnected
        after ``open_timeout``.
        """
        limits = [t for t in (self.stale_after, self.probe_after) if t]
        period = max(0.05, min(1.0, min(limits) / 4))
        probe_sent: float | None = None
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            if not self._wanted():
                self._last_data = self._last_frame = now
                probe_sent = None
                continue
            silent = now - self._last_data
            if self.stale_after and silent > self.stale_after:
                log.warning("upstream_stale silent=%.1fs threshold=%.1fs reconnecting", silent, self.stale_after)
                ws.transport.abort()
                return
            if probe_sent is not None and self._last_frame >= probe_sent:
                probe_sent = None  # answered (or anything else arrived): the session is alive
            if probe_sent is not None and now - probe_sent > self.timings.open_timeout:
                log.warning("upstream_unresponsive probe unanswered for %.1fs after %.1fs of silence; reconnecting",
                            now - probe_sent, now - self._last_frame)
                ws.transport.abort()
                return
            if probe_sent is None and self.probe_after and now - self._last_frame > self.probe_after:
                key = self._probe_key()
                if key is not None:
                    probe_sent = now
                    log.info("upstream_probe silent=%.1fs key=%s:%s", now - self._last_frame, *key)
                    self._enqueue("subscribe", [key], None)

    def _probe_key(self) -> Key | None:
        """One (channel, symbol) Alpaca already holds for us: subscribing it again is a no-op with an answer."""
        for channel, symbols in sorted(self.held.items()):
            for symbol in symbols:
                if symbol != "*":
                    return channel, symbol
        return None

    # --- replies ------------------------------------------------------------------------------------------

    def _enqueue(self, action: str, keys: list[Key], on_done: Callable[..., None] | None) -> None:
        self._outbox.put_nowait(Request(action, list(keys), on_done))

    def _on_control(self, m: dict[str, Any]) -> None:
        kind = m.get("T")
        if kind == "subscription":
            self.held = {ch: set(v) for ch, v in m.items() if ch not in ("T", "corrections", "cancelErrors")
                         and isinstance(v, list)}
            if self._pending:
                self._finish(self._pending.popleft(), True, None, "")
            if not self._pending and not self._outbox.qsize():
                self._reconcile()
        elif kind == "error":
            code, msg = m.get("code"), str(m.get("msg", ""))
            log.error("upstream_error code=%s msg=%r", code, msg)
            if code in REQUEST_ERRORS and self._pending:
                request = self._pending.popleft()
                if code == 400 and request.action == "subscribe":
                    if self._split(request):
                        return
                    if request.on_done is None:  # a resubscribe or reconcile: its holders must hear of it
                        self._on_rejected(request.keys, code, msg)
                        return
                self._finish(request, False, code, msg)
            elif code in (402, 406, 409):
                self._set_state(LinkState.ERROR, f"{code} {msg}", code)

    def _split(self, request: Request) -> bool:
        """Alpaca refuses a whole subscribe with 400 when one symbol in it is malformed, and holds none of it.
        Send it again in two halves, recursively, so one bad symbol (found in log2(n) round trips) cannot keep
        the good ones from being held. Rejected single symbols go to ``on_rejected``; the original request is
        answered once every part has been."""
        symbols = sorted({s for _, s in request.keys})
        if len(symbols) < 2:
            return False
        first = set(symbols[: len(symbols) // 2])
        parts = [[k for k in request.keys if k[1] in first], [k for k in request.keys if k[1] not in first]]
        log.warning("upstream_subscribe_refused code=400 symbols=%d: retrying in halves to isolate the bad one",
                    len(symbols))
        left = [len(parts)]

        def part_done(keys: list[Key]) -> Callable[[bool, int | None, str], None]:
            def done(ok: bool, code: int | None, msg: str) -> None:
                if not ok:
                    self._on_rejected(keys, code, msg)
                left[0] -= 1
                if not left[0] and request.on_done is not None:
                    request.on_done(True, None, "")
            return done

        for keys in parts:
            self._enqueue("subscribe", keys, part_done(keys))
        return True

    def _finish(self, request: Request, ok: bool, code: int | None, msg: str) -> None:
        if not ok and request.on_done is None:
            log.error("upstream_request_rejected action=%s code=%s msg=%r keys=%d", request.action, code, msg,
                      len(request.keys))
        if request.on_done is not None:
            request.on_done(ok, code, msg)

    def _reconcile(self) -> None:
        """Make upstream hold exactly the hub's set, using Alpaca's reply as the truth."""
        wanted = self._wanted()
        held = {(ch, s) for ch, syms in self.held.items() for s in syms}
        missing, extra = sorted(wanted - held), sorted(held - wanted)
        if not missing and not extra:
            self._reconciles = 0
            return
        if self._reconciles >= 2:
            log.error("upstream_reconcile_gave_up missing=%s extra=%s", missing[:10], extra[:10])
            return
        self._reconciles += 1
        log.warning("upstream_reconcile missing=%d extra=%d", len(missing), len(extra))
        if extra:
            self._enqueue("unsubscribe", extra, None)
        if missing:
            self._enqueue("subscribe", missing, None)

    def _fail_pending(self) -> None:
        """The socket is gone: requests in flight will be covered by the next session's full subscribe."""
        pending, self._pending = self._pending, deque()
        while not self._outbox.empty():
            pending.append(self._outbox.get_nowait())
        for request in pending:
            if request.on_done is not None:
                request.on_done(True, None, "")


def rfc3339(ts: msgpack.Timestamp) -> str:
    """A msgpack Timestamp as Alpaca's JSON carries times: RFC-3339 UTC, fraction trimmed as Go prints it."""
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts.seconds))
    return f"{text}.{ts.nanoseconds:09d}".rstrip("0") + "Z" if ts.nanoseconds else text + "Z"


def _from_msgpack(raw: str | bytes) -> Any:
    """A msgpack frame as the JSON path would have decoded it: every top-level Timestamp of each message an
    RFC-3339 string (option messages are flat). A text frame is not msgpack (ValueError)."""
    if not isinstance(raw, bytes):
        raise ValueError("text frame on a msgpack session")
    msgs = msgpack.unpackb(raw)
    if isinstance(msgs, list):
        for m in msgs:
            if type(m) is dict:
                for k, v in m.items():
                    if type(v) is msgpack.Timestamp:
                        m[k] = rfc3339(v)
    return msgs


def _auth_error(code: Any, msg: str) -> UpstreamError:
    if code == 406:
        return UpstreamError(Failure.CONNECTION_LIMIT, 406,
                             "406 connection limit exceeded: another session holds this Alpaca stream")
    if code == 402:
        return UpstreamError(Failure.CONFIG, 402, "402 auth failed: check ALPACA_API_KEY / ALPACA_SECRET_KEY")
    if code == 409:
        return UpstreamError(Failure.CONFIG, 409,
                             "409 insufficient subscription: your plan lacks this feed (try ALPACA_DATA_FEED=iex)")
    return UpstreamError(Failure.NETWORK, code if isinstance(code, int) else None, f"auth failed: {code} {msg}")
