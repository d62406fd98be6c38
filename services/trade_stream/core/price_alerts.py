"""Price alerts as a service: each user's alerts kept, their symbols held upstream, live trades evaluated, fires
stored once and told to their user.

Every node keeps every alert in memory and indexed (core/alerts.py ``Book``), and holds every armed alert's
symbol upstream through one private hub holder (the alert tap), so the symbols count against the symbol cap
like a client's, are subscribed while any alert is armed on them and released (after the linger) when the last
one fires or is deleted. Only the live trade path reaches the tap: REST snapshots and SSE replays are written to
clients directly, never through the hub, so an alert never fires on either.

Only the node that leads evaluates (on one process: always), since only it is sure to see every upstream
message; a fire is stored with ``AlertStore.fire`` (conditional on the generation that fired), and only then
notified: the notification ``price_alert`` (level ``warning``) goes through the notifier's one entry point,
scoped to the alert's user, so it reaches the bell, SSE ``alert:new``, the WebSocket ``notification``, webhooks
and the other channels by that user's preferences. Its source is the alert id and generation, so the notifier
stores it once. In a cluster the other nodes learn of the fire (and of every other change) from the store's
version, reload, and notify their own clients the same way: each node keeps its own notifications (core/engine.py
says why), and the webhook deliveries derived from them share their ids, so the leader sends each once.

A change to a user's alerts (created, deleted, re-armed, triggered) is pushed to that user's authenticated
WebSocket connections as ``{"type":"alert","op":…,"alert":{…}}``.
"""

from __future__ import annotations

import asyncio
import builtins  # the class's own ``list`` method hides the builtin in its later annotations
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol

from trade_stream.core.alert_store import ERRORS, AlertStore
from trade_stream.core.alerts import (
    ARMED,
    TRIGGERED,
    Alert,
    Book,
    Fired,
    Invalid,
    notification,
    parse_change,
    parse_new,
)
from trade_stream.core.fanout import TradeTap
from trade_stream.core.framing import text_frame
from trade_stream.core.hub import Key
from trade_stream.core.protocol import ClientError, encode
from trade_stream.core.users import User

log = logging.getLogger("trade_stream.core.price_alerts")
REFERENCE_EVERY = 300.0  # seconds between fetches of the previous close for percent_change (a new session's)

#: A symbol's reference from the REST snapshot: (last trade price, previous close), either None when unknown.
References = Callable[[list[str]], Awaitable[dict[str, tuple[float | None, float | None]]]]
#: The market's time (seconds since the epoch) and, during the regular session, when it opened (else None).
MarketTime = Callable[[], Awaitable[tuple[float, float | None]]]


class Holds(Protocol):
    """The relay as the alerts use it (core/relay.py ``Relay``)."""

    def subscribe(self, client: Any, keys: list[Key], reply: Callable[[ClientError | None], None], *,
                  private: bool = False, weak: bool = False) -> None: ...

    def unsubscribe(self, client: Any, keys: list[Key]) -> None: ...


class Leading(Protocol):
    @property
    def is_leader(self) -> bool: ...


class Notify(Protocol):
    def notify(self, fields: dict[str, Any], *, account: str | None = None, users: Any = None,
               source: str | None = None) -> dict[str, Any] | None: ...


class Connections(Protocol):
    """Who is connected as whom (core/accounts.py ``Accounts``)."""

    def clients_of(self, name: str) -> list[Any]: ...
    def user_of(self, client: Any) -> User | None: ...


def key_of(symbol: str) -> Key:
    """The hub key of a symbol's trades: crypto pairs on the crypto stream, the rest on the stock feed."""
    return ("crypto:us:trades", symbol) if "/" in symbol else ("trades", symbol)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class PriceAlerts:
    def __init__(self, store: AlertStore, relay: Holds, leadership: Leading, notifier: Notify,
                 connections: Connections, *, max_per_user: int = 100, references: References | None = None,
                 market_time: MarketTime | None = None, refresh: float = 1.0, stale_every: float = 30.0,
                 crypto_key: Callable[[str], Key] = key_of) -> None:
        self.store = store
        self.relay = relay
        self.leadership = leadership
        self.notifier = notifier
        self.connections = connections
        self.max_per_user = max_per_user
        self.references = references
        self.market_time = market_time
        self.refresh = refresh
        self.stale_every = stale_every
        self.key_of = crypto_key
        self.book = Book()
        self.alerts: dict[str, Alert] = {}  # every alert, armed or triggered
        self._tap = TradeTap(self.on_trades)
        self._tapped: set[str] = set()
        self._version = ""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writing: set[str] = set()  # ids this node is writing: a reload meanwhile leaves them to the writer
        self.fired = 0
        self.fault: str | None = None
        self.loaded = False

    # --- start and the store ------------------------------------------------------------------------------

    async def load(self) -> None:
        """Every stored alert, armed ones indexed and their symbols held."""
        self._version = await self.store.version()
        alerts = [Alert.from_record(r) for r in await self.store.load()]
        for alert in sorted(alerts, key=lambda a: a.created_at):
            self.alerts[alert.id] = alert
            if alert.state == ARMED:
                self.book.add(alert)
        self.loaded = True
        self._hold_all()
        self._spawn(self._fetch_references())

    async def run(self) -> None:
        """Load, then the background work: a shared store's changes (every ``refresh`` seconds), the ``stale``
        checks. A store that cannot be read raises: the supervisor runs it again after its backoff."""
        await self.load()
        next_stale = 0.0
        next_reference = time.monotonic() + REFERENCE_EVERY
        while True:
            if self.store.shared:
                await self._reload_if_changed()
            if time.monotonic() >= next_reference:
                next_reference = time.monotonic() + REFERENCE_EVERY
                await self._fetch_references(self.book.percent_symbols())
            if self.market_time is not None and self.book.stale and time.monotonic() >= next_stale:
                next_stale = time.monotonic() + self.stale_every
                await self._check_stale()
            await asyncio.sleep(min(self.refresh, self.stale_every))

    async def _reload_if_changed(self) -> None:
        try:
            version = await self.store.version()
            if version == self._version:
                return
            records = await self.store.load()
        except ERRORS as exc:
            self._failed(exc)
            return
        self._version = version
        self.fault = None
        self.apply_records([Alert.from_record(r) for r in records])

    def apply_records(self, stored: builtins.list[Alert]) -> None:
        """The store's alerts (another node wrote): this node's copy follows, and each change is told to its
        user; a fire another node stored is notified here too (for this node's clients and store)."""
        stored = [a for a in stored if a.id not in self._writing]
        seen = {a.id: a for a in stored}
        for alert_id in [i for i in self.alerts if i not in seen and i not in self._writing]:
            gone = self.alerts.pop(alert_id)
            self.book.remove(alert_id)
            self._tell(gone.user, "deleted", gone)
        for alert in sorted(stored, key=lambda a: a.created_at):
            mine = self.alerts.get(alert.id)
            if mine == alert:
                continue
            self.alerts[alert.id] = alert
            if alert.state == ARMED:
                if mine is None or mine.generation != alert.generation or mine.value != alert.value:
                    self.book.add(alert)
                self._tell(alert.user, "created" if mine is None else "updated", alert)
            else:
                self.book.remove(alert.id)
                if mine is not None and mine.state == ARMED and mine.generation == alert.generation:
                    self._notify(alert)
                    self._tell(alert.user, "triggered", alert)
                else:
                    self._tell(alert.user, "created" if mine is None else "updated", alert)
        self._hold_all()
        self._spawn(self._fetch_references())

    def _failed(self, exc: BaseException) -> None:
        text = f"price alert store cannot be used ({type(exc).__name__}: {exc})"[:300]
        if self.fault != text:
            log.error("price_alert_store_fault %s", text)
        self.fault = text

    # --- what users ask (REST and WebSocket) ---------------------------------------------------------------

    def list(self, user: User) -> builtins.list[dict[str, Any]]:
        mine = [a for a in self.alerts.values() if a.user == user.name]
        return [a.view() for a in sorted(mine, key=lambda a: (a.created_at, a.id))]

    async def create(self, user: User, body: Any) -> tuple[int, dict[str, Any]]:
        try:
            symbol, condition, value = parse_new(body)
        except Invalid as exc:
            return 400, _invalid(exc)
        if not self.loaded:
            return 503, {"error": "Service Unavailable", "message": "price alerts are loading; try again"}
        count = sum(1 for a in self.alerts.values() if a.user == user.name)
        if count >= self.max_per_user:
            return 409, {"error": "Conflict", "code": "alert_limit",
                         "message": f"at most {self.max_per_user} alerts per user (TRADE_STREAM_ALERTS_PER_USER); "
                                    "delete one first"}
        now = now_iso()
        alert = Alert(id=uuid.uuid4().hex[:16], user=user.name, symbol=symbol, condition=condition, value=value,
                      created_at=now, armed_at=now)
        refused = await self._hold(symbol)
        if refused is not None:
            return 409, {"error": "Conflict", "code": refused.code, "message": refused.message}
        if not await self._write(alert.id, self.store.put(alert.record())):
            self._release_unused()
            return 503, {"error": "Service Unavailable", "message": self.fault or "price alert store unavailable"}
        self._arm(alert)
        self._tell(user.name, "created", alert)
        return 201, alert.view()

    async def delete(self, user: User, alert_id: str) -> tuple[int, dict[str, Any]]:
        alert = self.alerts.get(alert_id)
        if alert is None or alert.user != user.name:  # another user's alert is no more there than a missing one
            return 404, {"error": "Not Found", "message": f"no alert {alert_id[:40]}"}
        if not await self._write(alert_id, self.store.delete(alert_id)):
            return 503, {"error": "Service Unavailable", "message": self.fault or "price alert store unavailable"}
        self.alerts.pop(alert_id, None)
        self.book.remove(alert_id)
        self._release_unused()
        self._tell(user.name, "deleted", alert)
        return 200, {"id": alert_id, "deleted": True}

    async def patch(self, user: User, alert_id: str, body: Any) -> tuple[int, dict[str, Any]]:
        """Re-arm (a new generation, a fresh reference), with the number changed when the body gives one."""
        alert = self.alerts.get(alert_id)
        if alert is None or alert.user != user.name:
            return 404, {"error": "Not Found", "message": f"no alert {alert_id[:40]}"}
        try:
            value = parse_change(alert, body)
        except Invalid as exc:
            return 400, _invalid(exc)
        refused = await self._hold(alert.symbol)
        if refused is not None:
            return 409, {"error": "Conflict", "code": refused.code, "message": refused.message}
        armed = replace(alert, value=value, state=ARMED, generation=alert.generation + 1, armed_at=now_iso(),
                        triggered_at=None, trade=None, message=None, prev_close=None)
        if not await self._write(alert_id, self.store.put(armed.record())):
            self._release_unused()
            return 503, {"error": "Service Unavailable", "message": self.fault or "price alert store unavailable"}
        self._arm(armed)
        self._tell(user.name, "updated", armed)
        return 200, armed.view()

    async def action(self, client: Any, op: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """A WebSocket ``alert`` action (core/protocol.py ``AlertAction``): the reply for this connection, or
        None when the change pushed to the user's connections (this one among them) is the answer."""
        user = self.connections.user_of(client)
        if user is None:
            return {"type": "error", "code": "unauthorized", "message": 'send {"action":"auth","token":…} first'}
        if op == "list":
            return {"type": "alerts", "alerts": self.list(user), "limit": self.max_per_user}
        alert_id = str(body.get("id", ""))
        if op == "create":
            status, payload = await self.create(user, body)
        elif op == "delete":
            status, payload = await self.delete(user, alert_id)
        else:
            status, payload = await self.patch(user, alert_id, body)
        if status < 300:
            return None
        code = payload.get("code") or {400: "invalid_alert", 404: "unknown_alert"}.get(status, "unavailable")
        out = {"type": "error", "code": code, "message": payload.get("message", "")}
        if "field" in payload:
            out["field"] = payload["field"]
        return out

    async def _write(self, alert_id: str, write: Awaitable[Any]) -> bool:
        """One write of this node's; False (the fault recorded) when the store refused it."""
        self._writing.add(alert_id)
        try:
            await write
            self.fault = None
            return True
        except ERRORS as exc:
            self._failed(exc)
            return False
        finally:
            self._writing.discard(alert_id)

    def _arm(self, alert: Alert) -> None:
        self.alerts[alert.id] = alert
        self.book.add(alert)
        self._spawn(self._fetch_references())

    # --- holding symbols upstream ----------------------------------------------------------------------------

    async def _hold(self, symbol: str) -> ClientError | None:
        """Hold ``symbol`` upstream before an alert on it is armed; the relay's refusal (symbol cap, rate) when
        it cannot."""
        if symbol in self._tapped:
            return None
        done: asyncio.Future[ClientError | None] = asyncio.get_running_loop().create_future()

        def reply(err: ClientError | None) -> None:
            if not done.done():
                done.set_result(err)

        self.relay.subscribe(self._tap, [self.key_of(symbol)], reply, private=True)
        err = await done
        if err is None:
            self._tapped.add(symbol)
        return err

    def _hold_all(self) -> None:
        """Hold what the armed alerts need, release the rest (at start, and after a reload)."""
        want = self.book.held()
        add, drop = want - self._tapped, self._tapped - want
        if drop:
            self.relay.unsubscribe(self._tap, [self.key_of(s) for s in sorted(drop)])
        if add:
            self.relay.subscribe(self._tap, [self.key_of(s) for s in sorted(add)], _log_refusal, private=True)
        self._tapped = set(want)

    def _release_unused(self) -> None:
        drop = self._tapped - self.book.held()
        if drop:
            self.relay.unsubscribe(self._tap, [self.key_of(s) for s in sorted(drop)])
            self._tapped -= drop

    # --- evaluation -----------------------------------------------------------------------------------------

    def on_trades(self, trades: builtins.list[dict[str, Any]]) -> None:
        """Live trades of held symbols (the hub's fan-out): the leader evaluates, every node keeps references."""
        leading = self.leadership.is_leader
        for t in trades:
            price = t.get("p")
            if not isinstance(price, int | float):
                continue
            fired = self.book.on_trade(str(t.get("S", "")), float(price), t.get("s"), t.get("t"), leading)
            if fired:
                self._spawn(self._store_fires(fired))

    async def _check_stale(self) -> None:
        assert self.market_time is not None
        try:
            now, open_since = await self.market_time()
        except Exception as exc:  # the market clock is Alpaca's REST: any failure there only delays the check
            log.warning("price_alert_clock_failed error=%r", exc)
            return
        if self.leadership.is_leader:
            fired = self.book.check_stale(now, open_since)
            if fired:
                await self._store_fires(fired)

    async def _store_fires(self, fired: builtins.list[Fired]) -> None:
        """Store each fire; notify only those the store took (a re-arm or another leader may have won)."""
        for f in fired:
            alert = f.alert
            try:
                won = await self.store.fire(alert.record())
            except ERRORS as exc:
                self._failed(exc)
                current = self.alerts.get(alert.id)
                if current is not None and current.state == ARMED and current.generation == alert.generation:
                    self.book.add(current)  # not stored: armed again, so the next trade can fire it
                continue
            current = self.alerts.get(alert.id)
            if not won or current is None or current.generation != alert.generation or current.state != ARMED:
                continue  # not ours, or a reload of the store applied (and notified) it first
            self.alerts[alert.id] = alert
            self._notify(alert)
            self._tell(alert.user, "triggered", alert)
        self._release_unused()

    def _notify(self, alert: Alert) -> None:
        self.fired += 1
        log.info("price_alert_fired id=%s user=%s symbol=%s condition=%s", alert.id, alert.user, alert.symbol,
                 alert.condition)
        self.notifier.notify(notification(alert), users=[alert.user],
                             source=f"price-alert:{alert.id}:{alert.generation}")

    def _tell(self, user: str, op: str, alert: Alert) -> None:
        frame = text_frame(encode({"type": "alert", "op": op, "alert": alert.view()}))
        for client in self.connections.clients_of(user):
            client.send(frame)

    async def _fetch_references(self, symbols: builtins.list[str] | None = None) -> None:
        """The REST snapshot's last trade and previous close: for what needs one (None), or ``symbols``."""
        symbols = self.book.needs_reference() if symbols is None else symbols
        if not symbols or self.references is None:
            return
        try:
            refs = await self.references(symbols)
        except Exception as exc:  # REST: the first live trade sets the reference instead
            log.warning("price_alert_reference_failed symbols=%d error=%r", len(symbols), exc)
            return
        for symbol, (last, prev_close) in refs.items():
            self.book.reference(symbol, last, prev_close)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- status and shutdown ----------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """``price_alerts`` in status: counts only (which symbols people watch is their business)."""
        triggered = sum(1 for a in self.alerts.values() if a.state == TRIGGERED)
        return {"state": "fault" if self.fault else "ok", "armed": len(self.book), "triggered": triggered,
                "symbols": len(self._tapped), "fired": self.fired, "error": self.fault,
                "evaluating": self.leadership.is_leader}

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self.store.close()


def _invalid(exc: Invalid) -> dict[str, Any]:
    return {"error": "Bad Request", "field": exc.field, "message": exc.message}


def _log_refusal(err: ClientError | None) -> None:
    if err is not None:
        log.warning("price_alert_subscription_refused code=%s message=%s", err.code, err.message)
