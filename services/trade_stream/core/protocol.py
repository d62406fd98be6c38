"""The browser client protocol: parsing what clients send, formatting what they receive. Pure, no sockets.

Client → server actions (JSON objects): subscribe / unsubscribe (``symbol`` or ``symbols``, optional
``channels``; or ``channel: "orders"``; or ``channel: "news"`` with symbols or ``["*"]``; or an app channel,
``channel: "strategies:abc"`` with an optional ``since``, see core/channels.py), ping, auth, options, and
``alert`` (price alerts, ``op`` one of ``ALERT_OPS``: the REST API's operations, the rest of the object its body,
core/alerts.py). Every rejected request gets ``{"type":"error","code":…,"message":…}`` naming what was wrong;
nothing here ever raises on bad input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from trade_stream.core import event_ids
from trade_stream.core.channels import CHANNEL_RULE, check_channel

# Alpaca's stock symbols (services/PROTOCOL.md §1): a letter first, then letters, digits and the class/suffix
# separators "." "/" "-". Anything else Alpaca refuses with 400 for the whole subscribe, so it is refused here.
SYMBOL_RE = re.compile(r"[A-Z][A-Z0-9./-]{0,14}")
SYMBOL_RULE = "symbols are a letter followed by up to 14 of A-Z 0-9 . / -"
# Alpaca's crypto pairs (services/PROTOCOL.md §1): BASE/QUOTE, each upper-case letters and digits (BTC/USD,
# ETH/BTC, SOL/USDT). A browser symbol with a "/" is a crypto pair and goes to the crypto stream.
CRYPTO_SYMBOL_RE = re.compile(r"[A-Z0-9]{1,15}/[A-Z0-9]{2,10}")
CRYPTO_SYMBOL_RULE = "crypto symbols are BASE/QUOTE pairs such as BTC/USD (letters and digits either side)"
# Option contracts in OCC form (services/PROTOCOL.md §1b): root (1-6 letters/digits, a letter first), expiry
# YYMMDD, C or P, strike x 1000 in 8 digits: AAPL241220C00150000. Longer than any stock symbol (at most 15), so
# the two rules never overlap; an OCC symbol goes to the option stream.
OPTION_SYMBOL_RE = re.compile(r"[A-Z][A-Z0-9]{0,5}\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])[CP]\d{8}")
OPTION_CHANNELS = ("trades", "quotes")  # all Alpaca's option stream has
MARKET_CHANNELS = ("trades", "quotes", "bars", "orderbooks")
CRYPTO_ONLY_CHANNELS = ("orderbooks",)
DEFAULT_CHANNELS = ("trades",)
PRIVATE_CHANNELS = ("orders",)
NEWS_CHANNEL = "news"  # {"channel": "news", "symbols": [...] or ["*"]}: Alpaca's news stream (v1beta1/news)

# Alpaca message type -> the channel that carries it (corrections and cancel/errors ride on trades).
CHANNEL_OF = {
    "t": "trades", "q": "quotes", "b": "bars", "d": "dailyBars", "u": "updatedBars",
    "c": "trades", "x": "trades", "s": "statuses", "l": "lulds", "i": "imbalances",
}


@dataclass(frozen=True)
class ClientError:
    """One refused request. ``symbol`` or ``channel`` names what was refused, so a client holding several
    subscriptions knows which one the error is about without reading the message."""

    code: str
    message: str
    symbol: str | None = None
    channel: str | None = None

    def to_message(self) -> dict[str, Any]:
        msg: dict[str, Any] = {"type": "error", "code": self.code, "message": self.message}
        if self.symbol is not None:
            msg["symbol"] = self.symbol
        if self.channel is not None:
            msg["channel"] = self.channel
        return msg


@dataclass(frozen=True)
class Subscribe:
    symbols: tuple[str, ...]
    channels: tuple[str, ...]


@dataclass(frozen=True)
class Unsubscribe:
    symbols: tuple[str, ...]
    channels: tuple[str, ...]


@dataclass(frozen=True)
class SubscribeOrders:
    since: event_ids.EventId | dict[str, event_ids.EventId] | None  # a dict: one id per account


@dataclass(frozen=True)
class UnsubscribeOrders:
    pass


@dataclass(frozen=True)
class SubscribeChannel:
    channel: str  # an app channel (core/channels.py)
    since: str | None  # the last event id seen: replay what follows, or a reset


@dataclass(frozen=True)
class UnsubscribeChannel:
    channel: str


@dataclass(frozen=True)
class Ping:
    pass


@dataclass(frozen=True)
class Auth:
    token: str


@dataclass(frozen=True)
class Options:
    batch: bool


@dataclass(frozen=True)
class AlertAction:
    """``{"action":"alert","op":"create","symbol":"AAPL","condition":"crosses_above","price":230}``; ``list``;
    ``update`` and ``delete`` with the alert's ``id``."""

    op: str
    body: dict[str, Any]


ALERT_OPS = ("create", "list", "update", "delete")

Action = (Subscribe | Unsubscribe | SubscribeOrders | UnsubscribeOrders | SubscribeChannel | UnsubscribeChannel
          | Ping | Auth | Options | AlertAction)


def parse(raw: str | bytes) -> Action | ClientError:
    """Turn one client frame into an action, or the error to send back."""
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ClientError("bad_json", "message is not valid JSON")
    if not isinstance(msg, dict):
        return ClientError("bad_message", "message must be a JSON object")
    action = msg.get("action")
    if not isinstance(action, str):
        return ClientError("missing_action", 'message needs an "action" string')
    handler = _ACTIONS.get(action)
    if handler is None:
        return ClientError("unknown_action", f"unknown action {action[:40]!r}; expected one of "
                           + ", ".join(sorted(_ACTIONS)))
    return handler(msg)


def _subscription(msg: dict[str, Any]) -> Action | ClientError:
    subscribing = msg["action"] == "subscribe"
    channel = msg.get("channel")
    if channel == NEWS_CHANNEL:
        return _news(msg, subscribing)
    if channel is not None:
        app_channel = check_channel(channel)
        if app_channel is not None:
            return _app_channel(msg, app_channel, subscribing)
        if channel not in PRIVATE_CHANNELS:
            return ClientError("invalid_channel", f'"channel" must be "orders", "news" or an app channel ('
                               f'{CHANNEL_RULE}); for market data use "channels": {list(MARKET_CHANNELS)}',
                               channel=channel[:80] if isinstance(channel, str) else None)
        if not subscribing:
            return UnsubscribeOrders()
        since = msg.get("since")
        # A float is an id too, an unknown one: orjson reads integers past 2^64 as floats.
        if since is not None and (not isinstance(since, int | float | str) or isinstance(since, bool)):
            return ClientError("bad_type", '"since" must be an event id: a number, or "<epoch>-<number>"')
        if event_ids.is_compound(since):  # "<account>:<epoch>-<n>,…": a user who sees several accounts
            return SubscribeOrders(event_ids.parse_compound(since))
        return SubscribeOrders(event_ids.parse(since))  # an id we cannot have issued gets a reset, not an error
    symbols = _symbols(msg)
    if isinstance(symbols, ClientError):
        return symbols
    channels = _channels(msg)
    if isinstance(channels, ClientError):
        return channels
    options = [s for s in symbols if is_option(s)]
    if options and any(c not in OPTION_CHANNELS for c in channels):
        return ClientError("invalid_channel", f"option contracts have only {list(OPTION_CHANNELS)}", options[0])
    stocks = [s for s in symbols if "/" not in s and not is_option(s)]
    if stocks and any(c in CRYPTO_ONLY_CHANNELS for c in channels):
        return ClientError("invalid_channel", f"order books are for crypto pairs (BTC/USD), not {stocks[0]}",
                           stocks[0])
    kind = Subscribe if subscribing else Unsubscribe
    return kind(symbols, channels)


def _app_channel(msg: dict[str, Any], channel: str, subscribing: bool) -> Action | ClientError:
    if not subscribing:
        return UnsubscribeChannel(channel)
    since = msg.get("since")
    if since is not None and not isinstance(since, str):
        return ClientError("bad_type", '"since" must be the id of the last event seen, a string "<ms>-<seq>"')
    return SubscribeChannel(channel, since or None)


def _news(msg: dict[str, Any], subscribing: bool) -> Subscribe | Unsubscribe | ClientError:
    """News for stock symbols, or ``["*"]`` for every article (Alpaca's news stream takes both)."""
    if "channels" in msg:
        return ClientError("invalid_channel", '"channel": "news" takes no "channels"')
    raw = msg.get("symbols", [msg["symbol"]] if "symbol" in msg else None)
    if raw == ["*"] or raw == "*":
        symbols: tuple[str, ...] | ClientError = ("*",)
    else:
        symbols = _symbols(msg)
    if isinstance(symbols, ClientError):
        return symbols
    pairs = [s for s in symbols if "/" in s or is_option(s)]
    if pairs:
        return ClientError("invalid_symbol", "news is for stock symbols (AAPL) or [\"*\"]", pairs[0])
    return (Subscribe if subscribing else Unsubscribe)(symbols, (NEWS_CHANNEL,))


def _symbols(msg: dict[str, Any]) -> tuple[str, ...] | ClientError:
    if "symbol" in msg:
        raw: Any = [msg["symbol"]]
        if not isinstance(msg["symbol"], str):
            return ClientError("bad_type", '"symbol" must be a string')
    elif "symbols" in msg:
        raw = msg["symbols"]
        if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
            return ClientError("bad_type", '"symbols" must be a list of strings')
        if not raw:
            return ClientError("missing_symbol", '"symbols" is empty')
    else:
        return ClientError("missing_symbol", 'give "symbol": "AAPL" or "symbols": ["AAPL", …]')
    out = []
    for s in raw:
        symbol = check_symbol(s)
        if isinstance(symbol, ClientError):
            return symbol
        out.append(symbol)
    return tuple(dict.fromkeys(out))


def is_option(symbol: str) -> bool:
    """An option contract symbol (OCC form): it routes to the option stream."""
    return len(symbol) > 15 and OPTION_SYMBOL_RE.fullmatch(symbol) is not None


def check_symbol(raw: str) -> str | ClientError:
    """One browser symbol, normalised (upper case), or why it breaks the rule of the stream it routes to (a pair
    to crypto, an OCC contract to options, anything else to stocks). The WebSocket and SSE sides both use this,
    so they route alike."""
    symbol = raw.strip().upper()
    if is_option(symbol):
        return symbol
    if "/" in symbol:
        if not CRYPTO_SYMBOL_RE.fullmatch(symbol):
            return ClientError("invalid_symbol", CRYPTO_SYMBOL_RULE, raw[:40])
    elif not SYMBOL_RE.fullmatch(symbol):
        return ClientError("invalid_symbol", SYMBOL_RULE, raw[:40])
    return symbol


def _channels(msg: dict[str, Any]) -> tuple[str, ...] | ClientError:
    raw = msg.get("channels", DEFAULT_CHANNELS)
    if not isinstance(raw, list | tuple) or not raw or not all(isinstance(c, str) for c in raw):
        return ClientError("bad_type", '"channels" must be a non-empty list such as ["trades", "quotes"]')
    bad = [c for c in raw if c not in MARKET_CHANNELS]
    if bad:
        return ClientError("invalid_channel", f"unknown channel {bad[0][:20]!r}; use {list(MARKET_CHANNELS)}")
    return tuple(dict.fromkeys(raw))


def _ping(msg: dict[str, Any]) -> Ping:
    return Ping()


def _auth(msg: dict[str, Any]) -> Auth | ClientError:
    token = msg.get("token")
    if not isinstance(token, str) or not token:
        return ClientError("bad_type", '"token" must be a non-empty string')
    return Auth(token)


def _options(msg: dict[str, Any]) -> Options | ClientError:
    batch = msg.get("batch")
    if not isinstance(batch, bool):
        return ClientError("bad_type", '"batch" must be true or false')
    return Options(batch)


def _alert(msg: dict[str, Any]) -> AlertAction | ClientError:
    op = msg.get("op")
    if op not in ALERT_OPS:
        return ClientError("invalid_alert", f"alert needs an op, one of {', '.join(ALERT_OPS)}")
    if op in ("update", "delete") and not isinstance(msg.get("id"), str):
        return ClientError("invalid_alert", f"alert {op} needs the alert's id")
    return AlertAction(op, {k: v for k, v in msg.items() if k not in ("action", "op")})


_ACTIONS = {"subscribe": _subscription, "unsubscribe": _subscription, "ping": _ping, "auth": _auth,
            "options": _options, "alert": _alert}


# --- server → client -----------------------------------------------------------------------------------------


def market_message(m: dict[str, Any]) -> dict[str, Any] | None:
    """Alpaca's compact stock message in the browser protocol's shape (None for types browsers don't get)."""
    kind = m.get("T")
    if kind == "t":
        data = {"timestamp": m.get("t"), "price": m.get("p"), "size": m.get("s"), "exchange": m.get("x"),
                "conditions": m.get("c", []), "id": m.get("i"), "tape": m.get("z")}
        return {"type": "trade", "symbol": m.get("S"), "data": data}
    if kind == "q":
        data = {"timestamp": m.get("t"), "bid_price": m.get("bp"), "bid_size": m.get("bs"),
                "bid_exchange": m.get("bx"), "ask_price": m.get("ap"), "ask_size": m.get("as"),
                "ask_exchange": m.get("ax"), "conditions": m.get("c", []), "tape": m.get("z")}
        return {"type": "quote", "symbol": m.get("S"), "data": data}
    if kind == "b":
        data = {"timestamp": m.get("t"), "open": m.get("o"), "high": m.get("h"), "low": m.get("l"),
                "close": m.get("c"), "volume": m.get("v"), "trade_count": m.get("n"), "vwap": m.get("vw")}
        return {"type": "bar", "symbol": m.get("S"), "data": data}
    if kind == "c":
        return {"type": "correction", "symbol": m.get("S"), "data": _without(m, "T", "S")}
    if kind == "x":
        return {"type": "cancel_error", "symbol": m.get("S"), "data": _without(m, "T", "S")}
    if kind == "n":  # news: no symbol of its own, the symbols it names are in data
        data = {k: m.get(k) for k in NEWS_FIELDS}
        if m.get("images"):
            data["images"] = m["images"]
        return {"type": "news", "data": data}
    if kind == "o":  # crypto order books: the relay's top-levels view (upstream/sources.py Book), None if unchanged
        view = getattr(m, "view", None)
        return {"type": "orderbook", "symbol": m.get("S"), "data": view} if view is not None else None
    return None


NEWS_FIELDS = ("id", "headline", "summary", "author", "source", "url", "symbols", "created_at", "updated_at")


def snapshot_message(symbol: str, snap: Any) -> dict[str, Any] | None:
    """Alpaca's REST snapshot as the initial state of a symbol: its latest trade (in the trade message's data
    shape), the previous close, and the daily bar with its start (before a session's first trade that is still
    the last session's bar, which the page tells by its date)."""
    if not isinstance(snap, dict):
        return None
    trade = snap.get("latestTrade")
    latest = market_message({"T": "t", "S": symbol, **trade}) if isinstance(trade, dict) else None
    prev, daily = snap.get("prevDailyBar") or {}, snap.get("dailyBar") or {}
    quote = snap.get("latestQuote")
    latest_quote = market_message({"T": "q", "S": symbol, **quote}) if isinstance(quote, dict) else None
    data = {"latest_trade": latest["data"] if latest else None, "prev_close": prev.get("c"),
            "daily": {k: daily.get(a) for k, a in (("open", "o"), ("high", "h"), ("low", "l"), ("close", "c"),
                                                     ("volume", "v"), ("vwap", "vw"), ("timestamp", "t"))}
            if daily else None,
            "latest_quote": latest_quote["data"] if latest_quote else None}
    return {"type": "snapshot", "symbol": symbol, "data": data}


def _without(m: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in m.items() if k not in keys}


def encode(msg: Any) -> bytes:
    return orjson.dumps(msg)


def subscribed(symbols: tuple[str, ...] | list[str], channels: tuple[str, ...],
               kind: str = "subscribed") -> list[dict[str, Any]]:
    """Replies to a (un)subscribe: one per symbol, in the original server's exact shape plus ``channels``."""
    return [{"type": kind, "symbol": s, "channels": list(channels)} for s in symbols]
