"""Several Alpaca accounts, and which of them each private client may see.

``Orders`` stays the unit of one account (its journal, trading stream, reconciliation, positions); this registry
holds one per account and does the scoping at the edge: a WebSocket client authenticates as a ``User``
(core/users.py, resolved by the ``Credentials`` the edges fill) and is admitted to the ``Orders`` of exactly the
accounts that user sees, so every event it gets (``order_update``, ``position_update``, ``orders_snapshot``,
notifications) is one of theirs by construction, with no filtering on the hot path.

A user's connections are counted (``Credentials.sessions``) from the ``auth`` that makes one private: when a newer
one takes the place of this one, its private streams end, it gets ``{"type":"warning","code":"connection_limit"}``
and the edge that owns its socket closes it (``hang_up``, set by the wiring), never awaited here.

A JWT carries its expiry: when it passes, the client's private subscriptions end with ``token_expired``. A
client that sends a fresh token before that (``{"action":"auth","token":…}``) just moves the deadline: its
subscriptions stay, so the stream has no gap.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from trade_stream.core.event_ids import EventId
from trade_stream.core.fanout import Client
from trade_stream.core.orders import Orders
from trade_stream.core.protocol import ClientError
from trade_stream.core.users import Credentials, Seat, User

log = logging.getLogger("trade_stream.core.accounts")

LIMIT_CLOSE_CODE = 1008  # policy violation: the user's connection limit
LIMIT_CLOSE_REASON = "connection limit: a newer connection of this user took its place"


class Accounts:
    def __init__(self, orders: dict[str, Orders], identity: Credentials) -> None:
        self.orders = orders
        self.identity = identity
        self.users: dict[Client, User] = {}
        self._subscribed: set[Client] = set()
        self._expiry: dict[Client, asyncio.TimerHandle] = {}
        self.broker: Any = None  # Broker API mode: core/broker.BrokerEvents, routed by Alpaca account id
        self.expiry_listeners: list[Callable[[Client], None]] = []  # told when a client's token expired
        # Closes a client's socket in the background with a close code and reason (the WebSocket server's).
        self.hang_up: Callable[[Client, int, str], None] | None = None
        self._displaced: set[Client] = set()  # closed for a newer connection of their user, not yet gone

    def __iter__(self) -> Iterator[Orders]:
        return iter(self.orders.values())

    def names(self) -> list[str]:
        return list(self.orders)

    def visible(self, user: User) -> list[str]:
        return user.visible(self.orders)

    def user_of(self, client: Any) -> User | None:
        return self.users.get(client)

    def clients_of(self, name: str) -> list[Client]:
        return [c for c, u in self.users.items() if u.name == name]

    def watching(self) -> list[tuple[Client, User]]:
        """The clients subscribed to orders (notifications ride that subscription), each with its user."""
        return [(c, u) for c, u in self.users.items() if c in self._subscribed]

    # --- the WebSocket side's PrivateStreams ------------------------------------------------------------

    def authenticate(self, client: Client, token: str) -> ClientError | None:
        if client in self._displaced:
            return ClientError("connection_limit", "this connection is closing: a newer connection of its user "
                                                   "took its place")
        found = self.identity.resolve(token, client.ip)
        if isinstance(found, ClientError):
            return found
        old = self.users.get(client)
        if old is None or old.name != found.name:
            refused = self.identity.sessions.admit(found.name, client,
                                                   Seat("websocket", client.ip, partial(self._displace, client)))
            if refused is not None:
                return refused
            if old is not None:
                self.identity.sessions.release(old.name, client)
        self.users[client] = found
        for name, orders in self.orders.items():
            if found.sees(name):
                orders.authed.add(client)
            else:
                orders.forget(client)  # a fresh token with fewer accounts: those end now
        self._schedule_expiry(client, found)
        if client in self._subscribed and self.broker is not None:
            self.broker.watch(client, found)
        if client in self._subscribed:  # a refresh: keep what runs, start what the new token adds
            for name in found.visible(self.orders):
                orders = self.orders[name]
                if client not in orders.subscribers and client not in orders._starting:
                    orders.subscribe(client, None)
        log.info("auth_ok user=%s kind=%s ip=%s accounts=%s", found.name, found.kind, client.ip,
                 ",".join(found.visible(self.orders)))
        return None

    def subscribe(self, client: Client, since: EventId | dict[str, EventId] | None) -> ClientError | None:
        user = self.users.get(client)
        if user is None:
            return ClientError("unauthorized", 'order updates are private: send {"action":"auth","token":…} first')
        names = user.visible(self.orders)
        brokered = self.broker is not None and (user.accounts is None or any(a not in self.orders
                                                                            for a in user.accounts))
        if not names and not brokered:
            return ClientError("no_accounts", f"user {user.name} may see none of this relay's accounts")
        if client in self._subscribed:
            return ClientError("already_subscribed", "already subscribed to orders")
        broker_since = None
        if brokered:  # a compound id's "broker" part, or a single id the Broker journal issued, resumes it
            if isinstance(since, dict):
                broker_since = since.get("broker")
            elif since is not None and (not names or (since.epoch is not None and since.epoch == self.broker.epoch)):
                broker_since, since = since, None
        sinces = split_since(since, names, lambda n: self.orders[n].epoch)
        self._subscribed.add(client)
        if brokered:  # answered like each account's Orders answers its own; before any replayed event
            client.send_message({"type": "subscribed", "channel": "orders", "broker": True})
            self.broker.watch(client, user, broker_since)
        for name in names:
            err = self.orders[name].subscribe(client, sinces.get(name))
            if err is not None:
                return err
        return None

    def unsubscribe(self, client: Client) -> None:
        self._subscribed.discard(client)
        if self.broker is not None:
            self.broker.unwatch(client)
        for orders in self.orders.values():
            orders.unsubscribe(client)

    def _displace(self, client: Client, message: str) -> None:
        """A newer connection of the client's user took its place (its slot is freed already): the private
        streams end now, the warning goes after whatever is queued, then the socket closes in the background."""
        self.forget(client)
        self._displaced.add(client)
        client.send_message({"type": "warning", "code": "connection_limit", "message": message})
        if self.hang_up is not None:
            self.hang_up(client, LIMIT_CLOSE_CODE, LIMIT_CLOSE_REASON)

    def forget(self, client: Client) -> None:
        self._displaced.discard(client)
        user = self.users.pop(client, None)
        if user is not None:
            self.identity.sessions.release(user.name, client)
        self._subscribed.discard(client)
        if self.broker is not None:
            self.broker.unwatch(client)
        handle = self._expiry.pop(client, None)
        if handle is not None:
            handle.cancel()
        for orders in self.orders.values():
            orders.forget(client)

    def _schedule_expiry(self, client: Client, user: User) -> None:
        handle = self._expiry.pop(client, None)
        if handle is not None:
            handle.cancel()
        if user.expires_at is not None:
            delay = max(0.0, user.expires_at - time.time())
            self._expiry[client] = asyncio.get_running_loop().call_later(delay, self._expire, client, user)

    def _expire(self, client: Client, user: User) -> None:
        if self.users.get(client) is not user:
            return  # refreshed meanwhile
        self._expiry.pop(client, None)
        log.info("token_expired user=%s ip=%s", user.name, client.ip)
        self.forget(client)
        for listener in self.expiry_listeners:
            listener(client)
        client.send_message(ClientError(
            "token_expired", "your token expired: private subscriptions ended; send "
            '{"action":"auth","token":…} with a fresh one, then subscribe again').to_message())

    # --- for status and health ---------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """The first account's health at the top, or the longest-faulted one's, so /healthz goes
        down for any account's journal; every account's under ``accounts``."""
        views = {name: orders.health() for name, orders in self.orders.items()}
        first = max(views.values(), key=lambda v: -1.0 if v["fault_for"] is None else v["fault_for"])
        return {**first, "accounts": views} if len(views) > 1 else first

    def prune(self) -> int:
        return sum(orders.prune() for orders in self.orders.values())

    async def stop(self) -> None:
        for orders in self.orders.values():
            await orders.stop()


def split_since(since: EventId | dict[str, EventId] | None, names: list[str],
                epoch_of: Callable[[str], str | None]) -> dict[str, EventId]:
    """Which account each part of a resume id is for. A compound id names them (event_ids.py); a single id goes to
    the account whose journal issued it (its epoch says which), or with one account to that one; a single id no
    journal of these issued resets them all."""
    if since is None:
        return {}
    if isinstance(since, dict):
        return {n: since[n] for n in names if n in since}
    if len(names) == 1:
        return {names[0]: since}
    owner = next((n for n in names if since.epoch is not None and epoch_of(n) == since.epoch), None)
    return {owner: since} if owner is not None else dict.fromkeys(names, since)
