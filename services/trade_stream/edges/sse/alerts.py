"""/api/stream/alerts: a user's notifications (order events, Broker events, price alerts) as they are stored
(``alert:new``, whose id is the notification's), and their read state as it changes (``alert:read``).
``Last-Event-ID`` replays up to ALERT_REPLAY_LIMIT notifications from the store; further back, or an id the store
never gave, is a ``reset``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trade_stream.core import event_ids
from trade_stream.core.notifier import TradeNotifier
from trade_stream.core.protocol import encode
from trade_stream.core.users import Credentials, User
from trade_stream.edges.http.credentials import RequestCredentials
from trade_stream.edges.http.request import Request
from trade_stream.edges.http.responses import Response, error
from trade_stream.edges.sse.channel import Channel, last_event_id
from trade_stream.edges.sse.client import SseClient
from trade_stream.edges.sse.codecs import SseCodec
from trade_stream.edges.sse.streams import Seated, Stream, admit, authorize
from trade_stream.edges.sse.views import alert_event
from trade_stream.edges.sse.wire import event_bytes

ALERT_REPLAY_LIMIT = 1000  # notifications replayed after Last-Event-ID; further back is a reset


@dataclass(eq=False)
class AlertState(Seated):
    """One alerts stream: its user (``Seated``) and nothing more."""


class AlertsStream(Stream[AlertState]):
    kind = "alerts"

    def __init__(self, identity: Credentials | None, codec: SseCodec, credentials: RequestCredentials) -> None:
        self.identity = identity
        self.credentials = credentials
        self.codec = codec
        self.notifier: TradeNotifier | None = None  # set by ``serve_from``: without it, 404
        self.clients: dict[SseClient, User] = {}

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
        return channel.open(self.codec, self.kind, state.user.name)

    async def hold(self, channel: Channel, client: SseClient, state: AlertState) -> bool:
        last = last_event_id(channel.request)
        if last is not None:
            self.replay(client, last, state.user)
        self.clients[client] = state.user  # no await since the replay's read: nothing missed, nothing twice
        return True

    async def pump(self, channel: Channel, client: SseClient, state: AlertState) -> None:
        await channel.pump(client, state.user.expires_at)

    def release(self, client: SseClient, state: AlertState) -> None:
        self.clients.pop(client, None)
        client.finish()
        assert self.identity is not None
        self.identity.sessions.release(state.user.name, state)

    def replay(self, client: SseClient, last: event_ids.EventId, user: User) -> None:
        notifier = self.notifier
        assert notifier is not None
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
            client.write(event_bytes("reset", encode({"reason": reason, "last_event_id": last.n,
                                                      "current_id": newest})))
            return
        if notes:
            client.write(b"".join(alert_event(n) for n in notes), len(notes))

    def on_alert(self, msg: dict[str, Any]) -> None:
        notifier = self.notifier
        assert notifier is not None
        for client, user in list(self.clients.items()):
            if notifier.reaches(msg, user):  # its account's, or its user's, and a kind that user has on the bell
                client.write(alert_event(msg["data"]), 1)

    def on_read(self, msg: dict[str, Any]) -> None:
        ev = event_bytes("alert:read", encode({k: msg[k] for k in ("ids", "all", "unread")}))
        for client, user in list(self.clients.items()):
            if user.name == msg.get("user"):  # read state is per user
                client.write(ev, 1)

