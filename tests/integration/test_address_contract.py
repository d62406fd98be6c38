"""The remembered JWT users' addresses (core/addresses.py) as each engine keeps them, one behaviour for both: a
single process's file, and a cluster's Redis hash mirrored on every node (the engine contract's harnesses)."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.test_engine_contract import cluster, redis_server  # noqa: F401  (fixtures)
from tests.support.relay import wait_until

pytestmark = pytest.mark.timeout(60)


def stores_of(members):
    return [m.engine.open_addresses(m.journal.parent / "addresses.sqlite3") for m in members]


async def test_an_address_remembered_on_any_node_is_known_on_every_node(cluster):  # noqa: F811
    stores = stores_of(await cluster.start())
    try:
        stores[-1].remember("carol", "carol@example.com", frozenset({"paper"}))
        await wait_until(lambda: all(s.address("carol") == "carol@example.com" and s.seeing("paper") == ["carol"]
                                     for s in stores), timeout=10, what="carol's address on every node")
        stores[0].remember("carol", "carol@work.example", frozenset({"live"}))  # a newer token
        await wait_until(lambda: all(s.address("carol") == "carol@work.example" and s.seeing("paper") == []
                                     and s.seeing("live") == ["carol"] for s in stores), timeout=10,
                         what="the newer address everywhere")
        assert all(len(s) == 1 and s.address("dave") is None for s in stores)
    finally:
        for s in stores:
            s.close()


async def test_addresses_are_there_for_a_store_opened_later(cluster):  # noqa: F811
    """What a node that starts later reads: the file again (one process), or the hash at connect (a cluster)."""
    members = await cluster.start()
    engine = members[0].engine
    path = members[0].journal.parent / "addresses.sqlite3"
    first = engine.open_addresses(path)
    first.remember("carol", "carol@example.com", frozenset({"paper"}))
    if cluster.kind == "memory":
        first.close()
        later = engine.open_addresses(path)
        assert later.address("carol") == "carol@example.com" and later.seeing("paper") == ["carol"]
        later.close()
        return
    from trade_stream.engines.redis_addresses import RedisAddresses

    later = RedisAddresses(engine.r, engine.keys.addresses, engine.k_ctl, 2.0, (OSError,))

    async def loaded() -> bool:
        await later.load()
        return later.address("carol") == "carol@example.com" and later.seeing("paper") == ["carol"]
    for _ in range(200):  # the first store writes in the background
        if await loaded():
            break
        await asyncio.sleep(0.05)
    assert await loaded()
    first.close()
