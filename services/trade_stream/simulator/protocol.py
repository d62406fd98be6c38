"""Market-data stream protocol rules: control messages, error codes, subscription bookkeeping.

Pure functions, so the rules (what is 400 and what is 410, what a 405 leaves behind) are easy to read
and test apart from the sockets.
"""

from __future__ import annotations

from .config import Plan
from .market import CRYPTO_SYMBOL_RE, OPTION_SYMBOL_RE, SYMBOL_RE

#: Channels a stock-stream client may name in subscribe/unsubscribe.
CHANNELS = ("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds", "imbalances")
#: Channels that follow ``trades`` and cannot be subscribed directly (Alpaca: "automatic when you
#: subscribe to the trade channel"). Naming them is rejected with 400 so a client that echoes the
#: server's subscription reply back upstream is caught here rather than in production.
IMPLIED = ("corrections", "cancelErrors")
#: Channels of the crypto streams (v1beta3/crypto/{loc}): no statuses, LULDs, imbalances, corrections or
#: cancel/errors; order books instead.
CRYPTO_CHANNELS = ("trades", "quotes", "bars", "updatedBars", "dailyBars", "orderbooks")
#: The news stream (v1beta1/news): one channel; symbols are stock tickers (or ``*``).
NEWS_CHANNELS = ("news",)
#: The option streams (v1beta1/indicative, v1beta1/opra): trades and quotes of OCC contract symbols.
OPTION_CHANNELS = ("trades", "quotes")
#: Channels and symbol rule per kind of stream (config.feed_kind).
KINDS = {"stocks": (CHANNELS, SYMBOL_RE), "crypto": (CRYPTO_CHANNELS, CRYPTO_SYMBOL_RE),
         "news": (NEWS_CHANNELS, SYMBOL_RE), "options": (OPTION_CHANNELS, OPTION_SYMBOL_RE)}

ERROR_MESSAGES = {
    400: "invalid syntax",
    401: "not authenticated",
    402: "auth failed",
    403: "already authenticated",
    404: "auth timeout",
    405: "symbol limit exceeded",
    406: "connection limit exceeded",
    407: "slow client",
    409: "insufficient subscription",
    410: "invalid subscribe action for this feed",
    411: "insufficient scope",
    412: "option messages are only available in MsgPack format",
    413: "star subscription is not allowed for option quotes",
    500: "internal error",
}

#: Close code after the 404 "auth timeout" frame (and on the trading stream's auth timeout). Alpaca documents the
#: frame, not the code; the relay's compatible endpoints use the same one.
AUTH_TIMEOUT_CLOSE = 1008

CONNECTED = {"T": "success", "msg": "connected"}
AUTHENTICATED = {"T": "success", "msg": "authenticated"}

Subs = dict[str, set[str]]


class ProtocolError(Exception):
    """A request the server answers with ``[{"T":"error","code":..,"msg":..}]``."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def error(code: int, msg: str | None = None) -> dict:
    return {"T": "error", "code": code, "msg": msg or ERROR_MESSAGES.get(code, "error")}


def empty_subs(crypto: bool = False, kind: str | None = None) -> Subs:
    return {ch: set() for ch in KINDS[kind or ("crypto" if crypto else "stocks")][0]}


def parse_request(msg: dict, refused: frozenset[str] | set[str] = frozenset(),
                  crypto: bool = False, kind: str | None = None) -> dict[str, list[str]]:
    """Validate the channel lists of a subscribe/unsubscribe message; return channel -> symbols.

    A null or empty list means nothing on any key: the Go SDK sends every channel key it knows (orderbooks, news
    and pricing included), unset ones as nil.
    400: no channel key at all, a non-list value, a non-string or malformed symbol (or one in ``refused``), or an
    implied channel.
    410: a non-empty channel this stream does not have (news, orderbooks on stocks, statuses on crypto, typos...).
    On a crypto stream a symbol must be a BASE/QUOTE pair, on an option stream an OCC contract (400 otherwise).
    413: ``*`` for option quotes.
    """
    if not any(key != "action" for key in msg):
        raise ProtocolError(400)
    request: dict[str, list[str]] = {}
    kind = kind or ("crypto" if crypto else "stocks")
    crypto = kind != "stocks"  # corrections/cancelErrors are stock channels: elsewhere they are just unknown (410)
    channels, symbol_re = KINDS[kind]
    for key, value in msg.items():
        if key == "action" or value is None or value == []:
            continue
        if key in IMPLIED and not crypto:
            raise ProtocolError(400)
        if key not in channels:
            raise ProtocolError(410)
        if not isinstance(value, list):
            raise ProtocolError(400)
        if kind == "options" and key == "quotes" and "*" in value:
            raise ProtocolError(413)
        for symbol in value:
            if not isinstance(symbol, str) or not (symbol == "*" or symbol_re.fullmatch(symbol)) \
                    or symbol in refused:
                raise ProtocolError(400)
        request[key] = value
    return request


def apply(subs: Subs, request: dict[str, list[str]], subscribe: bool) -> Subs:
    """The subscription set after applying ``request`` (a new dict; ``subs`` is untouched)."""
    new = {ch: set(symbols) for ch, symbols in subs.items()}
    for ch, symbols in request.items():
        if subscribe:
            new[ch].update(symbols)
        else:
            new[ch].difference_update(symbols)
    return new


def symbol_count(subs: Subs) -> int:
    """Distinct symbols across all channels, the unit of Alpaca's per-plan limit."""
    return len(set().union(*subs.values()) - {"*"})


def check_plan(subs: Subs, plan: Plan) -> None:
    """Raise 405 if ``subs`` exceeds the plan (too many symbols, or a wildcard the plan lacks)."""
    if plan.symbol_limit is None:
        return
    wildcard = any("*" in symbols for symbols in subs.values())
    if symbol_count(subs) > plan.symbol_limit or (wildcard and not plan.allows_wildcard()):
        raise ProtocolError(405)


def subscription_message(subs: Subs) -> dict:
    """The full-set confirmation, keys in Alpaca's order, lists sorted."""
    if "news" in subs:  # the news stream
        return {"T": "subscription", "news": sorted(subs["news"])}
    if "bars" not in subs:  # an option stream
        return {"T": "subscription", "trades": sorted(subs["trades"]), "quotes": sorted(subs["quotes"])}
    if "orderbooks" in subs:  # a crypto stream
        return {"T": "subscription", **{ch: sorted(subs[ch]) for ch in
                                        ("trades", "quotes", "orderbooks", "bars", "updatedBars", "dailyBars")}}
    trades = sorted(subs["trades"])
    return {
        "T": "subscription",
        "trades": trades,
        "quotes": sorted(subs["quotes"]),
        "bars": sorted(subs["bars"]),
        "updatedBars": sorted(subs["updatedBars"]),
        "dailyBars": sorted(subs["dailyBars"]),
        "statuses": sorted(subs["statuses"]),
        "lulds": sorted(subs["lulds"]),
        "corrections": list(trades),
        "cancelErrors": list(trades),
        "imbalances": sorted(subs["imbalances"]),
    }


def wants(subs: Subs, channel: str, symbol: str | tuple[str, ...] | None) -> bool:
    """Whether a connection with ``subs`` receives a message of ``channel`` for ``symbol``."""
    symbols = subs.get(channel)
    if not symbols:
        return False
    if isinstance(symbol, tuple):  # a news article: every symbol it names
        return "*" in symbols or any(s in symbols for s in symbol)
    return symbol in symbols or "*" in symbols
