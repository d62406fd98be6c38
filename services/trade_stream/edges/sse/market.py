"""The public market streams of the side-port: /api/stream/trades and /api/stream/prices.

Market data flows through the same hub and router as WebSocket clients: an ``SseClient`` holds its keys in the
hub and its codec turns each message into an SSE event once (id assigned, recorded in the replay ring). When a
client leaves, a ``Ghost`` keeps its keys recorded for a while, so a reconnect with ``Last-Event-ID`` resumes
without a gap; ``Holds`` owns both kinds of holder. Replay is complete or it is a ``reset`` event: the ring says
which.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from trade_stream.core.fanout import Codec, send_each
from trade_stream.core.hub import Key
from trade_stream.core.protocol import MARKET_CHANNELS, ClientError, check_symbol, encode
from trade_stream.core.relay import Relay
from trade_stream.edges.http.request import Request
from trade_stream.edges.http.responses import Response, error
from trade_stream.edges.sse.channel import Channel, Shared, last_event_id
from trade_stream.edges.sse.client import SseClient
from trade_stream.edges.sse.codecs import SSE_CHANNELS, PriceCodec, SseCodec
from trade_stream.edges.sse.streams import Stream
from trade_stream.edges.sse.views import initial_price
from trade_stream.edges.sse.wire import event_bytes
from trade_stream.upstream.snapshots import Snapshots
from trade_stream.upstream.sources import Sources

GHOST_HOLD = 60.0  # seconds a departed client's symbols keep being recorded, so it can resume without gaps


class Ghost:
    """Keeps a departed client's keys recorded (no delivery) for GHOST_HOLD seconds.

    A weak hub holder: it gives its keys up the moment the symbol cap needs room for someone (``evicted``), so
    an anonymous client that left cannot keep the global cap from everyone else for a minute."""

    def __init__(self, codec: Codec, ip: str, keys: list[Key], on_evicted: Any) -> None:
        self.codec = codec
        self.ip = ip
        self.keys = keys
        self.timer: asyncio.TimerHandle | None = None
        self._on_evicted = on_evicted

    def send(self, bodies: Any, count: int = 1) -> bool:
        return True

    def fan(self, data: Any, holders: list[Any], count: int = 1) -> None:
        send_each(data, holders, count)  # the live streams sharing this ghost's codec still get theirs

    def evicted(self, keys: list[Key]) -> None:
        self._on_evicted(self, keys)



class Holds:
    """The hub holds of the market streams: a live client's, then its ghost's."""

    def __init__(self, relay: Relay[Sources], shared: Shared) -> None:
        self.relay = relay
        self.shared = shared
        self._ghosts: dict[str, list[Ghost]] = {}  # per address, oldest first

    def hold(self, client: SseClient, keys: list[Key]) -> None:
        codec = client.codec
        assert isinstance(codec, SseCodec)
        ring = codec.ring
        for key in codec.ring_keys(keys):
            ring.recording_since.setdefault(key, ring.last_id + 1)

        def reply(err: ClientError | None) -> None:
            if err is not None:  # e.g. the symbol cap: say so on the stream, which stays open
                client.write(event_bytes("error", encode(err.to_message())))
                self._stop_recording(keys, codec)

        self.relay.subscribe(client, keys, reply)

    def release(self, client: SseClient, keys: list[Key]) -> None:
        """Hand the client's keys to a ghost so they keep being recorded for a reconnect.

        Ghosts are weak holds (they give way to the symbol cap) and one address's ghosts together hold at most
        the per-client cap: the oldest go first."""
        ghost = Ghost(client.codec, client.ip, keys, self._ghost_evicted)
        self.relay.subscribe(ghost, keys, lambda err: None, weak=True)
        self.relay.unsubscribe(client, keys)
        ghost.timer = asyncio.get_running_loop().call_later(GHOST_HOLD, self._drop_ghost, ghost)
        ghosts = self._ghosts.setdefault(ghost.ip, [])
        ghosts.append(ghost)
        while len({s for g in ghosts for _, s in self.relay.hub.held_by(g)}) > self.shared.max_symbols_per_client:
            self._drop_ghost(ghosts[0])

    def _drop_ghost(self, ghost: Ghost) -> None:
        if ghost.timer is not None:
            ghost.timer.cancel()
        ghosts = self._ghosts.get(ghost.ip, [])
        if ghost in ghosts:
            ghosts.remove(ghost)
            if not ghosts:
                del self._ghosts[ghost.ip]
        self.relay.unsubscribe(ghost, ghost.keys)
        self._stop_recording(ghost.keys, ghost.codec)

    def _ghost_evicted(self, ghost: Ghost, keys: list[Key]) -> None:
        self._stop_recording(keys, ghost.codec)
        if not self.relay.hub.held_by(ghost):
            self._drop_ghost(ghost)

    def _stop_recording(self, keys: list[Key], codec: Any) -> None:
        """Keys no SSE holder of this codec takes any more are not recorded: a replay asking for them must get a
        reset (and a price stream's per-symbol state goes)."""
        holders = self.relay.hub.holders
        gone = [key for key in keys if not any(getattr(h, "codec", None) is codec for h in holders.get(key, ()))]
        for key in codec.ring_keys(gone):
            codec.ring.recording_since.pop(key, None)
        codec.forget(gone)

    # --- orders -----------------------------------------------------------------------------------------


@dataclass(eq=False)
class MarketState:
    keys: list[Key]
    held: bool = False


class MarketStream(Stream[MarketState]):
    """What trades and prices share: the symbol rules and cap, the open, the hold and its hand-over to a ghost."""

    channels: str | None = None  # forced ``?channels=`` (prices merge both)

    def __init__(self, relay: Relay[Sources], shared: Shared, holds: Holds, codec: SseCodec,
                 clients: set[SseClient]) -> None:
        self.relay = relay
        self.shared = shared
        self.holds = holds
        self.codec = codec
        self.ring = codec.ring
        self.clients = clients  # every live market stream, both kinds (metrics, stall sweep, close)

    def accept(self, request: Request) -> Response | MarketState:
        query = request.query if self.channels is None else {**request.query, "channels": self.channels}
        keys = parse_keys(query, self.relay.sources.browser_keys)
        cap = self.shared.max_symbols_per_client
        if not isinstance(keys, str) and len({s for _, s in keys}) > cap:
            keys = f"at most {cap} symbols per stream (TRADE_STREAM_MAX_SYMBOLS_PER_CLIENT)"
        if isinstance(keys, str):
            return error(400, keys)
        return MarketState(keys)

    def open(self, channel: Channel, state: MarketState) -> SseClient:
        return channel.open(self.codec, self.kind, "anonymous")

    def replay(self, client: SseClient, request: Request, state: MarketState) -> list[bytes] | None:
        """The missed events after a Last-Event-ID the ring can vouch for ([] when none were missed); a
        ``reset`` event and None when it cannot, or when the client sent no id."""
        last = last_event_id(request)
        if last is None:
            return None
        after = last.n if last.epoch is None else -1  # market ids carry no epoch
        replay = self.ring.replay(after, set(self.codec.ring_keys(state.keys)))
        if replay is None:
            client.write(event_bytes("reset", encode({
                "reason": "cannot replay from that id; refetch state", "last_event_id": after,
                "current_id": self.ring.last_id})))
        return replay

    def join(self, client: SseClient, state: MarketState) -> None:
        self.holds.hold(client, state.keys)
        state.held = True
        self.clients.add(client)

    def release(self, client: SseClient, state: MarketState) -> None:
        self.clients.discard(client)
        if state.held:
            self.holds.release(client, state.keys)
        client.finish()


class TradesStream(MarketStream):
    """Public trades and quotes: the missed events after a Last-Event-ID the ring can vouch for, then live."""

    kind = "trades"

    async def hold(self, channel: Channel, client: SseClient, state: MarketState) -> bool:
        replay = self.replay(client, channel.request, state)
        if replay:
            client.write(b"".join(replay), len(replay))
        self.join(client, state)
        return True


class PricesStream(MarketStream):
    """Public merged prices: first the snapshot of each symbol (``initializing: true``), or the missed events
    after a Last-Event-ID the ring can vouch for, then live ``price:update``."""

    kind = "prices"
    channels = ",".join(SSE_CHANNELS)

    def __init__(self, relay: Relay[Sources], shared: Shared, holds: Holds, codec: PriceCodec, clients: set[SseClient],
                 snapshots: Snapshots | None) -> None:
        super().__init__(relay, shared, holds, codec, clients)
        self.price_codec = codec
        self.snapshots = snapshots  # the first price:update of a symbol (upstream/snapshots.py)
        codec.deliver = self.deliver

    async def hold(self, channel: Channel, client: SseClient, state: MarketState) -> bool:
        codec, sources = self.price_codec, self.relay.sources
        symbols = list(dict.fromkeys(s for _, s in state.keys))
        replay = self.replay(client, channel.request, state)
        first: list[dict[str, Any]] = []
        if replay is None:
            stocks = [s for s in symbols if not sources.browser_prefix(s)]
            snaps = {m["symbol"]: m["data"] for m in await self.snapshots.get(stocks)} \
                if self.snapshots is not None and stocks else {}
            first = [f for s in symbols if (f := initial_price(s, snaps.get(s), codec.state.get(s)))]
            if first:
                client.write(b"".join(event_bytes("price:update", encode(f)) for f in first), len(first))
        elif replay:
            client.write(b"".join(replay), len(replay))
        self.holds.hold(client, state.keys)
        state.held = True
        now_held = {s for _, s in self.relay.hub.held_by(client)}  # not those the symbol cap refused
        for f in first:  # a quote before the next trade still carries the snapshot's price
            if f["symbol"] in now_held:
                codec.state.setdefault(f["symbol"], {k: f[k] for k in ("symbol", "price", "bid", "ask",
                                                                       "timestamp")})
        self.clients.add(client)
        return True

    def deliver(self, symbol: str, key: Key, ev: bytes) -> None:
        """A coalesced price:update to every price stream holding the symbol (ghosts record, never deliver)."""
        holders = self.relay.hub.holders
        prefix = key[0][:-len("prices")]
        clients = {h for ch in SSE_CHANNELS for h in holders.get((prefix + ch, symbol), ())
                   if isinstance(h, SseClient) and h.codec is self.price_codec}
        for client in clients:
            client.send([(key, ev)], 1)


def parse_keys(query: dict[str, str], browser_keys: Callable[[Iterable[str], Iterable[str]], list[Key]]
                ) -> list[Key] | str:
    """The hub keys of ``?symbols=…&channels=…``: the WebSocket side's symbol rules and routing (a pair goes to
    the crypto source), via ``relay.sources.browser_keys``."""
    raw = [s for s in query.get("symbols", "").split(",") if s.strip()]
    if not raw:
        return "give ?symbols=AAPL,MSFT"
    symbols = []
    for s in raw:
        symbol = check_symbol(s)
        if isinstance(symbol, ClientError):
            return f"invalid symbol {s.strip()[:20]!r}: {symbol.message}"
        symbols.append(symbol)
    channels = [c.strip() for c in query.get("channels", "trades").split(",") if c.strip()]
    wrong = [c for c in channels if c not in SSE_CHANNELS]
    if wrong or not channels:
        return f"channels must be from {list(SSE_CHANNELS)}"
    assert set(SSE_CHANNELS) <= set(MARKET_CHANNELS)
    return browser_keys(dict.fromkeys(symbols), dict.fromkeys(channels))
