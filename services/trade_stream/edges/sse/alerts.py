"""/api/stream/alerts: a user's notifications (order events, Broker events, price alerts) as they are stored
(``alert:new``), their read state as it changes (``alert:read``), and the app's events on the ``alerts`` and
``agent-status`` channels the user may see (each as published, its data plus ``channel``).

Each event's id says where the client is in every source: the notification's id alone while the stream has
carried nothing else, else the compound id (``notifications:<n>,@agent-status:<ms>-<seq>,@alerts:<ms>-<seq>``,
core/event_ids.py). ``Last-Event-ID`` replays up to ALERT_REPLAY_LIMIT notifications from the store (further
back, or an id the store never gave, is a ``reset``) and each channel from its history (feeds.py). A connection
that names no id first gets its user's buffer for the stream (core/user_buffer.py), then live events.

An alert published with ``level: "error"`` is written at once, whatever ``throttle_ms`` holds (sender.py), and
its delivery is logged.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from trade_stream.core import event_ids
from trade_stream.core.app_channels import AppChannels
from trade_stream.core.event_ids import NOTIFICATIONS
from trade_stream.core.notifier import TradeNotifier
from trade_stream.core.protocol import encode
from trade_stream.core.user_buffer import UserBuffers
from trade_stream.core.users import Credentials, User
from trade_stream.edges.http.credentials import RequestCredentials
from trade_stream.edges.http.request import Request
from trade_stream.edges.http.responses import Response, error
from trade_stream.edges.sse.channel import Channel, raw_last_event_id
from trade_stream.edges.sse.client import SseClient
from trade_stream.edges.sse.codecs import SseCodec
from trade_stream.edges.sse.feeds import FIRST, Built, ChannelFeed, Tail, built_event, channel_reset
from trade_stream.edges.sse.sender import Sender
from trade_stream.edges.sse.streams import Seated, Stream, admit, authorize
from trade_stream.edges.sse.wire import event_bytes

log = logging.getLogger("trade_stream.edges.sse")

ALERT_REPLAY_LIMIT = 1000  # notifications replayed after Last-Event-ID; further back is a reset
ALERT_CHANNELS = ("agent-status", "alerts")


@dataclass(eq=False)
class AlertState(Seated):
    """One alerts stream: its user (``Seated``), its place in the notifications and its channels."""

    note: str | None = None  # the last notification id the client is past
    feed: ChannelFeed | None = None
    sender: Sender | None = None

    def event_id(self) -> str | None:
        """The id of the stream's next event: the notification id alone while no channel has a position."""
        positions = self.feed.parts if self.feed is not None else {}
        if self.note is not None:
            if not positions:
                return self.note
            positions[NOTIFICATIONS] = self.note
        return event_ids.compound(positions) if positions else None


class AlertsStream(Stream[AlertState]):
    kind = "alerts"

    def __init__(self, identity: Credentials | None, codec: SseCodec, credentials: RequestCredentials,
                 hub: AppChannels | None = None, tail: Tail | None = None, buffers: UserBuffers | None = None
                 ) -> None:
        self.identity = identity
        self.credentials = credentials
        self.codec = codec
        self.hub = hub  # the node's app channels: without it, notifications only
        self.tail = tail
        self.buffers = buffers or UserBuffers(0)
        self.notifier: TradeNotifier | None = None  # set by ``serve_from``: without it, 404
        self.clients: dict[SseClient, User] = {}
        self.states: dict[SseClient, AlertState] = {}

    def serve_from(self, notifier: TradeNotifier) -> None:
        """Serve this notifier's notifications; its ``listeners`` and ``read_listeners`` must call ``on_alert``
        and ``on_read`` (``alert:new``, ``alert:read``)."""
        self.notifier = notifier

    def accept(self, request: Request) -> Response | AlertState:
        if self.notifier is None:
            return error(404, "notifications are off")
        user = authorize(self.identity, self.credentials, request)
        if not isinstance(user, User):
            return user
        state = AlertState(user)
        assert self.identity is not None  # authorize found a user
        refused = admit(self.identity, state, request, self.kind)
        return refused if refused is not None else state

    def open(self, channel: Channel, state: AlertState) -> SseClient:
        client = channel.open(self.codec, self.kind, state.user.name)
        state.sender = sender = Sender(client, self.buffers, (state.user.name, self.kind))
        if self.hub is not None and self.tail is not None:
            def emit(built: Built) -> bool:
                if built.event is None:
                    return sender.write(channel_reset(built.channel))
                eid = state.event_id()
                urgent = built.channel == "alerts" and built.event.data.get("level") == "error"
                ok = sender.write(built_event(built, eid) if eid else built.own,
                                  f"{event_ids.channel_part(built.channel)}:{built.event.id}", urgent)
                if urgent:
                    log.info("alert_delivered level=error alert_id=%s user=%s ip=%s delivered=%s",
                             built.event.data.get("alertId"), state.user.name, client.ip, ok)
                return ok

            state.feed = ChannelFeed(self.hub, self.tail, state.user, emit, history_limit=self.hub.history_limit)
        return client

    async def hold(self, channel: Channel, client: SseClient, state: AlertState) -> bool:
        assert self.notifier is not None and state.sender is not None
        raw = raw_last_event_id(channel.request)
        # A compound id without notifications: the client has seen none of them (the store was empty or down
        # when it connected), so every one of the user's is new to it.
        last = event_ids.parse_compound(raw).get(NOTIFICATIONS, event_ids.EventId(0)) \
            if event_ids.is_compound(raw) else event_ids.parse(raw)
        feed, plans = state.feed, []
        if feed is not None:
            positions = event_ids.channel_positions(raw)
            for name in ALERT_CHANNELS:
                if feed.may_follow(name):
                    plans.append(await feed.prepare(name, positions.get(name, FIRST if raw else None)))
            if client.closed:
                return False
        # From here on nothing awaits: the buffer or the replay, then every source live, nothing missed or twice.
        buffered = self.buffers.opened((state.user.name, self.kind), client)
        if raw is None and buffered:
            client.write(b"".join(buffered), len(buffered))
        newest = self.notifier.last_id()
        state.note = str(newest) if newest is not None else None
        if last is not None:
            self.replay(state, last)
        self.clients[client] = state.user
        self.states[client] = state
        for plan in plans:
            assert feed is not None
            feed.start(plan)
        return True

    async def pump(self, channel: Channel, client: SseClient, state: AlertState) -> None:
        await channel.pump(client, state.user.expires_at)

    def release(self, client: SseClient, state: AlertState) -> None:
        self.clients.pop(client, None)
        self.states.pop(client, None)
        if state.feed is not None:
            state.feed.drop()
        if state.sender is not None:
            state.sender.close()
        self.buffers.closed((state.user.name, self.kind), client, time.monotonic())
        client.finish()
        assert self.identity is not None
        self.identity.sessions.release(state.user.name, state)

    def replay(self, state: AlertState, last: event_ids.EventId) -> None:
        notifier, sender, user = self.notifier, state.sender, state.user
        assert notifier is not None and sender is not None
        newest = notifier.last_id()
        notes = None
        if newest is None:
            reason = f"notification store unavailable: {notifier.fault}"
        elif not last.known or last.epoch is not None or last.n > newest:
            reason = "unknown notification id; refetch state"
        else:
            notes = notifier.since(last.n, ALERT_REPLAY_LIMIT + 1, user)
            reason = "notification store unavailable" if notes is None else (
                f"more than {ALERT_REPLAY_LIMIT} notifications to replay; refetch state"
                if len(notes) > ALERT_REPLAY_LIMIT else "")
        if reason:
            sender.write(event_bytes("reset", encode({"reason": reason, "last_event_id": last.n,
                                                      "current_id": newest})))
            return
        state.note = str(last.n)
        for note in notes or ():
            self.write_note(state, note)
        state.note = str(newest)

    def write_note(self, state: AlertState, note: dict[str, Any], data: bytes | None = None) -> None:
        """``alert:new`` with the stream's id after it (a notification that could not be stored has none)."""
        assert state.sender is not None
        if note.get("id") is not None:
            state.note = str(note["id"])
        eid = state.event_id() if note.get("id") is not None else None
        state.sender.write(event_bytes("alert:new", data if data is not None else encode(note), eid),
                           f"{NOTIFICATIONS}:{note['id']}" if eid is not None else None)

    def on_alert(self, msg: dict[str, Any]) -> None:
        note = msg["data"]
        notifier = self.notifier
        assert notifier is not None
        data = encode(note)
        for client, user in list(self.clients.items()):
            state = self.states.get(client)
            # its account's, or its user's, and a kind that user has on the bell
            if state is not None and notifier.reaches(msg, user):
                self.write_note(state, note, data)

    def on_read(self, msg: dict[str, Any]) -> None:
        ev = event_bytes("alert:read", encode({k: msg[k] for k in ("ids", "all", "unread")}))
        for client, user in list(self.clients.items()):
            state = self.states.get(client)
            if state is not None and state.sender is not None and user.name == msg.get("user"):  # per user
                state.sender.write(ev)
