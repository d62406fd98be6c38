"""The Broker API's books, without I/O: customer accounts, their orders and fills, account status changes and
activities, each booked as the events Alpaca streams and the rows its REST activities endpoint pages.

broker.py serves these over HTTP; this module decides what an event says and which events a query selects
(Alpaca's cursor rules), so both can be tested without a socket. Every event goes to ``on_event`` as it is
booked, which is how live listeners get it.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from .orders import Ulids, dstr
from .units import format_ts

#: path -> (stream name, ULID cursor parameter names)
STREAMS: dict[str, tuple[str, str, str]] = {
    "/v2/events/trades": ("trades", "since_id", "until_id"),
    "/v1/events/accounts/status": ("accounts", "since_ulid", "until_ulid"),
    "/v2beta1/events/activities": ("activities", "since_id", "until_id"),
    "/v1/events/nta": ("nta", "since_ulid", "until_ulid"),  # legacy non-trade activities: the same bookings
}


def parse_time(raw: str) -> float:
    """RFC 3339 or a date (``2024-01-31``: its midnight UTC), as epoch seconds; ValueError otherwise."""
    if len(raw) == 10:
        return datetime.combine(date.fromisoformat(raw), datetime.min.time(), UTC).timestamp()
    text = raw.replace("Z", "+00:00")
    if "." in text:  # at most microseconds for Python
        head, _, rest = text.partition(".")
        digits = rest[:len(rest) - len(rest.lstrip("0123456789"))]
        text = f"{head}.{digits[:6]}{rest[len(digits):]}"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError("needs a time zone")
    return parsed.timestamp()


def past_until(event: dict[str, Any], until_id: str | None, until: float | None) -> bool:
    """Whether ``event`` lies beyond a stream's end (``until_id`` or ``until``), which ends the stream."""
    if until_id is not None and event["event_id"] > until_id:
        return True
    return until is not None and parse_time(event["at"]) > until


@dataclass
class BrokerAccount:
    id: str
    number: str
    status: str = "ACTIVE"
    positions: dict[str, Decimal] = field(default_factory=dict)


class BrokerLedger:
    """Accounts, the events of every stream in order, and the REST view of fills and non-trade activities."""

    def __init__(self, seed: int | None = None, on_event: Callable[[str, dict[str, Any]], None] | None = None,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self._rng = random.Random(seed)
        self._ulids = Ulids(self._rng)
        self._clock = clock
        self.on_event = on_event
        self.accounts: dict[str, BrokerAccount] = {}
        self.events: dict[str, list[dict[str, Any]]] = {s: [] for s, _, _ in STREAMS.values()}
        self.activities: list[dict[str, Any]] = []  # the REST view: fills and non-trade activities

    def add_accounts(self, n: int) -> list[str]:
        ids = []
        for _ in range(n):
            acct = BrokerAccount(str(uuid.UUID(int=self._rng.getrandbits(128), version=4)),
                                 f"{900000000 + len(self.accounts)}")
            self.accounts[acct.id] = acct
            ids.append(acct.id)
        return ids

    def _stamp(self) -> tuple[str, str]:
        ns = self._clock()
        return format_ts(ns), self._ulids.next(ns)

    def _publish(self, stream: str, event: dict[str, Any]) -> dict[str, Any]:
        self.events[stream].append(event)
        if self.on_event is not None:
            self.on_event(stream, event)
        return event

    def fill(self, account_id: str, symbol: str = "AAPL", qty: float | str = 1, price: float | str = 100.0,
             side: str = "buy", partial_of: float | str | None = None) -> dict[str, Any]:
        """A market order for the account: ``new`` then ``fill`` (or ``partial_fill`` when ``partial_of`` gives a
        larger order quantity); returns the fill event. Also booked as a FILL activity for the REST poll."""
        if account_id not in self.accounts:
            raise ValueError(f"unknown account {account_id}")
        q, p = Decimal(str(qty)), Decimal(str(price))
        total = Decimal(str(partial_of)) if partial_of is not None else q
        at, _ = self._stamp()
        order = {"id": str(uuid.UUID(int=self._rng.getrandbits(128), version=4)), "client_order_id": uuid.uuid4().hex,
                 "symbol": symbol, "side": side, "qty": dstr(total), "type": "market", "time_in_force": "day",
                 "status": "new", "filled_qty": "0", "filled_avg_price": None, "created_at": at, "updated_at": at,
                 "submitted_at": at, "asset_class": "us_equity"}
        at, eid = self._stamp()
        self._publish("trades", {"account_id": account_id, "at": at, "event": "new", "event_id": eid,
                                 "timestamp": at, "order": dict(order)})
        return self.fill_order(account_id, order, q, p)

    def fill_order(self, account_id: str, order: dict[str, Any], qty: Decimal, price: Decimal) -> dict[str, Any]:
        acct = self.accounts[account_id]
        signed = qty if order["side"] == "buy" else -qty
        acct.positions[order["symbol"]] = acct.positions.get(order["symbol"], Decimal(0)) + signed
        filled = Decimal(order["filled_qty"]) + qty
        done = filled >= Decimal(order["qty"])
        at, eid = self._stamp()
        order.update(filled_qty=dstr(filled), filled_avg_price=dstr(price), updated_at=at,
                     status="filled" if done else "partially_filled", **({"filled_at": at} if done else {}))
        execution = str(uuid.uuid4())
        event = {"account_id": account_id, "at": at, "event": "fill" if done else "partial_fill", "event_id": eid,
                 "execution_id": execution, "order": dict(order), "price": dstr(price), "qty": dstr(qty),
                 "position_qty": dstr(acct.positions[order["symbol"]]), "timestamp": at}
        self.activities.append({
            "id": f"{at[:10].replace('-', '')}000000000::{execution}", "account_id": account_id,
            "activity_type": "FILL", "transaction_time": at, "type": event["event"], "price": dstr(price),
            "qty": dstr(qty), "side": order["side"], "symbol": order["symbol"],
            "leaves_qty": dstr(Decimal(order["qty"]) - filled), "order_id": order["id"], "cum_qty": dstr(filled),
            "order_status": order["status"]})
        return self._publish("trades", event)

    def set_status(self, account_id: str, status: str) -> dict[str, Any]:
        acct = self.accounts[account_id]
        at, eid = self._stamp()
        event = {"account_id": account_id, "account_number": acct.number, "at": at, "event_id": eid,
                 "kyc_results": None, "status_from": acct.status, "status_to": status}
        acct.status = status
        return self._publish("accounts", event)

    def dividend(self, account_id: str, symbol: str = "AAPL", per_share: float | str = "0.24",
                 qty: float | str = 10) -> dict[str, Any]:
        per, q = Decimal(str(per_share)), Decimal(str(qty))
        return self._activity(account_id, "DIV", symbol=symbol, qty=dstr(q), per_share_amount=dstr(per),
                              net_amount=dstr(per * q), description="Cash DIV @ " + dstr(per))

    def split(self, account_id: str, symbol: str = "AAPL", ratio: int = 4, qty: float | str = 10) -> dict[str, Any]:
        q = Decimal(str(qty))
        return self._activity(account_id, "SPLIT", symbol=symbol, qty=dstr(q * (ratio - 1)), net_amount="0",
                              description=f"{ratio}:1 forward split")

    def _activity(self, account_id: str, kind: str, **fields: Any) -> dict[str, Any]:
        at, eid = self._stamp()
        activity = {"id": f"{at[:10].replace('-', '')}000000000::{uuid.uuid4()}", "account_id": account_id,
                    "activity_type": kind, "date": at[:10], "status": "executed", **fields}
        self.activities.append({**activity, "transaction_time": at})
        event = self._publish("activities", {**activity, "at": at, "event_id": eid})
        nta_at, nta_eid = self._stamp()  # the legacy stream numbers its events itself
        self._publish("nta", {**activity, "at": nta_at, "event_id": nta_eid})
        return event

    def publish_raw(self, stream: str, event: dict[str, Any]) -> dict[str, Any]:
        """Send an event exactly as given (a broken or hostile upstream: any ``event_id``), live and in replays."""
        return self._publish(stream, event)

    def select(self, stream: str, q: dict[str, str], since_name: str, until_name: str
               ) -> tuple[list[dict[str, Any]] | None, str | None, float | None]:
        """The history a stream query asks for (None: no cursor, live only) and its end; ValueError for a query
        Alpaca refuses."""
        since_id, until_id = q.get(since_name), q.get(until_name)
        since = parse_time(q["since"]) if q.get("since") else None
        until = parse_time(q["until"]) if q.get("until") else None
        if since is not None and since_id is not None:
            raise ValueError(f"since and {since_name} can't be used at the same time")
        if until is not None and since is None:
            raise ValueError("since required if until specified")
        if until_id is not None and since_id is None:
            raise ValueError(f"{since_name} required if {until_name} specified")
        events = self.events[stream]
        if since_id is not None:
            history = [e for e in events if e["event_id"] > since_id]
        elif since is not None:
            history = [e for e in events if parse_time(e["at"]) > since]
        else:
            return None, until_id, until
        return history, until_id, until

    def rest_activities(self, q: dict[str, str]) -> tuple[int, Any]:
        """``GET /v1/accounts/activities`` across all accounts: ``activity_types``, ``after`` (exclusive),
        ``direction=asc``, ``page_size`` (max 100), ``page_token`` (the last id of the previous page)."""
        kinds = set(q["activity_types"].split(",")) if q.get("activity_types") else None
        after = parse_time(q["after"]) if q.get("after") else None
        size = min(100, int(q.get("page_size", "100")))
        rows = [a for a in self.activities if (kinds is None or a["activity_type"] in kinds)
                and (after is None or parse_time(a["transaction_time"]) > after)]
        token = q.get("page_token")
        if token:
            ids = [a["id"] for a in rows]
            rows = rows[ids.index(token) + 1:] if token in ids else []
        return 200, rows[:size]
