"""The private streams of the side-port: /api/stream/orders, /api/stream/positions and /api/stream/trading.

Each follows the journals of the accounts its user sees: each account's journal replayed from its own position
(a compound Last-Event-ID names one per account), then live; every event's id is the client's position in all of
them (event_ids.py, compound ids). ``positions`` follows the same journals without sending their events (its ids
are the same positions, so ``trading``, which sends both, resumes its orders from any event's id) and starts with
every position of the user's accounts: positions are state, so that first event is also what a reconnect
replays. ``OrderFanout`` writes the live events to the streams joined on each account, encoded once per format.

``trading`` also carries the ``agent-status`` app channel (when its user may see it), each event as published
(its data plus ``channel``); the channel then has its own position in the compound id (``@agent-status:<ms>-<seq>``,
feeds.py), so a single-account user's ids are compound from the channel's first event on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trade_stream.core import event_ids
from trade_stream.core.accounts import Accounts, split_since
from trade_stream.core.app_channels import AppChannels
from trade_stream.core.journal import Entry
from trade_stream.core.orders import Orders, Resume
from trade_stream.core.protocol import encode
from trade_stream.core.users import User
from trade_stream.edges.http.credentials import RequestCredentials
from trade_stream.edges.http.request import Request
from trade_stream.edges.http.responses import Response, error
from trade_stream.edges.sse.channel import Channel, last_event_id, raw_last_event_id
from trade_stream.edges.sse.client import SseClient
from trade_stream.edges.sse.codecs import SseCodec
from trade_stream.edges.sse.feeds import FIRST, Built, ChannelFeed, Tail, built_event, channel_reset
from trade_stream.edges.sse.streams import Seated, Stream, admit, authorize
from trade_stream.edges.sse.views import order_event, order_events, position_view
from trade_stream.edges.sse.wire import event_bytes


@dataclass(eq=False)
class OrderState(Seated):
    """One private order stream: its user, the accounts it follows and its position in each journal, so every
    event's id says where the client is in all of them (event_ids.py, compound ids)."""

    names: list[str]
    positions: dict[str, str] = field(default_factory=dict)  # account -> "<epoch>-<n>"
    kind: str = "orders"  # "orders", "positions" or "trading" (both)
    legacy: bool = False  # ?format=legacy: the old event names, order_update and position_update
    watched: list[Orders] = field(default_factory=list)  # marked to market while this stream watches them
    feed: ChannelFeed | None = None  # trading: the agent-status channel

    @property
    def channel_parts(self) -> dict[str, str]:
        return self.feed.parts if self.feed is not None else {}

    @property
    def wants_orders(self) -> bool:
        return self.kind != "positions"

    @property
    def wants_positions(self) -> bool:
        return self.kind != "orders" or self.legacy

    def event_id(self, account: str, epoch: str | None, n: int) -> str | int:
        here = event_ids.cursor(epoch, n) if epoch else str(n)
        if len(self.names) == 1 and not self.channel_parts:
            return here if epoch else n
        return event_ids.compound({**self.positions, account: here, **self.channel_parts})

    def current_id(self) -> str | None:
        """Where the client is in its journals now: the id of a position event, so that a Last-Event-ID taken
        from one resumes the order events of a trading stream exactly (positions are state: a reconnect gets
        all of them first)."""
        if len(self.names) == 1 and not self.channel_parts:
            return self.positions.get(self.names[0])
        positions = {**self.positions, **self.channel_parts}
        return event_ids.compound(positions) if positions else None


class OrderFanout:
    """The private streams live on each account, and the live events written to them."""

    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts
        self.clients: dict[SseClient, OrderState] = {}
        self.joined: dict[str, set[SseClient]] = {orders.account: set() for orders in accounts}

    def on_order_event(self, entry: Entry, orders: Orders) -> None:
        """Only to clients live on this account; the data is encoded once, the id is each client's position."""
        joined = self.joined.get(orders.account)
        if not joined:
            return
        message = orders.message(entry)
        rendered: dict[bool, list[tuple[str, bytes]]] = {}  # per format, encoded once
        epoch = orders.epoch
        for client in list(joined):
            stream = self.clients.get(client)
            if stream is None:
                continue
            if epoch:
                stream.positions[orders.account] = event_ids.cursor(epoch, entry.id)
            if not stream.wants_orders:
                continue  # a positions stream only moves its position in the journal
            events = rendered.get(stream.legacy)
            if events is None:
                events = rendered[stream.legacy] = order_events(message, stream.legacy)
            client.write(order_event(events, stream.event_id(orders.account, epoch, entry.id)), len(events))

    def on_orders_reset(self, reason: str, orders: Orders) -> None:
        ev = event_bytes("reset", encode({"reason": reason, "epoch": orders.epoch, "account": orders.account}))
        for client in list(self.joined.get(orders.account, ())):
            client.write(ev)

    def on_position(self, msg: dict[str, Any]) -> None:
        """One position changed (a fill, or a price move: Orders sends at most 4 a second per symbol)."""
        joined = self.joined.get(msg.get("account", ""))
        if not joined:
            return
        legacy: bytes | None = None
        view = [position_view(msg, msg["account"])]
        for client in list(joined):
            stream = self.clients.get(client)
            if stream is None or not stream.wants_positions:
                continue
            if stream.legacy:
                legacy = legacy if legacy is not None else event_bytes("position_update", encode(msg))
                client.write(legacy, 1)
            else:
                self.write_positions(client, stream, view)

    def positions_of(self, account: str) -> list[dict[str, Any]]:
        return [position_view(p, account) for p in self.accounts.orders[account].positions.views()]

    def write_positions(self, client: SseClient, stream: OrderState, positions: list[dict[str, Any]],
                         initializing: bool = False) -> None:
        """``position:update``: the positions that changed (all of them first) and the user's total value over
        every account they see."""
        total = sum(self.accounts.orders[n].positions.portfolio()["market_value"] for n in stream.names)
        body: dict[str, Any] = {"positions": positions, "totalValue": round(total, 2)}
        if initializing:
            body["initializing"] = True
        client.write(event_bytes("position:update", encode(body), stream.current_id()), 1)

    # --- prices -----------------------------------------------------------------------------------------


class OrdersStream(Stream[OrderState]):
    """One of the three private kinds (``orders``, ``positions``, ``trading``) over the shared fan-out."""

    def __init__(self, kind: str, accounts: Accounts | None, fanout: OrderFanout | None, codec: SseCodec,
                 credentials: RequestCredentials, hub: AppChannels | None = None, tail: Tail | None = None) -> None:
        self.kind = kind
        self.accounts = accounts
        self.credentials = credentials
        self.fanout = fanout
        self.codec = codec  # unused by these streams' writes, but every SseClient has one
        self.hub = hub if kind == "trading" else None  # agent-status rides on the trading stream only
        self.tail = tail

    def accept(self, request: Request) -> Response | OrderState:
        accounts = self.accounts
        if accounts is None:  # no private streams on this relay: the answer of a stream nobody may read
            return error(404, f"no such path {request.path}")
        user = authorize(accounts.identity, self.credentials, request)
        if not isinstance(user, User):
            return user
        names = accounts.visible(user)
        if not names:
            return error(403, f"user {user.name} may see no account")
        state = OrderState(user, names, kind=self.kind, legacy=request.query.get("format") == "legacy")
        refused = admit(accounts.identity, state, request, self.kind)
        return refused if refused is not None else state

    def open(self, channel: Channel, state: OrderState) -> SseClient:
        assert self.accounts is not None and self.fanout is not None
        client = channel.open(self.codec, self.kind, state.user.name)
        self.fanout.clients[client] = state
        state.watched = [self.accounts.orders[n] for n in state.names] if state.wants_positions else []
        for orders in state.watched:
            orders.watch(client)  # positions marked to market while someone watches them
        if self.hub is not None and self.tail is not None:
            def emit(built: Built) -> bool:
                if built.event is None:
                    return client.write(channel_reset(built.channel))
                eid = state.current_id()
                return client.write(built_event(built, eid) if eid else built.own, 1)

            state.feed = ChannelFeed(self.hub, self.tail, state.user, emit, history_limit=self.hub.history_limit)
        return client

    async def hold(self, channel: Channel, client: SseClient, state: OrderState) -> bool:
        accounts, fanout, names = self.accounts, self.fanout, state.names
        assert accounts is not None and fanout is not None
        raw = raw_last_event_id(channel.request)
        last = event_ids.parse_compound(raw) if raw and event_ids.is_compound(raw) else last_event_id(channel.request)
        sinces = split_since(last, names, lambda n: accounts.orders[n].epoch)
        # Where each journal starts, before anything is written: every event's id then names every account.
        plans = {name: accounts.orders[name].plan(sinces.get(name) if state.wants_orders else None)
                 for name in names}
        for name, plan in plans.items():
            epoch = accounts.orders[name].epoch
            if epoch and plan.start is not None:
                state.positions[name] = event_ids.cursor(epoch, plan.start)
        feed = state.feed
        if feed is not None and feed.may_follow("agent-status"):
            status = await feed.prepare("agent-status", event_ids.channel_positions(raw).get(
                "agent-status", FIRST if raw else None))
            if client.closed:
                return False
            feed.start(status)  # its events interleave with the replay below, each id where the client is then
        for name in names:
            orders, plan = accounts.orders[name], plans[name]
            if state.wants_orders:
                await self.replay_account(client, state, orders, plan, sinces.get(name))
            else:
                fanout.joined[name].add(client)
            if client.closed:
                return False
        if state.wants_positions and not state.legacy:
            fanout.write_positions(client, state, [p for n in names for p in fanout.positions_of(n)],
                                   initializing=True)
        return True

    async def pump(self, channel: Channel, client: SseClient, state: OrderState) -> None:
        await channel.pump(client, state.user.expires_at)

    def release(self, client: SseClient, state: OrderState) -> None:
        assert self.accounts is not None and self.fanout is not None
        for orders in state.watched:
            orders.unwatch(client)
        if state.feed is not None:
            state.feed.drop()
        self.fanout.clients.pop(client, None)
        for joined in self.fanout.joined.values():
            joined.discard(client)
        client.finish()
        self.accounts.identity.sessions.release(state.user.name, state)

    async def replay_account(self, client: SseClient, stream: OrderState, orders: Orders, plan: Resume,
                              last: event_ids.EventId | None) -> None:
        fanout, name = self.fanout, orders.account
        assert fanout is not None
        framed: list[int] = []  # ids of frames built but not yet written (the last one of a page may not be)

        def reset(reason: str) -> None:
            epoch, last_id = orders.epoch, orders.plan(None).start
            client.write(event_bytes("reset", encode({
                "reason": reason, "account": name, "last_event_id": last.n if last is not None else None,
                "epoch": epoch,
                "current_id": event_ids.cursor(epoch, last_id) if epoch and last_id is not None else None})))

        def frame(entry: Entry) -> bytes:
            framed.append(entry.id)
            return order_event(order_events(orders.message(entry), stream.legacy),
                               stream.event_id(name, orders.epoch, entry.id))

        def write(data: bytes, count: int) -> bool:
            if count and orders.epoch:
                stream.positions[name] = event_ids.cursor(orders.epoch, framed[count - 1])
            framed.clear()
            return client.write(data, count)

        if plan.reset:
            reset(plan.reset)
        await orders.replay(client, plan.start, frame, write, reset,
                            lambda: fanout.joined[name].add(client), lambda: not client.closed)
