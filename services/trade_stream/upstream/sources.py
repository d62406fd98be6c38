"""The table of Alpaca market-data sources, and one upstream connection per source in use, opened on demand.

Alpaca serves each stream on its own endpoint and counts connections per endpoint:
``/v2/iex``, ``/v2/sip`` and ``/v1beta3/crypto/us`` are three slots. The relay holds one connection per source
that someone uses. The configured stock feed (``ALPACA_DATA_FEED``) is the *default source*: it is connected for
the relay's whole life, and its hub keys are Alpaca's bare channel names (``("trades", "AAPL")``), so
everything written for one upstream keeps working. Every other source is connected only while a hub key of it is
wanted (held, or lingering after its last holder) or an Alpaca-compatible session is attached to it, and closed
when neither is true any more: the hub's linger already delayed that moment.

Keys of other sources carry the source in their channel: ``("stocks:sip:trades", "AAPL")``,
``("crypto:us:orderbooks", "BTC/USD")`` (``hub.source_of`` reads it back). So the hub, its linger and its per-source
symbol cap need no new dimension, and routing stays one dict lookup per message: each source has its own Router
whose type -> channel table carries the prefix.

News is a row too (its articles are routed by the symbols they name), and so are the option feeds (indicative,
opra), whose connections speak msgpack only, as Alpaca serves nothing else there.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from trade_stream.config import CRYPTO_LOCATIONS, OPTIONS_FEEDS, Config
from trade_stream.core.engine import UpstreamSide
from trade_stream.core.fanout import Router
from trade_stream.core.hub import Change, Hub, Key, source_of
from trade_stream.core.protocol import CHANNEL_OF, is_option
from trade_stream.core.stats import Stats
from trade_stream.core.upstream_state import LinkState, UpstreamState
from trade_stream.upstream.market_data import MarketDataUpstream

log = logging.getLogger("trade_stream.upstream.sources")

STOCK_CHANNELS = ("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds", "imbalances")
CRYPTO_CHANNELS = ("trades", "quotes", "bars", "updatedBars", "dailyBars", "orderbooks")
CRYPTO_TYPES = {"t": "trades", "q": "quotes", "b": "bars", "d": "dailyBars", "u": "updatedBars", "o": "orderbooks"}
OPTION_CHANNELS = ("trades", "quotes")
OPTION_TYPES = {"t": "trades", "q": "quotes"}
NEWS_PATH = "/v1beta1/news"
#: Stock feeds and their stream paths: BOATS and overnight live under v1beta1, not v2.
STOCK_FEEDS = {"iex": "/v2/iex", "sip": "/v2/sip", "delayed_sip": "/v2/delayed_sip", "boats": "/v1beta1/boats",
               "overnight": "/v1beta1/overnight", "test": "/v2/test"}
#: Alpaca's refusals at auth that a waiting client is told about at once, with Alpaca's own code
REFUSALS = (402, 406, 409)
BOOK_DEPTH = 10  # levels per side a browser gets
BOOK_LEVELS = 500  # levels per side the relay keeps per symbol (the farthest go first)


@dataclass(frozen=True)
class SourceSpec:
    """One Alpaca market-data stream: its name, path, kind and the channels a subscribe may name on it."""

    name: str  # "stocks:iex", "crypto:us"
    kind: str  # "stocks" | "crypto" | "news" | "options"
    path: str  # "/v2/iex", "/v1beta3/crypto/us"
    channels: tuple[str, ...]
    types: dict[str, str]  # Alpaca message type -> channel


SPECS: dict[str, SourceSpec] = {
    **{f"stocks:{feed}": SourceSpec(f"stocks:{feed}", "stocks", path, STOCK_CHANNELS, CHANNEL_OF)
       for feed, path in STOCK_FEEDS.items()},
    **{f"crypto:{loc}": SourceSpec(f"crypto:{loc}", "crypto", f"/v1beta3/crypto/{loc}", CRYPTO_CHANNELS, CRYPTO_TYPES)
       for loc in CRYPTO_LOCATIONS},
    # News: articles (``T: "n"``) carry no ``S``; they are routed by the ``symbols`` they name (Router.route_news).
    "news": SourceSpec("news", "news", NEWS_PATH, ("news",), {"n": "news"}),
    # Options: trades and quotes of OCC contract symbols, msgpack only (Alpaca answers JSON with 412).
    **{f"options:{feed}": SourceSpec(f"options:{feed}", "options", f"/v1beta1/{feed}", OPTION_CHANNELS,
                                     OPTION_TYPES) for feed in OPTIONS_FEEDS},
}
#: Stream path -> source (``/v2/boats`` is accepted for BOATS too, as alpaca-py's DataFeed names the feed).
PATHS: dict[str, SourceSpec] = {spec.path: spec for spec in SPECS.values()}
PATHS["/v2/boats"], PATHS["/v2/overnight"] = SPECS["stocks:boats"], SPECS["stocks:overnight"]


def stream_base(url: str, default_path: str) -> str:
    """The stream server of ``url`` (``wss://stream.data.alpaca.markets``): the default source's URL without its
    path; other sources are paths on the same server."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    path = path[: -len(default_path)] if path.endswith(default_path) else ""
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


class Book:
    """One symbol's order book from Alpaca's ``o`` messages (a full book with ``r: true``, then changes where size
    0 removes a level), and what browsers see of it: the best ``BOOK_DEPTH`` levels per side, as a full snapshot
    or as the changes to them. Bounded: past ``BOOK_LEVELS`` per side the farthest levels are dropped."""

    __slots__ = ("asks", "bids", "timestamp", "top_asks", "top_bids")

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.top_bids: list[tuple[float, float]] = []
        self.top_asks: list[tuple[float, float]] = []
        self.timestamp: Any = None

    def apply(self, m: dict[str, Any]) -> dict[str, Any] | None:
        """Fold one ``o`` message in; the browser view of what changed in the top levels (None: nothing did)."""
        reset = bool(m.get("r"))
        if reset:
            self.bids, self.asks = {}, {}
        _levels(self.bids, m.get("b"), best_high=True)
        _levels(self.asks, m.get("a"), best_high=False)
        self.timestamp = m.get("t")
        bids = heapq.nlargest(BOOK_DEPTH, self.bids.items())
        asks = heapq.nsmallest(BOOK_DEPTH, self.asks.items())
        if reset:
            self.top_bids, self.top_asks = bids, asks
            return self.snapshot()
        db, da = _diff(self.top_bids, bids), _diff(self.top_asks, asks)
        self.top_bids, self.top_asks = bids, asks
        if not db and not da:
            return None
        return {"bids": db, "asks": da, "reset": False, "timestamp": self.timestamp}

    def snapshot(self) -> dict[str, Any]:
        return {"bids": [[p, s] for p, s in self.top_bids], "asks": [[p, s] for p, s in self.top_asks],
                "reset": True, "timestamp": self.timestamp}

    def full(self, symbol: str) -> dict[str, Any]:
        """The whole book as Alpaca's own reset message, for an Alpaca-compatible client that newly joins."""
        return {"T": "o", "S": symbol, "t": self.timestamp,
                "b": [{"p": p, "s": s} for p, s in sorted(self.bids.items(), reverse=True)],
                "a": [{"p": p, "s": s} for p, s in sorted(self.asks.items())], "r": True}


def _levels(side: dict[float, float], levels: Any, best_high: bool) -> None:
    if not isinstance(levels, list):
        return
    for level in levels:
        if not isinstance(level, dict):
            continue
        price, size = level.get("p"), level.get("s")
        if not isinstance(price, int | float) or not isinstance(size, int | float):
            continue
        if size:
            side[price] = size
        else:
            side.pop(price, None)
    if len(side) > BOOK_LEVELS:
        keep = (heapq.nlargest if best_high else heapq.nsmallest)(BOOK_LEVELS, side)
        kept = set(keep)
        for price in [p for p in side if p not in kept]:
            del side[price]


def _diff(old: list[tuple[float, float]], new: list[tuple[float, float]]) -> list[list[float]]:
    """[price, size] for each top level that is new or changed, [price, 0] for each that left the top."""
    before, after = dict(old), dict(new)
    out = [[p, s] for p, s in new if before.get(p) != s]
    out += [[p, 0] for p in before if p not in after]
    return out


class OrderbookMessage(dict[str, Any]):
    """Alpaca's ``o`` message, unchanged for Alpaca-compatible clients, carrying the browser view the source's Book
    computed for it (``view``; None when the top levels did not change): see protocol.market_message."""

    __slots__ = ("view",)
    view: dict[str, Any] | None


class Source:
    """One source's upstream connection, its router, and (crypto) its order books."""

    def __init__(self, spec: SourceSpec, default: bool, url: str, cfg: Config, hub: Hub, stats: Stats,
                 on_state: Callable[[Source, UpstreamState], None], engine: UpstreamSide) -> None:
        self.spec = spec
        self.engine = engine
        self.name = spec.name
        self.default = default
        self.key_source = "" if default else spec.name  # hub.source_of() of this source's keys
        self.prefix = "" if default else spec.name + ":"
        self.hub = hub
        self.linger = cfg.linger
        # The default source counts into the relay's own stats; the others count their own messages.
        self.stats = stats if default else Stats()
        self.router = Router(hub.holders, self.stats, {t: self.prefix + ch for t, ch in spec.types.items()})
        self.books: dict[str, Book] = {}
        self.attached = 0  # Alpaca-compatible sessions on this source's path
        self.task: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._waiters: list[asyncio.Future[None]] = []
        # What reaches this node's holders: order books kept on the way for crypto, news by its symbols list.
        self.deliver = (self._crypto_data if spec.kind == "crypto" else
                        self.router.route_news if spec.kind == "news" else self.router.route)
        # The upstream runs on the node that holds Alpaca and hands each batch to the engine, which brings it to
        # every node's ``deliver`` (on one process: straight to it).
        prefix = self.prefix
        self.upstream = MarketDataUpstream(
            url=url, key=cfg.api_key or "", secret=cfg.secret_key or "", wanted=self.upstream_wanted,
            on_data=engine.publish if default else (lambda batch, now: engine.publish_source(prefix, batch, now)),
            on_state=lambda state: self._state(state, on_state), timings=cfg.timings, stale_after=cfg.stale_after,
            probe_after=cfg.probe_after, stats=stats, use_msgpack=spec.kind == "options",
            on_rejected=lambda keys, code, msg: engine.refused([self.key(k) for k in keys], code, msg),
        )
        if not default:
            self.upstream.name = f"market_data:{spec.name}"

    # --- keys -----------------------------------------------------------------------------------------------

    def key(self, upstream_key: Key) -> Key:
        return (self.prefix + upstream_key[0], upstream_key[1]) if self.prefix else upstream_key

    def upstream_wanted(self) -> set[Key]:
        """What upstream should hold for this source (the cluster's union of interest; on one process, the
        hub's wanted keys), as Alpaca names them (no prefix)."""
        n, mine = len(self.prefix), self.key_source
        return {(ch[n:], s) for ch, s in self.engine.upstream_wanted() if source_of((ch, s)) == mine}

    @property
    def wanted(self) -> bool:
        mine = self.key_source
        return self.attached > 0 or any(source_of(k) == mine for k in self.engine.upstream_wanted())

    @property
    def open(self) -> bool:
        return self.default or (self.task is not None and not self.task.done() and self._closing is None)

    def _state(self, state: UpstreamState, on_state: Callable[[Source, UpstreamState], None]) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        on_state(self, state)

    async def ready(self, timeout: float) -> int | None:
        """Wait until the connection is authenticated (None) or Alpaca refused it at auth (the code: 402 bad key,
        406 another session holds the key, 409 the plan lacks the feed), for at most ``timeout`` seconds (then
        None: it is still trying, and data follows once it is up)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            status = self.upstream.status
            if status.state is LinkState.CONNECTED:
                return None
            if status.state in (LinkState.ERROR, LinkState.DISCONNECTED) and status.error_code in REFUSALS:
                return status.error_code
            left = deadline - loop.time()
            if left <= 0:
                return None
            waiter = loop.create_future()
            self._waiters.append(waiter)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter, left)

    # --- on demand ------------------------------------------------------------------------------------------

    def ensure_open(self) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        if self.default or (self.task is not None and not self.task.done()):
            return  # running, or closing: _close() reopens when it is wanted again
        log.info("source_opening source=%s path=%s", self.name, self.spec.path)
        self.upstream.resume()
        self.task = asyncio.create_task(self._run(), name=f"upstream-{self.name}")

    async def _run(self) -> None:
        """run() handles every failure of a session itself; this guards against a bug in it (logged, counted,
        restarted after a pause while the source is still wanted)."""
        while True:
            try:
                await self.engine.while_leader(self.upstream.run, self.upstream)
                return
            except Exception:
                log.exception("source_task_failed source=%s; restarting", self.name)
                self.upstream._count(self.upstream.stats.upstream_errors)
                await asyncio.sleep(self.upstream.timings.reconnect_max)
                if not self.wanted:
                    return

    def maybe_close(self, delay: float = 0.0) -> None:
        """Close the connection if nothing wants it (after ``delay``, checked again then)."""
        if self.default or self.task is None or self._closing is not None or self.wanted:
            return
        if delay > 0:
            if self._close_timer is None:
                self._close_timer = asyncio.get_running_loop().call_later(delay, self._close_due)
            return
        log.info("source_closing source=%s reason=nothing held", self.name)
        self._closing = asyncio.create_task(self._close(), name=f"close-{self.name}")

    def _close_due(self) -> None:
        self._close_timer = None
        self.maybe_close()

    async def _close(self) -> None:
        task = self.task
        try:
            await self.upstream.stop()
            if task is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await task
        finally:
            self.task, self._closing = None, None
            self.books.clear()
        if self.wanted:
            self.ensure_open()

    async def stop(self) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
        await self.upstream.stop()
        for task in (self.task, self._closing):
            if task is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await task

    # --- data -----------------------------------------------------------------------------------------------

    def _crypto_data(self, messages: list[dict[str, Any]], now: float) -> None:
        """Crypto only: order-book messages update the source's books on their way to the router."""
        for i, m in enumerate(messages):
            if m["T"] == "o":
                messages[i] = self._book_update(m)
        self.router.route(messages, now)

    def _book_update(self, m: dict[str, Any]) -> OrderbookMessage:
        out = OrderbookMessage(m)
        symbol = m["S"]
        book = self.books.get(symbol)
        if book is None:
            if (self.prefix + "orderbooks", symbol) not in self.hub.holders:
                out.view = None  # nobody holds it (lingering): keep no book
                return out
            book = self.books[symbol] = Book()
        out.view = book.apply(m)
        return out

    def orderbook(self, symbol: str) -> dict[str, Any] | None:
        """The browser's first order-book message for ``symbol``: the current top levels, or None before the
        first book arrived (then the upstream's own full book, sent on subscribe, reaches the client)."""
        book = self.books.get(symbol)
        if book is None or not (book.top_bids or book.top_asks):
            return None
        return {"type": "orderbook", "symbol": symbol, "data": book.snapshot()}

    def prune(self, wanted: set[Key]) -> None:
        """Per-symbol tables keep only symbols this source should hold."""
        mine = {s for ch, s in wanted if source_of((ch, s)) == self.key_source}
        last_seen = self.router.last_seen
        for symbol in [s for s in last_seen if s not in mine]:
            del last_seen[symbol]
        channel = self.prefix + "orderbooks"
        for symbol in [s for s in self.books if (channel, s) not in wanted]:
            del self.books[symbol]

    # --- views ----------------------------------------------------------------------------------------------

    def view(self, visible: set[Key]) -> dict[str, Any]:
        """This connection in /api/stream/status: state, the public symbols it holds, age of its last data."""
        up = self.upstream
        age = up.last_message_age()
        n, mine = len(self.prefix), self.key_source
        shown = {(ch[n:], s) for ch, s in visible if source_of((ch, s)) == mine}
        held = {(ch, s) for ch, syms in up.held.items() for s in syms} if up.connected else set()
        return {**up.status.to_dict(), "path": self.spec.path, "open": self.open, "wanted": self.wanted,
                "symbols": sorted({s for _, s in held & shown}),
                "messages_in": self.stats.messages_in,
                "last_message_age": None if age is None else round(age, 3)}


class Sources:
    """Every source in use; routes hub changes to their connections, opening and closing them as needed."""

    def __init__(self, cfg: Config, hub: Hub, stats: Stats, data_stream_url: str,
                 on_state: Callable[[Source, UpstreamState], None], engine: UpstreamSide) -> None:
        self.cfg = cfg
        self.hub = hub
        self.stats = stats
        self._on_state = on_state
        self.engine = engine
        default = SPECS[f"stocks:{cfg.data_feed}"]
        self.base = stream_base(data_stream_url, default.path)
        self.crypto = SPECS[f"crypto:{cfg.crypto_location}"].name  # where browsers' BTC/USD goes
        self.options = SPECS[f"options:{cfg.options_feed}"].name  # where browsers' AAPL241220C00150000 goes
        self.default = Source(default, True, data_stream_url, cfg, hub, stats, on_state, engine)
        self.by_key_source: dict[str, Source] = {"": self.default}  # hub.source_of(key) -> source

    def source(self, name: str) -> Source:
        """The source named ``name`` (a key of SPECS), created on first use (not connected until needed)."""
        if name == self.default.name:
            return self.default
        src = self.by_key_source.get(name)
        if src is None:
            spec = SPECS[name]
            src = Source(spec, False, self.base + spec.path, self.cfg, self.hub, self.stats, self._on_state,
                         self.engine)
            self.by_key_source[name] = src
        return src

    def prefix(self, name: str) -> str:
        """The channel prefix of keys of source ``name``."""
        return self.source(name).prefix

    def all(self) -> list[Source]:
        return list(self.by_key_source.values())

    # --- changes ----------------------------------------------------------------------------------------------

    def request(self, change: Change, on_done: Callable[[bool, int | None, str], None] | None = None) -> bool:
        """Send a hub change to the connections it concerns, opening and closing them as needed. True when
        ``on_done`` will be called with Alpaca's answer (once every concerned connection answered)."""
        parts: dict[Source, Change] = {}
        for attr in ("subscribe", "unsubscribe"):
            for key in getattr(change, attr):
                name = source_of(key)
                # A key another node's client holds may name a source this node has not used yet.
                src = self.by_key_source.get(name) or (self.source(name) if name in SPECS else None)
                if src is None:
                    log.error("key_without_source key=%s:%s", *key)
                    continue
                part = parts.setdefault(src, Change())
                getattr(part, attr).append((key[0][len(src.prefix):], key[1]) if src.prefix else key)
        if len(parts) == 1 and not on_done:
            (src, part), = parts.items()
            self._send(src, part, None)
            return False
        left = [0]
        failed: list[tuple[int | None, str]] = []

        def part_done(ok: bool, code: int | None, msg: str) -> None:
            if not ok:
                failed.append((code, msg))
            left[0] -= 1
            if not left[0] and on_done is not None:
                on_done(not failed, *(failed[0] if failed else (None, "")))

        for src, part in parts.items():
            if self._send(src, part, part_done if on_done else None):
                left[0] += 1
        return left[0] > 0

    def _send(self, src: Source, part: Change, on_done: Callable[..., None] | None) -> bool:
        if part.subscribe:
            src.ensure_open()
        waits = src.upstream.request(part, on_done)
        if part.unsubscribe and not part.subscribe:
            src.maybe_close()
        return waits

    def attach(self, name: str) -> Source:
        """An Alpaca-compatible session uses source ``name``: connect it (if not yet) and keep it connected."""
        src = self.source(name)
        src.attached += 1
        src.ensure_open()
        return src

    def detach(self, src: Source) -> None:
        src.attached = max(0, src.attached - 1)
        src.maybe_close(self.cfg.linger)

    def prune(self) -> None:
        wanted = self.hub.wanted()
        for src in self.all():
            if src is not self.default:  # the relay prunes the default router's table itself
                src.prune(wanted)

    # --- browsers ---------------------------------------------------------------------------------------------

    def browser_key_source(self, symbol: str) -> Source:
        """Where a browser's symbol goes: a pair (``BTC/USD``) to the crypto source, an OCC contract
        (``AAPL241220C00150000``) to the option source, anything else to the default stock feed."""
        if "/" in symbol:
            return self.source(self.crypto)
        return self.source(self.options) if is_option(symbol) else self.default

    def browser_keys(self, symbols: Iterable[str], channels: Iterable[str]) -> list[Key]:
        channels = tuple(channels)
        if channels == ("news",):  # {"channel": "news"}: every symbol (or "*") on the news stream
            prefix = self.source("news").prefix
            return [(prefix + "news", symbol) for symbol in symbols]
        keys = []
        for symbol in symbols:
            src = self.browser_key_source(symbol)  # only channels its stream has (an option has no bars)
            keys += [(src.prefix + ch, symbol) for ch in channels if ch in src.spec.channels]
        return keys

    def browser_prefix(self, symbol: str) -> str:
        """The channel prefix of a browser symbol's keys (what ``browser_keys`` puts in front of the channel)."""
        return self.browser_key_source(symbol).prefix

    def orderbook(self, symbol: str) -> dict[str, Any] | None:
        return self.source(self.crypto).orderbook(symbol)

    # --- lifecycle --------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """The default source's connection, for the relay's whole life (while this node holds Alpaca); the
        others run as they are needed."""
        await self.engine.while_leader(self.default.upstream.run, self.default.upstream)

    def deliver(self, prefix: str, batch: list[dict[str, Any]], now: float) -> None:
        """A batch of a non-default source (``prefix`` is its key prefix, ``crypto:us:``), from the engine: to
        this node's holders. On another node than the one holding Alpaca the source exists only for this."""
        self.source(prefix[:-1]).deliver(batch, now)

    async def stop(self) -> None:
        await asyncio.gather(*(src.stop() for src in self.all()), return_exceptions=True)

    def views(self, visible: set[Key]) -> dict[str, dict[str, Any]]:
        return {src.name: src.view(visible) for src in sorted(self.all(), key=lambda s: (not s.default, s.name))}

    def health_states(self) -> dict[str, UpstreamState]:
        """Connections /healthz judges: the default one always, the others while they are wanted."""
        return {src.name: src.upstream.status for src in self.all() if not src.default and src.wanted}
