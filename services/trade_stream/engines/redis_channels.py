"""App channels through Redis (core/engine.ChannelBus for a cluster): one Stream per channel, one pub/sub
channel for every node.

- ``P:ch:<channel>`` — the channel's Stream: each event one entry (``r``: the stored record, core/channels.py),
  trimmed to ``TRADE_STREAM_CHANNEL_HISTORY`` entries (exact ``MAXLEN``) and to the history's age (``MINID``),
  and expiring that long after its last publish, so an idle channel leaves nothing behind. The entry id is the
  event id every client sees.
- ``P:chan`` — pub/sub: ``<channel> <id> <record>`` for every event, published by the same script that adds it
  to the Stream, so live order is Stream order; every node subscribes and hands each event once to its handler.

After the pub/sub connection comes back, each node reads, for each channel its clients hold, what followed the
last id it delivered (``fill_gaps``): the events published meanwhile are delivered once, in order, before any
that the new connection brings (those at or below a channel's last delivered id are dropped). When the last
delivered id is no longer in the Stream (trimmed while the node was cut off), the channel's subscribers get a
reset first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from trade_stream.core import event_ids
from trade_stream.core.channels import ChannelEvent, Publication, Reset, from_record, record_of, replay
from trade_stream.core.engine import ChannelHandler, ChannelsUnavailable

log = logging.getLogger("trade_stream.engines.redis")

PUBLISH = """
local n = #KEYS - 1
local t = redis.call('TIME')
local floor = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[2]))
local ids = {}
for i = 1, n do
  local id = redis.call('XADD', KEYS[i], 'MAXLEN', ARGV[1], '*', 'r', ARGV[3 + n + i])
  redis.call('XTRIM', KEYS[i], 'MINID', floor)
  redis.call('PEXPIRE', KEYS[i], ARGV[3])
  redis.call('PUBLISH', KEYS[n + 1], ARGV[3 + i] .. ' ' .. id .. ' ' .. ARGV[3 + n + i])
  ids[i] = id
end
return ids
"""
MAX_REMEMBERED = 100_000  # channels whose last delivered id a node keeps (least recently delivered go first)


class RedisChannels:
    def __init__(self, r: Any, streams: str, pubsub_key: str, handler: ChannelHandler, *, history: int,
                 ttl: float, timeout: float, failed: Callable[[BaseException], None],
                 errors: tuple[type[BaseException], ...]) -> None:
        """``streams``: the prefix of the channels' Stream keys; ``pubsub_key``: the channel events go out on
        (both spelled by redis.Keys)."""
        self.r = r
        self.streams = streams
        self.handler = handler
        self.history = history
        self.ttl_ms = int(ttl * 1000)
        self.timeout = timeout
        self.failed = failed
        self.errors = errors
        self.pubsub_key = pubsub_key
        self.pubsub_bytes = self.pubsub_key.encode()
        self._publish = r.register_script(PUBLISH)
        self.last: dict[str, tuple[int, int]] = {}  # the last id delivered per channel, least recent first
        self.published = 0
        self.received = 0

    def stream(self, channel: str) -> str:
        return self.streams + channel

    async def publish(self, pubs: list[Publication]) -> list[str]:
        keys = [*(self.stream(p.channel) for p in pubs), self.pubsub_key]
        args: list[Any] = [self.history, self.ttl_ms, self.ttl_ms + 1000, *(p.channel for p in pubs),
                           *(record_of(p) for p in pubs)]
        try:
            async with asyncio.timeout(self.timeout):
                ids = await self._publish(keys=keys, args=args)
        except self.errors as exc:
            self.failed(exc)
            raise ChannelsUnavailable("the cluster store (Redis) is unreachable") from None
        self.published += len(pubs)
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    async def history_after(self, channel: str, since: str, limit: int) -> list[ChannelEvent] | Reset:
        if event_ids.parse_stream_id(since) is None:
            return Reset(channel, "unknown id")
        try:
            async with asyncio.timeout(self.timeout):
                rows = await self.r.xrange(self.stream(channel), min=since, count=limit + 2)
        except self.errors as exc:
            self.failed(exc)
            raise ChannelsUnavailable("the cluster store (Redis) is unreachable") from None
        events = self._events(channel, rows)
        return replay(channel, events, since, limit, int(time.time() * 1000), self.ttl_ms)

    async def tail(self, channel: str, limit: int) -> list[ChannelEvent]:
        """The newest ``limit`` events of the channel's Stream younger than the history's age, oldest first (the
        Stream is trimmed by age only when published to, so an idle one may hold older entries)."""
        if limit <= 0:
            return []
        try:
            async with asyncio.timeout(self.timeout):
                rows = await self.r.xrevrange(self.stream(channel), count=limit)
        except self.errors as exc:
            self.failed(exc)
            raise ChannelsUnavailable("the cluster store (Redis) is unreachable") from None
        floor = int(time.time() * 1000) - self.ttl_ms
        return [e for e in self._events(channel, rows[::-1])
                if (event_ids.parse_stream_id(e.id) or (0, 0))[0] >= floor]

    def _events(self, channel: str, rows: list[Any]) -> list[ChannelEvent]:
        out = []
        for raw_id, fields in rows:
            event_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
            event = from_record(channel, event_id, fields.get(b"r", b""))
            if event is not None:
                out.append(event)
        return out

    def on_message(self, data: bytes) -> None:
        """One event from pub/sub."""
        channel_b, _, rest = data.partition(b" ")
        raw_id, _, record = rest.partition(b" ")
        channel, event_id = channel_b.decode(), raw_id.decode()
        event = from_record(channel, event_id, record)
        if event is not None:
            self._deliver(event)

    def _deliver(self, event: ChannelEvent) -> None:
        key = event_ids.parse_stream_id(event.id)
        if key is None:
            return
        last = self.last.pop(event.channel, None)
        if last is not None and key <= last:  # already delivered (by a gap fill)
            self.last[event.channel] = last
            return
        self.last[event.channel] = key
        if len(self.last) > MAX_REMEMBERED:
            del self.last[next(iter(self.last))]
        self.received += 1
        self.handler.on_channel_event(event)

    async def fill_gaps(self) -> None:
        """After a pub/sub reconnect: what each locally held channel missed, from its last delivered id."""
        for channel in sorted(self.handler.local_channels()):
            last = self.last.get(channel)
            if last is None:
                continue
            since = event_ids.stream_id(*last)
            async with asyncio.timeout(self.timeout):
                rows = await self.r.xrange(self.stream(channel), min=since, count=self.history + 1)
            events = self._events(channel, rows)
            if not events or events[0].id != since:
                log.warning("channel_gap channel=%s last=%s: its subscribers get a reset", channel, since)
                self.handler.on_channel_gap(channel)
            for event in events:
                self._deliver(event)

