"""App channels on one node: which holders are subscribed to which channel, and each event fanned out to them.
Nothing here awaits a client: events are encoded once per codec and handed to ``Holder.send``/``fan``.

How an edge uses it (the browser WebSocket in edges/ws_server.py; the SSE side-port the same way):

1. ``err = channels.subscribe(holder, channel, user, codec, since)``: ``holder`` is a core.fanout.Holder (its
   ``send``/``fan`` take what ``codec`` makes), ``user`` the core.users.User it authenticated as (None:
   anonymous), ``codec`` a ``ChannelCodec`` for that kind of client (``BROWSER_CHANNELS`` for a browser
   WebSocket), ``since`` the last event id the client saw (None: live events only). ``err`` is a
   ``ClientError`` (``invalid_channel``, ``unauthorized``, ``channel_limit``, ``already_subscribed``) or None;
   on None, acknowledge at once (``{"type":"subscribed",…}``): what ``since`` replays, or the codec's
   ``reset`` when it cannot be replayed without a gap, follows that, then live events, with no gap and no
   duplicate between the two.
2. ``channels.unsubscribe(holder, channel)`` for one channel; ``channels.drop(holder)`` when the client goes
   (Relay.remove calls it for the WebSocket side); ``channels.logged_in(holder, user)`` when the connection
   authenticates again, and ``channels.logged_out(holder)`` when its login ends (a JWT expired: the wiring
   tells it for WebSocket clients).
3. The engine hands every event of the cluster to ``deliver`` (through the relay's NodeHandler); an event with
   ``users`` reaches only the holders of those users. ``gap`` resets a channel's subscribers when this node
   missed some of its events.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Protocol

from trade_stream.core import event_ids
from trade_stream.core.channels import CHANNEL_RULE, Access, ChannelEvent, Reset, addressed_to, check_channel
from trade_stream.core.engine import ChannelsUnavailable
from trade_stream.core.framing import text_frame
from trade_stream.core.protocol import ClientError, encode
from trade_stream.core.users import User

log = logging.getLogger("trade_stream.core.app_channels")

History = Callable[[str, str, int], Awaitable["list[ChannelEvent] | Reset"]]
MAX_PENDING = 10_000  # live events held for one subscriber while its history is read; past that, a reset


class ChannelCodec(Protocol):
    """How one kind of client gets channel events: what its holder's ``send`` takes. One instance per kind (the
    fan-out encodes each event once per codec, and hands a codec's holders to one ``fan``)."""

    def event(self, event: ChannelEvent) -> Any: ...

    def reset(self, channel: str) -> Any: ...


class BrowserChannelCodec:
    """The browser WebSocket: ``{"type":"event","channel","event","id","data"}`` and ``{"type":"reset",…}``."""

    def event(self, event: ChannelEvent) -> bytes:
        return text_frame(encode({"type": "event", "channel": event.channel, "event": event.event,
                                  "id": event.id, "data": event.data}))

    def reset(self, channel: str) -> bytes:
        return text_frame(encode({"type": "reset", "channel": channel}))


BROWSER_CHANNELS = BrowserChannelCodec()


@dataclass(eq=False)
class _Sub:
    user: str | None
    codec: ChannelCodec
    pending: list[ChannelEvent] | None = None  # live events while the history read runs
    lost: bool = False  # events were lost while it resumed (too many came, or the node missed some): a reset


class AppChannels:
    def __init__(self, history: History, access: Access, max_per_client: int = 100,
                 history_limit: int = 100) -> None:
        self.history = history  # the engine's channel_history
        self.access = access
        self.max_per_client = max_per_client
        self.history_limit = history_limit
        self.subs: dict[str, dict[Hashable, _Sub]] = {}
        self._of: dict[Hashable, set[str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.delivered = 0  # events handed to holders (one per holder)

    def channels_of(self, holder: Hashable) -> set[str]:
        return self._of.get(holder, set())

    def subscribe(self, holder: Any, channel: object, user: User | None, codec: ChannelCodec,
                  since: str | None = None) -> ClientError | None:
        name = check_channel(channel)
        if name is None:
            raw = str(channel)[:80]
            return ClientError("invalid_channel", f"unknown channel {raw!r}: {CHANNEL_RULE}",
                               channel=raw if isinstance(channel, str) else None)
        if not self.access.may_subscribe(user, name):
            why = "log in first" if user is None else f"user {user.name} may not see it"
            return ClientError("unauthorized", f"channel {name} is not open to you: {why}", channel=name)
        mine = self._of.get(holder, set())
        if name in mine:
            return ClientError("already_subscribed", f"already subscribed to {name}", channel=name)
        if len(mine) >= self.max_per_client:
            return ClientError("channel_limit", f"at most {self.max_per_client} channels per connection "
                               "(TRADE_STREAM_MAX_CHANNELS_PER_CLIENT); unsubscribe one first", channel=name)
        sub = _Sub(user.name if user is not None else None, codec, [] if since is not None else None)
        self.subs.setdefault(name, {})[holder] = sub
        self._of.setdefault(holder, set()).add(name)
        if since is not None:
            task = asyncio.get_running_loop().create_task(self._resume(holder, name, since, sub))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return None

    def unsubscribe(self, holder: Hashable, channel: str) -> bool:
        """False when ``holder`` was not subscribed to ``channel``."""
        mine = self._of.get(holder)
        if not mine or channel not in mine:
            return False
        mine.discard(channel)
        if not mine:
            del self._of[holder]
        subs = self.subs[channel]
        del subs[holder]
        if not subs:
            del self.subs[channel]
        return True

    def drop(self, holder: Hashable) -> None:
        """The client left: every channel it held."""
        for channel in list(self._of.get(holder, ())):
            self.unsubscribe(holder, channel)

    def logged_in(self, holder: Hashable, user: User | None) -> None:
        """The holder is ``user`` now (another login on the same connection; None: its login ended): it keeps the
        channels that user may subscribe to, and events addressed to users reach it as that user."""
        for channel in list(self._of.get(holder, ())):
            if self.access.may_subscribe(user, channel):
                self.subs[channel][holder].user = user.name if user is not None else None
            else:
                self.unsubscribe(holder, channel)

    def logged_out(self, holder: Hashable) -> None:
        """The holder's login ended (its token expired): it keeps only the channels open to anonymous clients,
        and no longer gets events addressed to the user it was."""
        self.logged_in(holder, None)

    def deliver(self, event: ChannelEvent) -> None:
        """One event from the engine: to each subscriber it is addressed to, encoded once per codec."""
        subs = self.subs.get(event.channel)
        if not subs:
            return
        users = event.users
        groups: dict[ChannelCodec, list[Any]] = {}
        for holder, sub in subs.items():
            if sub.pending is not None:
                if len(sub.pending) < MAX_PENDING:
                    sub.pending.append(event)
                else:
                    sub.lost = True
                continue
            if users is not None and sub.user not in users:  # addressed_to, inline on the hot path
                continue
            groups.setdefault(sub.codec, []).append(holder)
        for codec, group in groups.items():  # built before any send: a send that cuts a client off is safe
            self.delivered += len(group)
            group[0].fan(codec.event(event), group, 1)

    def gap(self, channel: str) -> None:
        """This node missed events of ``channel``: each subscriber gets a reset (one still resuming will get
        one when its history read ends)."""
        groups: dict[ChannelCodec, list[Any]] = {}
        for holder, sub in self.subs.get(channel, {}).items():
            if sub.pending is not None:
                sub.lost = True
            else:
                groups.setdefault(sub.codec, []).append(holder)
        for codec, group in groups.items():
            group[0].fan(codec.reset(channel), group, 0)

    async def _resume(self, holder: Any, channel: str, since: str, sub: _Sub) -> None:
        """Replay what follows ``since``, then the live events that came meanwhile and are newer than it."""
        try:
            found = await self.history(channel, since, self.history_limit)
        except ChannelsUnavailable as exc:
            log.warning("channel_history_unavailable channel=%s error=%s", channel, exc)
            found = Reset(channel, "history unavailable")
        except Exception:  # never leave a subscriber waiting for a replay that will not come
            log.exception("channel_history_failed channel=%s", channel)
            found = Reset(channel, "history failed")
        if self.subs.get(channel, {}).get(holder) is not sub:
            return  # unsubscribed (or gone) meanwhile
        pending, sub.pending = sub.pending or [], None
        if sub.lost or isinstance(found, Reset):
            # A reset tells the client to refetch; live events go on from here (all of those that came
            # meanwhile, unless some were lost: then from the next one).
            holder.send(sub.codec.reset(channel), 0)
            send = [] if sub.lost else pending
        else:
            last = event_ids.parse_stream_id(found[-1].id if found else since)
            send = [*found, *(e for e in pending if _after(e, last))]
        for event in send:
            if addressed_to(event.users, sub.user):
                self.delivered += 1
                holder.send(sub.codec.event(event), 1)

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()


def _after(event: ChannelEvent, last: tuple[int, int] | None) -> bool:
    key = event_ids.parse_stream_id(event.id)
    return last is None or key is None or key > last
