"""One Alpaca Broker API event stream (Server-Sent Events): trades, account status or activities of every account.

Client: ``httpx`` with ``httpx-sse``. httpx is already the daemon's HTTP client (webhooks), streams response
bodies with proper timeouts (the read timeout is our silence detector: no byte, not even a ``:heartbeat``, for
``silence`` seconds means the connection is dead), and speaks HTTP/1.1 keep-alive and TLS well; httpx-sse is a
thin, spec-following SSE layer on top of it (``aconnect_sse`` sets ``Accept: text/event-stream`` and
``Cache-Control: no-store``). aiohttp would mean a second HTTP stack for the same job. One limit of httpx-sse
shapes this module: its ``aiter_sse`` drops comment lines, as the SSE spec tells browsers to, but Alpaca puts
meaning in comments (``:heartbeat``, ``: you are reading too slowly, dropped N messages``, ``: internal server
error``). So the response's lines are read here (``response.aiter_lines``) and decoded by ``SseLines``, which
hands comments back.

Alpaca's guidance for its event streams, as implemented:
- the last processed event id per stream is persisted (core/broker.py stores it with the events it covers) and a
  reconnect asks for ``since_id`` (``since_ulid`` on ``/v1``), starting ``overlap`` seconds before that cursor,
  because ULIDs within a millisecond may sort either way and events are ordered per account only; the overlap is
  absorbed by the journal's dedupe (execution: order id + filled qty; otherwise event id) and a recent-ids set;
- ``:heartbeat`` (and any byte) keeps the silence timer quiet; a gap comment is logged, counted, and the stream
  re-replays from the cursor; ``: internal server error`` means reconnect;
- the reader never blocks on the journal: events go into a bounded queue drained by a writer task in batches;
  a full queue is treated as a gap (reconnect from the cursor once drained), never as a stall of the socket;
- reconnects back off with full jitter up to ``backoff_max`` (60 s), one at a time (one loop per stream);
- when SSE has failed for longer than ``fallback_after``, the REST activities endpoint is polled
  (``GET /v1/accounts/activities``: FILLs for the trades stream, non-trade activities for the activities stream;
  their events are marked ``late``), status says ``mode: polling``, and SSE is retried meanwhile; the first SSE
  connection that works stops the polling.

``status`` is the same ``UpstreamState`` the market-data and trading streams keep, so ops/health.py judges this
stream by the same rule: down from the first failure until an SSE connection works again. Polling keeps events
flowing, late, but it is a degraded mode meant to bridge an outage; past the health grace a probe should say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from httpx_sse import aconnect_sse

from trade_stream.core.broker import BrokerEvents, event_ulid
from trade_stream.core.event_ids import is_ulid, new_ulid, ulid_floor, ulid_ms
from trade_stream.core.upstream_state import LinkState, UpstreamState

log = logging.getLogger("trade_stream.upstream.broker_events")

#: stream -> (path, since parameter, REST activity types polled in the fallback, or None)
STREAMS: dict[str, tuple[str, str, str | None]] = {
    "trades": ("/v2/events/trades", "since_id", "FILL"),
    "accounts": ("/v1/events/accounts/status", "since_ulid", None),
    "activities": ("/v2beta1/events/activities", "since_id", "DIV,SPLIT,FEE,INT,CSD,CSW,JNLC,JNLS,MA,NC,PTC,REORG"),
    # legacy non-trade activities (off by default: /v2beta1/events/activities carries all of them, richer)
    "nta": ("/v1/events/nta", "since_ulid", "DIV,SPLIT,FEE,INT,CSD,CSW,JNLC,JNLS,MA,NC,PTC,REORG"),
}
QUEUE_MAX = 20_000  # events read but not yet journaled; beyond it, a gap (reconnect from the cursor)
BATCH = 1000  # events per journal transaction
RECENT = 50_000  # event ids remembered to skip the overlap of a replay without touching the journal
GAP_RE = re.compile(r"dropped (\d+)")
BAD_ID_LOG_LIMIT = 20  # refused event ids logged per stream; beyond, only counted

def parse_at(raw: str) -> float:
    text = raw.replace("Z", "+00:00")
    if "." in text:
        head, _, rest = text.partition(".")
        digits = rest[:len(rest) - len(rest.lstrip("0123456789"))]
        text = f"{head}.{digits[:6]}{rest[len(digits):]}"
    return datetime.fromisoformat(text).timestamp()


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class SseLines:
    """SSE field decoding (the spec's rules) that also returns comment lines: ('comment', text) or
    ('event', data) at each blank line that ends an event."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> tuple[str, str] | None:
        if not line:
            if not self._data:
                return None
            data, self._data = "\n".join(self._data), []
            return "event", data
        if line.startswith(":"):
            return "comment", line[1:].strip()
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None


class Reconnect(Exception):
    """End this connection and connect again from the cursor (``immediate``: no backoff, e.g. after a gap)."""

    def __init__(self, reason: str, immediate: bool = False) -> None:
        super().__init__(reason)
        self.immediate = immediate


class BrokerStream:
    def __init__(self, stream: str, base_url: str, key: str, secret: str, sink: BrokerEvents, *,
                 silence: float = 60.0, overlap: float = 2.0, backoff_min: float = 1.0, backoff_max: float = 60.0,
                 fallback_after: float = 30.0, poll_interval: float = 5.0, open_timeout: float = 10.0) -> None:
        self.stream = stream
        self.path, self.since_param, self.poll_types = STREAMS[stream]
        self.base_url = base_url.rstrip("/")
        self.auth = (key, secret)
        self.sink = sink
        self.silence, self.overlap = silence, overlap
        self.backoff_min, self.backoff_max = backoff_min, backoff_max
        self.fallback_after, self.poll_interval = fallback_after, poll_interval
        self.open_timeout = open_timeout
        self.state = LinkState.CONNECTING
        self.mode = "sse"
        self.error: str | None = None
        self.status = UpstreamState(state=LinkState.CONNECTING)  # what /healthz reads (down_since: SSE not working)
        self.counts = {"connects": 0, "events": 0, "heartbeats": 0, "gaps": 0, "dropped": 0, "overflows": 0,
                       "internal_errors": 0, "polls": 0, "polled_events": 0, "bad_ids": 0}
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_MAX)
        self._recent: set[str] = set()
        self._recent_order: deque[str] = deque()
        self._failing_since: float | None = None
        self._poller: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    def view(self) -> dict[str, Any]:
        return {"state": self.state.value, "mode": self.mode, "error": self.error,
                "cursor": self.sink.cursor(self.stream), "queued": self._queue.qsize(), **self.counts}

    # --- the loop -------------------------------------------------------------------------------------

    async def run(self) -> None:
        writer = asyncio.create_task(self._write_loop(), name=f"broker-journal-{self.stream}")
        attempt = 0
        try:
            async with httpx.AsyncClient(auth=self.auth, timeout=httpx.Timeout(
                    self.open_timeout, read=self.silence)) as client:
                self._client = client
                while True:
                    if writer.done():
                        writer.result()  # the writer died: raise its error (the supervisor restarts us)
                    try:
                        await self._connect_once(client)
                        immediate, reason = False, "stream ended"
                    except Reconnect as exc:
                        immediate, reason = exc.immediate, str(exc)
                    except (httpx.HTTPError, OSError, ValueError) as exc:
                        immediate, reason = False, f"{type(exc).__name__}: {exc}"[:300]
                    self.state, self.error = LinkState.RECONNECTING, reason
                    self._set_status(LinkState.RECONNECTING, reason)
                    if self.state_ok:
                        attempt = 0
                    self.state_ok = False
                    self._note_failure()
                    if immediate:
                        await self._drained()
                        continue
                    delay = random.uniform(self.backoff_min / 2, min(self.backoff_max, self.backoff_min * 2 ** attempt))
                    attempt += 1
                    log.warning("broker_stream_reconnect stream=%s reason=%s in=%.2fs", self.stream, reason, delay)
                    await asyncio.sleep(delay)
                    await self._drained()
        finally:
            self._stop_polling()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer

    state_ok = False

    def _set_status(self, state: LinkState, error: str | None) -> None:
        status = self.status
        if state is LinkState.CONNECTED:
            status.down_since = None
        else:
            status.reconnects += 1
            if status.down_since is None:
                status.down_since = time.monotonic()
        status.state, status.error, status.since = state, error, time.time()
        status.connected_once = status.connected_once or state is LinkState.CONNECTED

    def _note_failure(self) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if self.poll_types and self._poller is None and now - self._failing_since >= self.fallback_after:
            self.mode = "polling"
            log.warning("broker_fallback_polling stream=%s sse_failing_for=%.1fs", self.stream,
                        now - self._failing_since)
            self._poller = asyncio.create_task(self._poll_loop(), name=f"broker-poll-{self.stream}")

    def _stop_polling(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
            self.mode = "sse"
            log.info("broker_fallback_ended stream=%s", self.stream)

    async def _drained(self) -> None:
        """Wait until everything read is journaled, so the cursor is where the reader was."""
        await self._queue.join()

    def _params(self) -> dict[str, str]:
        cursor = self.sink.cursor(self.stream)
        if cursor is None:  # first start: live only (Alpaca: no cursor, no history); from now on, a cursor
            self.sink.journal.set_meta(f"cursor:{self.stream}", ulid_floor(int(time.time() * 1000)))
            return {}
        return {self.since_param: ulid_floor(ulid_ms(cursor) - int(self.overlap * 1000))}

    async def _connect_once(self, client: httpx.AsyncClient) -> None:
        params = self._params()
        async with aconnect_sse(client, "GET", self.base_url + self.path, params=params) as source:
            response = source.response
            if response.status_code != 200:
                body = (await response.aread())[:200].decode("utf-8", "replace")
                raise Reconnect(f"HTTP {response.status_code}: {body}")
            self.counts["connects"] += 1
            self.state, self.error, self.state_ok = LinkState.CONNECTED, None, True
            self._set_status(LinkState.CONNECTED, None)
            self._failing_since = None
            self._stop_polling()
            log.info("broker_stream_connected stream=%s %s", self.stream,
                     " ".join(f"{k}={v}" for k, v in params.items()) or "live")
            decoder = SseLines()
            async for line in response.aiter_lines():
                found = decoder.feed(line)
                if found is None:
                    continue
                kind, text = found
                if kind == "comment":
                    self._comment(text)
                else:
                    self._event(text)

    def _comment(self, text: str) -> None:
        if text == "heartbeat":
            self.counts["heartbeats"] += 1
        elif "reading too slowly" in text:
            m = GAP_RE.search(text)
            dropped = int(m.group(1)) if m else 0
            self.counts["gaps"] += 1
            self.counts["dropped"] += dropped
            log.warning("broker_stream_gap stream=%s dropped=%d: replaying from the cursor", self.stream, dropped)
            raise Reconnect(f"gap: {dropped} dropped", immediate=True)
        elif "internal server error" in text:
            self.counts["internal_errors"] += 1
            raise Reconnect("internal server error")

    def _event(self, text: str) -> None:
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError:
            log.warning("broker_stream_bad_event stream=%s data=%r", self.stream, text[:200])
            return
        if not isinstance(data, dict):
            return
        event_id = event_ulid(data)
        if not is_ulid(event_id):  # it could become the cursor and hide every later event from a replay
            self.counts["bad_ids"] += 1
            if self.counts["bad_ids"] <= BAD_ID_LOG_LIMIT:
                log.warning("broker_stream_bad_event_id stream=%s event_id=%r: refused (not a ULID)", self.stream,
                            event_id[:40])
            return
        if event_id in self._recent:
            return  # the overlap of a replay
        try:
            self._queue.put_nowait(data)
        except asyncio.QueueFull:
            self.counts["overflows"] += 1
            log.warning("broker_stream_overflow stream=%s queued=%d: replaying from the cursor", self.stream,
                        self._queue.qsize())
            raise Reconnect("journal behind", immediate=True) from None
        self._recent.add(event_id)
        self._recent_order.append(event_id)
        if len(self._recent_order) > RECENT:
            self._recent.discard(self._recent_order.popleft())
        self.counts["events"] += 1

    async def _write_loop(self) -> None:
        queue = self._queue
        while True:
            batch = [await queue.get()]
            while len(batch) < BATCH and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                self.sink.ingest(self.stream, batch)
            finally:
                for _ in batch:
                    queue.task_done()
            await asyncio.sleep(0)  # let the reader run between batches

    # --- the polling fallback -----------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        assert self._client is not None
        last = self.sink.journal.last_at(self.stream)
        after = rfc3339((parse_at(last) if last else time.time()) - self.overlap)
        while True:
            try:
                after = await self._poll(self._client, after)
            except (httpx.HTTPError, OSError, ValueError) as exc:
                log.warning("broker_poll_failed stream=%s error=%s", self.stream, exc)
            await asyncio.sleep(self.poll_interval)

    async def _poll(self, client: httpx.AsyncClient, after: str) -> str:
        token = None
        while True:
            params = {"activity_types": self.poll_types or "", "after": after, "direction": "asc",
                      "page_size": "100", **({"page_token": token} if token else {})}
            response = await client.get(self.base_url + "/v1/accounts/activities", params=params)
            response.raise_for_status()
            rows = response.json()
            self.counts["polls"] += 1
            if not rows:
                return after
            events = [self._from_activity(r) for r in rows]
            self.counts["polled_events"] += len(self.sink.ingest(self.stream, events, late=True))
            token = rows[-1]["id"]
            if len(rows) < 100:
                return max(after, rows[-1].get("transaction_time") or after)

    def _from_activity(self, row: dict[str, Any]) -> dict[str, Any]:
        at = row.get("transaction_time") or rfc3339(time.time())
        if self.stream != "trades":
            return {**{k: v for k, v in row.items() if k != "transaction_time"}, "at": at,
                    "event_id": new_ulid(parse_at(at)), "late": True}
        qty, cum, leaves = row.get("qty"), row.get("cum_qty"), row.get("leaves_qty")
        total = str(float(cum) + float(leaves)) if cum is not None and leaves is not None else None
        order = {"id": row.get("order_id"), "symbol": row.get("symbol"), "side": row.get("side"),
                 "status": row.get("order_status"), "filled_qty": cum, "qty": total}
        return {"account_id": row.get("account_id"), "at": at, "event": row.get("type") or "fill",
                "event_id": new_ulid(parse_at(at)), "order": order, "price": row.get("price"), "qty": qty,
                "timestamp": at, "activity_id": row.get("id"), "late": True}
