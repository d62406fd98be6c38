"""Order updates: private, journaled before they are relayed, replayable with ``since``, reconciled after gaps.

Flow of one event: trading stream → ``publish`` → journal (durable, deduplicated, id assigned) → every subscribed
authenticated client (one frame for all) → listeners (the SSE side) → positions. A client that subscribes gets a
REST snapshot, then the journal from its ``since``, then live events, with no await between the replay and joining
the live set, so nothing falls in between.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from trade_stream.fanout import Client, Codec
from trade_stream.framing import text_frame
from trade_stream.journal import Entry, Journal
from trade_stream.limits import FailedAuth
from trade_stream.positions import Positions, dec
from trade_stream.protocol import ClientError, encode
from trade_stream.relay import Relay
from trade_stream.rest import AlpacaRest
from trade_stream.stats import Stats

log = logging.getLogger("trade_stream.orders")

EVENT_FIELDS = ("event", "order", "timestamp", "execution_id", "price", "qty", "position_qty", "position_qtys",
                "at", "event_id", "legs")
STATUS_EVENT = {"filled": "fill", "partially_filled": "partial_fill", "canceled": "canceled", "expired": "expired",
                "rejected": "rejected", "replaced": "replaced", "new": "new", "accepted": "accepted",
                "done_for_day": "done_for_day", "pending_new": "pending_new", "pending_cancel": "pending_cancel"}
POSITION_INTERVAL = 0.25  # at most 4 position updates per second per symbol
SEEN_KEY = "trading_seen_at"
REST_TIMEOUT = 10.0  # alpaca-py sets no request timeout; a hung call must not hold a client back


@dataclass(frozen=True)
class AuthThrottled(ClientError):
    """A wrong credential from a source that has sent too many: answer 429 with Retry-After."""

    retry_after: int = 60


def sanitize(data: dict[str, Any]) -> dict[str, Any]:
    """Only Alpaca's documented event fields (so nothing internal leaks), plus a few conveniences."""
    out = {k: data[k] for k in EVENT_FIELDS if k in data}
    order = data.get("order") if isinstance(data.get("order"), dict) else {}
    out.update(order_id=order.get("id"), symbol=order.get("symbol"), side=order.get("side"),
               status=order.get("status"))
    return out


def parse_ts(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(_trim_ns(value)).timestamp()
    except ValueError:
        return None


def _trim_ns(value: str) -> str:
    """Python parses at most microseconds: cut nanoseconds, keep the zone."""
    value = value.replace("Z", "+00:00")
    if "." in value:
        head, _, rest = value.partition(".")
        digits = "".join(ch for ch in rest if ch.isdigit())
        zone = rest[len(digits):]
        value = f"{head}.{digits[:6]}{zone}"
    return value


class _PriceTap:
    """A hub holder that takes live trades for held symbols, so positions are marked to market."""

    def __init__(self, on_trades: Callable[[list[dict[str, Any]]], None]) -> None:
        self.codec = _TapCodec()
        self._on_trades = on_trades

    def send(self, bodies: list[dict[str, Any]], count: int = 1) -> bool:
        self._on_trades(bodies)
        return True


class _TapCodec(Codec):
    def body(self, m: dict[str, Any]) -> Any:
        return m if m.get("T") == "t" else None

    def frames(self, bodies: list[Any]) -> Any:
        return bodies


class Orders:
    def __init__(self, token: str, journal: Journal, rest: AlpacaRest, relay: Relay, stats: Stats) -> None:
        self._token = token.encode()
        self.journal = journal
        self.rest = rest
        self.relay = relay
        self.stats = stats
        self.positions = Positions()
        self.authed: set[Client] = set()
        self.subscribers: set[Client] = set()
        self._starting: dict[Client, object] = {}  # client -> the subscribe attempt still fetching its snapshot
        self.listeners: list[Callable[[Entry], None]] = []
        self.position_listeners: list[Callable[[dict[str, Any]], None]] = []
        self._failures = FailedAuth()
        self._tap = _PriceTap(self._on_trades)
        self._tapped: set[str] = set()
        self._last_push: dict[str, float] = {}
        self._scheduled: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reconcile_lock = asyncio.Lock()
        self._live = False

    # --- client side (the ws_server's PrivateStreams) -----------------------------------------------------

    def check_token(self, token: str, ip: str) -> ClientError | None:
        """The one credential check for every path (WebSocket auth, SSE, REST, the Alpaca-compatible ones).

        The right token is compared first, in constant time, and always accepted: other people's failures
        (a bot behind the same proxy) must never lock its owner out. Wrong ones are throttled per source and
        presented token (see limits.FailedAuth)."""
        if hmac.compare_digest(token.encode("utf-8", "surrogatepass"), self._token):
            return None
        wait = self._failures.fail(ip, token, time.monotonic())
        if wait:
            return AuthThrottled("rate_limited", f"too many failed auth attempts; retry in {wait} s", None, wait)
        log.warning("auth_failed ip=%s", ip)
        return ClientError("unauthorized", "invalid token")

    def authenticate(self, client: Client, token: str) -> ClientError | None:
        err = self.check_token(token, client.ip)
        if err is None:
            self.authed.add(client)
        return err

    def subscribe(self, client: Client, since: int | None) -> ClientError | None:
        if client not in self.authed:
            return ClientError("unauthorized", 'order updates are private: send {"action":"auth","token":…} first')
        if client in self.subscribers or client in self._starting:
            return ClientError("already_subscribed", "already subscribed to orders")
        self._starting[client] = attempt = object()
        client.send_message({"type": "subscribed", "channel": "orders"})
        start = self.journal.last_id() if since is None else since
        self._spawn(self._start(client, start, attempt))
        return None

    def unsubscribe(self, client: Client) -> None:
        self._starting.pop(client, None)  # a subscribe still fetching its snapshot stops there (see _start)
        if client in self.subscribers:
            self.subscribers.discard(client)
            self._sync_tap()

    def forget(self, client: Client) -> None:
        self.authed.discard(client)
        self._starting.pop(client, None)
        self.unsubscribe(client)

    async def _start(self, client: Client, since: int, attempt: object) -> None:
        try:
            snapshot = await self.snapshot()
        finally:
            current = self._starting.get(client) is attempt
            if current:
                del self._starting[client]
        if not current or not client.open:  # unsubscribed (or gone, or subscribed anew) while we fetched
            return
        client.send_message(snapshot)
        first = self.journal.first_id()
        if since and first and since < first - 1:
            client.send_message({"type": "orders_reset", "message": "events before id "
                                 f"{first} are past retention; refetch state from the snapshot"})
        while entries := self.journal.since(since):  # no await from here to joining the live set: no gap
            for entry in entries:
                client.send(text_frame(encode(entry.to_message())))
            since = entries[-1].id
        self.subscribers.add(client)
        self._sync_tap()

    async def snapshot(self) -> dict[str, Any]:
        msg: dict[str, Any] = {"type": "orders_snapshot", "orders": [], "positions": self.positions.views(),
                               "portfolio": self.positions.portfolio(), "last_id": self.journal.last_id()}
        try:
            orders = await asyncio.wait_for(self.rest.orders(limit=50), REST_TIMEOUT)
            msg["orders"] = [sanitize_order(o) for o in orders]
        except Exception as exc:
            log.warning("orders_snapshot_failed error=%r", exc)
            msg["error"] = f"could not fetch orders from Alpaca: {type(exc).__name__}"
        return msg

    def events_since(self, since: int, limit: int = 1000) -> dict[str, Any]:
        events = [e.to_message() for e in self.journal.since(since, limit)]
        return {"events": events, "last_id": events[-1]["id"] if events else max(since, 0)}

    # --- upstream side ----------------------------------------------------------------------------------

    def on_event(self, data: dict[str, Any]) -> None:
        self.journal.set_meta(SEEN_KEY, repr(time.time()))
        self.publish(data)

    def on_state(self, connected: bool) -> None:
        """Remember when a live trading stream went away: reconciliation looks for changes since then."""
        if connected:
            self._live = True
        elif self._live:
            self._live = False
            self.journal.set_meta(SEEN_KEY, repr(time.time()))

    def on_connected(self) -> None:
        self._spawn(self.reconcile())

    def publish(self, data: dict[str, Any], reconciled: bool = False, dedupe: str | None = None) -> Entry | None:
        """Journal first, then relay. Returns None for a duplicate (nothing is relayed twice)."""
        entry = self.journal.append(sanitize(data), reconciled, dedupe)
        if entry is None:
            return None
        self.stats.order_events += 1
        log.info("order_event id=%d event=%s symbol=%s reconciled=%s", entry.id, entry.event,
                 entry.data.get("symbol"), reconciled)
        frame = text_frame(encode(entry.to_message()))
        for client in list(self.subscribers):
            client.send(frame)
        for listener in self.listeners:
            listener(entry)
        if entry.event in ("fill", "partial_fill"):
            self._apply_fill(entry.data)
        return entry

    async def reconcile(self) -> None:
        """After (re)connecting: emit what changed while the stream was down, once each, marked reconciled."""
        async with self._reconcile_lock:
            seen = self.journal.get_meta(SEEN_KEY)
            try:
                orders = await asyncio.wait_for(self.rest.orders(limit=500), REST_TIMEOUT)
                positions = await asyncio.wait_for(self.rest.positions(), REST_TIMEOUT)
            except Exception as exc:
                log.warning("reconcile_failed error=%r", exc)
                return
            if seen is None:  # first start: what exists now is the baseline, not news
                for order in orders:
                    self.journal.remember(order)
            else:
                cutoff = float(seen) - 2.0  # margin for clock skew between Alpaca and us
                for order in sorted(orders, key=lambda o: str(o.get("updated_at"))):
                    self._reconcile_order(order, cutoff)
            self.journal.set_meta(SEEN_KEY, repr(time.time()))
            self.positions.load(positions)
            self._sync_tap()
            self._push_all()

    def _reconcile_order(self, order: dict[str, Any], cutoff: float) -> None:
        updated = parse_ts(order.get("updated_at"))
        if updated is None or updated < cutoff:
            return
        status, filled, last_updated = self.journal.order_state(str(order.get("id")))
        if (status, filled) == (order.get("status"), str(order.get("filled_qty"))):
            return
        if last_updated and (parse_ts(last_updated) or 0) >= updated:
            return  # we already relayed something as new as this
        prev_filled = dec(filled) or Decimal(0)
        now_filled = dec(order.get("filled_qty")) or Decimal(0)
        event = STATUS_EVENT.get(str(order.get("status")), str(order.get("status")))
        data: dict[str, Any] = {"event": event, "order": order, "timestamp": order.get("updated_at")}
        if now_filled > prev_filled:
            data.update(qty=str(now_filled - prev_filled), price=order.get("filled_avg_price"))
        self.publish(data, reconciled=True,
                     dedupe=f"r:{order.get('id')}:{order.get('status')}:{order.get('filled_qty')}")

    # --- positions --------------------------------------------------------------------------------------

    def _apply_fill(self, data: dict[str, Any]) -> None:
        order = data.get("order") or {}
        qty, price = dec(data.get("qty")), dec(data.get("price"))
        symbol = order.get("symbol")
        if not symbol or qty is None or price is None:
            return
        self.positions.apply_fill(symbol, str(order.get("side")), qty, price, dec(data.get("position_qty")))
        self._sync_tap()
        self._push(symbol, force=True)

    def _on_trades(self, trades: list[dict[str, Any]]) -> None:
        for t in trades:
            price = dec(t.get("p"))
            if price is not None and self.positions.mark(t.get("S", ""), price):
                self._push(t["S"])

    def _push(self, symbol: str, force: bool = False) -> None:
        now = time.monotonic()
        wait = self._last_push.get(symbol, 0) + POSITION_INTERVAL - now
        if wait > 0 and not force:
            if symbol not in self._scheduled:
                self._scheduled.add(symbol)
                asyncio.get_running_loop().call_later(wait, self._push_later, symbol)
            return
        pos = self.positions.by_symbol.get(symbol)
        if pos is not None:
            self._last_push[symbol] = now
        else:
            self._last_push.pop(symbol, None)  # a closed position leaves no per-symbol state behind
        view = pos.to_dict() if pos else {"symbol": symbol, "qty": "0", "avg_entry_price": "0",
                                          "current_price": None, "market_value": 0.0, "unrealized_pl": 0.0}
        msg = {"type": "position_update", **view, "portfolio": self.positions.portfolio()}
        frame = text_frame(encode(msg))
        for client in list(self.subscribers):
            client.send(frame)
        for listener in self.position_listeners:
            listener(msg)

    def _push_later(self, symbol: str) -> None:
        self._scheduled.discard(symbol)
        self._push(symbol, force=True)

    def _push_all(self) -> None:
        for symbol in list(self.positions.by_symbol):
            self._push(symbol, force=True)

    def _sync_tap(self) -> None:
        """Hold upstream trades for held symbols while anyone watches positions, and only then."""
        want = set(self.positions.by_symbol) if self.subscribers else set()
        add, drop = want - self._tapped, self._tapped - want
        if drop:
            self.relay.unsubscribe(self._tap, [("trades", s) for s in drop])  # type: ignore[arg-type]
        if add:
            self.relay.subscribe(self._tap, [("trades", s) for s in add], _log_tap_error,  # type: ignore[arg-type]
                                 private=True)  # positions are nobody else's business: not in public status
        self._tapped = want

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self.journal.close()


def sanitize_order(order: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in order.items() if not any(w in k.lower() for w in ("secret", "token", "key_id"))}


def _log_tap_error(err: ClientError | None) -> None:
    if err is not None:
        log.warning("positions_price_subscription_failed code=%s message=%s", err.code, err.message)
