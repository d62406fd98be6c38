"""Who is asking: a presented credential becomes a ``User`` (name, the accounts it may see, admin, expiry).

Three kinds of credential, checked in this order:

1. the users file (``TRADE_STREAM_USERS_FILE``, TOML): each user's token is stored only as a salted HMAC-SHA256
   (``sha256:<salt>:<digest>``). Tokens are 32 random bytes, so a fast hash is enough: nobody can guess one, and
   the file alone does not give anyone a token. A token is ``tsu_<id>_<secret>``: the 16-hex-digit ``id`` is
   stored in the clear as the user's ``token_id`` and selects the one user whose hash is checked, so a check
   costs one hash whatever the number of users. Tokens written before ids existed (no ``token_id``) keep
   working; each such user costs one hash per check of an id-less credential, which is why they are counted
   at load and why a source over the failed-auth limit is not checked against them. The file is re-read when
   it changes (``trade-stream user add`` takes effect without a restart; a broken edit is logged and the
   previous users stay);
2. a JWT minted by your web app (as Centrifugo does): HS256 with ``TRADE_STREAM_JWT_SECRET``, or RS256/ES256
   with ``TRADE_STREAM_JWT_PUBLIC_KEY``; claims ``sub`` (the user), ``accounts`` (list) and ``exp`` are required.
   An optional ``channels`` claim (a list of globs) narrows the app channels the user may subscribe to, as the
   users file's ``channels`` field does; ``email`` is the address email alerts go to (core/addresses.py
   remembers the latest one presented). ``alg: none``, any other algorithm, a bad signature, an expired or
   account-less token are refused, each with its own message. ``exp`` must be a JSON number (PyJWT alone also
   takes a numeric string) no further ahead than
   ``TRADE_STREAM_JWT_MAX_LIFETIME``, so a leaked token cannot be one that never expires; ``aud`` and ``iss``
   must match ``TRADE_STREAM_JWT_AUDIENCE`` / ``_ISSUER`` when those are set;
3. ``TRADE_STREAM_TOKEN``: the single-user shortcut, user ``default``, every account, admin.

The failed-auth throttle (limits.FailedAuth: per source and presented credential, and per source) is consulted
before any token is hashed. A credential its source keeps presenting wrong is answered 429 unchecked. A source
over its own limit gets only the checks whose cost does not grow with the users (a token with an id, a JWT,
``TRADE_STREAM_TOKEN``): a right credential of those kinds is still accepted whatever anyone else at that address
got wrong, and anything else is answered 429 unhashed. ``Sessions`` counts each user's private connections
(``TRADE_STREAM_MAX_CONNECTIONS_PER_USER``) and makes room for one more by closing the oldest, or refuses it
(``TRADE_STREAM_CONNECTION_LIMIT_POLICY``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from trade_stream.core.addresses import AddressStore
from trade_stream.core.limits import FailedAuth
from trade_stream.core.orders import AuthThrottled
from trade_stream.core.protocol import ClientError
from trade_stream.core.users import Seat, User
from trade_stream.records.users import (
    BROKER_ACCOUNT_RE,
    GLOB_RE,
    NAME_RE,
    TOKEN_ID_END,
    TOKEN_ID_RE,
    TOKEN_PREFIX,
    UserRecord,
    check_accounts,
    load_public_key,
    load_users,
    valid_email,
)
from trade_stream.tomltables import read_tables

log = logging.getLogger("trade_stream.edges.identity")

TOKEN_USER = "default"
JWT_HMAC = ("HS256",)
JWT_PUBLIC = ("RS256", "ES256")
RELOAD_EVERY = 1.0  # seconds between checks of the users file's mtime
UNKNOWN_LOG_LIMIT = 1000  # unknown JWT account names remembered (each logged once); beyond, no more logging


# --- the users file ----------------------------------------------------------------------------------------

def hash_token(token: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hmac.new(salt, token.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
    return f"sha256:{salt.hex()}:{digest}"


def new_token() -> tuple[str, str]:
    """(token id, token) for a new user: the id in the clear in the users file, the token shown once."""
    token_id = secrets.token_hex(8)
    return token_id, f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"


def token_id_of(credential: str) -> str | None:
    """The id a ``tsu_<id>_<secret>`` token carries; None for any other credential. No hashing."""
    if not credential.startswith(TOKEN_PREFIX) or credential[TOKEN_ID_END:TOKEN_ID_END + 1] != "_":
        return None
    token_id = credential[len(TOKEN_PREFIX):TOKEN_ID_END]
    return token_id if TOKEN_ID_RE.fullmatch(token_id) else None


def token_matches(token: str, stored: str) -> bool:
    try:
        scheme, salt, _ = stored.split(":")
        return scheme == "sha256" and hmac.compare_digest(hash_token(token, bytes.fromhex(salt)), stored)
    except ValueError:
        return False


def write_users(path: str, users: Iterable[UserRecord]) -> None:
    """Rewrite the users file atomically (a reader sees the old file or the new one, never half of one).

    A new file is 0600: it holds only hashes, but who may see what is nobody else's business. An existing file
    keeps its mode and group: root edits a file that the service reads through its group (root:trade-stream
    0640), and the service must still read it after the edit."""
    lines = ["# trade-stream users: managed with `trade-stream user add|list|remove`. Tokens are stored as salted",
             "# hashes only: a lost token cannot be recovered, remove the user and add it again.", ""]
    for u in users:
        accounts = ", ".join(f'"{a}"' for a in u.accounts)
        lines += ["[[user]]", f'name = "{u.name}"', *([f'token_id = "{u.token_id}"'] if u.token_id else []),
                  f'token_hash = "{u.token_hash}"', f"accounts = [{accounts}]",
                  f"admin = {'true' if u.admin else 'false'}",
                  *([f"channels = [{', '.join(f'{chr(34)}{c}{chr(34)}' for c in u.channels)}]"]
                    if u.channels is not None else []),
                  *([f'email = "{u.email}"'] if u.email else []), ""]
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        try:
            old = os.stat(target)
        except FileNotFoundError:
            old = None
        if old is not None:
            if old.st_gid != os.fstat(f.fileno()).st_gid:
                os.fchown(f.fileno(), -1, old.st_gid)
            os.fchmod(f.fileno(), stat.S_IMODE(old.st_mode))
        f.write("\n".join(lines))
    os.replace(tmp, target)


# --- resolving a credential ---------------------------------------------------------------------------------

class Identity:
    def __init__(self, token: str, accounts: Iterable[str], users_file: str = "", jwt_secret: str = "",
                 jwt_public_key: str = "", max_connections_per_user: int = 10, broker: bool = False, *,
                 jwt_audience: str = "", jwt_issuer: str = "", jwt_max_lifetime: float = 86400,
                 connection_limit_policy: str = "close_oldest") -> None:
        self._token = token.encode("utf-8", "surrogatepass") if token else b""
        self.accounts = tuple(accounts)
        self.broker = broker  # Broker API mode: Alpaca account ids (UUIDs) are accounts too
        self.users_file = users_file
        self._users: tuple[UserRecord, ...] = ()
        self._audiences: dict[str, list[str]] | None = None  # account -> users-file users who see it ("*": all)
        self._by_token_id: dict[str, UserRecord] = {}
        self._legacy: tuple[UserRecord, ...] = ()  # users whose token has no id
        self.token_hashes = 0  # token hashes computed, for tests and the benchmark: flat in the number of users
        if users_file:
            self._set_users(check_accounts(load_users(users_file), self.accounts, broker))
        self._unknown_logged: set[str] = set()  # JWT account claims this relay does not have, logged once each
        self._users_mtime = self._mtime()
        self._checked = time.monotonic()
        self.jwt_secret = jwt_secret
        self.public_key = load_public_key(jwt_public_key) if jwt_public_key else None
        self.jwt_audience, self.jwt_issuer = jwt_audience, jwt_issuer
        self.jwt_max_lifetime = jwt_max_lifetime  # 0: no limit
        self.failures = FailedAuth()
        self.sessions = Sessions(max_connections_per_user, connection_limit_policy)
        # When email alerts are on: the email claim of each JWT user's latest token
        self.addresses: AddressStore | None = None

    def _set_users(self, users: tuple[UserRecord, ...]) -> None:
        self._users = users
        self._audiences = None  # built again on the next ``audience``
        self._by_token_id = {u.token_id: u for u in users if u.token_id}
        self._legacy = tuple(u for u in users if not u.token_id)
        if self._legacy:
            log.warning("users_without_token_id path=%s users=%d (their tokens work, but each costs a hash per "
                        "id-less credential checked: re-issue with trade-stream user remove NAME, then user add)",
                        self.users_file, len(self._legacy))

    def resolve(self, credential: str, ip: str) -> User | ClientError:
        """The user a credential names, or why not (``AuthThrottled`` when the source keeps sending wrong ones).
        The throttle is asked first: a credential this source keeps presenting wrong is not checked again, and a
        source over its own limit gets only the checks that cost the same whatever the number of users."""
        now = time.monotonic()
        wait = self.failures.repeated(ip, credential, now)
        if wait:
            return AuthThrottled("rate_limited", f"too many failed auth attempts; retry in {wait} s", retry_after=wait)
        wait = self.failures.crowded(ip, now)
        found = self._check(credential, thorough=not wait) if credential else \
            ClientError("unauthorized", "missing token")
        if isinstance(found, User):
            return found
        wait = wait or self.failures.fail(ip, credential, now)
        if wait:
            return AuthThrottled("rate_limited", f"too many failed auth attempts; retry in {wait} s", retry_after=wait)
        log.warning("auth_failed ip=%s reason=%s", ip, found.message)
        return found

    def _check(self, credential: str, thorough: bool = True) -> User | ClientError:
        """``thorough``: also try the users whose tokens have no id (one hash each)."""
        self._maybe_reload()
        token_id = token_id_of(credential)
        if token_id is not None:
            record = self._by_token_id.get(token_id)
            candidates: tuple[UserRecord, ...] = (record,) if record is not None else ()
        else:
            candidates = self._legacy if thorough else ()
        for record in candidates:
            self.token_hashes += 1
            if token_matches(credential, record.token_hash):
                accounts = None if "*" in record.accounts else frozenset(record.accounts)
                return User(record.name, accounts, record.admin, None, "users_file", record.channels)
        jwt_error = None
        if credential.count(".") == 2 and (self.jwt_secret or self.public_key is not None):
            user = self._jwt(credential)
            if isinstance(user, User):
                return user
            jwt_error = user
        if self._token and hmac.compare_digest(credential.encode("utf-8", "surrogatepass"), self._token):
            return User(TOKEN_USER, None, True, None, "token")
        return ClientError("unauthorized", jwt_error or "invalid token")

    def _jwt(self, token: str) -> User | str:
        import jwt

        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except jwt.InvalidTokenError:
            return "invalid token (not a JWT: it cannot be decoded)"
        if alg in JWT_HMAC and self.jwt_secret:
            key: Any = self.jwt_secret
        elif alg in JWT_PUBLIC and self.public_key is not None:
            key = self.public_key
        else:
            accepted = [*(JWT_HMAC if self.jwt_secret else ()), *(JWT_PUBLIC if self.public_key is not None else ())]
            return f"JWT algorithm {alg!r} is not accepted; this relay takes {', '.join(accepted)}"
        required = ["sub", "exp", *(["aud"] if self.jwt_audience else []), *(["iss"] if self.jwt_issuer else [])]
        try:
            claims = jwt.decode(token, key, algorithms=[alg], options={"require": required},
                                audience=self.jwt_audience or None, issuer=self.jwt_issuer or None)
        except jwt.ExpiredSignatureError:
            return "JWT expired (exp is in the past): get a fresh token"
        except jwt.InvalidSignatureError:
            return "JWT signature does not verify (wrong key or altered token)"
        except jwt.MissingRequiredClaimError as exc:
            return f"JWT lacks the required claim {exc.claim!r}"
        except jwt.InvalidAudienceError:
            return (f"JWT aud is not {self.jwt_audience!r} (TRADE_STREAM_JWT_AUDIENCE)" if self.jwt_audience else
                    "JWT has an aud claim, but this relay has no TRADE_STREAM_JWT_AUDIENCE to check it against")
        except jwt.InvalidIssuerError:
            return f"JWT iss is not {self.jwt_issuer!r} (TRADE_STREAM_JWT_ISSUER)"
        except jwt.InvalidTokenError as exc:
            return f"invalid JWT: {exc}"
        exp = claims["exp"]
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            return "JWT exp must be a JSON number (seconds since 1970)"
        if self.jwt_max_lifetime and exp - time.time() > self.jwt_max_lifetime:
            return (f"JWT exp lies more than {self.jwt_max_lifetime:g} s ahead (TRADE_STREAM_JWT_MAX_LIFETIME): "
                    "mint tokens that expire sooner")
        accounts = claims.get("accounts")
        if not isinstance(accounts, list) or not accounts or not all(isinstance(a, str) for a in accounts):
            return "JWT has no accounts claim: give accounts as a non-empty list of account names"
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            return "JWT sub must be the user's name (a non-empty string)"
        unknown = [a for a in accounts if not self.known(a)]
        new = [a for a in unknown if a not in self._unknown_logged]
        if new and len(self._unknown_logged) < UNKNOWN_LOG_LIMIT:
            self._unknown_logged.update(new)
            log.warning("jwt_unknown_accounts user=%s accounts=%s (ignored: not in this relay's accounts %s)",
                        sub, ",".join(new)[:200], ",".join(self.accounts))
        known = frozenset(a for a in accounts if self.known(a))
        channels = claims.get("channels")
        if channels is not None and (not isinstance(channels, list)
                                     or not all(isinstance(c, str) and GLOB_RE.fullmatch(c) for c in channels)):
            return "JWT channels must be a list of channel globs such as [\"strategies:*\"]"
        if self.addresses is not None and valid_email(claims.get("email")):
            self.addresses.remember(sub, claims["email"], known)  # so an alert can reach them offline
        return User(sub, known, claims.get("admin") is True, float(claims["exp"]), "jwt",
                    tuple(channels) if channels is not None else None)

    def known(self, account: str) -> bool:
        return account in self.accounts or (self.broker and BROKER_ACCOUNT_RE.fullmatch(account) is not None)

    def _mtime(self) -> float | None:
        try:
            return os.stat(self.users_file).st_mtime if self.users_file else None
        except OSError:
            return None

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if not self.users_file or now - self._checked < RELOAD_EVERY:
            return
        self._checked = now
        mtime = self._mtime()
        if mtime == self._users_mtime:
            return
        self._users_mtime = mtime
        try:
            self._set_users(check_accounts(load_users(self.users_file), self.accounts, self.broker))
            log.info("users_reloaded path=%s users=%d", self.users_file, len(self._users))
        except ValueError as exc:
            log.error("users_file_invalid path=%s error=%s (keeping the previous users)", self.users_file, exc)

    def users(self) -> tuple[UserRecord, ...]:
        self._maybe_reload()
        return self._users

    def audience(self, account: str) -> list[str]:
        """The users-file users who see ``account``, and the ``TRADE_STREAM_TOKEN`` user (who sees every account);
        JWT users are known only once they connect."""
        users = self.users()
        if self._audiences is None:  # asked for every notification a channel sends: one table per users file
            table: dict[str, list[str]] = {"*": []}
            for u in users:
                for name in ("*",) if "*" in u.accounts else u.accounts:
                    table.setdefault(name, []).append(u.name)
            self._audiences = table
        names = [*self._audiences.get(account, ()), *self._audiences["*"]]
        return [*names, TOKEN_USER] if self._token else names


class Sessions:
    """Each user's open private connections, oldest first, at most ``limit`` of them. One more, under the policy
    ``close_oldest``, is let in and the user's oldest connections are closed to make room (each logged); under
    ``refuse`` it is refused (logged). "Oldest" is the one admitted first, whatever its kind: a WebSocket counts
    from its ``auth``, a stream from its request. A closed connection's slot is freed here, at the moment it is
    closed, so the release its own teardown makes later finds nothing left to free: each slot is freed once."""

    def __init__(self, limit: int, policy: str = "close_oldest") -> None:
        self.limit = limit
        self.policy = policy
        self.by_user: dict[str, dict[object, Seat]] = {}  # insertion order: oldest first
        self.closed_oldest = 0  # connections closed to make room for a newer one of their user

    def reload(self, limit: int, policy: str) -> None:
        """SIGHUP: a new limit or policy applies from the next admission; nobody is closed now."""
        self.limit, self.policy = limit, policy

    def admit(self, user: str, holder: object, seat: Seat) -> ClientError | None:
        held = self.by_user.setdefault(user, {})
        if holder in held:
            return None
        if len(held) >= self.limit and self.policy == "refuse":
            log.warning("user_connection_refused user=%s open=%d limit=%d", user, len(held), self.limit)
            return ClientError("too_many_connections",
                               f"user {user} already has {len(held)} connections open (the limit, "
                               "TRADE_STREAM_MAX_CONNECTIONS_PER_USER); close one first")
        closing = []
        while len(held) >= self.limit:  # more than one when the limit was lowered by SIGHUP
            closing.append(held.pop(next(iter(held))))
        held[holder] = seat  # counted before any close runs: a close may release its own (freed) slot again
        for old in closing:
            self.closed_oldest += 1
            log.warning("user_connection_closed_oldest user=%s kind=%s ip=%s new_kind=%s new_ip=%s limit=%d",
                        user, old.kind, old.ip, seat.kind, seat.ip, self.limit)
            old.close(f"a newer connection of user {user} took the place of this one, the oldest: at most "
                      f"{self.limit} connections per user (TRADE_STREAM_MAX_CONNECTIONS_PER_USER)")
        return None

    def release(self, user: str, holder: object) -> None:
        held = self.by_user.get(user)
        if held is not None:
            held.pop(holder, None)
            if not held:
                del self.by_user[user]

    def counts(self) -> list[int]:
        return sorted((len(h) for h in self.by_user.values()), reverse=True)


# --- `trade-stream user add|list|remove` -----------------------------------------------------------------------

def main(argv: list[str]) -> int:
    import argparse
    import sys

    from dotenv import dotenv_values

    from trade_stream import config

    def fail(message: str, code: int = 2) -> int:
        print(f"trade-stream user: {message}", file=sys.stderr)
        return code

    # The files may be named before or after add/list/remove: each subparser takes them too, with SUPPRESS as its
    # default so that a flag given before the subcommand is not overwritten by the subparser's own default.
    files = argparse.ArgumentParser(add_help=False)
    files.add_argument("--users-file", default=argparse.SUPPRESS,
                       help="the users file (default TRADE_STREAM_USERS_FILE from the environment or .env)")
    files.add_argument("--accounts-file", default=argparse.SUPPRESS,
                       help="the accounts file the names in --accounts are checked against (default "
                            "TRADE_STREAM_ACCOUNTS_FILE; unset: the one account, default)")
    files.add_argument("--env-file", metavar="PATH", default=argparse.SUPPRESS,
                       help=".env file to read (default .env in the working directory, then the repo root)")
    parser = argparse.ArgumentParser(prog="trade-stream user", description="Manage the users file.",
                                     parents=[files])
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="add a user; prints its token once", parents=[files])
    add.add_argument("name")
    add.add_argument("--accounts", required=True, help="comma list of account names, or * for all")
    add.add_argument("--admin", action="store_true", help="may see per-user names in /api/stream/metrics")
    add.add_argument("--channels", help="comma list of the app channels (globs) it may subscribe to, e.g. "
                     "strategies:*,alerts (default every channel)")
    add.add_argument("--email", default="", help="address the user's notifications are mailed to "
                                                 "(TRADE_STREAM_SMTP_URL); default none")
    sub.add_parser("list", help="users and their accounts (never tokens)", parents=[files])
    remove = sub.add_parser("remove", help="remove a user (its token stops working)", parents=[files])
    remove.add_argument("name")
    args = parser.parse_args(argv)
    try:
        env_file = config.find_env_file(getattr(args, "env_file", None), Path.cwd())
    except config.ConfigError as exc:
        return fail(str(exc))
    merged = {**(dotenv_values(env_file) if env_file else {}), **os.environ}
    path = getattr(args, "users_file", None) or merged.get("TRADE_STREAM_USERS_FILE") or ""
    if not path:
        return fail("TRADE_STREAM_USERS_FILE is not set: set it (e.g. /etc/trade-stream/users.toml) or pass "
                    "--users-file")
    try:
        users = list(load_users(path))
    except ValueError as exc:
        return fail(f"TRADE_STREAM_USERS_FILE={path}: {exc}")
    if args.command == "list":
        for u in users:
            shown = "" if u.channels is None else f"\tchannels={','.join(u.channels)}"
            print(f"{u.name}\taccounts={','.join(u.accounts)}\tadmin={'yes' if u.admin else 'no'}{shown}"
                  + (f"\temail={u.email}" if u.email else ""))
        return 0
    if args.command == "remove":
        left = [u for u in users if u.name != args.name]
        if len(left) == len(users):
            return fail(f"no user {args.name!r} in {path}", 1)
        write_users(path, left)
        print(f"removed {args.name}")
        return 0
    accounts = tuple(dict.fromkeys(a.strip() for a in args.accounts.split(",") if a.strip()))
    if not NAME_RE.fullmatch(args.name):
        return fail(f"{args.name!r} is not a valid user name: 1-64 of A-Z a-z 0-9 . _ @ -")
    if any(u.name == args.name for u in users):
        return fail(f"user {args.name!r} already exists in {path}; use `trade-stream user remove {args.name}` "
                    "first to give it a new token")
    if not accounts:
        return fail("--accounts is empty: give a comma list of account names, or * for all")
    if args.email and not valid_email(args.email):
        return fail(f"--email {args.email!r} is not one address such as alice@example.com; nothing written")
    accounts_file = getattr(args, "accounts_file", None) or merged.get("TRADE_STREAM_ACCOUNTS_FILE") or ""
    try:
        known = account_names(accounts_file)
    except ValueError as exc:
        return fail(f"TRADE_STREAM_ACCOUNTS_FILE={accounts_file}: {exc}; nothing written")
    try:
        check_accounts([UserRecord(args.name, "", accounts)], known, broker=bool(merged.get("ALPACA_BROKER_API_KEY")))
    except ValueError as exc:
        where = f"the accounts file {accounts_file}" if accounts_file else "the one account (no accounts file)"
        return fail(f"{exc}; checked against {where}; nothing written")
    channels = None
    if args.channels is not None:
        channels = tuple(dict.fromkeys(c.strip() for c in args.channels.split(",") if c.strip()))
        wrong = next((c for c in channels if not GLOB_RE.fullmatch(c)), None)
        if wrong is not None or not channels:
            return fail(f"--channels {args.channels!r}: give a comma list of channel globs such as strategies:*,alerts")
    token_id, token = new_token()
    write_users(path, [*users, UserRecord(args.name, hash_token(token), accounts, args.admin, token_id, channels,
                                          args.email)])
    print(f"added {args.name} (accounts {','.join(accounts)}). Its token, shown only now:\n{token}")
    return 0


def account_names(accounts_file: str) -> list[str]:
    """The account names a user may be given: the accounts file's (only the names are read, so no account's secret
    need be at hand), else the one account, ``default``; ValueError when the file cannot be read."""
    from trade_stream.records.accounts import DEFAULT_ACCOUNT

    if not accounts_file:
        return [DEFAULT_ACCOUNT]
    tables = read_tables(accounts_file, "account", required=True)
    return [t["name"] for t in tables if isinstance(t, dict) and isinstance(t.get("name"), str)]
