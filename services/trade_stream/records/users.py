"""The users file (``TRADE_STREAM_USERS_FILE``, TOML) and the JWT public key file, as plain records.

Each ``[[user]]`` has a ``name``, the ``token_hash`` (``sha256:<salt>:<digest>``, never the token), the
``token_id`` its ``tsu_<id>_<secret>`` token carries, the ``accounts`` it sees (``["*"]``: all), ``admin`` and,
optionally, the ``email`` address its notifications are mailed to.
config checks both files once at start (a mistake is one ``ValueError`` line, exit status 2); edges.identity
re-reads the users file while running and checks credentials against it. Stdlib, plus cryptography for the key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trade_stream.tomltables import check_table, parse_tables, read_tables

NAME_RE = re.compile(r"[A-Za-z0-9._@-]{1,64}")
USER_FIELDS = {"name", "token_hash", "token_id", "accounts", "admin", "email"}
# An address as a person writes it: local@domain, no display name, no spaces, quotes, brackets or line breaks
# (nothing that could end a header or add a recipient); at most 254 characters (RFC 5321's path limit).
EMAIL_RE = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                      r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+")
TOKEN_PREFIX = "tsu_"
TOKEN_ID_RE = re.compile(r"[0-9a-f]{16}")
TOKEN_ID_END = len(TOKEN_PREFIX) + 16  # where the id ends and the "_" before the secret stands
BROKER_ACCOUNT_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


@dataclass(frozen=True)
class UserRecord:
    name: str
    token_hash: str = field(repr=False)
    accounts: tuple[str, ...]  # ("*",): every account
    admin: bool = False
    token_id: str = ""  # "": a token from before token ids (checked by trying each such user)
    email: str = ""  # "": no email alerts


def valid_email(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 254 and EMAIL_RE.fullmatch(value) is not None


def load_users(path: str) -> tuple[UserRecord, ...]:
    """Parse and validate the users file; ValueError with one line naming the user and field. A missing file is
    no users (``trade-stream user add`` creates it)."""
    items = read_tables(path, "user", missing_ok=True)
    users = tuple(parse_tables(items, "user", _user, lambda u: u.name))
    seen: dict[str, str] = {}
    for u in users:
        if u.token_id and seen.setdefault(u.token_id, u.name) != u.name:
            raise ValueError(f"user {u.name!r}: token_id {u.token_id} is also user {seen[u.token_id]!r}'s; token "
                             "ids must be unique (remove the user and add it again for a new token)")
    return users


def _user(item: Any) -> UserRecord:
    item = check_table(item, USER_FIELDS)
    name = item.get("name")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ValueError("name must be 1-64 of A-Z a-z 0-9 . _ @ -")
    stored = item.get("token_hash")
    if not isinstance(stored, str) or not re.fullmatch(r"sha256:[0-9a-f]{32}:[0-9a-f]{64}", stored):
        raise ValueError("token_hash must be sha256:<salt>:<digest> as written by trade-stream user add "
                         "(never the token itself)")
    token_id = item.get("token_id", "")
    if not isinstance(token_id, str) or not (token_id == "" or TOKEN_ID_RE.fullmatch(token_id)):
        raise ValueError("token_id must be the 16 hex digits after tsu_ in the user's token, as written by "
                         "trade-stream user add")
    accounts = item.get("accounts")
    if not isinstance(accounts, list) or not accounts or not all(isinstance(a, str) and a for a in accounts):
        raise ValueError('accounts must be a non-empty list of account names (or ["*"] for all)')
    admin = item.get("admin", False)
    if not isinstance(admin, bool):
        raise ValueError("admin must be true or false")
    email = item.get("email", "")
    if email != "" and not valid_email(email):
        raise ValueError("email must be one address such as alice@example.com (no name, no spaces)")
    return UserRecord(name, stored, tuple(accounts), admin, token_id, email)


def check_accounts(users: Iterable[UserRecord], accounts: Iterable[str], broker: bool = False
                   ) -> tuple[UserRecord, ...]:
    """The users, if every account they name is one of this relay's (``*`` is all); else ValueError naming the
    first user and account that is not: a typo there would silently show someone nothing. In Broker API mode an
    Alpaca account id (a UUID) is an account too: the relay follows every account of the partner."""
    known = set(accounts)
    users = tuple(users)
    for u in users:
        wrong = next((a for a in u.accounts if a != "*" and a not in known
                      and not (broker and BROKER_ACCOUNT_RE.fullmatch(a))), None)
        if wrong is not None:
            raise ValueError(f"user {u.name!r} names account {wrong!r}, which this relay does not have "
                             f"(accounts: {', '.join(sorted(known))})")
    return users


def load_public_key(path: str) -> Any:
    """The PEM public key for RS256/ES256 JWTs (ValueError naming the problem)."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(Path(path).read_bytes())
    except OSError as exc:
        raise ValueError(f"cannot be read ({exc})") from None
    except ValueError:
        raise ValueError("is not a PEM public key (-----BEGIN PUBLIC KEY-----)") from None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise ValueError("must be an RSA (RS256) or EC P-256 (ES256) public key")
    return key
