"""Who a client is, as core sees it: the ``User`` a credential resolves to, and the check that resolves it.

Core admits clients to the accounts a user may see and counts each user's connections, but how a credential is
checked (users file, JWT, the single token, the failed-auth throttle) belongs to the edges that receive it. So core
holds the record and the two small protocols it calls through; ``edges.identity.Identity`` fills them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from trade_stream.core.protocol import ClientError


@dataclass(frozen=True)
class User:
    name: str
    accounts: frozenset[str] | None  # None: every account
    admin: bool = False
    expires_at: float | None = None  # wall-clock seconds (a JWT's exp); None: never
    kind: str = "token"  # "users_file", "jwt" or "token"
    channels: tuple[str, ...] | None = None  # app-channel globs it may subscribe to (core/channels); None: all

    def sees(self, account: str) -> bool:
        return self.accounts is None or account in self.accounts

    def visible(self, accounts: Iterable[str]) -> list[str]:
        return [a for a in accounts if self.sees(a)]


@dataclass(frozen=True, eq=False)
class Seat:
    """What the per-user limit keeps of one counted connection, so that a newer connection of the same user can
    take its place: its kind and address (for the log line) and ``close``, which sends it the ``connection_limit``
    warning (the message given) and ends it. ``close`` returns at once: it never waits on the connection's socket,
    so a client that stopped reading cannot hold up the one taking its place."""

    kind: str  # "websocket", "alpaca-trading", "sse-orders", …
    ip: str
    close: Callable[[str], None]


class SessionCounter(Protocol):
    """Each user's open private connections, bounded: one over the limit closes the user's oldest (``admit`` calls
    its seat's ``close``) or is refused (``admit`` answers the error), as the policy says."""

    def admit(self, user: str, holder: object, seat: Seat) -> ClientError | None: ...

    def release(self, user: str, holder: object) -> None: ...


class Credentials(Protocol):
    """A presented credential to its ``User`` (or the error to answer), and the per-user connection count."""

    @property
    def sessions(self) -> SessionCounter: ...

    def resolve(self, credential: str, ip: str) -> User | ClientError: ...

    def audience(self, account: str) -> list[str]:
        """The names of the users known ahead of any connection (configured, not presented) who see ``account``."""
