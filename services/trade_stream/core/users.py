"""Who a client is, as core sees it: the ``User`` a credential resolves to, and the check that resolves it.

Core admits clients to the accounts a user may see and counts each user's connections, but how a credential is
checked (users file, JWT, the single token, the failed-auth throttle) belongs to the edges that receive it. So core
holds the record and the two small protocols it calls through; ``edges.identity.Identity`` fills them.
"""

from __future__ import annotations

from collections.abc import Iterable
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


class SessionCounter(Protocol):
    """Each user's open private connections, bounded: ``admit`` refuses one over the limit."""

    def admit(self, user: str, holder: object) -> ClientError | None: ...

    def release(self, user: str, holder: object) -> None: ...


class Credentials(Protocol):
    """A presented credential to its ``User`` (or the error to answer), and the per-user connection count."""

    @property
    def sessions(self) -> SessionCounter: ...

    def resolve(self, credential: str, ip: str) -> User | ClientError: ...
