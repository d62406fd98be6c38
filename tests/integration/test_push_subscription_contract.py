"""The browsers' Web Push subscriptions (core/push_subscriptions.py) as each engine keeps them, one behaviour for
both: a single process's file, and a cluster's Redis hash mirrored on every node (the engine contract's
harnesses). Changes made on any node are seen on every node; the per-user bound holds; a gone subscription is
gone everywhere; a node that starts later has them."""

from __future__ import annotations

import base64
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.integration.test_engine_contract import Node, cluster, redis_server  # noqa: F401  (fixtures)
from tests.support.relay import wait_until

pytestmark = pytest.mark.timeout(60)
PER_USER = 2


def keys() -> tuple[str, str]:
    """A browser's (p256dh, auth), base64url."""
    point = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return (base64.urlsafe_b64encode(point).rstrip(b"=").decode(),
            base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode())


def stores_of(members):
    return [m.engine.open_push_subscriptions(m.journal.parent / "push-subscriptions.sqlite3", PER_USER)
            for m in members]


def held(store) -> dict[str, list[str]]:
    """user -> their subscriptions' endpoints, oldest first."""
    return {user: [s.endpoint for s in store.of(user)] for user in sorted({s.user for s in store})}


async def test_subscriptions_changed_on_any_node_are_the_same_on_every_node(cluster):  # noqa: F811
    stores = stores_of(await cluster.start())
    try:
        first, last = stores[0], stores[-1]
        endpoints = [f"https://push.example/{i}" for i in range(4)]
        sub, replaced = await last.add("ann", endpoints[0], *keys(), frozenset({"paper"}))
        assert replaced == [] and last.get(sub.id) == sub  # at once on the node that took it
        await wait_until(lambda: all(s.get(sub.id) == sub for s in stores), timeout=10, what="ann's on every node")
        assert all(s.get(sub.id).sees("paper") and not s.get(sub.id).sees("live") for s in stores)
        await first.add("ann", endpoints[1], *keys())
        await wait_until(lambda: all(len(s) == 2 for s in stores), timeout=10, what="ann's second everywhere")
        # Beyond the bound, the user's oldest makes room, wherever it was taken.
        newest, replaced = await last.add("ann", endpoints[2], *keys())
        assert replaced == [sub.id]
        await wait_until(lambda: all(held(s) == {"ann": endpoints[1:3]} for s in stores), timeout=10,
                         what="the oldest replaced everywhere")
        # One endpoint is one browser: posted by another user, it moves to them.
        moved, replaced = await first.add("bob", endpoints[2], *keys())
        assert moved.id == newest.id and replaced == []
        await wait_until(lambda: all(held(s) == {"ann": endpoints[1:2], "bob": endpoints[2:3]} for s in stores),
                         timeout=10, what="the endpoint moved to bob everywhere")
        assert not await last.remove("ann", endpoints[2])  # not hers any more
        assert await last.remove("bob", endpoints[2])
        gone = first.of("ann")[0].id
        assert await last.gone(gone) and not await last.gone(gone)
        assert last.removed_gone == 1
        await wait_until(lambda: all(len(s) == 0 for s in stores), timeout=10, what="every one removed everywhere")
    finally:
        for s in stores:
            s.close()


async def test_subscriptions_are_there_for_a_node_that_starts_later(cluster):  # noqa: F811
    members = await cluster.start()
    store = stores_of(members)[0]
    kept, _ = await store.add("ann", "https://push.example/kept", *keys(), frozenset({"paper"}))
    dropped, _ = await store.add("ann", "https://push.example/dropped", *keys())
    assert await store.gone(dropped.id)
    engine = members[0].engine
    if cluster.kind == "memory":  # the same process started again on its state directory
        store.close()
        later = engine.open_push_subscriptions(members[0].journal.parent / "push-subscriptions.sqlite3", PER_USER)
        stop = later.close
    else:  # another node: opened before it connects, read at connect
        other = cluster.build(Node(), "later", lambda leading: None)
        later = other.open_push_subscriptions(cluster.tmp_path / "later.sqlite3", PER_USER)
        await other.connect()
        stop = None
    try:
        assert [s for s in later] == [kept]
    finally:
        if stop is not None:
            stop()
        else:
            await other.stop()
            store.close()
