"""Fakes for unit tests of the order side's pieces (core/orders/): an order log in memory, Alpaca's trading REST
as a table of orders, a relay that records holds, and clients that record what they are sent.

``FakeLog`` keeps the real journal's contract that the pieces rely on: ids increase from 1, an append with a
dedupe key already present is ignored (None), the last known state of each order is remembered, and an epoch
names the log. Setting ``broken`` makes every call raise it, as a failing disk does."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from trade_stream.core.journal import Entry, dedupe_key
from trade_stream.core.orders.events import parse_ts

FINAL = ("filled", "canceled", "expired", "rejected", "replaced")


class FakeLog:
    def __init__(self, path: object = None, retention_days: float = 7.0, epoch: str | None = None) -> None:
        self.epoch = epoch or secrets.token_hex(6)
        self.on_entry = None
        self.on_reset = None
        self.entries: list[Entry] = []
        self.keys: set[str] = set()
        self.orders: dict[str, tuple[str | None, str | None, str | None]] = {}
        self.meta: dict[str, str] = {}
        self.broken: BaseException | None = None
        self.closed = False
        self.synced = 0
        self.dropped_before = 0  # ids up to this one are gone, as past retention

    def _ok(self) -> None:
        if self.broken is not None:
            raise self.broken

    def check(self) -> None:
        self._ok()

    def append(self, data: dict[str, Any], reconciled: bool = False, dedupe: str | None = None) -> Entry | None:
        self._ok()
        key = dedupe or dedupe_key(data)
        if key in self.keys:
            return None
        self.keys.add(key)
        self.remember(data.get("order") or {})
        entry = Entry(len(self.entries) + self.dropped_before + 1, str(data.get("event")), data, reconciled)
        self.entries.append(entry)
        return entry

    def add(self, n: int) -> None:
        """``n`` plain events, as if appended earlier."""
        for _ in range(n):
            i = self.last_id() + 1
            self.append({"event": "new", "order": {"id": f"o{i}", "status": "new", "filled_qty": "0"}})

    def remember(self, order: dict[str, Any]) -> None:
        self._ok()
        if order.get("id"):
            self.orders[order["id"]] = (order.get("status"), str(order.get("filled_qty")), order.get("updated_at"))

    def since(self, after_id: int, limit: int = 10_000) -> list[Entry]:
        self._ok()
        return [e for e in self.entries if e.id > after_id][:limit]

    def count_after(self, after_id: int, limit: int) -> int:
        self._ok()
        return min(limit, len([e for e in self.entries if e.id > after_id]))

    def last_id(self) -> int:
        self._ok()
        return self.entries[-1].id if self.entries else self.dropped_before

    def first_id(self) -> int:
        self._ok()
        return self.entries[0].id if self.entries else 0

    def order_state(self, order_id: str) -> tuple[str | None, str | None, str | None]:
        self._ok()
        return self.orders.get(order_id, (None, None, None))

    def open_orders(self) -> list[str]:
        self._ok()
        return [i for i, (status, _, _) in self.orders.items() if status not in FINAL]

    def prune(self, now: float | None = None) -> int:
        self._ok()
        return 0

    def get_meta(self, key: str) -> str | None:
        self._ok()
        return self.meta.get(key)

    def set_meta(self, key: str, value: str) -> None:
        self._ok()
        self.meta[key] = value

    async def sync(self) -> None:
        self._ok()
        self.synced += 1

    def close(self) -> None:
        self.closed = True


class Opener:
    """The writer's ``open_log``: hands out ``logs`` in turn (the last one again and again); one that is an
    exception is raised instead, as a journal that cannot be opened."""

    def __init__(self, *logs: FakeLog | BaseException) -> None:
        self.logs = list(logs)
        self.calls = 0

    def __call__(self, path: object, retention_days: float) -> FakeLog:
        item = self.logs[min(self.calls, len(self.logs) - 1)]
        self.calls += 1
        if isinstance(item, BaseException):
            raise item
        return item


class FakeRest:
    """Alpaca's trading REST over a dict of orders; ``fail`` makes every call raise it."""

    def __init__(self, orders: list[dict[str, Any]] | None = None,
                 positions: list[dict[str, Any]] | None = None) -> None:
        self.table = {o["id"]: o for o in orders or []}
        self.rows = positions or []
        self.fail: BaseException | None = None
        self.calls: list[tuple[str, Any]] = []

    def _ok(self, name: str, arg: Any = None) -> None:
        self.calls.append((name, arg))
        if self.fail is not None:
            raise self.fail

    async def orders(self, limit: int = 100) -> list[dict[str, Any]]:
        self._ok("orders", limit)
        return sorted(self.table.values(), key=lambda o: str(o.get("submitted_at")), reverse=True)[:limit]

    async def orders_submitted_since(self, since: float) -> list[dict[str, Any]]:
        self._ok("orders_submitted_since", since)
        return [dict(o) for o in self.table.values() if (parse_ts(o.get("submitted_at")) or 0) > since]

    async def order(self, order_id: str) -> dict[str, Any]:
        self._ok("order", order_id)
        if order_id not in self.table:
            raise LookupError(f"order {order_id} not found")
        return dict(self.table[order_id])

    async def positions(self) -> list[dict[str, Any]]:
        self._ok("positions")
        return list(self.rows)


class FakeRelay:
    """Records what a hub holder holds; ``subscribe`` answers at once."""

    def __init__(self) -> None:
        self.held: dict[object, set[tuple[str, str]]] = {}
        self.private: list[bool] = []

    def subscribe(self, client: object, keys: list[tuple[str, str]], reply: Any, *, private: bool = False,
                  weak: bool = False) -> None:
        self.held.setdefault(client, set()).update(keys)
        self.private.append(private)
        reply(None)

    def unsubscribe(self, client: object, keys: list[tuple[str, str]]) -> None:
        self.held.get(client, set()).difference_update(keys)


class FakeTransport:
    """A write buffer whose size is read from ``sizes`` in turn (then 0): how full the client's socket is."""

    def __init__(self, sizes: list[int] | None = None) -> None:
        self.sizes = list(sizes or [])
        self.reads = 0

    def get_write_buffer_size(self) -> int:
        self.reads += 1
        return self.sizes.pop(0) if self.sizes else 0

    def is_closing(self) -> bool:
        return False


class FakeClient:
    """A fan-out client: records frames and messages; ``cap`` and ``transport`` serve as its ``Paced``."""

    def __init__(self, cap: int = 1 << 20, transport: FakeTransport | None = None) -> None:
        self.cap = cap
        self.transport = transport or FakeTransport()
        self.open = True
        self.frames: list[tuple[bytes, int]] = []
        self.messages: list[dict[str, Any]] = []

    def send(self, frame: bytes, count: int = 1) -> bool:
        self.frames.append((frame, count))
        return True

    def send_message(self, msg: dict[str, Any]) -> None:
        self.messages.append(msg)

    def backlog(self) -> int:
        return self.transport.get_write_buffer_size()

    def closing(self) -> bool:
        return self.transport.is_closing()


class Spawned:
    """The writer's ``spawn``: real tasks, kept so a test can wait for them."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[None]] = []

    def __call__(self, coro: Any) -> None:
        self.tasks.append(asyncio.ensure_future(coro))

    async def settle(self, timeout: float = 5.0) -> None:
        while not all(t.done() for t in self.tasks):
            await asyncio.wait_for(asyncio.gather(*self.tasks), timeout)


class NoRecovery:
    """A ``spawn`` for tests of other pieces: the writer's recovery is not run, only counted."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, coro: Any) -> None:
        self.count += 1
        coro.close()
