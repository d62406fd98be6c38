"""The market-data upstream as the relay sees it: the few things the relay calls on it, as protocols.

``upstream/sources.py`` fills them (``Sources``, one ``Source`` per Alpaca stream in use, each with its
``MarketDataUpstream`` connection); core never imports it. The relay builds its upstream through an
``UpstreamFactory`` that app.py passes in, the same way it builds its engine through an ``EngineFactory``: the
upstream needs the relay's hub, its state callback and the engine, and the engine's handler reaches the upstream,
so whichever is built first would otherwise wait for the other to be set on it.

What the relay needs, and no more: send a hub change upstream (``request``), hand the default feed's batches to
its router and another source's to that source (``deliver``), drop per-symbol state nobody wants (``prune``), and
read the state of the connections for status, health and the clients' ``status`` messages.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from trade_stream.core.engine import Done, UpstreamSide
from trade_stream.core.fanout import Router
from trade_stream.core.hub import Change, Hub, Key
from trade_stream.core.upstream_state import UpstreamState


class Link(Protocol):
    """One upstream connection: its state and what Alpaca last confirmed it holds. On a node that does not hold
    Alpaca, the relay mirrors both from the node that does."""

    held: dict[str, set[str]]  # channel -> symbols, Alpaca's last ``subscription`` reply

    @property
    def status(self) -> UpstreamState: ...

    @property
    def connected(self) -> bool: ...

    def last_message_age(self) -> float | None:
        """Seconds since the last data message, None before the first."""


class Feed(Protocol):
    """One Alpaca market-data stream in use: its connection, the router that fans its messages out, its view."""

    @property
    def name(self) -> str: ...

    @property
    def default(self) -> bool:
        """The configured stock feed (``ALPACA_DATA_FEED``): connected for the relay's whole life, its hub keys
        Alpaca's bare channel names."""

    @property
    def upstream(self) -> Link: ...

    @property
    def router(self) -> Router: ...

    def view(self, visible: set[Key]) -> dict[str, Any]:
        """This stream in /api/stream/status, showing only the ``visible`` (public) keys."""


class MarketUpstream(Protocol):
    """Every market-data stream the relay uses, opened and closed as the hub's keys need them."""

    @property
    def default(self) -> Feed: ...

    def request(self, change: Change, on_done: Done | None = None) -> bool:
        """Send a hub change to the connections it concerns. True when ``on_done`` will get Alpaca's answer."""

    def deliver(self, prefix: str, batch: list[dict[str, Any]], now: float) -> None:
        """A batch of a non-default stream (``prefix`` its key prefix, ``crypto:us:``) to this node's holders."""

    def prune(self) -> None:
        """Forget per-symbol state (order books, last-seen times) of the streams other than the default one that
        no key wants any more; the relay prunes the default router's table itself."""

    def views(self, visible: set[Key]) -> dict[str, dict[str, Any]]:
        """``upstreams`` in /api/stream/status: every stream by name."""


#: What the relay is told when a stream's connection changes state.
FeedState = Callable[[Feed, UpstreamState], None]
#: The upstream's concrete type: the relay keeps it, so what app.py built is what the edges read back.
U_co = TypeVar("U_co", bound=MarketUpstream, covariant=True)
#: How a relay gets its upstream: built with the relay's hub, its state callback and the engine's upstream side.
UpstreamFactory = Callable[[Hub, FeedState, UpstreamSide], U_co]
