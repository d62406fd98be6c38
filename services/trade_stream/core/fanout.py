"""The fan-out path: each upstream message is encoded once per codec and handed to its holders, never awaited.

Core reaches clients through the ``Holder``/``Client``/``Paced`` protocols below; the sockets behind them, with
write merging, the byte cap and the stall rule, are the edges' (edges/transport.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from trade_stream.core.framing import text_frame
from trade_stream.core.protocol import CHANNEL_OF, encode, market_message
from trade_stream.core.stats import Stats


class Codec:
    """How one kind of client wants messages: ``body`` per market message (cached across clients), ``frames``
    to turn a client's bodies from one batch into the bytes to write, and ``control`` to render one of the
    relay's own browser-protocol messages (status, errors) for this kind of client, or None to say nothing.
    Every relay-originated message goes through ``control``: that is what keeps a browser frame from ever
    reaching an Alpaca SDK."""

    #: True when a body is a finished frame and several bodies' frames are just their concatenation, so the
    #: router hands each body to its client as it comes instead of gathering a client's bodies first.
    joins = False

    def body(self, m: dict[str, Any]) -> bytes | None:
        raise NotImplementedError

    def frames(self, bodies: list[bytes]) -> bytes:
        raise NotImplementedError

    def frame(self, body: Any) -> Any:
        """``frames`` of one body."""
        return self.frames([body])

    def control(self, msg: dict[str, Any]) -> bytes | None:
        raise NotImplementedError


def browser_control(msg: dict[str, Any]) -> bytes:
    return text_frame(encode(msg))


class BrowserCodec(Codec):
    """One message per frame; the body is the finished frame, so clients share the exact bytes."""

    joins = True

    def body(self, m: dict[str, Any]) -> bytes | None:
        msg = market_message(m)
        return text_frame(encode(msg)) if msg is not None else None

    def frames(self, bodies: list[bytes]) -> bytes:
        return bodies[0] if len(bodies) == 1 else b"".join(bodies)

    def frame(self, body: bytes) -> bytes:
        return body

    def control(self, msg: dict[str, Any]) -> bytes:
        return browser_control(msg)


class BrowserBatchCodec(Codec):
    """Opt-in batched mode: one JSON array per upstream batch."""

    def body(self, m: dict[str, Any]) -> bytes | None:
        msg = market_message(m)
        return encode(msg) if msg is not None else None

    def frames(self, bodies: list[bytes]) -> bytes:
        return text_frame(b"[" + b",".join(bodies) + b"]")

    def control(self, msg: dict[str, Any]) -> bytes:
        return browser_control(msg)


BROWSER = BrowserCodec()
BROWSER_BATCH = BrowserBatchCodec()


class Holder(Protocol):
    """What the relay holds keys for and the router delivers to: a codec, and ``send`` for what that codec's
    ``frames`` make, with the number of messages in it; ``send`` never blocks, and False means the holder is
    closed or was cut off. A browser socket (Client), an SSE stream, a ghost keeping a departed stream's keys and
    the position marker's tap are all holders; the sockets among them are the edges' (edges/transport.py)."""

    @property
    def codec(self) -> Codec: ...

    def send(self, data: Any, count: int = 1) -> bool: ...

    def fan(self, data: Any, holders: list[Any], count: int = 1) -> None:
        """``send`` to each of ``holders`` (this one among them, all sharing its codec): one message's fan-out,
        which a kind of holder may deliver more cheaply than one ``send`` each. Holders that share a codec are
        of one kind (a codec belongs to one kind of client), so any of them may fan out for all."""

    def __hash__(self) -> int: ...  # the hub keys its tables by holder


def send_each(data: Any, holders: list[Any], count: int = 1) -> None:
    """The plain fan-out: one ``send`` per holder."""
    for holder in holders:
        holder.send(data, count)


class _TradesOnly(Codec):
    """A tap's codec: each live trade as the upstream message itself, everything else left out."""

    def body(self, m: dict[str, Any]) -> Any:
        return m if m.get("T") == "t" else None

    def frames(self, bodies: list[Any]) -> Any:
        return bodies


class TradeTap:
    """A hub holder inside the daemon that hands the live trades of what it holds to ``on_trades`` (the position
    marker, the price alerts): it keeps its symbols upstream as a client would, and is never a socket."""

    def __init__(self, on_trades: Callable[[list[dict[str, Any]]], None]) -> None:
        self.codec: Codec = _TradesOnly()
        self._on_trades = on_trades

    def send(self, bodies: list[dict[str, Any]], count: int = 1) -> bool:
        self._on_trades(bodies)
        return True

    def fan(self, data: Any, holders: list[Any], count: int = 1) -> None:
        send_each(data, holders, count)


class Paced(Protocol):
    """A client a long write (an order-journal replay) is paced by: its byte cap and how much it still owes."""

    @property
    def cap(self) -> int: ...

    def backlog(self) -> int: ...

    def closing(self) -> bool: ...


class Client(Holder, Paced, Protocol):
    """A connected WebSocket client as core sees it: its address, whether it is still open, the relay's own
    messages rendered for its kind, and what paces a replay to it."""

    @property
    def ip(self) -> str: ...

    @property
    def open(self) -> bool: ...

    def send_message(self, msg: dict[str, Any]) -> bool: ...


def broadcast(clients: Iterable[Client], msg: dict[str, Any]) -> None:
    """Send one control message (e.g. status) to many clients, rendered and framed once per kind of client."""
    frames: dict[Codec, bytes | None] = {}
    for client in list(clients):
        codec = client.codec
        frame = frames[codec] if codec in frames else frames.setdefault(codec, codec.control(msg))
        if frame is not None:
            client.send(frame, 0)


class _Bodies(list[Any]):
    """A client's bodies of one batch from its second on: a type no codec's body is, to tell one from many."""

    __slots__ = ()


class Router:
    """Routes batches of Alpaca market messages to the clients holding their (channel, symbol)."""

    def __init__(self, holders: dict[tuple[str, str], set[Any]], stats: Stats,
                 channel_of: dict[str, str] | None = None) -> None:
        self.holders = holders  # the hub's live table; read-only here
        self.stats = stats
        # Alpaca message type -> the hub channel holding it; one router per upstream source, whose channels carry
        # the source's prefix (upstream/sources.py), so routing costs the same one lookup for every source.
        self.channel_of = CHANNEL_OF if channel_of is None else channel_of
        self.last_seen: dict[str, float] = {}

    def route(self, messages: list[dict[str, Any]], now: float) -> None:
        if len(messages) == 1:
            self._route_one(messages[0], now)
            return
        holders = self.holders
        owed: dict[Client, Any] = {}  # a client's one body, or its _Bodies from the second on
        last_seen = self.last_seen
        channel_of = self.channel_of
        for m in messages:
            channel = channel_of.get(m.get("T", ""))
            if channel is None:
                continue
            symbol = m.get("S", "")
            last_seen[symbol] = now
            clients = holders.get((channel, symbol))
            star = holders.get((channel, "*"))  # Alpaca-compatible clients may hold the wildcard
            if star:
                clients = (clients | star) if clients else star
            if not clients:
                continue
            cache: dict[Codec, Any] = {}
            last: Codec | None = None  # holders mostly share one codec: look its body up only when it changes
            body: Any = None
            joins = False
            for client in list(clients):  # a copy: a send may cut a client off, which leaves the set
                codec = client.codec
                if codec is not last:
                    last = codec
                    body = cache[codec] if codec in cache else cache.setdefault(codec, codec.body(m))
                    joins = codec.joins
                if body is None:
                    continue
                if joins:  # its queue joins the frames: no need to gather them here
                    client.send(body, 1)
                else:
                    prior = owed.get(client)
                    if prior is None:  # a client's only body of the batch (the common case) needs no list
                        owed[client] = body
                    elif prior.__class__ is _Bodies:
                        prior.append(body)
                    else:
                        owed[client] = _Bodies((prior, body))
        self.stats.messages_in += len(messages)
        for client, owed_ in owed.items():
            if owed_.__class__ is _Bodies:
                client.send(client.codec.frames(owed_), len(owed_))
            else:
                client.send(client.codec.frame(owed_), 1)

    def route_news(self, messages: list[dict[str, Any]], now: float) -> None:
        """News articles have no ``S``: each goes to the holders of any symbol it names, or of ``*``, once."""
        holders = self.holders
        owed: dict[Client, list[bytes]] = {}
        for m in messages:
            channel = self.channel_of.get(m.get("T", ""))
            if channel is None:
                continue
            clients: set[Any] = set()
            for symbol in (m.get("symbols") or ()) if isinstance(m.get("symbols"), list) else ():
                clients |= holders.get((channel, symbol), set()) if isinstance(symbol, str) else set()
            clients |= holders.get((channel, "*"), set())
            cache: dict[Codec, bytes | None] = {}
            for client in clients:
                codec = client.codec
                body = cache[codec] if codec in cache else cache.setdefault(codec, codec.body(m))
                if body is not None:
                    owed.setdefault(client, []).append(body)
        self.stats.messages_in += len(messages)
        for client, bodies in owed.items():
            client.send(client.codec.frames(bodies), len(bodies))

    def _route_one(self, m: dict[str, Any], now: float) -> None:
        """The common case (one message per upstream frame): encoded once per codec, then one fan-out per codec,
        which the holders' kind may write far more cheaply than a send each."""
        self.stats.messages_in += 1
        channel = self.channel_of.get(m.get("T", ""))
        if channel is None:
            return
        symbol = m.get("S", "")
        self.last_seen[symbol] = now
        clients = self.holders.get((channel, symbol))
        star = self.holders.get((channel, "*"))
        if star:
            clients = (clients | star) if clients else star
        if not clients:
            return
        groups: dict[Codec, list[Any]] = {}
        last: Codec | None = None  # holders mostly share one codec: look its group up only when it changes
        group: list[Any] = []
        for client in clients:  # nothing is sent while this runs, so the set cannot change under it
            codec = client.codec
            if codec is not last:
                last = codec
                group = groups.setdefault(codec, [])
            group.append(client)
        for codec, group in groups.items():
            body = codec.body(m)
            frame = codec.frame(body) if body is not None else None
            if frame:
                group[0].fan(frame, group, 1)
