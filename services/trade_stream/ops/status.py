"""The operator's views of a running relay: ``/healthz`` (health), ``/api/stream/status`` (status) and the one-line
status systemd shows (status_line), aggregated from the components that report on themselves.

The components are held as small structural protocols over members they already have (an upstream's ``status``
record, a store's ``health()``, a reporter's ``status()``), so the aggregation needs nothing added to them and can
be exercised with fakes. The judgement of what counts as down stays in ``ops/health``; this module only decides
which component appears under which name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from trade_stream.core.delivery_stats import Channels
from trade_stream.core.relay import Relay
from trade_stream.core.upstream_state import LinkState, UpstreamState
from trade_stream.ops.health import report, upstream_health
from trade_stream.ops.supervisor import Supervisor
from trade_stream.upstream.sources import Sources


class Upstream(Protocol):
    """An Alpaca connection: its state record, judged against the grace period."""

    @property
    def status(self) -> UpstreamState: ...


class BrokerUpstream(Upstream, Protocol):
    """A Broker API event stream: also says which stream it is and whether it fell back to polling."""

    stream: str
    state: LinkState
    mode: str


class Store(Protocol):
    """A journal on disk: ``health()`` carries ``fault_for`` (seconds in fault, or None)."""

    def health(self) -> dict[str, Any]: ...


class Reporter(Protocol):
    """Anything with counters worth showing on the status page."""

    def status(self) -> dict[str, Any]: ...


class MarketData(Protocol):
    """The relay's side: its status view, the default feed's connection and the other sources wanted now."""

    def status(self) -> dict[str, Any]: ...

    def upstream_view(self) -> dict[str, Any]: ...

    def default_upstream(self) -> Upstream: ...

    def source_health(self) -> dict[str, UpstreamState]: ...

    def line(self) -> str: ...


@dataclass(frozen=True)
class RelayMarket:
    """``MarketData`` read from the relay: the default feed's connection, the other sources, clients and symbols."""

    relay: Relay[Sources]

    def status(self) -> dict[str, Any]:
        return self.relay.status()

    def upstream_view(self) -> dict[str, Any]:
        return self.relay.upstream_view()

    def default_upstream(self) -> Upstream:
        return self.relay.sources.default.upstream

    def source_health(self) -> dict[str, UpstreamState]:
        return self.relay.sources.health_states()

    def line(self) -> str:
        return f"clients={len(self.relay.clients)} symbols={len(self.relay.hub.wanted_symbols())}"


@dataclass(frozen=True)
class StatusReport:
    """Health, status and status line over the parts of one App. ``tradings`` is in account order: the first
    account's stream is reported as plain ``trading``, the others as ``trading:<account>``."""

    market: MarketData
    tradings: Mapping[str, Upstream]
    supervisor: Supervisor
    grace: float
    orders: Store
    notifications: Store
    broker: Reporter | None = None
    broker_streams: Sequence[BrokerUpstream] = ()
    webhooks: Reporter | None = None
    email: Reporter | None = None
    channels: Channels | None = None  # every sending channel's counts (core/delivery_stats.py)
    alerts: Reporter | None = None
    push: Reporter | None = None

    def _trading_names(self) -> dict[str, str]:
        first = next(iter(self.tradings), None)
        return {name: "trading" if name == first else f"trading:{name}" for name in self.tradings}

    def health(self) -> dict[str, Any]:
        upstreams: dict[str, UpstreamState] = {"market_data": self.market.default_upstream().status}
        upstreams.update(self.market.source_health())  # other streams count only while something wants them
        names = self._trading_names()
        for name, trading in self.tradings.items():
            upstreams[names[name]] = trading.status
        for stream in self.broker_streams:  # polling counts as down
            upstreams[f"broker:{stream.stream}"] = stream.status
        view = report(upstreams, self.supervisor, self.grace)
        if self.broker is not None:
            view["broker"] = {u.stream: {"state": u.state.value, "mode": u.mode} for u in self.broker_streams}
        # A store in fault is down at once, without the grace: the grace is for upstream blips the relay rides out
        # by reconnecting, while a journal that cannot be written holds no order history until someone acts.
        for name, store in (("orders", self.orders), ("notifications", self.notifications)):
            health = store.health()
            view[name] = health
            if health["fault_for"] is not None:
                view["ok"] = False
                view["down"].append(name)
        return view

    def healthz(self) -> tuple[int, dict[str, Any]]:
        """200 while every upstream and task is up (or down for less than the grace period), else 503."""
        health = self.health()
        body = {"status": "ok" if health["ok"] else "down", "upstream": self.market.upstream_view(), **health}
        return (200 if health["ok"] else 503), body

    def status(self) -> dict[str, Any]:
        """The relay's status plus the trading streams, the stores, the outbox, Broker mode and the health view."""
        out = self.market.status()
        if self.tradings:
            first = next(iter(self.tradings.values()))
            out["trading"] = upstream_health(first.status, self.grace)
            if len(self.tradings) > 1:
                out["tradings"] = {name: upstream_health(t.status, self.grace) for name, t in self.tradings.items()}
        out["orders"] = self.orders.health()
        out["notifications"] = self.notifications.health()
        if self.webhooks is not None:
            out["webhooks"] = self.webhooks.status()
        if self.email is not None:
            out["email"] = self.email.status()
        if self.channels is not None:
            out["channels"] = self.channels.view()
        if self.alerts is not None:
            out["price_alerts"] = self.alerts.status()
        if self.push is not None:
            out["push"] = self.push.status()
        if self.broker is not None:
            out["broker"] = self.broker.status()
        out["health"] = self.health()
        return out

    def line(self) -> str:
        """One line for systemd's STATUS= (``systemctl status``) and the watchdog keep-alive."""
        trading = next(iter(self.tradings.values())).status.state if self.tradings else "off"
        health = self.health()
        return (f"upstream={self.market.default_upstream().status.state} trading={trading} {self.market.line()} "
                f"health={'ok' if health['ok'] else 'down'}"
                + (f" down={','.join(health['down'])}" if health["down"] else ""))
