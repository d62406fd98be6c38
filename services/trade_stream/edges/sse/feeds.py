"""The app channels one SSE connection follows, on the node's channel hub (core/app_channels.py).

Each channel is subscribed through a ``Tap``: the holder the hub fans out to, one per connection and channel, so
the connection decides the id each event carries (the event's own on a one-channel stream, the compound id on
one that carries several sources) and writes it through its ``Sender``. ``SSE_CHANNELS`` is the hub's codec for
the side-port: each event's data, plus ``channel``, is encoded once for every SSE connection.

On a stream with several sources (/api/stream/alerts, /api/stream/trading) every channel has a position from the
start, so a resume never has to guess:

- a connection that names no id starts each channel at the newest retained event its user may see (what
  follows comes, nothing before), or at ``FIRST`` when the channel holds none;
- a position resumes after that event (the hub replays what follows, or sends a reset when the history no
  longer holds it);
- ``FIRST`` means the client has seen none of the channel's events: it replays every event the channel still
  holds, then live. ``FIRST`` is not written into the compound id (``parts``), so a stream whose channels have
  carried nothing keeps its plain ids, and an id that does not name a channel resumes it from ``FIRST``. A reset
  moves the position to ``FIRST``: the client refetches its state, and a reconnect before the channel's next
  event then misses nothing published meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from trade_stream.core import event_ids
from trade_stream.core.app_channels import AppChannels
from trade_stream.core.channels import ChannelEvent, addressed_to
from trade_stream.core.engine import ChannelsUnavailable
from trade_stream.core.protocol import encode
from trade_stream.core.users import User
from trade_stream.edges.sse.wire import event_bytes

log = logging.getLogger("trade_stream.edges.sse")

FIRST = "0-0"  # a position before every event of a channel: resume from the start of its history
Tail = Callable[[str, int], Awaitable[list[ChannelEvent]]]  # ChannelBus.channel_tail


@dataclass(frozen=True)
class Built:
    """One channel event for the side-port, built once: ``data`` is the published data plus ``channel``, ``own``
    the whole event under its own id (what a one-channel stream writes to every client)."""

    channel: str
    event: ChannelEvent | None  # None: the channel's reset
    data: bytes = b""
    own: bytes = b""


class SseChannelCodec:
    def event(self, event: ChannelEvent) -> Built:
        data = encode({**event.data, "channel": event.channel})
        return Built(event.channel, event, data, event_bytes(event.event, data, event.id))

    def reset(self, channel: str) -> Built:
        return Built(channel, None)


SSE_CHANNELS = SseChannelCodec()


def built_event(built: Built, event_id: str) -> bytes:
    """A channel event as the stream writes it: ``event_id`` is the one the stream gives it (the event's own on
    a one-channel stream, the compound id on one of several sources)."""
    assert built.event is not None
    return event_bytes(built.event.event, built.data, event_id)


def channel_reset(channel: str, reason: str = "the channel's history no longer holds that id; refetch state"
                  ) -> bytes:
    return event_bytes("reset", encode({"reason": reason, "channel": channel}))


@dataclass(eq=False)
class Tap:
    """One connection's subscription to one channel: what the hub holds and sends to."""

    deliver: Callable[[Built], bool]

    def send(self, data: Any, count: int = 1) -> bool:
        return self.deliver(data)

    def fan(self, data: Any, holders: list[Any], count: int = 1) -> None:
        for holder in holders:
            holder.send(data, count)


@dataclass(frozen=True)
class Plan:
    """How one channel of a several-source stream starts: ``first`` written at once (a replay from the start of
    its history), then the hub's events after ``since`` (None: live only); ``reset`` first when the history
    could not be read."""

    channel: str
    first: list[ChannelEvent]
    since: str | None
    reset: bool = False


@dataclass(eq=False)
class ChannelFeed:
    """The channels of one connection. ``emit`` writes a built event (or reset) with the id the stream gives it;
    ``positions`` (``@channel`` → id or ``FIRST``) is where the client is in each channel, ``parts`` what of it
    goes into a compound id."""

    hub: AppChannels
    tail: Tail
    user: User
    emit: Callable[[Built], bool]
    positions: dict[str, str] = field(default_factory=dict)
    taps: dict[str, Tap] = field(default_factory=dict)
    history_limit: int = 100

    @property
    def parts(self) -> dict[str, str]:
        """This feed's part of the compound id: every channel the client has a position in."""
        return {part: pos for part, pos in self.positions.items() if pos != FIRST}

    def may_follow(self, channel: str) -> bool:
        return self.hub.access.may_subscribe(self.user, channel)

    def follow(self, channel: str, since: str | None) -> bool:
        """Subscribe to ``channel`` on its own (the stream's only source): ``since`` is the client's id (None:
        live events only). False when the hub refused it."""
        tap = Tap(self._deliver)
        refused = self.hub.subscribe(tap, channel, self.user, SSE_CHANNELS, since)
        if refused is not None:
            log.warning("sse_channel_refused channel=%s user=%s code=%s", channel, self.user.name, refused.code)
            return False
        self.taps[channel] = tap
        return True

    async def prepare(self, channel: str, position: str | None) -> Plan:
        """Where ``channel`` starts as one source of several, from its ``position`` in the compound id (None: the
        client named no id at all; see the module's docstring): the one await of following it. ``start`` then
        subscribes without awaiting, so the stream can join all its sources at once."""
        if position is not None and position != FIRST:
            self.positions[event_ids.channel_part(channel)] = position
            return Plan(channel, [], position)
        try:
            events = await self.tail(channel, self.history_limit)
        except ChannelsUnavailable as exc:
            log.warning("channel_history_unavailable channel=%s error=%s", channel, exc)
            return Plan(channel, [], None, reset=position == FIRST)
        mine = [e for e in events if addressed_to(e.users, self.user.name)]
        if position is None:
            # The newest event this user may see: a position is never the id of someone else's event.
            since = mine[-1].id if mine else None
            self.positions[event_ids.channel_part(channel)] = since or FIRST
            return Plan(channel, [], since)
        return Plan(channel, mine, events[-1].id if events else None)

    def start(self, plan: Plan) -> bool:
        """What ``plan`` replays from the start of the history, then the channel from ``plan.since`` on."""
        part = event_ids.channel_part(plan.channel)
        self.positions.setdefault(part, FIRST)
        if plan.reset:
            self._deliver(SSE_CHANNELS.reset(plan.channel))
        for event in plan.first:
            self._deliver(SSE_CHANNELS.event(event))
        return self.follow(plan.channel, plan.since)

    def _deliver(self, built: Built) -> bool:
        self.positions[event_ids.channel_part(built.channel)] = built.event.id if built.event is not None else FIRST
        return self.emit(built)

    def drop(self) -> None:
        for channel, tap in self.taps.items():
            self.hub.unsubscribe(tap, channel)
        self.taps.clear()
