"""The ``Orders`` façade: the subscription front (auth, snapshot → replay → live with nothing lost or twice),
the fan-out of each journal entry, and how the pieces' signals reach clients — with a fake journal, REST and
relay, on a real event loop."""

import sqlite3
from pathlib import Path

import orjson
import pytest

from tests.support.orders_fakes import FakeClient, FakeLog, FakeRelay, FakeRest, Opener
from trade_stream.core.event_ids import EventId
from trade_stream.core.orders import Orders
from trade_stream.core.stats import Stats

pytestmark = pytest.mark.timeout(10)


def texts(client: FakeClient) -> list[dict]:
    """Messages in the client's frames (server text frames, unmasked; several may be joined in one write)."""
    out = []
    for data, _ in client.frames:
        while data:
            n, start = data[1] & 0x7F, 2
            if n == 126:
                n, start = int.from_bytes(data[2:4], "big"), 4
            elif n == 127:
                n, start = int.from_bytes(data[2:10], "big"), 10
            out.append(orjson.loads(data[start:start + n]))
            data = data[start + n:]
    return out


def make(log: FakeLog, rest: FakeRest | None = None, retry: float = 0.0) -> Orders:
    return Orders(Path("/state/orders.sqlite3"), rest or FakeRest(), FakeRelay(), Stats(), retry=retry,
                  account="acct", open_log=Opener(log))


async def settle(orders: Orders) -> None:
    while orders._tasks:
        for task in list(orders._tasks):
            await task


def event(name: str, oid: str = "A") -> dict:
    return {"event": name, "order": {"id": oid, "symbol": "AAPL", "side": "buy", "status": name,
                                     "filled_qty": "0"}, "timestamp": f"{oid}-{name}"}


async def test_orders_are_private_until_the_client_is_authenticated():
    orders = make(FakeLog())
    client = FakeClient()
    assert orders.subscribe(client, None).code == "unauthorized"
    orders.authed.add(client)
    assert orders.subscribe(client, None) is None
    assert orders.subscribe(client, None).code == "already_subscribed"  # also while the start is under way
    await settle(orders)
    assert client in orders.subscribers


async def test_a_returning_client_gets_the_snapshot_then_what_it_missed_then_live_events_once():
    log = FakeLog(epoch="e1")
    orders = make(log, FakeRest([{"id": "A", "status": "new", "api_key_id": "secret"}]))
    for name in ("new", "partial_fill", "fill"):
        orders.publish(event(name))
    client = FakeClient()
    orders.authed.add(client)
    orders.subscribe(client, EventId(1, "e1"))
    orders.publish(event("new", "B"))  # live while the client is starting: journaled, comes in the replay
    await settle(orders)
    orders.publish(event("fill", "B"))  # live after the join
    assert client.messages[0] == {"type": "subscribed", "channel": "orders", "account": "acct"}
    snapshot = client.messages[1]
    assert snapshot["type"] == "orders_snapshot" and snapshot["orders"] == [{"id": "A", "status": "new"}]
    assert [m["id"] for m in texts(client)] == [2, 3, 4, 5]
    assert all(m["type"] == "order_update" and m["account"] == "acct" for m in texts(client))


async def test_publish_gives_each_event_an_id_and_time_and_the_relay_conveniences():
    log = FakeLog()
    orders = make(log)
    seen = []
    orders.listeners.append(seen.append)
    entry = orders.publish(event("new"))
    assert seen == [entry] and orders.stats.order_events == 1
    data = entry.data
    assert len(data["event_id"]) == 26 and data["at"] and (data["order_id"], data["symbol"]) == ("A", "AAPL")
    assert orders.publish(event("new")) is None and len(seen) == 1  # a duplicate: relayed once


async def test_a_journal_back_in_another_epoch_resets_subscribers_and_reconciles():
    old, new = FakeLog(epoch="aaaa"), FakeLog(epoch="bbbb")
    rest = FakeRest()
    orders = Orders(Path("/state/orders.sqlite3"), rest, FakeRelay(), Stats(), retry=0.0, account="acct",
                    open_log=Opener(old, new))
    client = FakeClient()
    orders.subscribers.add(client)
    resets = []
    orders.reset_listeners.append(resets.append)
    old.broken = sqlite3.OperationalError("disk I/O error")
    assert orders.publish(event("new")) is None and orders.health()["state"] == "fault"
    await settle(orders)
    assert orders.journal is new and orders.epoch == "bbbb" and orders.health()["state"] == "ok"
    kept, reset = texts(client)  # the kept event is written and relayed first, then the reset
    assert kept["type"] == "order_update" and kept["id"] == 1
    assert reset["type"] == "orders_reset" and reset["epoch"] == "bbbb" and "recreated" in reset["message"]
    assert len(resets) == 1
    assert ("positions", None) in rest.calls  # reconciled for what could not be kept


async def test_a_shared_log_reset_reconciles_only_on_the_node_holding_the_trading_stream():
    log = FakeLog()
    rest = FakeRest()
    orders = make(log, rest)
    log.on_reset("the order log was recreated")
    await settle(orders)
    assert rest.calls == []
    orders.on_state(True)
    log.on_reset("the order log was recreated")
    await settle(orders)
    assert ("positions", None) in rest.calls


async def test_the_rest_client_can_be_swapped_for_every_piece():
    orders = make(FakeLog())
    other = FakeRest([{"id": "X", "status": "new"}])
    orders.rest = other
    assert orders.reconciler.rest is other and (await orders.snapshot())["orders"] == [{"id": "X", "status": "new"}]
