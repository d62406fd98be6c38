"""The relay core: the pure hub, the upstream connections and the routers wired together for live clients.

Everything that changes subscriptions goes through here, so the hub, upstream and the linger timer cannot drift
apart. Nothing here awaits: client replies are queued bytes, upstream requests go into the upstream's outbox.
The relay reaches the upstream and the engine only through the protocols of core/upstream.py and core/engine.py,
and builds both through the factories it is given, so it never names their classes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Generic

from trade_stream.config import Config
from trade_stream.core.app_channels import AppChannels
from trade_stream.core.channels import Access, ChannelEvent
from trade_stream.core.engine import Done, EngineFactory
from trade_stream.core.fanout import Client, Holder, broadcast
from trade_stream.core.hub import Change, Hub, Key, SymbolLimit
from trade_stream.core.limits import TokenBucket
from trade_stream.core.protocol import ClientError
from trade_stream.core.stats import Stats
from trade_stream.core.upstream import Feed, MarketUpstream, U_co, UpstreamFactory
from trade_stream.core.upstream_state import LinkState, UpstreamState

log = logging.getLogger("trade_stream.core.relay")

Reply = Callable[[ClientError | None], None]


class Relay(Generic[U_co]):
    """``U_co`` is the upstream's own type (``Sources``), so what app.py builds is what the edges read back from
    ``relay.sources``; the relay itself only calls what ``MarketUpstream`` declares."""

    def __init__(self, cfg: Config, stats: Stats, build_engine: EngineFactory,
                 build_upstream: UpstreamFactory[U_co]) -> None:
        self.cfg = cfg
        self.stats = stats
        self.hub = Hub(linger=cfg.linger, max_symbols=cfg.max_symbols)
        self.clients: set[Client] = set()
        # The engine carries interest, market data and upstream state across nodes (core/engine.py), and calls
        # back into this node through its handler; with the memory engine, upstream batches go straight to it.
        self.engine = engine = build_engine(_Node(self))
        # App channels (core/app_channels.py): this node's subscribers; events come from the engine's ChannelBus.
        self.channels = AppChannels(engine.channel_history, Access(cfg.public_channels), cfg.max_channels_per_client,
                                    cfg.channel_history)
        # One upstream connection per Alpaca source in use, run by whichever node holds Alpaca; the default stock
        # feed is ``sources.default``. The relay's hub, its state callback and the engine go into it as it is built.
        self.sources: U_co = build_upstream(self.hub, self._source_state, engine)
        self._linger_timer: asyncio.TimerHandle | None = None
        # Budgets for subscribes that change what upstream holds: fresh-symbol churn costs Alpaca a message each.
        self._changes = TokenBucket(cfg.upstream_changes_total / 60, cfg.upstream_changes_total)
        # Per connection, not per address: behind a reverse proxy every client has the proxy's address.
        self._client_changes: dict[Any, TokenBucket] = {}

    # --- clients ------------------------------------------------------------------------------------------

    def add(self, client: Client) -> None:
        self.clients.add(client)
        self.stats.connections_total += 1

    def remove(self, client: Client) -> None:
        self.clients.discard(client)
        self._client_changes.pop(client, None)
        self.channels.drop(client)
        self._apply(self.hub.drop(client, time.monotonic()))

    def subscribe(self, client: Holder, keys: list[Key], reply: Reply, *, private: bool = False,
                  weak: bool = False) -> None:
        """Hold ``keys`` for ``client``; ``reply`` runs once upstream accepted (or at once if nothing to wait for).

        ``private`` holds are left out of public views (status, metrics). ``weak`` holds give way when the symbol
        cap needs room; the holder's ``evicted(keys)`` is called then (see hub.py)."""
        err = self._budget(client, keys)
        if err is not None:
            reply(err)
            return
        try:
            change = self.hub.subscribe(client, keys, time.monotonic(), private=private, weak=weak)
        except SymbolLimit as exc:
            reply(ClientError("symbol_limit", f"{exc}; unsubscribe something first"))
            return
        for holder, lost in change.evicted.items():
            holder.evicted(lost)  # type: ignore[attr-defined]  # the hub keys holders as Hashable; weak ones have it
        if change.unsubscribe:
            self._prune()

        def done(ok: bool, code: int | None, msg: str) -> None:
            if ok:
                reply(None)
                return
            # Alpaca rejected the whole request (e.g. 405): roll back everyone who joined these keys.
            for holder, lost in self.hub.reject(change.subscribe).items():
                if holder is not client and holder in self.clients:
                    for symbol in sorted({s for _, s in lost}):
                        holder.send_message(_upstream_refused(code, msg, symbol).to_message())
            self.hub.unsubscribe(client, change.added, time.monotonic())
            self._prune()
            reply(_upstream_refused(code, msg, None))

        if not self.engine.request(change, done):
            reply(None)
        self._schedule_linger()

    def _budget(self, client: Holder, keys: list[Key]) -> ClientError | None:
        """Refuse a subscribe that would add to the upstream set once the client's or everyone's budget is spent.
        Subscribes to what upstream already holds are free."""
        if all(self.hub.is_wanted(k) for k in keys):
            return None
        now = time.monotonic()
        per_minute = self.cfg.upstream_changes_per_client
        bucket = self._client_changes.get(client)
        if bucket is None:
            if len(self._client_changes) >= 10_000:  # bounded (SSE clients never call remove): drop refilled ones
                self._client_changes = {k: b for k, b in self._client_changes.items()
                                        if b.tokens + (now - b.stamp) * b.rate < b.burst}
            bucket = self._client_changes[client] = TokenBucket(per_minute / 60, per_minute)
        if not bucket.take(now):
            return ClientError("rate_limited", f"at most {per_minute} subscribes per minute per connection that "
                               "add new symbols; wait, or subscribe several symbols in one request")
        if not self._changes.take(now):
            return ClientError("rate_limited", "the relay is taking too many new symbols right now; try again "
                               "in a few seconds")
        return None

    def unsubscribe(self, client: Holder, keys: list[Key]) -> None:
        self._apply(self.hub.unsubscribe(client, keys, time.monotonic()))

    # --- upstream -----------------------------------------------------------------------------------------

    def close(self) -> None:
        """No linger runs out after shutdown (the upstream connections are stopped by whoever runs them)."""
        if self._linger_timer:
            self._linger_timer.cancel()
            self._linger_timer = None
        self.channels.close()

    def _rejected(self, keys: list[Key], code: int | None, msg: str) -> None:
        """Alpaca refused these keys (found by splitting a refused subscribe): drop them, tell their holders."""
        log.warning("upstream_rejected code=%s keys=%s msg=%r", code, [f"{c}:{s}" for c, s in keys][:20], msg)
        for holder, lost in self.hub.reject(keys).items():
            if holder in self.clients:
                for symbol in sorted({s for _, s in lost}):
                    holder.send_message(_upstream_refused(code, msg, symbol).to_message())
        self.engine.request(Change())  # what this node holds changed: tell the cluster (a no-op on one process)

    def _apply(self, change: Change) -> None:
        if change:
            self.engine.request(change)
        if change.unsubscribe:
            self._prune()
        self._schedule_linger()

    def _prune(self) -> None:
        """Per-symbol tables keep only symbols upstream should hold: a dropped symbol leaves no trace."""
        wanted = self.hub.wanted_symbols()
        last_seen = self.sources.default.router.last_seen
        for symbol in [s for s in last_seen if s not in wanted]:
            del last_seen[symbol]
        self.sources.prune()

    def _schedule_linger(self) -> None:
        deadline = self.hub.next_deadline()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        if deadline is None:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, deadline - time.monotonic())
        self._linger_timer = loop.call_later(delay, self._expire)

    def _expire(self) -> None:
        self._linger_timer = None
        change = self.hub.expire(time.monotonic())
        if change:
            log.info("linger_expired unsubscribing=%s", [f"{c}:{s}" for c, s in change.unsubscribe][:20])
        self._apply(change)

    def _source_state(self, source: Feed, state: UpstreamState) -> None:
        if source.default:
            self._upstream_state(state)
            return
        log.info("source_state source=%s state=%s error=%r", source.name, state.state, state.error)
        broadcast(self.clients, {"type": "source_status", "source": source.name,
                                 "upstream": source.view(self.hub.visible())})

    def _upstream_state(self, state: UpstreamState) -> None:
        self.stats.upstream_reconnects = state.reconnects
        log.info("upstream_state state=%s error=%r", state.state, state.error)
        held = self.sources.default.upstream.held
        self.engine.upstream_state({"upstream": self.upstream_view(),
                                    "held": {ch: sorted(s) for ch, s in held.items()}})

    def _shared_status(self, shared: dict[str, Any], mirror: bool = False) -> None:
        """The shared upstream's state, from this node's upstream or (``mirror``) from the node that holds it:
        mirrored into the local view (status, health, welcome) and sent to every client."""
        view = shared["upstream"]
        if mirror:
            upstream = self.sources.default.upstream
            status = upstream.status
            state = LinkState(view.get("state", LinkState.DISCONNECTED))  # another node's view: plain strings
            status.error, status.error_code = view.get("error"), view.get("error_code")
            status.since, status.reconnects = view.get("since") or status.since, view.get("reconnects") or 0
            if state is LinkState.CONNECTED:
                status.down_since = None
            elif status.down_since is None or status.state is LinkState.CONNECTED:
                status.down_since = time.monotonic()
            status.state = state
            upstream.held = {ch: set(syms) for ch, syms in (shared.get("held") or {}).items()}
        broadcast(self.clients, {"type": "status", "upstream": {**view, "feed": self.cfg.data_feed}})

    # --- views --------------------------------------------------------------------------------------------

    def upstream_view(self) -> dict[str, Any]:
        upstream = self.sources.default.upstream
        age = upstream.last_message_age()
        return {**upstream.status.to_dict(), "feed": self.cfg.data_feed,
                "last_message_age": None if age is None else round(age, 3)}

    def status(self) -> dict[str, Any]:
        """The public view: only what public clients hold (or let linger), never the private price holds."""
        visible = self.hub.visible()
        symbols = {s for _, s in visible}
        upstream, router = self.sources.default.upstream, self.sources.default.router
        held = {ch: {s for s in syms if (ch, s) in visible} for ch, syms in upstream.held.items()}
        active = sorted({s for syms in held.values() for s in syms}) if upstream.connected else []
        loop_now = asyncio.get_running_loop().time()
        return {
            "alpaca_connected": upstream.connected,
            "upstream": self.upstream_view(),
            "active_symbols": active,
            "upstream_subscriptions": {ch: sorted(s) for ch, s in sorted(held.items()) if s},
            "wanted_symbols": sorted(symbols),
            "stream_count": len(self.clients),
            "holders": self.hub.holder_counts(),
            "last_message_age": {
                sym: round(loop_now - seen, 3) for sym, seen in sorted(router.last_seen.items())
                if sym in symbols
            },
            "reconnects": upstream.status.reconnects,
            "demo": self.cfg.demo,
            "upstreams": self.sources.views(visible),
            "cluster": self.engine.view(),
        }


class _Node:
    """What the engine calls back into on this node (core/engine.NodeHandler): the relay's hub, router, sources
    and client notices. Each is looked up when called, since the engine is built before the sources it feeds."""

    __slots__ = ("relay",)

    def __init__(self, relay: Relay[MarketUpstream]) -> None:
        self.relay = relay

    def local_wanted(self) -> set[Key]:
        return self.relay.hub.wanted()

    def upstream_request(self, change: Change, on_done: Done | None) -> bool:
        return self.relay.sources.request(change, on_done)

    def on_data(self, batch: list[dict[str, Any]], now: float) -> None:
        self.relay.sources.default.router.route(batch, now)

    def on_source_data(self, prefix: str, batch: list[dict[str, Any]], now: float) -> None:
        self.relay.sources.deliver(prefix, batch, now)

    def on_status(self, shared: dict[str, Any], mirror: bool = False) -> None:
        self.relay._shared_status(shared, mirror)

    def on_rejected(self, keys: list[Key], code: int | None, msg: str) -> None:
        self.relay._rejected(keys, code, msg)

    def on_channel_event(self, event: ChannelEvent) -> None:
        self.relay.channels.deliver(event)

    def local_channels(self) -> set[str]:
        return set(self.relay.channels.subs)

    def on_channel_gap(self, channel: str) -> None:
        self.relay.channels.gap(channel)


def _upstream_refused(code: int | None, msg: str, symbol: str | None) -> ClientError:
    if code == 405:
        return ClientError("symbol_limit", f"Alpaca refused: {msg or 'symbol limit exceeded'} (405)", symbol)
    return ClientError("upstream_rejected", f"Alpaca refused the subscription: {code} {msg}", symbol)
