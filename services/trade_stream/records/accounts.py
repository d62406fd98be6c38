"""The accounts file (``TRADE_STREAM_ACCOUNTS_FILE``, TOML), read once at start by config.py.

Each ``[[account]]`` is one Alpaca account the relay streams order updates for::

    [[account]]
    name = "paper"                      # unique; what users, events (``account``) and journals are named by
    key_id = "PK…"
    secret_env = "PAPER_SECRET"         # or secret = "…"; looked up in the environment and .env
    base_url = "https://paper-api.alpaca.markets"   # trading REST (default paper)
    trading_stream_url = "wss://…/stream"           # default derived from base_url
    market_data = true                  # exactly one account: its keys hold the market-data connection

Without the file the ``ALPACA_*`` variables define one account, ``default``. A mistake is one
``ValueError`` line naming the account and the field, which config turns into exit status 2. Pure: stdlib only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from trade_stream.tomltables import check_table, parse_tables, read_tables, secret_of

DEFAULT_ACCOUNT = "default"
NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")  # no ':' or ',': names appear in compound cursors (cursors.py)
FIELDS = {"name", "key_id", "secret", "secret_env", "base_url", "trading_stream_url", "market_data"}
PAPER_URL = "https://paper-api.alpaca.markets"


@dataclass(frozen=True)
class AccountSpec:
    name: str
    key_id: str
    secret: str = field(repr=False)  # never in logs or reprs
    base_url: str = PAPER_URL
    trading_stream_url: str = ""
    market_data: bool = False


def trading_stream_url(base_url: str) -> str:
    parts = urlsplit(base_url)
    return f"{'wss' if parts.scheme == 'https' else 'ws'}://{parts.netloc}/stream"


def load(path: str, environ: Mapping[str, str]) -> tuple[AccountSpec, ...]:
    """Parse and validate the file; raises ValueError with one line saying what to fix."""
    items = read_tables(path, "account", required=True)
    out = parse_tables(items, "account", lambda item: _account(item, environ), lambda a: a.name)
    marked = [a.name for a in out if a.market_data]
    if len(marked) > 1:
        raise ValueError(f"market_data is set on {', '.join(marked)}: mark exactly one account")
    if not marked:
        if len(out) > 1:
            raise ValueError("no account has market_data = true: mark the one whose keys hold market data")
        out[0] = AccountSpec(out[0].name, out[0].key_id, out[0].secret, out[0].base_url,
                             out[0].trading_stream_url, True)
    return tuple(out)


def _account(item: Any, environ: Mapping[str, str]) -> AccountSpec:
    item = check_table(item, FIELDS)
    name = item.get("name")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ValueError("name must be 1-64 of A-Z a-z 0-9 _ -")
    key_id = item.get("key_id")
    if not isinstance(key_id, str) or not key_id:
        raise ValueError("key_id must be the account's Alpaca API key id")
    secret = secret_of(item, environ)
    if not secret:
        raise ValueError("secret (or secret_env) must give the account's Alpaca secret key")
    base_url = item.get("base_url", PAPER_URL)
    if not _url_ok(base_url, ("http", "https")):
        raise ValueError("base_url must be an http:// or https:// URL")
    stream = item.get("trading_stream_url", trading_stream_url(base_url))
    if not _url_ok(stream, ("ws", "wss")):
        raise ValueError("trading_stream_url must be a ws:// or wss:// URL")
    market_data = item.get("market_data", False)
    if not isinstance(market_data, bool):
        raise ValueError("market_data must be true or false")
    return AccountSpec(name, key_id, secret, base_url.rstrip("/"), stream, market_data)


def _url_ok(value: Any, schemes: tuple[str, ...]) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in schemes and bool(parts.netloc)
