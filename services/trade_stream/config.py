"""Configuration: read once at start, validated, then passed down as one frozen object.

Precedence is CLI flag > environment > ``.env`` file > default. Every setting is declared once in ``SETTINGS``;
the argument parser, the environment lookup and ``.env_sample`` all follow from that table, so a new setting
cannot be half-wired.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import secrets
import socket
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dotenv import dotenv_values

from trade_stream.records.redis_url import is_sentinel, parse_sentinel
from trade_stream.records.users import GLOB_RE as CHANNEL_GLOB_RE

REPO_ROOT = Path(__file__).resolve().parents[2]
# The page: the repo's copy when running from a checkout, else the copy a normal `pip install` puts in the prefix.
PUBLIC_DIRS = (REPO_ROOT / "public_html", Path(sys.prefix) / "share" / "trade-stream" / "public_html")
FEEDS = ("iex", "sip", "delayed_sip", "test")
CRYPTO_LOCATIONS = ("us", "us-1", "eu-1")  # Alpaca US, Kraken US, Kraken EU (v1beta3/crypto/{loc})
OPTIONS_FEEDS = ("indicative", "opra")  # v1beta1/{feed}: indicative (free, delayed-ish) or OPRA (paid)
BROKER_STREAMS = ("trades", "accounts", "activities", "nta")  # Broker API event streams (upstream/broker_events.py)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
CONNECTION_LIMIT_POLICIES = ("close_oldest", "refuse")  # what a user's connection over the limit does


class ConfigError(ValueError):
    """Bad or missing configuration; the message is one line naming the variable and the fix."""


@dataclass(frozen=True)
class Timings:
    """Reconnect and retry timings. Production uses the defaults; tests shrink them."""

    reconnect_min: float = 1.0
    reconnect_max: float = 30.0
    conn_limit_wait: float = 90.0  # Alpaca reaps half-dead sessions after 90 s
    rate_limited_wait: float = 60.0  # HTTP 429 at the handshake
    config_error_wait: float = 120.0  # 402 / 409: nothing changes until a human acts
    auth_retries: int = 3  # 406 auth retries on the same socket
    auth_retry_delay: float = 2.0
    open_timeout: float = 10.0
    shutdown_grace: float = 2.0
    journal_retry: float = 5.0  # reopen a faulted order journal this often
    webhook_backoff: float = 1.0  # first webhook retry waits up to this long (full jitter), doubling each time
    webhook_backoff_max: float = 900.0  # cap of one webhook retry wait
    webhook_wait_min: float = 1.0  # floor of one webhook retry wait (Retry-After: 0 included)
    webhook_give_up: float = 86400.0  # stop retrying a delivery this long after it was queued
    broker_backoff_max: float = 60.0  # cap of a Broker API event stream's reconnect wait (full jitter)


@dataclass(frozen=True)
class Config:
    api_key: str | None = None
    secret_key: str | None = None
    base_url: str = "https://paper-api.alpaca.markets"
    data_url: str = "https://data.alpaca.markets"
    data_feed: str = "iex"
    data_stream_url: str = ""
    crypto_location: str = "us"
    options_feed: str = "indicative"
    trading_stream_url: str = ""
    host: str = "0.0.0.0"
    port: int = 8765
    sse_port: int = 0
    token: str = ""
    token_generated: bool = False
    allowed_origins: tuple[str, ...] = ()
    log_level: str = "INFO"
    demo: bool = False
    linger: float = 5.0
    max_symbols: int = 0
    max_symbols_per_client: int = 100
    max_actions_per_sec: float = 20.0
    max_message_bytes: int = 64 * 1024
    upstream_changes_per_client: int = 60
    upstream_changes_total: int = 600
    max_connections: int = 10_000
    max_connections_per_ip: int = 200
    max_connect_rate_per_ip: int = 0
    client_buffer_bytes: int = 1024 * 1024
    stall_timeout: float = 2.0
    write_delay_ms: int = 0
    stale_after: float = 0.0
    probe_after: float = 60.0
    health_grace: float = 60.0
    ping_interval: float = 20.0
    state_dir: str = ""
    journal_retention_days: float = 7.0
    sse_keepalive: float = 15.0
    sse_replay: int = 1000
    sse_user_buffer: int = 100
    sse_user_buffer_ttl: float = 300.0
    public_dir: str = field(default_factory=lambda: default_public_dir())
    alpaca_prefix: str = ""
    page_config: str = ""
    webhooks_file: str = ""
    webhooks: tuple[Any, ...] = ()  # WebhookTarget (edges/webhook_targets.py), parsed from webhooks_file at load
    webhook_max_pending: int = 1_000_000
    smtp_url: str = ""  # email alerts (edges/mail.py); records/smtp_url.py parses it
    smtp_from: str = ""
    email_rate_limit: int = 10  # messages per user per window; beyond, the rest wait for one digest
    email_rate_window: int = 3600
    email_max_pending: int = 10_000  # per user
    alerts_per_user: int = 100
    alert_stale_check: float = 30.0
    vapid_private_key: str = ""
    vapid_public_key: str = ""
    vapid_subject: str = ""
    vapid: Any = None  # VapidKeys (records/vapid.py) from the three settings above, checked at load; None: no push
    push_max_pending: int = 10_000
    push_max_subscriptions: int = 10
    accounts_file: str = ""
    accounts: tuple[Any, ...] = ()  # AccountSpec (core/account_specs.py) from accounts_file; () = ALPACA_* only
    users_file: str = ""
    jwt_secret: str = ""
    jwt_public_key: str = ""
    jwt_audience: str = ""
    jwt_issuer: str = ""
    jwt_max_lifetime: int = 86400
    max_connections_per_user: int = 10
    auth_cookie: str = ""
    connection_limit_policy: str = "close_oldest"
    redis_url: str = ""
    node_id: str = ""
    redis_prefix: str = "trade-stream"
    publish_key: str = ""
    publish_max_bytes: int = 64 * 1024
    channel_history: int = 100
    channel_history_ttl: float = 300.0
    max_channels: int = 10_000
    max_channels_per_client: int = 100
    public_channels: tuple[str, ...] = ()
    cluster_lease: float = 5.0
    broker_api_key: str = ""
    broker_secret_key: str = ""
    broker_base_url: str = "https://broker-api.sandbox.alpaca.markets"
    broker_streams: tuple[str, ...] = ("trades", "accounts", "activities")
    broker_silence: float = 60.0
    broker_fallback_after: float = 30.0
    broker_poll_interval: float = 5.0
    broker_demo: bool = False  # --demo --broker: Broker API mode against the simulator's Broker API (demo.py)
    #: --demo only: the simulated market's clock: "live" (real US market hours), "open" (a regular session at any
    #: hour, the clock shifted), or an RFC 3339 instant the simulated clock starts at (demo.py).
    demo_session: str = "live"
    timings: Timings = field(default_factory=Timings)

    def public_view(self) -> dict[str, Any]:
        """Settings safe to log or show: secrets masked."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "timings"}
        out["webhooks"] = ",".join(t.name for t in self.webhooks)  # names only: targets carry secrets
        out["accounts"] = ",".join(a.name for a in self.account_specs())  # names only: accounts carry keys
        out["broker_streams"] = ",".join(self.broker_streams)
        out["public_channels"] = ",".join(self.public_channels)
        out.pop("vapid")  # a key object; its public half is vapid_public_key
        for name in ("api_key", "secret_key", "token", "jwt_secret", "broker_secret_key", "publish_key",
                     "vapid_private_key"):
            out[name] = mask(out[name])
        out["redis_url"] = mask_url(self.redis_url)
        out["smtp_url"] = mask_url(self.smtp_url)
        return out


    def account_specs(self) -> tuple[Any, ...]:
        """The accounts to stream order updates for: the accounts file's, else one ``default`` from ALPACA_*."""
        from trade_stream.records.accounts import DEFAULT_ACCOUNT, AccountSpec

        if self.accounts:
            return self.accounts
        return (AccountSpec(DEFAULT_ACCOUNT, self.api_key or "", self.secret_key or "", self.base_url,
                            self.trading_stream_url, True),)


def default_public_dir() -> str:
    return str(next((d for d in PUBLIC_DIRS if (d / "index.html").is_file()), PUBLIC_DIRS[0]))


def mask(secret: str | None) -> str:
    """All but the last 4 characters hidden; short secrets hidden entirely."""
    if not secret:
        return ""
    return "****" + secret[-4:] if len(secret) > 8 else "****"


def mask_url(url: str) -> str:
    """A URL with its credentials hidden behind ``****``: the user and password before the host (whichever it
    has), and any ``...password=`` query option. The scheme, host, port and path stay, since those are what a
    reader needs to spot a wrong URL."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, path = rest.partition("/")
    _, at, hostport = authority.rpartition("@")
    if at:
        url = f"{scheme}://****@{hostport}{slash}{path}"
    query = urlsplit(url).query
    if "password=" in query:
        masked = "&".join(f"{k}=****" if k.endswith("password") else f"{k}={v}"
                          for k, _, v in (item.partition("=") for item in query.split("&")))
        url = url.replace(query, masked, 1)
    return url


# --- value parsers: each raises ValueError with a short reason -----------------------------------------------


def _int_range(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"must be a whole number between {lo} and {hi}") from None
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return value

    return parse


def _float_min(lo: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"must be a number >= {lo}") from None
        if value < lo or value != value:
            raise ValueError(f"must be a number >= {lo}")
        return value

    return parse


def _choice(options: tuple[str, ...], upper: bool = False) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().upper() if upper else raw.strip().lower()
        if value not in options:
            raise ValueError("must be one of " + ", ".join(options))
        return value

    return parse


def _url(schemes: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().rstrip("/")
        parts = urlsplit(value)
        if parts.scheme not in schemes or not parts.netloc:
            raise ValueError(f"must be a {' or '.join(schemes)} URL")
        return value

    return parse


def _redis_url(raw: str) -> str:
    """A Redis URL: ``redis://``, ``rediss://``, or a Sentinel URL (``redis+sentinel://host:26379/mymaster``)."""
    value = raw.strip().rstrip("/")
    if is_sentinel(value):
        parse_sentinel(value)  # ValueError naming what is wrong
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        shown = f"scheme {parts.scheme}://" if parts.scheme else "no scheme"
        raise ValueError("must be a redis://, rediss:// (TLS) or redis+sentinel:// URL such as "
                         f"redis://host:6379/0, not {shown}")
    return value


def _smtp_url(raw: str) -> str:
    from trade_stream.records import smtp_url

    value = raw.strip()
    url = smtp_url.parse(value)  # ValueError naming what is wrong
    if url.ca_file:
        import ssl

        try:
            ssl.create_default_context(cafile=url.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"ssl_ca_certs={url.ca_file} cannot be used ({getattr(exc, 'strerror', None) or exc}); "
                             "give a readable PEM file of the CA certificates") from None
    return value


def _mail_from(raw: str) -> str:
    """``alerts@example.com`` or ``Trade Stream <alerts@example.com>``: one address, nothing after it."""
    from email.utils import getaddresses

    from trade_stream.records.users import valid_email

    value = raw.strip()
    found = getaddresses([value])
    if len(found) != 1 or not valid_email(found[0][1]) or any(c in value for c in "\r\n"):
        raise ValueError("must be one address, alerts@example.com or Trade Stream <alerts@example.com>")
    return value


def _origins(raw: str) -> tuple[str, ...]:
    items = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    for origin in items:
        if origin != "*" and (urlsplit(origin).scheme not in ("http", "https") or not urlsplit(origin).netloc):
            raise ValueError(f"{origin!r} is not an origin like https://example.com or *")
    return items


def _channel_globs(raw: str) -> tuple[str, ...]:
    globs = tuple(dict.fromkeys(g.strip() for g in raw.split(",") if g.strip()))
    wrong = next((g for g in globs if not CHANNEL_GLOB_RE.fullmatch(g)), None)
    if wrong is not None:
        raise ValueError(f"{wrong[:40]!r} is not a channel glob: give a comma list such as app:*,alerts "
                         "(A-Z a-z 0-9 _ . : - and the wildcards * ?)")
    return globs


def _broker_streams(raw: str) -> tuple[str, ...]:
    if raw.strip().lower() == "none":
        return ()
    names = tuple(dict.fromkeys(x.strip() for x in raw.split(",") if x.strip()))
    wrong = [n for n in names if n not in BROKER_STREAMS]
    if wrong:
        raise ValueError(f"unknown stream {wrong[0]!r}; give a comma list of {', '.join(BROKER_STREAMS)}, or none")
    return names


def _demo_session(raw: str) -> str:
    """``live``, ``open`` or an RFC 3339 time with its offset: what the simulator's clock starts from
    (``Clock.for_session``). The rule is written here too, so configuration never imports the simulator;
    tests/unit/test_backoff_config.py holds the two to the same answers."""
    value = raw.strip().lower() if raw.strip().lower() in ("live", "open") else raw.strip()
    if value in ("live", "open"):
        return value
    try:
        instant = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        instant = None
    if instant is None or instant.tzinfo is None:
        raise ValueError("must be live, open, or an RFC 3339 time with its offset such as 2026-12-05T07:00:00-05:00")
    return value


def _text(raw: str) -> str:
    return raw.strip()


def _readable_file(raw: str) -> str:
    """A file that opens and reads now (a permission bit says nothing for root, and a directory passes it)."""
    value = raw.strip()
    if value:
        try:
            with open(value, "rb") as f:
                f.read(1)
        except FileNotFoundError:
            raise ValueError("no such file; create it (see REALTIME_TRADES_SETUP.md) or unset the variable") from None
        except OSError as exc:
            raise ValueError(f"cannot be read ({exc.strerror}); give a readable file or unset the variable") from None
    return value


# RFC 6265's cookie-name is RFC 7230's token: visible ASCII without separators, at least one character.
COOKIE_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _cookie_name(raw: str) -> str:
    value = raw.strip()
    if not COOKIE_NAME_RE.fullmatch(value):
        raise ValueError("must be a cookie name (RFC 6265): letters, digits and !#$%&'*+-.^_`|~, no spaces, "
                         "'=', ';', ',' or quotes, e.g. session")
    return value


def _name(raw: str) -> str:
    value = raw.strip()
    if not value or len(value) > 100 or any(c.isspace() or c in ":*?[]" for c in value):
        raise ValueError("must be 1-100 characters without spaces, ':', '*', '?' or brackets")
    return value


def _prefix(raw: str) -> str:
    value = raw.strip().rstrip("/")
    if value and (not value.startswith("/") or any(c in value for c in "?#% ")):
        raise ValueError("must be empty or a path such as /alpaca")
    return value


@dataclass(frozen=True)
class Setting:
    name: str  # Config field
    env: str
    flag: str
    parse: Callable[[str], Any]
    help: str
    secret: bool = False


SETTINGS: tuple[Setting, ...] = (
    Setting("api_key", "ALPACA_API_KEY", "--api-key", _text, "Alpaca API key id (required unless --demo)", True),
    Setting("secret_key", "ALPACA_SECRET_KEY", "--secret-key", _text, "Alpaca API secret key", True),
    Setting("base_url", "ALPACA_BASE_URL", "--base-url", _url(("https", "http")),
            "trading REST base (default https://paper-api.alpaca.markets)"),
    Setting("data_url", "ALPACA_DATA_URL", "--data-url", _url(("https", "http")),
            "market-data REST base (default https://data.alpaca.markets)"),
    Setting("data_feed", "ALPACA_DATA_FEED", "--feed", _choice(FEEDS),
            "market-data feed: iex, sip, delayed_sip, or test (FAKEPACA, 24/7); default iex"),
    Setting("data_stream_url", "ALPACA_DATA_STREAM_URL", "--data-stream-url", _url(("wss", "ws")),
            "market-data stream URL (default wss://stream.data.alpaca.markets/v2/{feed})"),
    Setting("crypto_location", "TRADE_STREAM_CRYPTO_LOCATION", "--crypto-location", _choice(CRYPTO_LOCATIONS),
            "crypto stream browsers' pair symbols (BTC/USD) go to: us (Alpaca), us-1 (Kraken US) or eu-1 "
            "(Kraken EU); default us"),
    Setting("options_feed", "TRADE_STREAM_OPTIONS_FEED", "--options-feed", _choice(OPTIONS_FEEDS),
            "option stream browsers' contract symbols (AAPL241220C00150000) go to: indicative or opra; "
            "default indicative"),
    Setting("trading_stream_url", "ALPACA_TRADING_STREAM_URL", "--trading-stream-url", _url(("wss", "ws")),
            "trading stream URL (default derived from ALPACA_BASE_URL: wss://.../stream)"),
    Setting("host", "TRADE_STREAM_HOST", "--host", _text, "listen address for WebSocket + HTTP (default 0.0.0.0)"),
    Setting("port", "TRADE_STREAM_PORT", "--port", _int_range(0, 65535), "listen port (default 8765)"),
    Setting("sse_port", "TRADE_STREAM_SSE_PORT", "--sse-port", _int_range(0, 65535),
            "Server-Sent Events side-port; 0 or unset = off"),
    Setting("token", "TRADE_STREAM_TOKEN", "--token", _text,
            "token that unlocks private streams (order updates); generated at start when unset", True),
    Setting("allowed_origins", "TRADE_STREAM_ALLOWED_ORIGINS", "--allowed-origins", _origins,
            "comma list of browser origins allowed to connect, or *; default: the daemon's own origin and "
            "http(s)://localhost or 127.0.0.1 on any port"),
    Setting("log_level", "TRADE_STREAM_LOG_LEVEL", "--log-level", _choice(LOG_LEVELS, upper=True),
            "log level (default INFO)"),
    Setting("linger", "TRADE_STREAM_LINGER", "--linger", _float_min(0),
            "seconds to keep an upstream subscription after its last holder leaves (default 5)"),
    Setting("max_symbols", "TRADE_STREAM_MAX_SYMBOLS", "--max-symbols", _int_range(0, 1_000_000),
            "cap on symbols held upstream, e.g. 30 for Alpaca's Basic plan; 0 = no local cap (default)"),
    Setting("max_symbols_per_client", "TRADE_STREAM_MAX_SYMBOLS_PER_CLIENT", "--max-symbols-per-client",
            _int_range(1, 1_000_000), "symbols one client may hold (default 100)"),
    Setting("max_actions_per_sec", "TRADE_STREAM_MAX_ACTIONS_PER_SEC", "--max-actions-per-sec", _float_min(0.1),
            "actions per second one client may send (default 20, burst twice that)"),
    Setting("upstream_changes_per_client", "TRADE_STREAM_UPSTREAM_CHANGES_PER_CLIENT",
            "--upstream-changes-per-client", _int_range(1, 1_000_000),
            "subscribes per minute one connection may make that add symbols upstream (burst the same; default 60)"),
    Setting("upstream_changes_total", "TRADE_STREAM_UPSTREAM_CHANGES_TOTAL", "--upstream-changes-total",
            _int_range(1, 10_000_000),
            "subscribes per minute from all clients together that add symbols upstream (burst the same; "
            "default 600)"),
    Setting("max_message_bytes", "TRADE_STREAM_MAX_MESSAGE_BYTES", "--max-message-bytes",
            _int_range(256, 16 * 1024 * 1024), "largest client frame; bigger closes with 1009 (default 65536)"),
    Setting("max_connections", "TRADE_STREAM_MAX_CONNECTIONS", "--max-connections", _int_range(1, 1_000_000),
            "total client connections; more are refused with 503 (default 10000)"),
    Setting("max_connections_per_ip", "TRADE_STREAM_MAX_CONNECTIONS_PER_IP", "--max-connections-per-ip",
            _int_range(1, 1_000_000), "connections from one IP; more are refused with 429 (default 200)"),
    Setting("max_connect_rate_per_ip", "TRADE_STREAM_MAX_CONNECT_RATE_PER_IP", "--max-connect-rate-per-ip",
            _int_range(0, 1_000_000), "new connections per minute from one IP; 0 = off (default)"),
    Setting("client_buffer_bytes", "TRADE_STREAM_CLIENT_BUFFER_BYTES", "--client-buffer-bytes",
            _int_range(4096, 1 << 30), "unsent bytes a client may owe before it is cut off (default 1 MiB)"),
    Setting("stall_timeout", "TRADE_STREAM_STALL_TIMEOUT", "--stall-timeout", _float_min(0),
            "cut off a client that accepts no data for this many seconds while data is pending; 0 = off (default 2)"),
    Setting("write_delay_ms", "TRADE_STREAM_WRITE_DELAY_MS", "--write-delay-ms", _int_range(0, 100),
            "hold each client's writes up to this many ms and send them merged: fewer syscalls for a little "
            "latency; 0 = merge only within one loop iteration (default)"),
    Setting("stale_after", "TRADE_STREAM_STALE_AFTER", "--stale-after", _float_min(0),
            "reconnect upstream when subscribed channels carry no data this many seconds; 0 = off (default)"),
    Setting("probe_after", "TRADE_STREAM_PROBE_AFTER", "--probe-after", _float_min(0),
            "after this many seconds with nothing from upstream, check the session with a no-op subscribe and "
            "reconnect if it is not answered; 0 = off (default 60)"),
    Setting("health_grace", "TRADE_STREAM_HEALTH_GRACE", "--health-grace", _float_min(0),
            "seconds an upstream (market data or trading) may be down before /healthz answers 503 (default 60)"),
    Setting("ping_interval", "TRADE_STREAM_PING_INTERVAL", "--ping-interval", _float_min(0),
            "WebSocket keepalive ping interval and timeout in seconds; 0 = off (default 20)"),
    Setting("state_dir", "TRADE_STREAM_STATE_DIR", "--state-dir", _text,
            "directory for durable state (order journal); default $STATE_DIRECTORY or ~/.local/state/trade-stream"),
    Setting("journal_retention_days", "TRADE_STREAM_JOURNAL_RETENTION_DAYS", "--journal-retention-days",
            _float_min(0.001), "days of order events kept in the journal (default 7)"),
    Setting("sse_keepalive", "TRADE_STREAM_SSE_KEEPALIVE", "--sse-keepalive", _float_min(0.05),
            "seconds without an event before an SSE keepalive comment (default 15)"),
    Setting("sse_replay", "TRADE_STREAM_SSE_REPLAY", "--sse-replay", _int_range(0, 10_000_000),
            "market events kept for SSE Last-Event-ID replay (default 1000; orders replay from the journal)"),
    Setting("sse_user_buffer", "TRADE_STREAM_SSE_USER_BUFFER", "--sse-user-buffer", _int_range(0, 10_000),
            "events kept per user and SSE stream (app channels, alerts) for the user's next connection that names "
            "no Last-Event-ID; 0 = off (default 100)"),
    Setting("sse_user_buffer_ttl", "TRADE_STREAM_SSE_USER_BUFFER_TTL", "--sse-user-buffer-ttl", _float_min(0.05),
            "seconds a user's SSE event buffer is kept after their last connection to that stream closed "
            "(default 300)"),
    Setting("public_dir", "TRADE_STREAM_PUBLIC_DIR", "--public-dir", _text,
            "directory of the static page served at / (default the repo's public_html)"),
    Setting("alpaca_prefix", "TRADE_STREAM_ALPACA_PREFIX", "--alpaca-prefix", _prefix,
            "path prefix of the Alpaca-compatible endpoints ({prefix}/v2/{feed}, {prefix}/stream); default none"),
    Setting("page_config", "TRADE_STREAM_PAGE_CONFIG", "--page-config", _readable_file,
            "the page's settings file outside the installed package, e.g. /etc/trade-stream/config.js, served "
            "as /config.js; unset: the daemon generates one that connects to its own origin"),
    Setting("webhooks_file", "TRADE_STREAM_WEBHOOKS_FILE", "--webhooks-file", _text,
            "TOML file of webhook targets that get each trade notification (see README, Webhooks); default none"),
    Setting("alerts_per_user", "TRADE_STREAM_ALERTS_PER_USER", "--alerts-per-user", _int_range(1, 100_000),
            "price alerts one user may keep, armed or triggered (default 100)"),
    Setting("alert_stale_check", "TRADE_STREAM_ALERT_STALE_CHECK", "--alert-stale-check", _float_min(0.05),
            "seconds between checks of stale price alerts against Alpaca's market clock (default 30)"),
    Setting("webhook_max_pending", "TRADE_STREAM_WEBHOOK_MAX_PENDING", "--webhook-max-pending",
            _int_range(1, 100_000_000),
            "webhook deliveries kept pending per target; beyond it the oldest are given up as dropped (about "
            "0.75 KB each on disk; default 1000000)"),
    Setting("smtp_url", "TRADE_STREAM_SMTP_URL", "--smtp-url", _smtp_url,
            "email alerts: the SMTP server, smtp://user:pass@host:587 (STARTTLS whenever the server offers it; "
            "?starttls=required refuses one that does not) or smtps://user:pass@host:465 (TLS from the first "
            "byte); ?ssl_ca_certs=/path/ca.pem for a private CA; unset = no email", True),
    Setting("smtp_from", "TRADE_STREAM_SMTP_FROM", "--smtp-from", _mail_from,
            "the From of every email alert: alerts@example.com or Trade Stream <alerts@example.com>; required "
            "with TRADE_STREAM_SMTP_URL"),
    Setting("email_rate_limit", "TRADE_STREAM_EMAIL_RATE_LIMIT", "--email-rate-limit", _int_range(1, 10_000),
            "email alerts one user gets per TRADE_STREAM_EMAIL_RATE_WINDOW; beyond, the rest are held and sent "
            "together as one digest when the window allows (default 10)"),
    Setting("email_rate_window", "TRADE_STREAM_EMAIL_RATE_WINDOW", "--email-rate-window",
            _int_range(1, 7 * 86400), "seconds of the per-user email rate limit's sliding window (default 3600)"),
    Setting("email_max_pending", "TRADE_STREAM_EMAIL_MAX_PENDING", "--email-max-pending",
            _int_range(1, 10_000_000), "email alerts kept pending per user (the SMTP server down, or held for a "
            "digest); beyond it the oldest are given up as dropped (default 10000)"),
    Setting("vapid_private_key", "TRADE_STREAM_VAPID_PRIVATE_KEY", "--vapid-private-key", _text,
            "Web Push: the VAPID private key (base64url P-256 scalar) from `trade-stream push keys`; unset: no "
            "Web Push", True),
    Setting("vapid_public_key", "TRADE_STREAM_VAPID_PUBLIC_KEY", "--vapid-public-key", _text,
            "Web Push: the VAPID public key (base64url uncompressed point) printed with the private one; the "
            "page subscribes with it"),
    Setting("vapid_subject", "TRADE_STREAM_VAPID_SUBJECT", "--vapid-subject", _text,
            "Web Push: mailto:you@example.com or an https:// URL, how a push service reaches the operator"),
    Setting("push_max_pending", "TRADE_STREAM_PUSH_MAX_PENDING", "--push-max-pending", _int_range(1, 10_000_000),
            "Web Push deliveries kept pending per subscription; beyond it the oldest are given up as dropped "
            "(default 10000)"),
    Setting("push_max_subscriptions", "TRADE_STREAM_PUSH_MAX_SUBSCRIPTIONS", "--push-max-subscriptions",
            _int_range(1, 1000),
            "Web Push subscriptions (browsers) kept per user; a new one beyond it replaces that user's oldest "
            "(default 10)"),
    Setting("accounts_file", "TRADE_STREAM_ACCOUNTS_FILE", "--accounts-file", _text,
            "TOML file of named Alpaca accounts, each with its own trading stream (see README, Accounts and "
            "users); default: one account, default, from the ALPACA_* variables"),
    Setting("users_file", "TRADE_STREAM_USERS_FILE", "--users-file", _text,
            "TOML file of users (token hashes and the accounts each may see), managed with trade-stream user "
            "add/list/remove; default none"),
    Setting("jwt_secret", "TRADE_STREAM_JWT_SECRET", "--jwt-secret", _text,
            "HS256 secret for JWTs minted by your web app (claims sub, accounts, exp); default none", True),
    Setting("jwt_public_key", "TRADE_STREAM_JWT_PUBLIC_KEY", "--jwt-public-key", _readable_file,
            "PEM public key file for RS256/ES256 JWTs (claims sub, accounts, exp); default none"),
    Setting("jwt_audience", "TRADE_STREAM_JWT_AUDIENCE", "--jwt-audience", _text,
            "the aud every JWT must name (a token with another or no aud is refused); default none: a token "
            "with any aud is refused"),
    Setting("jwt_issuer", "TRADE_STREAM_JWT_ISSUER", "--jwt-issuer", _text,
            "the iss every JWT must carry (a token with another or no iss is refused); default none: iss is not "
            "checked"),
    Setting("jwt_max_lifetime", "TRADE_STREAM_JWT_MAX_LIFETIME", "--jwt-max-lifetime",
            _int_range(0, 366 * 86400), "seconds a JWT's exp may lie in the future; a token that lives longer is "
            "refused; 0 = no limit (default 86400, one day)"),
    Setting("max_connections_per_user", "TRADE_STREAM_MAX_CONNECTIONS_PER_USER", "--max-connections-per-user",
            _int_range(1, 1_000_000), "private connections (WebSocket, SSE, /stream) one user may hold (default 10)"),
    Setting("auth_cookie", "TRADE_STREAM_AUTH_COOKIE", "--auth-cookie", _cookie_name,
            "name of your web app's session cookie holding a user's credential (a JWT or users-file token), read "
            "on SSE, the browser WebSocket and REST beside Authorization and ?token=; default none (cookies are "
            "not read)"),
    Setting("connection_limit_policy", "TRADE_STREAM_CONNECTION_LIMIT_POLICY", "--connection-limit-policy",
            _choice(CONNECTION_LIMIT_POLICIES), "what one more private connection of a user at the limit does: "
            "close_oldest (the user's oldest gets a connection_limit warning and is closed; the new one is let in) "
            "or refuse (the new one gets too_many_connections, SSE 429) (default close_oldest)"),
    Setting("redis_url", "TRADE_STREAM_REDIS_URL", "--redis-url", _redis_url,
            "cluster mode: Redis (or Valkey) shared by every node, e.g. redis://host:6379/0 (rediss:// for TLS, "
            "?ssl_ca_certs=/path/ca.pem for a private CA, redis://:password@host), or the master of a Sentinel "
            "group: redis+sentinel://host1:26379,host2:26379/mymaster/0 (rediss+sentinel:// for TLS); unset = one "
            "process, no Redis", True),
    Setting("node_id", "TRADE_STREAM_NODE_ID", "--node-id", _name,
            "this node's name in the cluster (default host name and pid)"),
    Setting("redis_prefix", "TRADE_STREAM_REDIS_PREFIX", "--redis-prefix", _name,
            "prefix of every Redis key and channel, so several clusters (paper, live) share one Redis "
            "(default trade-stream)"),
    Setting("publish_key", "TRADE_STREAM_PUBLISH_KEY", "--publish-key", _text,
            "app channels: the key POST /api/publish takes as Authorization: Bearer <key> (unset: only admin "
            "users may publish)", True),
    Setting("publish_max_bytes", "TRADE_STREAM_PUBLISH_MAX_BYTES", "--publish-max-bytes",
            _int_range(1024, 1024 * 1024), "app channels: the largest POST /api/publish body in bytes, a larger "
            "one is answered 413 (default 65536)"),
    Setting("channel_history", "TRADE_STREAM_CHANNEL_HISTORY", "--channel-history", _int_range(1, 100_000),
            "app channels: events each channel keeps for clients resuming with since / Last-Event-ID (default "
            "100)"),
    Setting("channel_history_ttl", "TRADE_STREAM_CHANNEL_HISTORY_TTL", "--channel-history-ttl", _float_min(1),
            "app channels: seconds a channel's events are kept for resuming; an older id gets a reset "
            "(default 300)"),
    Setting("max_channels", "TRADE_STREAM_MAX_CHANNELS", "--max-channels", _int_range(1, 10_000_000),
            "app channels: channels one process keeps history for; past that the channel published to longest "
            "ago is forgotten (default 10000; with Redis, each channel is a Stream)"),
    Setting("max_channels_per_client", "TRADE_STREAM_MAX_CHANNELS_PER_CLIENT", "--max-channels-per-client",
            _int_range(1, 10_000), "app channels: channels one connection may subscribe to (default 100)"),
    Setting("public_channels", "TRADE_STREAM_PUBLIC_CHANNELS", "--public-channels", _channel_globs,
            "app channels anonymous clients may subscribe to, a comma list of globs such as app:status,alerts "
            "(default none: every channel needs a login)"),
    Setting("cluster_lease", "TRADE_STREAM_CLUSTER_LEASE", "--cluster-lease", _float_min(0.5),
            "cluster mode: seconds of the leader's lease; a dead leader is replaced after about twice this plus "
            "a second, a stopped one at once (default 5)"),
    Setting("broker_api_key", "ALPACA_BROKER_API_KEY", "--broker-api-key", _text,
            "Broker API mode: the partner key id; with it, the daemon consumes the Broker API event streams of "
            "every account (see Broker API mode)"),
    Setting("broker_secret_key", "ALPACA_BROKER_SECRET_KEY", "--broker-secret-key", _text,
            "Broker API mode: the partner secret", True),
    Setting("broker_base_url", "ALPACA_BROKER_BASE_URL", "--broker-base-url", _url(("https", "http")),
            "Broker API base (default the sandbox, https://broker-api.sandbox.alpaca.markets; live: "
            "https://broker-api.alpaca.markets)"),
    Setting("broker_streams", "TRADE_STREAM_BROKER_STREAMS", "--broker-streams", _broker_streams,
            "Broker API event streams to consume: comma list of trades, accounts, activities, nta, or none "
            "(default trades,accounts,activities; nta is Alpaca's legacy /v1/events/nta, which the activities "
            "stream supersedes: enable it only on a partner account without /v2beta1/events/activities)"),
    Setting("broker_silence", "TRADE_STREAM_BROKER_SILENCE", "--broker-silence", _float_min(0.1),
            "Broker API mode: reconnect an event stream that sends nothing, not even a heartbeat, for this many "
            "seconds (default 60)"),
    Setting("broker_fallback_after", "TRADE_STREAM_BROKER_FALLBACK_AFTER", "--broker-fallback-after",
            _float_min(0), "Broker API mode: seconds of failing SSE before fills and activities are polled over "
            "REST instead, until SSE works again (default 30)"),
    Setting("broker_poll_interval", "TRADE_STREAM_BROKER_POLL_INTERVAL", "--broker-poll-interval", _float_min(0.05),
            "Broker API mode: seconds between REST polls while SSE is down (default 5)"),
    Setting("demo_session", "TRADE_STREAM_DEMO_SESSION", "--demo-session", _demo_session,
            "with --demo: the simulated market's hours: live (the real US market hours: at night and at weekends "
            "only crypto trades), open (a regular session at any hour, the page shows the simulated clock), or an "
            "RFC 3339 time the simulated clock starts at (default live)"),
)


COMMON = ("port", "host", "log_level", "state_dir")  # listed with --demo and --env-file, before the long list


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting (default None, so 'not given' is distinguishable) plus --demo and --env-file:
    the few most used first, then every other setting, so --help starts with what most runs need."""
    common = parser.add_argument_group("common options")
    common.add_argument("--demo", action="store_true", default=None,
                        help="run against the built-in Alpaca simulator: no credentials, simulated data")
    common.add_argument("--broker", action="store_true", default=None,
                        help="with --demo: Broker API mode against the simulator's Broker API, a few accounts "
                             "and a sign-in link per simulated customer")
    common.add_argument("--env-file", metavar="PATH",
                        help=".env file to read (default .env in the working directory, then the repo root)")
    rest = parser.add_argument_group("every setting (flag, or the environment variable in brackets, or .env)")
    for s in sorted(SETTINGS, key=lambda s: s.name not in COMMON):
        group = common if s.name in COMMON else rest
        group.add_argument(s.flag, dest=s.name, metavar=s.env, default=None, help=f"{s.help} [{s.env}]")


def find_env_file(explicit: str | None, cwd: Path) -> Path | None:
    """The .env file to read. An explicit one may be anything that reads (``/dev/null`` is an empty file)."""
    if explicit:
        path = Path(explicit)
        try:
            with path.open("rb") as f:
                f.read(1)
        except FileNotFoundError:
            raise ConfigError(f"--env-file {explicit}: no such file; give an existing path or drop the flag") from None
        except OSError as exc:
            raise ConfigError(f"--env-file {explicit}: cannot be read ({exc.strerror}); give a readable file or "
                              "drop the flag") from None
        return path
    for candidate in (cwd / ".env", REPO_ROOT / ".env"):
        if candidate.is_file():
            return candidate
    return None


def load(args: argparse.Namespace, environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> Config:
    """Build the validated Config from parsed CLI args, the environment and the .env file."""
    environ = os.environ if environ is None else environ
    env_file = find_env_file(getattr(args, "env_file", None), cwd or Path.cwd())
    file_values = {k: v for k, v in (dotenv_values(env_file) if env_file else {}).items() if v is not None}
    merged = {**file_values, **environ}

    values: dict[str, Any] = {}
    for s in SETTINGS:
        cli = getattr(args, s.name, None)
        raw, source = (cli, s.flag) if cli is not None else (merged.get(s.env), s.env)
        if raw is None or (isinstance(raw, str) and raw.strip() == "" and s.name not in ("token",)):
            continue
        try:
            values[s.name] = s.parse(raw)
        except ValueError as exc:
            # A URL shows what is wrong with it (scheme, host, port) with only its credentials masked.
            shown = (mask_url(raw) if "://" in raw else mask(raw)) if s.secret else repr(raw)
            raise ConfigError(f"{source}={shown}: {exc}") from None
    demo = bool(getattr(args, "demo", None)) or merged.get("TRADE_STREAM_DEMO", "").lower() in ("1", "true", "yes")
    if values.get("webhooks_file"):
        values["webhooks"] = load_webhooks(values["webhooks_file"], merged)
    if values.get("accounts_file"):
        values["accounts"] = load_accounts(values["accounts_file"], merged)
    check_identity(values)
    check_push(values)
    if getattr(args, "broker", None):
        if not demo:
            raise ConfigError("--broker is a demo option: use --demo --broker (for real Broker API mode set "
                              "ALPACA_BROKER_API_KEY and ALPACA_BROKER_SECRET_KEY)")
        values["broker_demo"] = True
    if "demo_session" in values and not demo:
        raise ConfigError(f"--demo-session {values['demo_session']} is a demo option: use it with --demo, or unset "
                          "TRADE_STREAM_DEMO_SESSION")
    return finish(values, demo)


def load_accounts(path: str, environ: Mapping[str, str]) -> tuple[Any, ...]:
    """The accounts file, read once here; ``secret_env`` names are looked up in the environment and .env."""
    from trade_stream.records import accounts as account_specs

    try:
        return account_specs.load(path, environ)
    except ValueError as exc:
        raise ConfigError(f"TRADE_STREAM_ACCOUNTS_FILE={path}: {exc}") from None


def check_identity(values: dict[str, Any]) -> None:
    """A broken users file or JWT key stops the start, like any other bad setting."""
    from trade_stream.records import users as identity

    if values.get("users_file") and not Path(values["users_file"]).exists():
        raise ConfigError(f"TRADE_STREAM_USERS_FILE={values['users_file']}: no such file; create it with "
                          "`trade-stream user add NAME --accounts …` or unset the variable")
    try:
        if values.get("users_file"):
            names = [a.name for a in values["accounts"]] if values.get("accounts") else ["default"]
            identity.check_accounts(identity.load_users(values["users_file"]), names,
                                    broker=bool(values.get("broker_api_key")))
    except ValueError as exc:
        raise ConfigError(f"TRADE_STREAM_USERS_FILE={values['users_file']}: {exc}") from None
    try:
        if values.get("jwt_public_key"):
            identity.load_public_key(values["jwt_public_key"])
    except ValueError as exc:
        raise ConfigError(f"TRADE_STREAM_JWT_PUBLIC_KEY={values['jwt_public_key']}: {exc}") from None


def check_push(values: dict[str, Any]) -> None:
    """Web Push is on when its three settings are set, and then they must be one valid key pair and a contact."""
    from trade_stream.records import vapid

    given = [values.get(name, "") for name in ("vapid_private_key", "vapid_public_key", "vapid_subject")]
    if not any(given):
        return
    missing = [env for env, value in zip(vapid.SETTINGS, given, strict=True) if not value]
    if missing:
        raise ConfigError(f"{missing[0]} is not set: Web Push needs all of {', '.join(vapid.SETTINGS)}; run "
                          "`trade-stream push keys` for them, or unset the others")
    try:
        values["vapid"] = vapid.load(*given)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def load_webhooks(path: str, environ: Mapping[str, str]) -> tuple[Any, ...]:
    """The targets file, read once here; ``secret_env`` names are looked up in the environment and .env."""
    from trade_stream.records import webhook_targets

    try:
        return webhook_targets.load(path, environ)
    except ValueError as exc:
        raise ConfigError(f"TRADE_STREAM_WEBHOOKS_FILE={path}: {exc}") from None


def finish(values: dict[str, Any], demo: bool) -> Config:
    """Apply cross-field rules and derived defaults."""
    market = next((a for a in values.get("accounts", ()) if a.market_data), None)
    if market is not None and not values.get("api_key"):
        # The marked account's keys hold the market-data connection, and the REST calls made with them (the
        # market clock) go to that account's base URL: another account's URL would refuse those keys.
        values.update(api_key=market.key_id, secret_key=market.secret, base_url=market.base_url)
    if bool(values.get("broker_api_key")) != bool(values.get("broker_secret_key")):
        missing = "ALPACA_BROKER_SECRET_KEY" if values.get("broker_api_key") else "ALPACA_BROKER_API_KEY"
        raise ConfigError(f"{missing} is not set: Broker API mode needs both the partner key id and secret")
    if not demo and not (values.get("api_key") and values.get("secret_key")):
        missing = "ALPACA_API_KEY" if not values.get("api_key") else "ALPACA_SECRET_KEY"
        raise ConfigError(
            f"{missing} is not set: put your Alpaca keys in .env (see .env_sample), or run with --demo "
            "to use the built-in simulator"
        )
    feed = values.get("data_feed", "iex")
    values.setdefault("data_stream_url", f"wss://stream.data.alpaca.markets/v2/{feed}")
    values.setdefault("trading_stream_url", trading_stream_url(values.get("base_url", Config.base_url)))
    if not values.get("token"):
        values["token"] = secrets.token_urlsafe(24)
        values["token_generated"] = True
    if not values.get("state_dir"):
        values["state_dir"] = os.environ.get("STATE_DIRECTORY", "").split(":")[0] or str(
            Path.home() / ".local" / "state" / "trade-stream"
        )
    values.setdefault("node_id", f"{socket.gethostname()}-{os.getpid()}")
    if values.get("smtp_url") and not values.get("smtp_from"):
        raise ConfigError("TRADE_STREAM_SMTP_FROM is not set: email alerts need a From address such as "
                          "alerts@example.com (or unset TRADE_STREAM_SMTP_URL)")
    if values.get("sse_port") and values["sse_port"] == values.get("port", Config.port):
        raise ConfigError("TRADE_STREAM_SSE_PORT equals TRADE_STREAM_PORT: give the SSE side-port its own port")
    return Config(demo=demo, **values)


def check_state_dir(path: str) -> None:
    """The state directory exists (made if missing) and takes a new file: the journals, the notification store
    and the webhook outbox all live there, so a daemon that cannot write it would hold no order history at all.
    Checked once at the daemon's start; a fault later is reported in /healthz instead."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise ConfigError(f"TRADE_STREAM_STATE_DIR={path}: cannot be created or written ({exc.strerror}); make it a "
                          "directory this user can write, or point TRADE_STREAM_STATE_DIR at one") from None


def trading_stream_url(base_url: str) -> str:
    parts = urlsplit(base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}/stream"


def env_sample() -> str:
    """The text of .env_sample: every variable with a one-line comment (and its flag), grouped, with the rules."""
    lines = [
        "# trade-stream configuration. Copy it: cp .env_sample .env && chmod 600 .env, then fill in your keys.",
        "# Precedence: command-line flag > environment variable > this file > built-in default.",
        "# The daemon reads .env in its working directory, else in the repository root; --env-file PATH names",
        "# another file. A commented-out line keeps the default. Generated from SETTINGS in",
        "# services/trade_stream/config.py: edit the table there, not this file.",
        "",
        "# --- Alpaca: keys from the Alpaca dashboard (https://app.alpaca.markets). Paper and live keys differ. ---",
    ]
    for s in SETTINGS:
        if s.env == "TRADE_STREAM_HOST":
            lines += ["", "# --- trade-stream ---", "",
                      "# 1 = run against the built-in Alpaca simulator: no credentials, simulated data  [--demo]",
                      "# TRADE_STREAM_DEMO="]
        required = s.env in ("ALPACA_API_KEY", "ALPACA_SECRET_KEY")
        lines += ["", f"# {s.help}  [{s.flag}]", f"{'' if required else '# '}{s.env}="]
    return "\n".join(lines) + "\n"
