"""Market-data generation: random-walk prices, trades, quotes, minute and daily bars.

Pure and synchronous (no sockets) so it can be unit-tested and driven at any rate. Messages are built in
Alpaca's stock stream schema (JSON form, ``t`` as an RFC-3339 string); each comes with its timestamp in
nanoseconds so the wire layer can emit a msgpack Timestamp without parsing the string back.
"""

from __future__ import annotations

import math
import random
import re
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from .intraday import synthesize
from .units import MINUTE_NS, NS, format_ts, new_york_midnight, round_price

DAY_NS = 86_400 * NS
#: Daily bars start at midnight New York time (05:00Z in winter, 04:00Z in summer), as Alpaca's daily bars do.
NEW_YORK = ZoneInfo("America/New_York")

#: A message and its timestamp in ns since the epoch.
Stamped = tuple[dict, int]

IEX_EXCHANGE = "V"
#: SIP exchange codes weighted roughly by market share (Q Nasdaq, N NYSE, P Arca, Z BZX, K EDGX, D FINRA ADF...).
SIP_EXCHANGES = "QQQQNNNPPPZZKKDDDDDVVJYXAHUL"
NASDAQ_LISTED = frozenset({"AAPL", "MSFT", "TSLA", "NVDA", "AMZN", "GOOGL", "META", "AMD", "QQQ", "FAKEPACA"})
NYSE_LISTED = frozenset({"JPM", "KO", "BRK.B", "IBM", "GE", "F", "T"})
ARCA_LISTED = frozenset({"SPY", "IWM", "GLD", "DIA"})

SYMBOL_RE = re.compile(r"[A-Z][A-Z0-9.\-/]{0,20}")
#: Crypto pairs on the crypto streams: BASE/QUOTE (BTC/USD, ETH/BTC, SOL/USDT).
CRYPTO_SYMBOL_RE = re.compile(r"[A-Z0-9]{1,15}/[A-Z0-9]{2,10}")
BOOK_LEVELS = 20  # levels per side of a simulated crypto order book
#: Option contracts (OCC): root, expiry YYMMDD, C or P, strike x 1000 in 8 digits (AAPL241220C00150000).
OPTION_SYMBOL_RE = re.compile(r"([A-Z][A-Z0-9]{0,5})(\d{6})([CP])(\d{8})")
#: Option exchanges (OPRA participant codes: C Cboe, X Phlx, I ISE, M Miami, Q Nasdaq, A NYSE American, ...).
OPTION_EXCHANGES = "CCCXXIIMQQANBHJ"

_TS_RE = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")


def parse_ts(text: str) -> int:
    """Parse an RFC-3339 timestamp (any fraction length) or a YYYY-MM-DD date into ns since the epoch."""
    match = _TS_RE.fullmatch(text.strip())
    if match is None:
        day = datetime.strptime(text.strip(), "%Y-%m-%d").replace(tzinfo=UTC)
        return int(day.timestamp()) * NS
    base, frac, zone = match.groups()
    zone = "+00:00" if zone == "Z" else zone
    seconds = int(datetime.fromisoformat(base + zone).timestamp())
    return seconds * NS + int((frac or "0").ljust(9, "0"))


def next_new_york_midnight(ns: int) -> int:
    day = datetime.fromtimestamp(new_york_midnight(ns) // NS, NEW_YORK).date() + timedelta(days=1)
    return int(datetime(day.year, day.month, day.day, tzinfo=NEW_YORK).timestamp()) * NS


def tape_of(symbol: str) -> str:
    """A = NYSE-listed, B = Arca/regional, C = Nasdaq-listed; unknown symbols get a stable pseudo-random tape."""
    if symbol in NASDAQ_LISTED:
        return "C"
    if symbol in NYSE_LISTED:
        return "A"
    if symbol in ARCA_LISTED:
        return "B"
    return "ABC"[zlib.crc32(symbol.encode()) % 3]


def default_price(symbol: str) -> float:
    """A stable start price for a symbol without a configured one."""
    return float(20 + zlib.crc32(symbol.encode()) % 480)


def option_premium(symbol: str, underlying: float, now_ns: int) -> float | None:
    """A plausible start price for an OCC contract: intrinsic value plus a time value that grows with the
    square root of the days left (None if ``symbol`` is not a contract)."""
    match = OPTION_SYMBOL_RE.fullmatch(symbol)
    if match is None:
        return None
    _, expiry, right, strike_text = match.groups()
    strike = int(strike_text) / 1000
    try:
        expires = datetime.strptime(expiry, "%y%m%d").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None
    days = max(1.0, (expires - now_ns / NS) / 86_400)
    intrinsic = max(0.0, underlying - strike if right == "C" else strike - underlying)
    distance = abs(underlying - strike) / max(underlying, 0.01)
    time_value = underlying * 0.012 * math.sqrt(days / 7) * math.exp(-8 * distance)
    return max(0.05, round(intrinsic + time_value, 2))


@dataclass
class BarBuilder:
    """Aggregates trades into OHLCV bars over fixed windows (a minute, or a New York calendar day)."""

    window_ns: int = MINUTE_NS
    start_ns: int | None = None
    #: Start of the last bar closed by ``roll`` (late trades update that bar: Alpaca's updatedBars).
    closed_start: int | None = None
    o: float = 0.0
    h: float = 0.0
    low: float = 0.0
    c: float = 0.0
    v: float = 0  # an int for stocks, fractional for crypto
    n: int = 0
    pv: float = 0.0

    def window_of(self, ns: int) -> int:
        if self.window_ns == DAY_NS:
            return new_york_midnight(ns)
        return ns // self.window_ns * self.window_ns

    def add(self, price: float, size: float, ns: int) -> dict | None:
        """Add a trade; return the previous bar if this trade opened a new window."""
        start = self.window_of(ns)
        done = self.roll(ns) if self.start_ns is not None and start > self.start_ns else None
        if self.start_ns is None:
            self.start_ns, self.o, self.h, self.low = start, price, price, price
            self.v = self.n = 0
            self.pv = 0.0
        self.h, self.low, self.c = max(self.h, price), min(self.low, price), price
        self.v += size
        self.n += 1
        self.pv += price * size
        return done

    def roll(self, now_ns: int) -> dict | None:
        """Close the current bar if ``now_ns`` is past its window; return it."""
        if self.start_ns is None or self.window_of(now_ns) <= self.start_ns:
            return None
        bar = self.current()
        self.closed_start, self.start_ns = self.start_ns, None
        return bar

    def current(self) -> dict | None:
        """The bar being built, as Alpaca's bar fields (``t`` = window start), or None if no trade yet."""
        if self.start_ns is None:
            return None
        vw = self.pv / self.v if self.v else self.c
        return {"o": self.o, "h": self.h, "l": self.low, "c": self.c, "v": self.v,
                "t": format_ts(self.start_ns), "n": self.n, "vw": round(vw, 6)}


@dataclass
class SymbolState:
    """Per-symbol market state: the random walk, the last trade/quote, bars and recent trade history."""

    symbol: str
    price: float
    tape: str
    open_price: float
    minute: BarBuilder = field(default_factory=BarBuilder)
    daily: BarBuilder = field(default_factory=lambda: BarBuilder(DAY_NS))
    last_bar: dict | None = None
    #: The last closed minute bar was changed by a late trade: an updatedBar is owed.
    bar_updated: bool = False
    halted: bool = False
    last_trade: dict | None = None
    last_quote: dict | None = None
    history: deque[tuple[int, dict]] = field(default_factory=lambda: deque(maxlen=20_000))
    #: Crypto order book (price -> size), kept around the current price.
    bids: dict[float, float] = field(default_factory=dict)
    asks: dict[float, float] = field(default_factory=dict)
    #: Synthesized minute bars before the simulator met the symbol (intraday.py), oldest first, and the day before.
    intraday: list[tuple[int, dict]] = field(default_factory=list)
    prev_daily: dict | None = None


class Market:
    """The simulated market: generates Alpaca stock messages for any symbol on demand."""

    def __init__(self, seed: int | None = None, start_prices: dict[str, float] | None = None,
                 intraday: bool = False, clock: Callable[[], int] = time.time_ns,
                 universe: frozenset[str] | None = None) -> None:
        self.rng = random.Random(seed)
        #: The simulated time in ns (clock.py): every timestamp, bar window and synthesized day reads it.
        self.clock = clock
        #: Symbols with a history (a synthesized day, snapshots, generated trades); None = every symbol.
        self.universe = set(universe) if universe is not None else None
        self.seed = seed
        self.intraday = intraday
        self.start_prices = dict(start_prices or {})
        self.symbols: dict[str, SymbolState] = {}
        self._trade_id = self.rng.randrange(10**12, 10**13)
        self._news_id = 24_000_000

    def known_symbols(self) -> list[str]:
        """Symbols a ``*`` subscription streams: the configured ones plus any seen since (of the universe)."""
        names = set(self.start_prices) | set(self.symbols)
        return sorted(names if self.universe is None else names & self.universe)

    def known(self, symbol: str) -> bool:
        """Whether the simulated market lists ``symbol``: any symbol without a universe; with one, its members
        and option contracts on them."""
        if self.universe is None or symbol in self.universe:
            return True
        match = OPTION_SYMBOL_RE.fullmatch(symbol) if len(symbol) > 15 else None
        return bool(match and match.group(1) in self.universe)

    def register(self, symbol: str) -> None:
        """Add ``symbol`` to the universe (a test's made-up ticker that should trade like a listed one)."""
        if self.universe is not None:
            self.universe.add(symbol)

    def state(self, symbol: str) -> SymbolState:
        st = self.symbols.get(symbol)
        if st is None:
            match = OPTION_SYMBOL_RE.fullmatch(symbol) if len(symbol) > 15 else None
            premium = option_premium(symbol, self.price(match.group(1)), self.clock()) if match else None
            price = self.start_prices.get(symbol) or premium or default_price(symbol)
            st = SymbolState(symbol, price, tape_of(symbol), price)
            self.symbols[symbol] = st
            if self.intraday and match is None and self.known(symbol):
                self._seed_day(st)
        return st

    def _seed_day(self, st: SymbolState) -> None:
        """Give a newly met symbol its day so far (intraday.py): minute bars ending at its price, today's daily
        bar built from them (live trades carry on from it), and the previous day's bar for snapshots."""
        day = synthesize(st.symbol, st.price, self.clock(), self.seed, bool(CRYPTO_SYMBOL_RE.fullmatch(st.symbol)))
        st.intraday, st.prev_daily = day.bars, day.prev_daily
        if day.bars:  # the day's last trade: a snapshot needs not invent one (nor draw from the live generator)
            start, bar = day.bars[-1]
            st.last_bar = dict(bar)
            trade = {"t": format_ts(start + 59 * NS), "p": bar["c"], "i": self._trade_id}
            trade.update({"s": round(bar["v"] / max(bar["n"], 1), 8), "tks": "B"} if isinstance(bar["v"], float)
                         else {"x": IEX_EXCHANGE, "s": 100, "c": ["@"], "z": st.tape})
            st.last_trade = trade
        if day.daily is not None:
            d, daily = day.daily, st.daily
            daily.start_ns, daily.o, daily.h, daily.low, daily.c = day.daily_start, d["o"], d["h"], d["l"], d["c"]
            daily.v, daily.n, daily.pv = d["v"], d["n"], d["vw"] * d["v"]

    def price(self, symbol: str) -> float:
        return self.state(symbol).price

    def _walk(self, st: SymbolState) -> float:
        st.price = max(0.01, round_price(st.price * math.exp(self.rng.gauss(0.0, 0.0004))))
        return st.price

    def _exchange(self, feed: str) -> str:
        return IEX_EXCHANGE if feed == "iex" else self.rng.choice(SIP_EXCHANGES)

    def _size(self) -> int:
        r = self.rng.random()
        if r < 0.55:
            return self.rng.randint(1, 99)
        if r < 0.95:
            return 100 * self.rng.randint(1, 5)
        return self.rng.randint(100, 5000)

    def _conditions(self, size: int) -> list[str]:
        conds = ["@"]
        r = self.rng.random()
        if r < 0.1:
            conds.append("F")
        elif r < 0.12:
            conds.append("T")
        if size < 100:
            conds.append("I")
        return conds

    def trade(self, symbol: str, feed: str = "iex", price: float | None = None, size: int | None = None,
              ns: int | None = None, **fields: object) -> Stamped:
        """Build a trade (random-walk price unless given), record it in history and bars."""
        st = self.state(symbol)
        if price is None:
            price = self._walk(st)
        else:
            st.price = price = round_price(float(price))
        size = self._size() if size is None else int(size)
        ns = self.clock() if ns is None else ns
        self._trade_id += 1
        msg = {"T": "t", "S": symbol, "i": self._trade_id, "x": self._exchange(feed), "p": price, "s": size,
               "c": self._conditions(size), "t": format_ts(ns), "z": st.tape}
        msg.update(fields)
        self.record_trade(st, msg, ns)
        return msg, ns

    def record_trade(self, st: SymbolState, msg: dict, ns: int) -> None:
        """Keep the trade for REST (latest, history, snapshot) and fold it into the bars. A late trade (one that
        belongs to the minute bar already closed) updates that bar instead, and an updatedBar becomes due."""
        rest = {k: msg[k] for k in ("t", "x", "p", "s", "c", "i", "z", "tks") if k in msg}
        st.last_trade = rest
        st.history.append((ns, rest))
        size = msg.get("s", 0)  # shares (int) for stocks, a fraction of a coin for crypto
        price, size = float(msg.get("p", st.price)), size if isinstance(size, int | float) else 0
        minute = st.minute
        if st.last_bar is not None and minute.closed_start is not None and \
                minute.window_of(ns) == minute.closed_start:
            bar = st.last_bar
            volume = bar["v"] + size
            bar.update(h=max(bar["h"], price), l=min(bar["l"], price), v=volume, n=bar["n"] + 1,
                       vw=round((bar["vw"] * bar["v"] + price * size) / volume, 6) if volume else bar["vw"])
            st.bar_updated = True
        else:
            done = minute.add(price, size, ns)
            if done is not None:
                st.last_bar, st.bar_updated = done, False
        if (yesterday := st.daily.add(price, size, ns)) is not None:  # the first trade of a new day
            st.prev_daily = yesterday

    def quote(self, symbol: str, feed: str = "iex", bid: float | None = None, ask: float | None = None,
              ns: int | None = None, **fields: object) -> Stamped:
        """Build a quote around the current price with ``bp < ap`` on a cent grid."""
        st = self.state(symbol)
        spread = 0.01 * (1 + self.rng.randrange(max(1, round(st.price * 0.0003 / 0.01))))
        if bid is None:
            bid = st.price - spread * self.rng.random()
        if ask is None:
            ask = round_price(bid) + spread
        bid, ask = round_price(max(0.0001, float(bid))), round_price(float(ask))
        ns = self.clock() if ns is None else ns
        msg = {"T": "q", "S": symbol, "bx": self._exchange(feed), "bp": bid, "bs": 100 * self.rng.randint(1, 9),
               "ax": self._exchange(feed), "ap": ask, "as": 100 * self.rng.randint(1, 9), "c": ["R"],
               "t": format_ts(ns), "z": st.tape}
        msg.update(fields)
        st.last_quote = {k: msg[k] for k in ("t", "ax", "ap", "as", "bx", "bp", "bs", "c", "z") if k in msg}
        return msg, ns

    # -- options (v1beta1/indicative, opra): one condition and one exchange code per message, as strings -----

    def option_trade(self, symbol: str, price: float | None = None, size: int | None = None,
                     ns: int | None = None, **fields: object) -> Stamped:
        st = self.state(symbol)
        if price is None:
            st.price = price = max(0.01, round(st.price * math.exp(self.rng.gauss(0.0, 0.002)), 2))
        else:
            st.price = price = round(float(price), 2)
        size = self.rng.choice((1, 1, 1, 2, 3, 5, 10, 20)) if size is None else int(size)
        ns = self.clock() if ns is None else ns
        msg = {"T": "t", "S": symbol, "t": format_ts(ns), "p": price, "s": size,
               "x": self.rng.choice(OPTION_EXCHANGES), "c": self.rng.choice("IIIIJS")}
        msg.update(fields)
        self.record_trade(st, msg, ns)
        return msg, ns

    def option_quote(self, symbol: str, bid: float | None = None, ask: float | None = None,
                     ns: int | None = None, **fields: object) -> Stamped:
        st = self.state(symbol)
        spread = 0.05 if st.price >= 3 else 0.01 * (1 + self.rng.randrange(3))
        bid = max(0.0, round(st.price - spread * self.rng.random(), 2)) if bid is None else float(bid)
        ask = round(bid + spread, 2) if ask is None else float(ask)
        ns = self.clock() if ns is None else ns
        msg = {"T": "q", "S": symbol, "t": format_ts(ns), "bx": self.rng.choice(OPTION_EXCHANGES), "bp": bid,
               "bs": self.rng.randint(1, 200), "ax": self.rng.choice(OPTION_EXCHANGES), "ap": ask,
               "as": self.rng.randint(1, 200), "c": "A"}
        msg.update(fields)
        st.last_quote = {k: msg[k] for k in ("t", "ax", "ap", "as", "bx", "bp", "bs", "c") if k in msg}
        return msg, ns

    # -- crypto (v1beta3): floats for sizes, taker side, no exchange/conditions/tape; order books ---------------

    def _tick(self, st: SymbolState) -> float:
        """The price step of a crypto book: about a basis point, in the price's own precision."""
        return max(round_price(st.price * 0.0001), 0.0001)

    def crypto_trade(self, symbol: str, price: float | None = None, size: float | None = None,
                     ns: int | None = None, **fields: object) -> Stamped:
        st = self.state(symbol)
        if price is None:
            price = self._walk(st)
        else:
            st.price = price = round_price(float(price))
        size = round(self.rng.expovariate(1.0) * 1000 / max(price, 1.0), 8) or 0.0001 if size is None \
            else float(size)
        ns = self.clock() if ns is None else ns
        self._trade_id += 1
        msg = {"T": "t", "S": symbol, "p": price, "s": size, "t": format_ts(ns), "i": self._trade_id,
               "tks": self.rng.choice("BS")}
        msg.update(fields)
        self.record_trade(st, msg, ns)
        return msg, ns

    def crypto_quote(self, symbol: str, bid: float | None = None, ask: float | None = None,
                     ns: int | None = None, **fields: object) -> Stamped:
        st = self.state(symbol)
        step = self._tick(st)
        bid = round_price(st.price - step * (1 + self.rng.randrange(3))) if bid is None else float(bid)
        ask = round_price(bid + step * (1 + self.rng.randrange(3))) if ask is None else float(ask)
        ns = self.clock() if ns is None else ns
        unit = 1000 / max(st.price, 1.0)
        msg = {"T": "q", "S": symbol, "bp": bid, "bs": round(unit * self.rng.uniform(0.1, 5), 8), "ap": ask,
               "as": round(unit * self.rng.uniform(0.1, 5), 8), "t": format_ts(ns)}
        msg.update(fields)
        st.last_quote = {k: msg[k] for k in ("t", "ap", "as", "bp", "bs") if k in msg}
        return msg, ns

    def _recenter(self, st: SymbolState) -> None:
        """Keep BOOK_LEVELS levels per side around the current price, none crossing it."""
        step, price, unit = self._tick(st), st.price, 1000 / max(st.price, 1.0)
        for p in [p for p in st.bids if p >= price]:
            del st.bids[p]
        for p in [p for p in st.asks if p <= price]:
            del st.asks[p]
        for side, sign in ((st.bids, -1), (st.asks, 1)):
            k = 1
            while len(side) < BOOK_LEVELS:
                level = round_price(price + sign * step * k)
                if level > 0 and level not in side:
                    side[level] = round(unit * self.rng.uniform(0.05, 10), 8)
                k += 1
            for p in sorted(side, key=lambda q: abs(q - price))[BOOK_LEVELS:]:
                del side[p]

    # -- news (v1beta1/news): articles routed by the symbols they name, no ``S`` -----------------------------

    def news(self, symbols: list[str], headline: str | None = None, ns: int | None = None,
             **fields: object) -> Stamped:
        """An article in Alpaca's stream shape (``T: "n"``)."""
        ns = self.clock() if ns is None else ns
        self._news_id += 1
        subject = ", ".join(symbols) or "Markets"
        verb = self.rng.choice(("rises after", "slips on", "holds steady ahead of", "jumps on"))
        topic = self.rng.choice(("earnings", "an analyst note", "guidance", "index news"))
        headline = headline or f"{subject} {verb} {topic}"
        msg = {"T": "n", "id": self._news_id, "headline": headline,
               "summary": f"Simulated article about {subject}.", "author": "Simulator Desk",
               "created_at": format_ts(ns), "updated_at": format_ts(ns),
               "url": f"https://example.invalid/news/{self._news_id}", "content": f"<p>{headline}.</p>",
               "symbols": list(symbols), "source": "benzinga"}
        msg.update(fields)
        return msg, ns

    def orderbook(self, symbol: str, ns: int | None = None) -> Stamped:
        """The full book (``r: true``), as Alpaca sends first after an orderbooks subscribe."""
        st = self.state(symbol)
        self._recenter(st)
        ns = self.clock() if ns is None else ns
        return {"T": "o", "S": symbol, "t": format_ts(ns),
                "b": [{"p": p, "s": s} for p, s in sorted(st.bids.items(), reverse=True)],
                "a": [{"p": p, "s": s} for p, s in sorted(st.asks.items())], "r": True}, ns

    def orderbook_update(self, symbol: str, ns: int | None = None) -> Stamped | None:
        """Changes since the last book: new sizes, new levels, and removed levels with size 0."""
        st = self.state(symbol)
        before_b, before_a = dict(st.bids), dict(st.asks)
        self._recenter(st)
        unit = 1000 / max(st.price, 1.0)
        for side in (st.bids, st.asks):
            for p in self.rng.sample(sorted(side), min(2, len(side))):
                side[p] = round(unit * self.rng.uniform(0.05, 10), 8)
        b = _book_diff(before_b, st.bids)
        a = _book_diff(before_a, st.asks)
        if not b and not a:
            return None
        ns = self.clock() if ns is None else ns
        return {"T": "o", "S": symbol, "t": format_ts(ns), "b": b, "a": a}, ns

    def roll_bars(self, symbols: Iterable[str], now_ns: int) -> list[tuple[Stamped, Stamped]]:
        """Close the minute bars that ended before ``now_ns``; return (minute bar, running daily bar) pairs."""
        out = []
        for symbol in symbols:
            st = self.symbols.get(symbol)
            if st is None:
                continue
            start = st.minute.start_ns
            bar = st.minute.roll(now_ns)
            if bar is None or start is None:
                continue
            st.last_bar, st.bar_updated = bar, False
            out.append((self.bar_message("b", symbol, bar, start), self.daily_message(st)))
        return out

    def updated_bars(self, symbols: Iterable[str], now_ns: int, delay_ns: int = 30 * NS) -> list[Stamped]:
        """``u`` messages for closed minute bars that late trades changed, once ``delay_ns`` into the next minute
        (Alpaca sends them just after the half-minute mark)."""
        out = []
        for symbol in symbols:
            st = self.symbols.get(symbol)
            if st is None or not st.bar_updated or st.last_bar is None or st.minute.closed_start is None:
                continue
            if now_ns - (st.minute.closed_start + MINUTE_NS) < delay_ns:
                continue
            st.bar_updated = False
            out.append(self.bar_message("u", symbol, dict(st.last_bar), st.minute.closed_start))
        return out

    def late_trade(self, symbol: str, feed: str, now_ns: int) -> Stamped | None:
        """A trade stamped in the minute bar that already closed, as if it reached the feed late; None if that
        bar is not the previous minute's."""
        st = self.state(symbol)
        closed = st.minute.closed_start
        if closed is None or closed != st.minute.window_of(now_ns) - MINUTE_NS:
            return None
        return self.trade(symbol, feed, ns=closed + MINUTE_NS - self.rng.randrange(1, 900) * 1_000_000)

    def status(self, symbol: str, halted: bool, ns: int | None = None) -> Stamped:
        """A trading status (``s``) in the symbol's tape's codes: CTA (A, B) ``2`` halt / ``3`` resume, UTP (C)
        ``H`` halt / ``T`` trading resumption; the reason is a LULD pause."""
        st = self.state(symbol)
        st.halted = halted
        cta = st.tape in ("A", "B")
        if halted:
            code, text = ("2", "Trading Halt") if cta else ("H", "Trading Halt")
            reason, why = "LUDP", "Volatility Trading Pause"
        else:
            code, text = ("3", "Resume") if cta else ("T", "Trading Resumption")
            reason, why = ("", "") if cta else ("LUDP", "Volatility Trading Pause")
        ns = self.clock() if ns is None else ns
        return {"T": "s", "S": symbol, "sc": code, "sm": text, "rc": reason, "rm": why, "t": format_ts(ns),
                "z": st.tape}, ns

    def luld(self, symbol: str, ns: int | None = None) -> Stamped:
        """Limit up-limit down bands (``l``): 5 % either side of the current price."""
        st = self.state(symbol)
        ns = self.clock() if ns is None else ns
        return {"T": "l", "S": symbol, "u": round_price(st.price * 1.05), "d": round_price(st.price * 0.95),
                "i": "B", "t": format_ts(ns), "z": st.tape}, ns

    def correction(self, symbol: str, ns: int | None = None) -> Stamped | None:
        """A correction (``c``) of the symbol's last trade: a new id and a price a cent away."""
        st = self.state(symbol)
        last = st.last_trade
        if last is None:
            return None
        self._trade_id += 1
        ns = self.clock() if ns is None else ns
        price = round_price(float(last["p"]) + self.rng.choice((-0.01, 0.01)))
        return {"T": "c", "S": symbol, "x": last["x"], "oi": last["i"], "op": last["p"], "os": last["s"],
                "oc": last["c"], "ci": self._trade_id, "cp": price, "cs": last["s"], "cc": last["c"],
                "t": format_ts(ns), "z": st.tape}, ns

    def cancel_error(self, symbol: str, ns: int | None = None) -> Stamped | None:
        """A cancel (``x``, action ``C``) of the symbol's last trade, now and then an error (``E``)."""
        st = self.state(symbol)
        last = st.last_trade
        if last is None:
            return None
        ns = self.clock() if ns is None else ns
        return {"T": "x", "S": symbol, "i": last["i"], "x": last["x"], "p": last["p"], "s": last["s"],
                "a": "E" if self.rng.random() < 0.1 else "C", "t": format_ts(ns), "z": st.tape}, ns

    def daily_message(self, st: SymbolState) -> Stamped:
        daily = st.daily.current() or self.synthetic_bar(st)
        start = st.daily.start_ns if st.daily.start_ns is not None else st.daily.window_of(self.clock())
        return self.bar_message("d", st.symbol, daily, start)

    @staticmethod
    def bar_message(kind: str, symbol: str, bar: dict, start_ns: int) -> Stamped:
        return {"T": kind, "S": symbol, **bar}, start_ns

    def synthetic_bar(self, st: SymbolState, start_ns: int | None = None) -> dict:
        """A one-print bar at the current price, for snapshots of symbols that have not traded yet."""
        start_ns = st.minute.window_of(self.clock()) if start_ns is None else start_ns
        p = st.price
        return {"o": p, "h": p, "l": p, "c": p, "v": 0, "t": format_ts(start_ns), "n": 0, "vw": p}

    def latest_trade(self, symbol: str) -> dict:
        st = self.state(symbol)
        if st.last_trade is None:
            if CRYPTO_SYMBOL_RE.fullmatch(symbol):
                self.crypto_trade(symbol)
            else:
                self.trade(symbol)
        return dict(st.last_trade or {})

    def latest_quote(self, symbol: str) -> dict:
        st = self.state(symbol)
        if st.last_quote is None:
            if CRYPTO_SYMBOL_RE.fullmatch(symbol):
                self.crypto_quote(symbol)
            else:
                self.quote(symbol)
        return dict(st.last_quote or {})

    def snapshot(self, symbol: str) -> dict:
        """Alpaca's snapshot object: latestTrade, latestQuote, minuteBar, dailyBar, prevDailyBar."""
        st = self.state(symbol)
        trade, quote = self.latest_trade(symbol), self.latest_quote(symbol)
        minute = st.minute.current() or st.last_bar or self.synthetic_bar(st)
        daily = st.daily.current() or self.synthetic_bar(st, st.daily.window_of(self.clock()))
        prev_start = st.daily.window_of(self.clock()) - DAY_NS
        o = st.open_price
        prev = st.prev_daily or {"o": o, "h": o, "l": o, "c": o, "v": 0, "t": format_ts(prev_start), "n": 0, "vw": o}
        return {"latestTrade": trade, "latestQuote": quote, "minuteBar": minute, "dailyBar": daily,
                "prevDailyBar": prev}

    def history_bars(self, symbol: str, start_ns: int, end_ns: int) -> list[tuple[int, dict]]:
        """Synthesized minute bars of ``symbol`` starting within [start, end], oldest first, with their start."""
        st = self.symbols.get(symbol)
        if st is None:
            return []
        return [(ns, bar) for ns, bar in st.intraday if start_ns <= ns <= end_ns]

    def trades_between(self, symbol: str, start_ns: int, end_ns: int) -> list[dict]:
        """Recorded trades of ``symbol`` with start <= t <= end (both inclusive, like Alpaca)."""
        st = self.symbols.get(symbol)
        if st is None:
            return []
        return [rest for ns, rest in st.history if start_ns <= ns <= end_ns]


def _book_diff(before: dict[float, float], after: dict[float, float]) -> list[dict]:
    out = [{"p": p, "s": s} for p, s in sorted(after.items()) if before.get(p) != s]
    return out + [{"p": p, "s": 0} for p in sorted(before) if p not in after]
