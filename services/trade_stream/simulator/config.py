"""Configuration of the simulator: accounts, data plans, endpoints, defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

from .clock import Clock

#: Market-data endpoint path -> feed name, as in ``wss://stream.data.alpaca.markets/{path}``.
DATA_PATHS: dict[str, str] = {
    "/v2/iex": "iex",
    "/v2/sip": "sip",
    "/v2/delayed_sip": "delayed_sip",
    "/v2/test": "test",
    "/v1beta1/boats": "boats",
    "/v1beta1/overnight": "overnight",
    # Crypto: Alpaca US, Kraken US, Kraken EU, each its own endpoint and connection slot.
    "/v1beta3/crypto/us": "crypto-us",
    "/v1beta3/crypto/us-1": "crypto-us-1",
    "/v1beta3/crypto/eu-1": "crypto-eu-1",
    # News: one stream of articles for every plan, routed by their ``symbols`` (no ``S``).
    "/v1beta1/news": "news",
    # Options: indicative (free) and OPRA (paid), msgpack only, trades and quotes of OCC contract symbols.
    "/v1beta1/indicative": "indicative",
    "/v1beta1/opra": "opra",
}

#: The crypto feeds: BASE/QUOTE pairs, trades/quotes/bars/orderbooks around the clock, no statuses or LULDs.
CRYPTO_FEEDS: frozenset[str] = frozenset(f for f in DATA_PATHS.values() if f.startswith("crypto-"))

#: Trading stream path, as in ``wss://paper-api.alpaca.markets/stream``.
TRADING_PATH = "/stream"

ALL_FEEDS: frozenset[str] = frozenset(DATA_PATHS.values())

#: Start prices of well-known symbols; other symbols get a stable price derived from their name.
DEFAULT_PRICES: dict[str, float] = {
    "AAPL": 230.0,
    "MSFT": 420.0,
    "TSLA": 250.0,
    "NVDA": 135.0,
    "AMZN": 200.0,
    "GOOGL": 175.0,
    "META": 580.0,
    "AMD": 140.0,
    "SPY": 590.0,
    "QQQ": 510.0,
    "JPM": 240.0,
    "KO": 63.0,
    "FAKEPACA": 130.0,
    "BTC/USD": 65000.0,
    "ETH/USD": 3200.0,
    "SOL/USD": 150.0,
    "LTC/USD": 80.0,
    "DOGE/USD": 0.15,
    "ETH/BTC": 0.05,
}

#: Well-known listed names (and the crypto pairs above): the demo's universe, so a made-up ticker is unknown.
KNOWN_SYMBOLS: frozenset[str] = frozenset(DEFAULT_PRICES) | frozenset(
    "AAPL MSFT NVDA AMZN GOOGL GOOG META TSLA AVGO BRK.B JPM V MA UNH XOM LLY JNJ PG HD COST ABBV MRK CVX KO PEP "
    "WMT BAC ORCL CRM ADBE NFLX AMD INTC CSCO QCOM TXN IBM GE F GM T VZ DIS NKE MCD SBUX BA CAT PFE UBER PYPL "
    "PLTR COIN SHOP SQ ABNB SNOW SPY QQQ IWM DIA GLD TLT VTI VOO XLF XLK XLE".split())


@dataclass(frozen=True)
class Plan:
    """A market-data subscription plan: which feeds a key may stream and how many symbols.

    ``symbol_limit`` counts distinct symbols across all channels of one connection (None = unlimited).
    ``wildcard`` None means ``*`` is allowed exactly when the plan is unlimited.
    ``max_connections`` is the number of authenticated sessions per key per endpoint path (Alpaca: 1).
    """

    feeds: frozenset[str] = ALL_FEEDS
    symbol_limit: int | None = None
    max_connections: int = 1
    wildcard: bool | None = None

    def allows_wildcard(self) -> bool:
        return self.symbol_limit is None if self.wildcard is None else self.wildcard


#: Alpaca's free plan: IEX only (plus the delayed SIP and test feeds, crypto, news and indicative options), 30
#: symbols; no SIP, BOATS, overnight or OPRA feed (those need Algo Trader Plus).
BASIC_PLAN = Plan(feeds=frozenset({"iex", "delayed_sip", "test", "news", "indicative"}) | CRYPTO_FEEDS,
                  symbol_limit=30)
#: Algo Trader Plus: every feed, unlimited symbols.
UNLIMITED_PLAN = Plan()


def feed_kind(feed: str | None) -> str:
    """Which kind of stream a feed is: its channels and symbol rule follow (protocol.KINDS)."""
    if feed in CRYPTO_FEEDS:
        return "crypto"
    if feed == "news":
        return "news"
    if feed in ("indicative", "opra"):
        return "options"
    return "stocks"


def _demo_accounts() -> dict[str, str]:
    return {"DEMO_KEY": "DEMO_SECRET"}


@dataclass
class SimConfig:
    """Everything a Simulator needs; the defaults suit a demo (2 trades/s per subscribed symbol)."""

    host: str = "127.0.0.1"
    port: int = 0
    accounts: dict[str, str] = field(default_factory=_demo_accounts)
    rate_per_symbol: float = 2.0
    auth_timeout: float = 10.0
    default_plan: Plan = UNLIMITED_PLAN
    plans: dict[str, Plan] = field(default_factory=dict)
    seed: int | None = None
    #: Generator period: each tick builds every message once and sends each connection one frame.
    tick_interval: float = 0.05
    #: Quotes generated per trade (real markets quote far more often than they trade).
    quote_ratio: float = 1.0
    #: What the generator sends unasked (only while it runs, i.e. rate_per_symbol > 0). Per generated trade: the
    #: chance of a correction (``c``), of a cancel/error (``x``), and that it arrives late, stamped in the minute
    #: bar already closed, which makes an updatedBar (``u``) due ``updated_bar_delay`` s into the next minute.
    correction_rate: float = 0.001
    cancel_error_rate: float = 0.001
    late_trade_rate: float = 0.01
    updated_bar_delay: float = 30.0
    #: Trading pauses per second per symbol with status subscribers (a halt ``s``, no trades, then a resume ``s``
    #: after ``halt_seconds``); LULD bands (``l``) every ``luld_interval`` s. Subscribing to statuses or lulds
    #: sends the symbol's current status or bands at once.
    halt_rate: float = 1 / 7200
    halt_seconds: float = 300.0
    luld_interval: float = 60.0
    #: Mean seconds between generated news articles on a news stream with subscribers (0: only injected ones).
    news_interval: float = 30.0
    start_prices: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    #: Synthesize each symbol's day so far when first met (minute bars from the session open, or the last 6.5 h
    #: for crypto, ending at its price; simulator/intraday.py), so the bars REST has a real-looking day. On in the
    #: demo and the standalone runner; off by default so tests and benchmarks see only what they made.
    intraday_history: bool = False
    starting_cash: float = 100_000.0
    #: The simulated time (clock.py): None = the wall clock. Tests pin it to the hour they are about; the demo's
    #: ``--demo-session open`` shifts it into a regular session.
    clock: Clock | None = None
    #: Generated stock data follows the US equity calendar at the simulated time (calendar.py): the regular
    #: session as configured, sparse trades before the open and after the close (04:00-20:00 New York time),
    #: nothing overnight, at weekends and on holidays on iex/sip/delayed_sip; the boats and overnight feeds trade
    #: overnight only (20:00-04:00, Sunday to Thursday nights); options in the regular session. Crypto, news and
    #: the test feed run around the clock. False: every feed generates at every hour (benchmarks).
    market_hours: bool = True
    #: Symbols the market lists (a synthesized day, snapshots, generated trades); others are unknown, as at Alpaca:
    #: a subscription is accepted and sends nothing, snapshots leave them out, bars are empty. None = every symbol
    #: (tests and benchmarks make up their own). The demo and ``trade-stream simulate`` use KNOWN_SYMBOLS.
    universe: frozenset[str] | None = None
    #: A data connection whose unsent output exceeds this gets 407 "slow client" and is dropped.
    slow_client_buffer: int = 16 * 2**20
    #: Server keepalive pings (None disables them); client pings are always answered.
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0

    def plan_for(self, key: str) -> Plan:
        return self.plans.get(key, self.default_plan)
