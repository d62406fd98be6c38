"""Tick generation: what each market-data connection is sent in ``dt`` seconds of simulated market.

The ticker decides *what* is generated (by feed, by market phase on the simulator's clock, by subscription)
and to *whom*; it never sends. ``tick`` returns a ``Tick`` of frames to announce and batches to fan out, and
the façade pushes them, so a test can drive the ticker with a pinned clock and plain connection records and
count what it produced. Loop time (``now``) paces trading pauses and LULD bands; the simulated clock decides the
market phase and stamps bars.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from . import calendar
from .clock import Clock
from .config import CRYPTO_FEEDS, DATA_PATHS, SimConfig, feed_kind
from .connection import Conn
from .market import OPTION_SYMBOL_RE, Market
from .wire import Out

#: The share of the regular session's trade rate a stock feed keeps before the open and after the close.
EXTENDED_SHARE = 0.1


@dataclass
class Tick:
    """One tick's output: current-state frames for newly subscribed connections, then data per path."""

    #: (connection, its statuses/LULDs), sent unfiltered and before any data of the tick.
    announce: list[tuple[Conn, list[Out]]] = field(default_factory=list)
    #: (connections of one path, messages), each connection to get the messages it subscribes to.
    deliver: list[tuple[list[Conn], list[Out]]] = field(default_factory=list)


class Ticker:
    """Generates trades, quotes, bars, statuses, LULDs, order books and news at ``rate_per_symbol``."""

    def __init__(self, config: SimConfig, market: Market, clock: Clock) -> None:
        self.config = config
        self.market = market
        self.clock = clock
        self.rate_per_symbol = config.rate_per_symbol
        self.halted_until: dict[str, float] = {}  # symbol -> loop time its trading pause ends
        self.luld_due: dict[str, float] = {}  # symbol -> loop time of its next LULD band message

    def tick(self, conns: Iterable[Conn], dt: float, now: float) -> Tick:
        """Generate ``dt`` seconds of data for what is subscribed; ``now`` is the loop time."""
        out = Tick()
        if self.rate_per_symbol <= 0:
            return out
        by_path: dict[str, list[Conn]] = {}
        for conn in conns:
            if conn.is_data and conn.key is not None and not conn.muted:
                by_path.setdefault(conn.path, []).append(conn)
        outs_by_path: dict[str, list[Out]] = {}
        bar_symbols: set[str] = set()
        for path, path_conns in by_path.items():
            if feed_kind(DATA_PATHS[path]) == "stocks":
                out.announce += self._announce(path_conns)
        resumed: list[Out] = []
        for symbol, until in list(self.halted_until.items()):
            if until <= now:
                del self.halted_until[symbol]
                resumed.append(Out(*self.market.status(symbol, False)))
        phase = calendar.phase(self.clock.now()) if self.config.market_hours else calendar.REGULAR
        for path, path_conns in by_path.items():
            feed = DATA_PATHS[path]
            share = self.session_share(feed, phase)
            if not share:  # the feed is shut at this hour: no trades, quotes, bars or bands
                continue
            if feed == "news":  # an article now and then, about a subscribed symbol
                outs_by_path[path] = self._generate_news(path_conns, dt)
                continue
            if feed_kind(feed) == "options":  # trades and quotes of subscribed contracts, while the sim runs
                outs_by_path[path] = self._generate_options(self._subscribed(feed, path_conns, "trades"),
                                                            self._subscribed(feed, path_conns, "quotes"), dt)
                continue
            if feed in CRYPTO_FEEDS:  # around the clock: trades, quotes, bars, order books
                trades, quotes, bars = self._active_symbols(feed, path_conns)
                books = self._subscribed(feed, path_conns, "orderbooks")
                outs_by_path[path] = self._generate_crypto(trades | bars, quotes, books, dt)
                outs_by_path[path] += [Out(*m) for m in self.market.updated_bars(
                    self._subscribed(feed, path_conns, "updatedBars"), self.clock(),
                    int(self.config.updated_bar_delay * 1e9))]
                bar_symbols |= bars
                continue
            trades, quotes, bars = self._active_symbols(feed, path_conns)
            outs = self._generate(feed, {s for s in trades | bars if s not in self.halted_until}, quotes,
                                  dt * share, extended=share < 1)
            outs_by_path[path] = outs + resumed + (self._unasked(feed, path_conns, dt, now) if share == 1 else [])
            bar_symbols |= bars
        bar_outs = [Out(*m) for pair in self.market.roll_bars(bar_symbols, self.clock()) for m in pair]
        for path, path_conns in by_path.items():
            if path in outs_by_path:
                out.deliver.append((path_conns, outs_by_path[path] + bar_outs))
        return out

    def session_share(self, feed: str, phase: str) -> float:
        """How much of the configured rate a feed generates in a market phase: all of it in the regular session,
        EXTENDED_SHARE before the open and after the close, none when the feed is shut (see SimConfig.market_hours).
        """
        if not self.config.market_hours or feed in CRYPTO_FEEDS or feed in ("news", "test"):
            return 1.0
        if feed in ("boats", "overnight"):
            return EXTENDED_SHARE if calendar.overnight(self.clock.now()) else 0.0
        if feed_kind(feed) == "options":
            return 1.0 if phase == calendar.REGULAR else 0.0
        return {calendar.REGULAR: 1.0, calendar.PRE: EXTENDED_SHARE, calendar.POST: EXTENDED_SHARE}.get(phase, 0.0)

    def _active_symbols(self, feed: str, conns: list[Conn]) -> tuple[set[str], set[str], set[str]]:
        """Symbols with trade, quote and bar subscribers on one feed (``*`` = every known symbol)."""
        union = self._subscribed
        return union(feed, conns, "trades"), union(feed, conns, "quotes"), union(feed, conns, "bars", "dailyBars")

    def _subscribed(self, feed: str, conns: list[Conn], *channels: str) -> set[str]:
        """Symbols with subscribers to any of ``channels`` on one feed (``*`` = every known symbol)."""
        out: set[str] = set()
        for conn in conns:
            for ch in channels:
                out |= conn.subs[ch]
        if "*" in out:
            out.discard("*")
            # A pair streams on the crypto feeds only, a contract on the option feeds, a stock on the stock feeds.
            kind = feed_kind(feed)
            out.update(["FAKEPACA"] if feed == "test" else
                       [s for s in self.market.known_symbols()
                        if kind == ("crypto" if "/" in s else "options" if OPTION_SYMBOL_RE.fullmatch(s)
                                    else "stocks")])
        return out & {"FAKEPACA"} if feed == "test" else out

    def _unasked(self, feed: str, conns: list[Conn], dt: float, now: float) -> list[Out]:
        """What Alpaca sends without a trade behind it: trading pauses (statuses), LULD bands every
        ``luld_interval`` seconds, and updatedBars for minute bars that late trades changed."""
        cfg, market = self.config, self.market
        outs: list[Out] = []
        for symbol in self._subscribed(feed, conns, "statuses"):
            if symbol not in self.halted_until and market.rng.random() < cfg.halt_rate * dt:
                self.halted_until[symbol] = now + cfg.halt_seconds
                outs.append(Out(*market.status(symbol, True)))
        for symbol in self._subscribed(feed, conns, "lulds"):
            due = self.luld_due.setdefault(symbol, now + cfg.luld_interval)
            if due <= now:
                self.luld_due[symbol] = now + cfg.luld_interval
                outs.append(Out(*market.luld(symbol)))
        updated = self._subscribed(feed, conns, "updatedBars")
        outs += [Out(*m) for m in market.updated_bars(updated, self.clock(), int(cfg.updated_bar_delay * 1e9))]
        return outs

    def _announce(self, conns: list[Conn]) -> list[tuple[Conn, list[Out]]]:
        """A connection newly subscribed to a symbol's statuses or LULDs gets its current state at once."""
        frames: list[tuple[Conn, list[Out]]] = []
        for conn in conns:
            wanted = {(ch, s) for ch in ("statuses", "lulds") for s in conn.subs[ch] if s != "*"}
            conn.announced &= wanted
            new = sorted(wanted - conn.announced)
            if not new:
                continue
            conn.announced |= wanted
            frames.append((conn, [Out(*(self.market.status(s, s in self.halted_until) if ch == "statuses"
                                        else self.market.luld(s))) for ch, s in new]))
        return frames

    def _generate_news(self, conns: list[Conn], dt: float) -> list[Out]:
        interval = self.config.news_interval
        if not interval or self.market.rng.random() >= dt / interval:
            return []
        symbols = sorted(self._subscribed("news", conns, "news"))
        if not symbols:
            return []
        msg, ns = self.market.news([self.market.rng.choice(symbols)])
        return [Out(msg, ns)]

    def _generate_crypto(self, trade_symbols: Iterable[str], quote_symbols: Iterable[str],
                         book_symbols: Iterable[str], dt: float) -> list[Out]:
        rng, market = self.market.rng, self.market
        expected = self.rate_per_symbol * dt
        outs: list[Out] = []
        for symbols, make in ((quote_symbols, market.crypto_quote), (trade_symbols, market.crypto_trade),
                              (book_symbols, market.orderbook_update)):
            for symbol in symbols:
                for _ in range(int(expected) + (rng.random() < expected - int(expected))):
                    made = make(symbol)
                    if made is not None:
                        outs.append(Out(*made))
        return outs

    def _generate_options(self, trade_symbols: Iterable[str], quote_symbols: Iterable[str],
                          dt: float) -> list[Out]:
        """Options trade far less often than they quote: a fifth of the stock rate in trades, twice in quotes."""
        rng, market = self.market.rng, self.market
        outs: list[Out] = []
        for symbols, make, rate in ((quote_symbols, market.option_quote, 2.0),
                                    (trade_symbols, market.option_trade, 0.2)):
            expected = self.rate_per_symbol * dt * rate
            for symbol in symbols:
                for _ in range(int(expected) + (rng.random() < expected - int(expected))):
                    outs.append(Out(*make(symbol)))
        return outs

    def _generate(self, feed: str, trade_symbols: Iterable[str], quote_symbols: Iterable[str],
                  dt: float, extended: bool = False) -> list[Out]:
        """Trades and quotes for ``dt`` seconds; ``extended``: outside the regular session, small trades marked
        as Alpaca's feeds mark them (``T``: Form T, an extended-hours trade; ``I``: an odd lot)."""
        rng = self.market.rng
        if self.market.universe is not None:
            trade_symbols = [s for s in trade_symbols if self.market.known(s)]
            quote_symbols = [s for s in quote_symbols if self.market.known(s)]
        expected = self.rate_per_symbol * dt
        whole, frac = int(expected), expected - int(expected)
        q_expected = expected * self.config.quote_ratio
        q_whole, q_frac = int(q_expected), q_expected - int(q_expected)
        cfg, market = self.config, self.market
        outs: list[Out] = []
        for symbol in quote_symbols:
            for _ in range(q_whole + (rng.random() < q_frac)):
                outs.append(Out(*market.quote(symbol, feed)))
        for symbol in trade_symbols:
            for _ in range(whole + (rng.random() < frac)):
                if extended:
                    size = rng.choice((1, 5, 10, 25, 50, 100, 100, 200))
                    outs.append(Out(*market.trade(symbol, feed, size=size,
                                                  c=["@", "T"] + (["I"] if size < 100 else []))))
                    continue
                late = market.late_trade(symbol, feed, self.clock()) if rng.random() < cfg.late_trade_rate \
                    else None
                outs.append(Out(*(late or market.trade(symbol, feed))))
                if rng.random() < cfg.correction_rate and (fix := market.correction(symbol)) is not None:
                    outs.append(Out(*fix))
                if rng.random() < cfg.cancel_error_rate and (cancel := market.cancel_error(symbol)) is not None:
                    outs.append(Out(*cancel))
        return outs
