"""The one-channel streams of the side-port: /api/stream/strategies/{id} (channel ``strategies:{id}``) and
/api/stream/ai-decisions (channel ``ai-decisions``).

Each event goes out as it was published: ``event:`` its name, ``data:`` its data plus ``channel``, ``id:`` its
channel id (``<ms>-<seq>``), and only to the users it is addressed to. ``Last-Event-ID`` resumes from the channel's
history (core/app_channels.py: the missed events, or a ``reset`` ``{"reason","channel"}`` when the history no
longer holds the id). A connection that names no id first gets its user's buffer for the stream
(core/user_buffer.py: the last events that user was sent on it), then live events.

A strategy stream answers 404 ``{"error":"Not Found","message":"Strategy not found","statusCode":404}`` unless
the channel's history holds an event of it that the user may see: a user who may not see the channel gets the
same answer, so whether a strategy exists does not leak.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from trade_stream.core.app_channels import AppChannels
from trade_stream.core.channels import addressed_to, check_channel
from trade_stream.core.engine import ChannelsUnavailable
from trade_stream.core.user_buffer import UserBuffers
from trade_stream.core.users import Credentials, User
from trade_stream.edges.http.credentials import RequestCredentials
from trade_stream.edges.http.request import Request
from trade_stream.edges.http.responses import Response, error, json
from trade_stream.edges.sse.channel import Channel, raw_last_event_id
from trade_stream.edges.sse.client import SseClient
from trade_stream.edges.sse.codecs import SseCodec
from trade_stream.edges.sse.feeds import Built, ChannelFeed, Tail, channel_reset
from trade_stream.edges.sse.sender import Sender
from trade_stream.edges.sse.streams import Seated, Stream, admit, authorize

STRATEGIES = "/api/stream/strategies"
STRATEGY_NOT_FOUND = json(404, {"error": "Not Found", "message": "Strategy not found", "statusCode": 404})


@dataclass(eq=False)
class ChannelState(Seated):
    """One channel stream: its user (``Seated``), its channel, the id it resumes from and how it writes."""

    channel: str
    raw_since: str | None
    feed: ChannelFeed | None = None
    sender: Sender | None = None
    buffer_owner: tuple[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.buffer_owner = (self.user.name, self.channel)


class ChannelStream(Stream[ChannelState]):
    """One app channel as a stream kind: which channel a request names (``channel_of``; None is a 404), and
    whether it must hold an event the user may see first (``must_exist``, the strategies)."""

    def __init__(self, kind: str, channel_of: Callable[[Request], str | None], identity: Credentials | None,
                 credentials: RequestCredentials, hub: AppChannels, tail: Tail, buffers: UserBuffers,
                 codec: SseCodec, must_exist: bool = False) -> None:
        self.kind = kind
        self.channel_of = channel_of
        self.identity = identity
        self.credentials = credentials
        self.hub = hub
        self.tail = tail
        self.buffers = buffers
        self.codec = codec  # unused by these streams' writes, but every SseClient has one
        self.must_exist = must_exist  # a strategy: 404 unless its history holds an event the user may see
        self.clients: dict[SseClient, ChannelState] = {}

    def accept(self, request: Request) -> Response | ChannelState:
        if self.identity is None:
            return STRATEGY_NOT_FOUND if self.must_exist else error(404, f"no such path {request.path}")
        user = authorize(self.identity, self.credentials, request)
        if not isinstance(user, User):
            return user
        channel = self.channel_of(request)
        if channel is None:
            return STRATEGY_NOT_FOUND
        return ChannelState(user, channel, raw_last_event_id(request))

    async def verify(self, channel: Channel, state: ChannelState) -> Response | None:
        if not self.hub.access.may_subscribe(state.user, state.channel):
            return STRATEGY_NOT_FOUND if self.must_exist else error(
                403, f"user {state.user.name} may not see channel {state.channel}")
        if self.must_exist:
            try:
                events = await self.tail(state.channel, self.hub.history_limit)
            except ChannelsUnavailable as exc:
                return error(503, f"the channel's history cannot be read now ({exc}); retry", {"Retry-After": "1"})
            if not any(addressed_to(e.users, state.user.name) for e in events):
                return STRATEGY_NOT_FOUND
        assert self.identity is not None
        return admit(self.identity, state, channel.request, self.kind)

    def open(self, channel: Channel, state: ChannelState) -> SseClient:
        client = channel.open(self.codec, self.kind, state.user.name)
        self.clients[client] = state
        state.sender = sender = Sender(client, self.buffers, state.buffer_owner)

        def emit(built: Built) -> bool:
            if built.event is None:
                return sender.write(channel_reset(built.channel))
            return sender.write(built.own, built.event.id)  # its own id: the bytes every client shares

        state.feed = ChannelFeed(self.hub, self.tail, state.user, emit, history_limit=self.hub.history_limit)
        return client

    async def hold(self, channel: Channel, client: SseClient, state: ChannelState) -> bool:
        assert state.feed is not None
        buffered = self.buffers.opened(state.buffer_owner, client)
        if state.raw_since is None and buffered:
            client.write(b"".join(buffered), len(buffered))  # then live, with no await between
        return state.feed.follow(state.channel, state.raw_since)

    async def pump(self, channel: Channel, client: SseClient, state: ChannelState) -> None:
        await channel.pump(client, state.user.expires_at)

    def release(self, client: SseClient, state: ChannelState) -> None:
        self.clients.pop(client, None)
        if state.feed is not None:
            state.feed.drop()
        if state.sender is not None:
            state.sender.close()
        self.buffers.closed(state.buffer_owner, client, time.monotonic())
        client.finish()
        assert self.identity is not None
        self.identity.sessions.release(state.user.name, state)


def strategy_channel(request: Request) -> str | None:
    """``strategies:{id}`` of /api/stream/strategies/{id}, or None when ``{id}`` is not a strategy id."""
    strategy = request.path[len(STRATEGIES) + 1:]
    return check_channel(f"strategies:{strategy}") if request.path.startswith(STRATEGIES + "/") else None
