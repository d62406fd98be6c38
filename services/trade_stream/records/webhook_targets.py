"""The webhook targets file (``TRADE_STREAM_WEBHOOKS_FILE``, TOML), read once at start by config.py.

Each ``[[target]]`` names a receiver::

    [[target]]
    name = "desk"                       # unique; used in logs, status, metrics and `trade-stream webhook test`
    url = "https://hooks.example.com/trade-stream"
    events = ["order_filled", "order_rejected"]   # notification types; default: all
    accounts = ["default"]              # default: all
    secret_env = "DESK_WEBHOOK_SECRET"  # or secret = "…": signs each delivery (Standard Webhooks)
    legacy_signature = false            # true: also X-Trade-Stream-Signature (the body alone)
    format = "json"                     # or "slack" / "discord": that service's incoming-webhook payload
    timeout = 10                        # seconds per attempt, the answer included

A secret ``whsec_<base64>`` is the key it encodes (as the Standard Webhooks libraries read it); any other secret
is used as its bytes.

A mistake is one ``ValueError`` line naming the target and the field, which config turns into exit status 2.
Pure: stdlib only, no sockets.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from trade_stream.tomltables import check_table, parse_tables, read_tables, secret_of

# The notification types, which a target's ``events`` picks from: core.notifications maps order events onto the
# ``order_*`` ones; ``price_alert`` is a user's price alert firing, ``account_status`` and ``activity`` come from
# the Broker API's account status and non-trade activity events.
TYPES = ("order_accepted", "order_filled", "order_partial_fill", "order_cancelled", "order_rejected",
         "order_expired", "order_replaced", "order_other", "price_alert", "account_status", "activity")

FORMATS = ("json", "slack", "discord")
NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
FIELDS = {"name", "url", "events", "accounts", "secret", "secret_env", "format", "timeout", "legacy_signature"}
DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True)
class WebhookTarget:
    name: str
    url: str
    events: frozenset[str] | None = None  # None: every type
    accounts: frozenset[str] | None = None  # None: every account
    secret: str = field(default="", repr=False)  # never in logs or reprs
    format: str = "json"
    timeout: float = DEFAULT_TIMEOUT
    legacy_signature: bool = False

    def wants(self, kind: str, account: str) -> bool:
        return (self.events is None or kind in self.events) and (self.accounts is None or account in self.accounts)


def load(path: str, environ: Mapping[str, str]) -> tuple[WebhookTarget, ...]:
    """Parse and validate the file; raises ValueError with one line saying what to fix."""
    return tuple(parse_tables(read_tables(path, "target"), "target", lambda item: _target(item, environ),
                              lambda t: t.name))


def _target(item: Any, environ: Mapping[str, str]) -> WebhookTarget:
    item = check_table(item, FIELDS)
    name = item.get("name")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ValueError("name must be 1-64 of A-Z a-z 0-9 . _ -")
    url = item.get("url")
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("url must be an http:// or https:// URL")
    events = _names(item, "events", TYPES)
    accounts = _names(item, "accounts", None)
    fmt = item.get("format", "json")
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    timeout = item.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 300:
        raise ValueError("timeout must be a number of seconds in (0, 300]")
    secret = secret_of(item, environ)
    if secret.startswith("whsec_"):
        try:
            key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except binascii.Error:
            key = b""
        if not key:
            raise ValueError("secret: after whsec_ must come the key in base64 (padded), e.g. "
                             "whsec_$(openssl rand -base64 32)")
    legacy = item.get("legacy_signature", False)
    if not isinstance(legacy, bool):
        raise ValueError("legacy_signature must be true or false")
    if legacy and not secret:
        raise ValueError("legacy_signature needs a secret (secret or secret_env)")
    return WebhookTarget(name, url, events, accounts, secret, fmt, float(timeout), legacy)


def _names(item: dict[str, Any], key: str, allowed: tuple[str, ...] | None) -> frozenset[str] | None:
    if key not in item:
        return None
    value = item[key]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{key} must be a non-empty list of strings (leave it out for all)")
    if allowed is not None:
        wrong = [v for v in value if v not in allowed]
        if wrong:
            raise ValueError(f"{key}: unknown type {wrong[0]!r}; types are {', '.join(allowed)}")
    return frozenset(value)
