"""Price alerts: what a person asks to be told about a symbol, and the pure evaluation of live trades against
every armed alert. No I/O, no clock of its own (core/price_alerts.py feeds it trades and the market's time).

Conditions, on the last trade of a symbol:

- ``crosses_above`` / ``crosses_below`` ``{"price": 230}``: TradingView's "crossing up/down": the previous trade
  was on one side of the level and this one is on the level or beyond it. A cross needs a trade on the other side
  first: the reference is the symbol's last trade known when the alert is armed (the REST snapshot's, or a live
  one), and when there is none yet, the first live trade only sets it. An alert armed while the price is already
  beyond its level waits for the price to come back and cross again.
- ``percent_change`` ``{"percent": -3}``: a trade at or beyond that change against the previous close; the sign
  gives the direction (-3: down 3 % or more, 2: up 2 % or more). Waits until the previous close is known.
- ``stale`` ``{"minutes": 10}``: no trade for that long during the regular session, counted from the last trade,
  the moment the alert was first checked after arming, or the session's open, whichever is latest.

Cost per trade: alerts are indexed by symbol, and within a symbol each direction keeps its levels sorted, so a
trade finds the alerts it fires by bisection and touches no other alert (``Book.on_trade``).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from trade_stream.core.protocol import ClientError, check_symbol

#: Each condition and the field carrying its number.
FIELDS = {"crosses_above": "price", "crosses_below": "price", "percent_change": "percent", "stale": "minutes"}
CONDITIONS = tuple(FIELDS)
NUMBER_FIELDS = frozenset(FIELDS.values())
ARMED, TRIGGERED = "armed", "triggered"
MAX_PRICE = 1e9
MAX_PERCENT = 1000.0
MAX_MINUTES = 390.0  # a regular session is 6.5 hours: a longer silence can never be seen within one


class Invalid(Exception):
    """A request names a bad value: ``field`` is the one to fix."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name
        self.message = message


@dataclass(frozen=True)
class Alert:
    """One alert. ``generation`` counts its arming (a PATCH re-arms it): a fire names the generation it fired,
    so a fire and a re-arm racing in a cluster cannot both win, and the notification's source is unique."""

    id: str
    user: str
    symbol: str
    condition: str
    value: float
    state: str = ARMED
    generation: int = 1
    created_at: str = ""
    armed_at: str = ""
    triggered_at: str | None = None
    trade: dict[str, Any] | None = None  # the trade that fired it: {"price", "size", "timestamp"}
    message: str | None = None
    prev_close: float | None = None  # percent_change: the reference it fired against

    @property
    def field(self) -> str:
        return FIELDS[self.condition]

    def view(self) -> dict[str, Any]:
        """What the user sees (REST, WebSocket)."""
        out: dict[str, Any] = {"id": self.id, "symbol": self.symbol, "condition": self.condition,
                               self.field: _plain(self.value), "state": self.state, "created_at": self.created_at,
                               "armed_at": self.armed_at, "triggered_at": self.triggered_at, "trade": self.trade,
                               "message": self.message}
        if self.condition == "percent_change":
            out["prev_close"] = self.prev_close
        return out

    def record(self) -> dict[str, Any]:
        """What the store keeps: the view plus the owner and the generation."""
        return {**self.view(), "user": self.user, "generation": self.generation, "prev_close": self.prev_close}

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> Alert:
        condition = str(r["condition"])
        return cls(id=str(r["id"]), user=str(r["user"]), symbol=str(r["symbol"]), condition=condition,
                   value=float(r[FIELDS[condition]]), state=str(r["state"]), generation=int(r["generation"]),
                   created_at=str(r.get("created_at") or ""), armed_at=str(r.get("armed_at") or ""),
                   triggered_at=r.get("triggered_at"), trade=r.get("trade"), message=r.get("message"),
                   prev_close=r.get("prev_close"))


def _plain(value: float) -> float | int:
    return int(value) if value.is_integer() else value


def _number(body: dict[str, Any], name: str, condition: str) -> float:
    raw = body.get(name)
    if raw is None:
        raise Invalid(name, f"{condition} needs {name!r}, a number")
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise Invalid(name, f"{name} must be a number")
    value = float(raw)
    if name == "price" and not 0 < value <= MAX_PRICE:
        raise Invalid(name, f"price must be above 0 and at most {MAX_PRICE:.0f}")
    if name == "percent" and not (value != 0 and -100 < value <= MAX_PERCENT):
        raise Invalid(name, f"percent must be above -100, at most {MAX_PERCENT:.0f}, and not 0 (its sign is the "
                      "direction: -3 for down 3 %)")
    if name == "minutes" and not 0 < value <= MAX_MINUTES:
        raise Invalid(name, f"minutes must be above 0 and at most {MAX_MINUTES:.0f} (one regular session)")
    return value


def parse_new(body: Any) -> tuple[str, str, float]:
    """A new alert's ``(symbol, condition, number)`` from a request body; raises Invalid naming the field."""
    if not isinstance(body, dict):
        raise Invalid("body", 'send a JSON object such as {"symbol":"AAPL","condition":"crosses_above","price":230}')
    symbol = body.get("symbol")
    if not isinstance(symbol, str) or not symbol.strip():
        raise Invalid("symbol", "symbol is required, a string such as AAPL")
    checked = check_symbol(symbol)
    if isinstance(checked, ClientError):
        raise Invalid("symbol", checked.message)
    condition = body.get("condition")
    if condition not in FIELDS:
        raise Invalid("condition", f"condition must be one of {', '.join(CONDITIONS)}")
    _only(body, {"symbol", "condition", FIELDS[condition], "action", "op"}, condition)
    return checked, condition, _number(body, FIELDS[condition], condition)


def parse_change(alert: Alert, body: Any) -> float:
    """A PATCH: re-arm, optionally with a new number (the condition's own field). Returns the number."""
    if not isinstance(body, dict):
        raise Invalid("body", f'send a JSON object such as {{"state":"armed"}} or {{"{alert.field}": …}}')
    _only(body, {"state", alert.field, "id", "action", "op"}, alert.condition)
    if "state" in body and body["state"] != ARMED:
        raise Invalid("state", 'state can only be set to "armed" (re-arm); DELETE removes an alert')
    return _number(body, alert.field, alert.condition) if alert.field in body else alert.value


def _only(body: dict[str, Any], allowed: set[str], condition: str) -> None:
    for name in body:
        if name not in allowed:
            why = f"{name} does not apply to {condition}" if name in NUMBER_FIELDS else f"unknown field {name!r}"
            raise Invalid(name, why)


# --- what a fired alert says ---------------------------------------------------------------------------------


def money(value: float) -> str:
    return f"${value:,.2f}" if abs(value) >= 1 else f"${value:,.4f}"


def describe(alert: Alert, price: float | None) -> str:
    """The notification's plain sentence."""
    s = alert.symbol
    if alert.condition == "crosses_above":
        return f"{s} crossed above {money(alert.value)} at {money(price or 0)}"
    if alert.condition == "crosses_below":
        return f"{s} crossed below {money(alert.value)} at {money(price or 0)}"
    if alert.condition == "percent_change":
        prev = alert.prev_close or 0.0
        change = (price or 0) / prev * 100 - 100 if prev else 0.0
        word = "up" if change >= 0 else "down"
        return f"{s} is {word} {abs(change):.2f}% at {money(price or 0)} (previous close {money(prev)})"
    minutes = f"{_plain(alert.value)} minute" + ("" if alert.value == 1 else "s")
    last = f" (last trade {money(price)})" if price is not None else ""
    return f"{s} has not traded for {minutes} during the session{last}"


def notification(alert: Alert) -> dict[str, Any]:
    """The notifier's fields for a triggered alert (core/notifier.py ``notify``)."""
    return {"type": "price_alert", "level": "warning", "message": alert.message or describe(alert, None),
            "alert_id": alert.id, "symbol": alert.symbol, "condition": alert.condition,
            alert.field: _plain(alert.value), "trade": alert.trade, "timestamp": alert.triggered_at}


# --- the index ---------------------------------------------------------------------------------------------


@dataclass
class SymbolBook:
    """One symbol's armed alerts. ``above``/``below``: crossing levels as sorted ``(level, id)``; ``falls``/
    ``rises``: percent_change thresholds as prices; ``waiting``: percent_change alerts without a previous close."""

    last: float | None = None
    last_at: str | None = None  # the last trade's timestamp, as the trade carries it
    prev_close: float | None = None
    above: list[tuple[float, str]] = field(default_factory=list)
    below: list[tuple[float, str]] = field(default_factory=list)
    falls: list[tuple[float, str]] = field(default_factory=list)
    rises: list[tuple[float, str]] = field(default_factory=list)
    waiting: set[str] = field(default_factory=set)
    count: int = 0

    def lists(self, alert: Alert) -> list[tuple[float, str]] | None:
        if alert.condition == "crosses_above":
            return self.above
        if alert.condition == "crosses_below":
            return self.below
        if alert.condition == "percent_change" and self.prev_close:
            return self.falls if alert.value < 0 else self.rises
        return None

    def level(self, alert: Alert) -> float:
        if alert.condition == "percent_change":
            assert self.prev_close
            return self.prev_close * (1 + alert.value / 100)
        return alert.value


@dataclass(frozen=True)
class Fired:
    alert: Alert  # triggered, with its trade and message


class Book:
    """Every armed alert, indexed for the trade path. ``on_trade`` returns what fired and forgets it."""

    def __init__(self) -> None:
        self.alerts: dict[str, Alert] = {}  # armed alerts by id
        self.symbols: dict[str, SymbolBook] = {}
        self.stale: dict[str, float | None] = {}  # stale alert id -> since (market seconds), None until checked

    def __len__(self) -> int:
        return len(self.alerts)

    def held(self) -> set[str]:
        return set(self.symbols)

    def add(self, alert: Alert) -> None:
        """Arm ``alert`` (its id replaces an earlier version)."""
        self.remove(alert.id)
        book = self.symbols.setdefault(alert.symbol, SymbolBook())
        self.alerts[alert.id] = alert
        book.count += 1
        if alert.condition == "stale":
            self.stale[alert.id] = None
            return
        target = book.lists(alert)
        if target is None:
            book.waiting.add(alert.id)
        else:
            insort(target, (book.level(alert), alert.id))

    def remove(self, alert_id: str) -> Alert | None:
        alert = self.alerts.pop(alert_id, None)
        if alert is None:
            return None
        book = self.symbols[alert.symbol]
        book.count -= 1
        self.stale.pop(alert_id, None)
        book.waiting.discard(alert_id)
        target = book.lists(alert) if alert.condition != "stale" else None
        if target is not None:
            key = (book.level(alert), alert_id)
            i = bisect_left(target, key)
            if i < len(target) and target[i] == key:
                del target[i]
        if not book.count:
            del self.symbols[alert.symbol]
        return alert

    def reference(self, symbol: str, price: float | None, prev_close: float | None) -> None:
        """What a REST snapshot says of ``symbol``: its last trade (the crossing reference, unless a live trade
        set one) and the previous close (percent_change alerts waiting for it are indexed)."""
        book = self.symbols.get(symbol)
        if book is None:
            return
        if book.last is None and price is not None:
            book.last = price
        if not prev_close or prev_close == book.prev_close:
            return
        # A new session has a new previous close: every percent_change threshold of the symbol moves with it.
        percent = [a for a in (self.alerts[i] for i in self._ids_of(book)) if a.condition == "percent_change"]
        for alert in percent:
            self.remove(alert.id)
        book = self.symbols.setdefault(symbol, book)
        book.prev_close = prev_close
        for alert in percent:
            self.add(alert)

    def _ids_of(self, book: SymbolBook) -> list[str]:
        return sorted({i for _, i in (*book.falls, *book.rises)} | book.waiting)

    def percent_symbols(self) -> list[str]:
        """Symbols with percent_change alerts: their previous close changes every session."""
        return sorted(s for s, b in self.symbols.items() if b.falls or b.rises or b.waiting)

    def needs_reference(self) -> list[str]:
        """Symbols with a crossing alert and no last price, or a percent_change alert and no previous close."""
        return sorted(s for s, b in self.symbols.items() if b.waiting or (b.last is None and (b.above or b.below)))

    def on_trade(self, symbol: str, price: float, size: Any = None, timestamp: str | None = None,
                 evaluate: bool = True) -> list[Fired]:
        """One live trade. ``evaluate`` False (a node that does not lead): only the reference moves."""
        book = self.symbols.get(symbol)
        if book is None:
            return []
        last, book.last, book.last_at = book.last, price, timestamp
        if not evaluate:
            return []
        hits: list[str] = []
        if last is not None:
            if price > last and book.above:  # levels in (last, price]
                hits += _take(book.above, bisect_right(book.above, (last, "\uffff")),
                              bisect_right(book.above, (price, "\uffff")))
            elif price < last and book.below:  # levels in [price, last)
                hits += _take(book.below, bisect_left(book.below, (price, "")), bisect_left(book.below, (last, "")))
        if book.falls and price <= book.falls[-1][0]:  # thresholds at or above the price
            hits += _take(book.falls, bisect_left(book.falls, (price, "")), len(book.falls))
        if book.rises and price >= book.rises[0][0]:  # thresholds at or below the price
            hits += _take(book.rises, 0, bisect_right(book.rises, (price, "\uffff")))
        trade = {"price": price, "size": size, "timestamp": timestamp}
        return [self._fire(alert_id, price, trade, timestamp) for alert_id in hits]

    def check_stale(self, now: float, open_since: float | None) -> list[Fired]:
        """The market's time ``now`` (seconds since the epoch) and, during the regular session, when it opened
        (None: closed). A stale alert first checked here starts counting now."""
        fired = []
        for alert_id, since in list(self.stale.items()):
            if since is None:
                self.stale[alert_id] = now
                continue
            if open_since is None:
                continue
            alert = self.alerts[alert_id]
            book = self.symbols[alert.symbol]
            base = max(since, open_since, _seconds(book.last_at) or 0.0)
            if now - base >= alert.value * 60:
                trade = {"price": book.last, "size": None, "timestamp": book.last_at} if book.last else None
                fired.append(self._fire(alert_id, book.last, trade, _iso(now)))
        return fired

    def _fire(self, alert_id: str, price: float | None, trade: dict[str, Any] | None, at: str | None) -> Fired:
        alert = self.alerts[alert_id]
        prev = self.symbols[alert.symbol].prev_close if alert.condition == "percent_change" else None
        self.remove(alert_id)
        done = replace(alert, state=TRIGGERED, trade=trade, triggered_at=at, prev_close=prev or alert.prev_close)
        return Fired(replace(done, message=describe(done, price)))

    def by_user(self, user: str) -> Iterable[Alert]:
        return (a for a in self.alerts.values() if a.user == user)


def _take(levels: list[tuple[float, str]], start: int, end: int) -> list[str]:
    """The ids in ``levels[start:end]`` (removed by ``Book.remove`` when each fires)."""
    return [alert_id for _, alert_id in levels[start:end]]


def _seconds(timestamp: str | None) -> float | None:
    """An RFC 3339 timestamp (Alpaca's, nanoseconds and ``Z`` included) as seconds since the epoch."""
    if not timestamp:
        return None
    text = timestamp.replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:  # fromisoformat takes at most 6 digits of fraction
        digits = "".join(c for c in rest if c.isdigit())
        text = f"{head}.{digits[:6]}{rest[len(digits):]}"
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")
