"""PriceAlerts (core/price_alerts.py) in process, over a real SQLite store and a store shared the way Redis is
(every write raises a version others reload on): what a user's connections are told, and when."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from trade_stream.core.alert_store import SqliteAlertStore
from trade_stream.core.price_alerts import PriceAlerts
from trade_stream.core.users import User

pytestmark = pytest.mark.timeout(10)
ALICE = User("alice", None)


class SharedSqlite(SqliteAlertStore):
    """The SQLite store announcing every write as a cluster's store does; ``during_put`` runs inside a put,
    after the row is written and before the put returns (where a Redis round trip would let the loop run)."""

    shared = True

    def __init__(self, path) -> None:
        super().__init__(path)
        self.writes = 0
        self.during_put: Any = None

    async def put(self, record: dict[str, Any]) -> None:
        await super().put(record)
        self.writes += 1
        if self.during_put is not None:
            await self.during_put()

    async def version(self) -> str:
        return str(self.writes)


class Relay:
    def subscribe(self, client, keys, reply, *, private=False, weak=False) -> None:
        reply(None)

    def unsubscribe(self, client, keys) -> None:
        pass


class Leader:
    is_leader = True


class Notifier:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def notify(self, fields, *, account=None, users=None, source=None):
        self.sent.append({"fields": fields, "users": users, "source": source})
        return fields


class Connection:
    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    def send(self, frame: bytes) -> None:
        """A WebSocket text frame as core/framing.py builds it: its header, then the JSON."""
        size = frame[1] & 0x7F
        self.frames.append(orjson.loads(frame[{126: 4, 127: 10}.get(size, 2):]))


class Connections:
    def __init__(self, client: Connection) -> None:
        self.client = client

    def clients_of(self, name: str) -> list[Any]:
        return [self.client] if name == "alice" else []

    def user_of(self, client: Any) -> User | None:
        return ALICE


async def test_a_reload_during_this_nodes_own_create_tells_the_user_once(tmp_path):
    store = SharedSqlite(tmp_path / "alerts.sqlite3")
    tab = Connection()
    alerts = PriceAlerts(store, Relay(), Leader(), Notifier(), Connections(tab))
    await alerts.load()
    store.during_put = alerts._reload_if_changed  # the refresh loop's turn comes while the put is on its way
    status, made = await alerts.create(ALICE, {"symbol": "AAPL", "condition": "crosses_above", "price": 230})
    assert status == 201
    await asyncio.sleep(0)
    assert [(f["type"], f["op"]) for f in tab.frames] == [("alert", "created")]
    assert list(alerts.book.alerts) == [made["id"]]
    store.close()
