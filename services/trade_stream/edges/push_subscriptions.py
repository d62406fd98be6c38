"""Web Push subscriptions: what a browser's ``PushSubscription`` is, checked, and where they are kept.

A subscription is the browser's ``subscription.toJSON()``: ``endpoint`` (the push service URL a message is
POSTed to), ``keys.p256dh`` (the browser's P-256 public key, 65 bytes uncompressed, base64url) and ``keys.auth``
(a 16-byte secret, base64url); the two keys are what each message is encrypted to (RFC 8291). ``parse`` checks
all of it, so a malformed one is refused with a 400 naming the field instead of failing at every delivery.

Each is kept for the user who posted it, with the accounts that user saw then (a JWT user exists only while a
token of theirs is presented: this is how a fill on their account finds them while they are away), at most
``per_user`` per user: a new browser beyond that replaces the user's oldest (a person whose old browser is gone
cannot delete its subscription from there). One endpoint is one browser profile, so the same endpoint posted
again (a renewed key, another user signing in on that browser) replaces what was kept for it. A subscription's
id is derived from its endpoint, so it names the same outbox lane
on every node and across restarts.

The store: one SQLite file (WAL) in the state directory, read once into memory at start and written through on
each change, so a notification's deliveries (``of``, for every recipient) never touch the disk.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec

from trade_stream.core.journal import open_durable
from trade_stream.records.vapid import b64url_decode

MAX_ENDPOINT = 2048  # browsers' endpoints are a few hundred characters
SCHEMA = """
CREATE TABLE IF NOT EXISTS subscriptions (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    endpoint TEXT NOT NULL UNIQUE,
    p256dh TEXT NOT NULL,
    auth TEXT NOT NULL,
    created REAL NOT NULL,
    accounts TEXT NOT NULL DEFAULT '*'
);
CREATE INDEX IF NOT EXISTS subscriptions_user ON subscriptions(user, created);
"""


@dataclass(frozen=True)
class Subscription:
    id: str
    user: str
    endpoint: str
    p256dh: str  # base64url, as the browser gave it
    auth: str
    created: float
    accounts: frozenset[str] | None = None  # what the user who posted it saw then; None: every account

    def sees(self, account: str) -> bool:
        return self.accounts is None or account in self.accounts

    @property
    def origin(self) -> str:
        """The push service's origin: the ``aud`` of the VAPID token for this endpoint."""
        parts = urlsplit(self.endpoint)
        return f"{parts.scheme}://{parts.netloc}"

    def view(self) -> dict[str, Any]:
        """What the API shows: the push service, not the whole endpoint (it is the browser's capability)."""
        return {"id": self.id, "push_service": self.origin, "created": self.created}


def accounts_text(accounts: frozenset[str] | None) -> str:
    return "*" if accounts is None else ",".join(sorted(accounts))


def accounts_of(text: str) -> frozenset[str] | None:
    return None if text == "*" else frozenset(a for a in text.split(",") if a)


def subscription_id(endpoint: str) -> str:
    return hashlib.sha256(endpoint.encode()).hexdigest()[:24]


def parse_endpoint(value: object) -> str:
    """A push endpoint: an http(s) URL with a host, no credentials or fragment; ValueError naming the field."""
    if not isinstance(value, str) or not value or len(value) > MAX_ENDPOINT:
        raise ValueError(f"endpoint: must be the subscription's push service URL (at most {MAX_ENDPOINT} "
                         "characters)")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError:
        raise ValueError("endpoint: is not a URL") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("endpoint: must be an https:// URL of a push service")
    if "@" in parts.netloc or parts.fragment or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError("endpoint: must not carry credentials, a fragment, spaces or control characters")
    return value


def parse(body: object) -> tuple[str, str, str]:
    """(endpoint, p256dh, auth) of a PushSubscription JSON, or ValueError naming the field at fault."""
    if not isinstance(body, dict):
        raise ValueError('send the PushSubscription as JSON: {"endpoint": "https://…", "keys": {"p256dh": "…", '
                         '"auth": "…"}}')
    endpoint = parse_endpoint(body.get("endpoint"))
    keys = body.get("keys")
    if not isinstance(keys, dict):
        raise ValueError("keys: must be an object with p256dh and auth")
    p256dh, auth = keys.get("p256dh"), keys.get("auth")
    try:
        point = b64url_decode(p256dh) if isinstance(p256dh, str) else b""
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        if len(point) != 65:
            raise ValueError
    except ValueError:
        raise ValueError("keys.p256dh: must be the browser's P-256 public key, 65 bytes uncompressed, "
                         "base64url") from None
    try:
        secret = b64url_decode(auth) if isinstance(auth, str) else b""
    except ValueError:
        secret = b""
    if len(secret) != 16:
        raise ValueError("keys.auth: must be the subscription's 16-byte auth secret, base64url")
    assert isinstance(p256dh, str) and isinstance(auth, str)
    return endpoint, p256dh.strip(), auth.strip()


class SqlitePushStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = open_durable(path, SCHEMA)

    def load(self) -> list[Subscription]:
        rows = self.db.execute("SELECT id, user, endpoint, p256dh, auth, created, accounts FROM subscriptions "
                               "ORDER BY created").fetchall()
        return [Subscription(sub_id, user, endpoint, p256dh, auth, created, accounts_of(accounts))
                for sub_id, user, endpoint, p256dh, auth, created, accounts in rows]

    def save(self, sub: Subscription) -> None:
        self.db.execute("INSERT OR REPLACE INTO subscriptions(id, user, endpoint, p256dh, auth, created, accounts) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)", (sub.id, sub.user, sub.endpoint, sub.p256dh, sub.auth,
                                                         sub.created, accounts_text(sub.accounts)))

    def delete(self, sub_id: str) -> None:
        self.db.execute("DELETE FROM subscriptions WHERE id = ?", (sub_id,))

    def close(self) -> None:
        self.db.close()


class PushSubscriptions:
    """Every user's subscriptions, in memory, written through to ``store``. The store's errors (sqlite3.Error,
    OSError) reach the caller with nothing changed in memory."""

    def __init__(self, store: SqlitePushStore, per_user: int) -> None:
        self.store = store
        self.per_user = per_user
        self.by_id: dict[str, Subscription] = {s.id: s for s in store.load()}
        self.removed_gone = 0  # removed because the push service said the subscription is gone (404/410)

    def __len__(self) -> int:
        return len(self.by_id)

    def __iter__(self) -> Iterator[Subscription]:
        return iter(self.by_id.values())

    def get(self, sub_id: str) -> Subscription | None:
        return self.by_id.get(sub_id)

    def of(self, user: str) -> list[Subscription]:
        """The user's subscriptions, oldest first."""
        return sorted((s for s in self.by_id.values() if s.user == user), key=lambda s: s.created)

    def add(self, user: str, endpoint: str, p256dh: str, auth: str,
            accounts: frozenset[str] | None = None) -> tuple[Subscription, list[str]]:
        """Keep the subscription for ``user`` (who sees ``accounts``); returns it and the ids of the user's oldest
        it replaced."""
        sub = Subscription(subscription_id(endpoint), user, endpoint, p256dh, auth, time.time(), accounts)
        others = [s for s in self.of(user) if s.id != sub.id]
        replaced = [s.id for s in others[:max(0, len(others) + 1 - self.per_user)]]
        for sub_id in replaced:
            self.store.delete(sub_id)
            del self.by_id[sub_id]
        self.store.save(sub)
        self.by_id[sub.id] = sub
        return sub, replaced

    def remove(self, user: str, endpoint: str) -> bool:
        """The user's subscription for ``endpoint`` removed (False: they had none for it)."""
        sub = self.by_id.get(subscription_id(endpoint))
        if sub is None or sub.user != user:
            return False
        self.store.delete(sub.id)
        del self.by_id[sub.id]
        return True

    def gone(self, sub_id: str) -> bool:
        """The push service answered 404/410: the browser dropped the subscription; forget it."""
        if sub_id not in self.by_id:
            return False
        self.store.delete(sub_id)
        del self.by_id[sub_id]
        self.removed_gone += 1
        return True

    def close(self) -> None:
        self.store.close()
