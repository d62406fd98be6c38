"""Cluster mode: several daemons on one real ``redis-server`` share one Alpaca session (the simulator refuses a
second one, as Alpaca does, and every test asserts it never had to)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest

from tests.support.redis_server import REDIS_SERVER, Proxy, RedisServer, Sentinel
from tests.support.relay import KEY, SECRET, TOKEN, Browser, http_get, relay_config, running, wait_until
from trade_stream.app import App
from trade_stream.core.event_ids import parse

pytestmark = [pytest.mark.timeout(90),
              pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server not installed (tests/run.sh installs it)")]
DATA, TRADING = "/v2/iex", "/stream"
LEASE = 1.0


def node_config(sim: Any, tmp_path: Path, url: str, name: str, **overrides: Any) -> Any:
    return relay_config(sim, tmp_path / name, redis_url=url, node_id=name, cluster_lease=LEASE, **overrides)


@contextlib.asynccontextmanager
async def cluster(sim: Any, tmp_path: Path, urls: list[str], **overrides: Any) -> AsyncIterator[list[App]]:
    async with contextlib.AsyncExitStack() as stack:
        apps = [await stack.enter_async_context(running(node_config(sim, tmp_path, url, f"node{i}", **overrides)))
                for i, url in enumerate(urls)]
        await wait_until(lambda: leader(apps) is not None and sim.sessions(DATA) == 1 and listening(sim) == 1,
                         timeout=15, what="one leader holding both streams")
        yield apps


def listening(sim: Any) -> int:
    """Trading sessions listening to ``trade_updates``: an order placed before its listen is answered reaches
    nobody, as on Alpaca, so tests place orders only after this count is reached."""
    return sum("trade_updates" in streams for streams in sim.state()["listening"].values())

def leader(apps: list[App]) -> App | None:
    leading = [a for a in apps if a.engine is not None and a.engine.is_leader]
    assert len(leading) <= 1, [a.cfg.node_id for a in leading]
    return leading[0] if leading else None


def upstream_symbols(sim: Any) -> set[str]:
    return set(sim.subscriptions(DATA).get("trades", []))


async def trade_reaches(browser: Browser, sim: Any, symbol: str, price: float) -> None:
    """Inject trades until one at ``price`` reaches ``browser`` (the subscription may still be on its way)."""
    async def attempt() -> bool:
        sim.inject_trade(symbol, price, 1)
        with contextlib.suppress(AssertionError, TimeoutError):
            await browser.expect(lambda m: m.get("type") == "trade" and m["symbol"] == symbol
                                 and m["data"]["price"] == price, timeout=0.3)
            return True
        return False

    for _ in range(40):
        if await attempt():
            return
    raise AssertionError(f"no {symbol} trade at {price} reached the client")


def daemon_env(state: Path, sim: Any, redis_server: RedisServer, name: str, **extra: str) -> dict[str, str]:
    """The environment of one cluster node run as a daemon process against ``sim`` and ``redis_server``."""
    from tests.integration.test_ops import clean_env

    return clean_env(state, ALPACA_API_KEY=KEY, ALPACA_SECRET_KEY=SECRET, ALPACA_BASE_URL=sim.http_url,
                     ALPACA_DATA_URL=sim.http_url, ALPACA_DATA_STREAM_URL=f"{sim.ws_url}/v2/iex",
                     ALPACA_TRADING_STREAM_URL=f"{sim.ws_url}/stream", TRADE_STREAM_HOST="127.0.0.1",
                     TRADE_STREAM_PORT="0", TRADE_STREAM_TOKEN=TOKEN, TRADE_STREAM_REDIS_URL=redis_server.url,
                     TRADE_STREAM_NODE_ID=name, TRADE_STREAM_CLUSTER_LEASE=str(LEASE),
                     TRADE_STREAM_PING_INTERVAL="0", **extra)


async def stop_all(procs: Iterable[Any]) -> None:
    """SIGTERM every daemon (a test_ops ``Proc``) still running, then wait for each (10 s at most)."""
    procs = list(procs)
    for proc in procs:
        if proc.popen.poll() is None:
            proc.popen.send_signal(signal.SIGTERM)
    for proc in procs:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(proc.popen.wait, 10)


async def test_three_nodes_share_one_upstream_session(sim, tmp_path, redis_server):
    async with cluster(sim, tmp_path, [redis_server.url] * 3) as apps:
        first = leader(apps)
        await wait_until(lambda: all(len(a.status()["cluster"]["nodes"]) == 3 for a in apps), what="3 nodes seen")
        views = [a.status()["cluster"] for a in apps]
        assert {v["leader"] for v in views} == {first.cfg.node_id}
        assert [v["node_id"] for v in views] == ["node0", "node1", "node2"]
        assert all(v["redis"] == "up" for v in views)

        async with Browser.connect(apps[0].port) as a0, Browser.connect(apps[1].port) as b1, \
                Browser.connect(apps[2].port) as a2:
            await a0.send({"action": "subscribe", "symbol": "AAPL"})
            await b1.send({"action": "subscribe", "symbol": "MSFT"})
            await a2.send({"action": "subscribe", "symbol": "AAPL"})
            for browser in (a0, b1, a2):
                await browser.expect("subscribed")
            await wait_until(lambda: upstream_symbols(sim) == {"AAPL", "MSFT"}, what="the union held upstream")
            await trade_reaches(a0, sim, "AAPL", 101.0)
            await trade_reaches(a2, sim, "AAPL", 101.5)
            await trade_reaches(b1, sim, "MSFT", 202.0)
            assert not [m for m in a0.seen if m.get("symbol") == "MSFT"]  # a node gets only what it holds

            # The last holder of MSFT (on node1) leaves: upstream lets it go.
            await b1.send({"action": "unsubscribe", "symbol": "MSFT"})
            await wait_until(lambda: upstream_symbols(sim) == {"AAPL"}, what="MSFT released upstream")
            # One of two AAPL holders leaves: node2 still holds it, so upstream keeps it.
            await a0.send({"action": "unsubscribe", "symbol": "AAPL"})
            await wait_until(lambda: ("trades", "AAPL") not in apps[0].relay.hub.wanted(), what="node0 let go")
            await wait_until(lambda: apps[0].engine._written == set(), what="node0's interest written")
            await asyncio.sleep(LEASE)  # several of the leader's interest rounds
            assert upstream_symbols(sim) == {"AAPL"}
            await trade_reaches(a2, sim, "AAPL", 103.0)
            await a2.send({"action": "unsubscribe", "symbol": "AAPL"})
            await wait_until(lambda: upstream_symbols(sim) == set(), what="AAPL released once nobody holds it")

            # Orders: a fill reaches the authenticated clients on every node, with the same id.
            for browser in (a0, b1, a2):
                await browser.send({"action": "auth", "token": TOKEN})
                await browser.expect("authenticated")
                await browser.send({"action": "subscribe", "channel": "orders"})
                await browser.expect("orders_snapshot")
            order = sim.submit_order("AAPL", "buy", 5, "limit", 100)
            sim.fill_order(order["id"], price=99.0)
            fills = [await b.expect(lambda m: m.get("type") == "order_update" and m["event"] == "fill")
                     for b in (a0, b1, a2)]
            assert len({f["id"] for f in fills}) == 1 and fills[0]["data"]["order_id"] == order["id"]
            news = [m["id"] for b in (a0, b1, a2) for m in b.of_type("order_update") if m["event"] == "new"]
            assert len(set(news)) == 1 and len(news) == 3
            # REST on another node answers with the same ids and epoch.
            epochs = {a.accounts.orders["default"].epoch for a in apps}
            assert len(epochs) == 1
            status, body = apps[2].accounts.orders["default"].events_since(parse(f"{epochs.pop()}-0"))
            assert status == 200 and [e["id"] for e in body["events"]][-1] == fills[0]["id"]
        assert sim.session_refusals == 0


async def test_cluster_symbol_cap_is_cluster_wide_and_refusals_reach_the_asking_node(sim, tmp_path, redis_server):
    async with cluster(sim, tmp_path, [redis_server.url] * 2, max_symbols=1) as apps:
        async with Browser.connect(apps[0].port) as a, Browser.connect(apps[1].port) as b:
            await a.send({"action": "subscribe", "symbol": "AAPL"})
            await a.expect("subscribed")
            await wait_until(lambda: upstream_symbols(sim) == {"AAPL"}, what="AAPL held")
            await b.send({"action": "subscribe", "symbol": "MSFT"})
            error = await b.expect(lambda m: m.get("type") == "error" and m.get("symbol") == "MSFT", timeout=10)
            assert error["code"] == "symbol_limit"
            await trade_reaches(a, sim, "AAPL", 55.0)
            assert upstream_symbols(sim) == {"AAPL"}
        assert sim.session_refusals == 0


async def test_the_per_user_limit_counts_per_node_and_closes_the_oldest_on_the_node_reached(sim, tmp_path,
                                                                                              redis_server):
    """Each node counts its own connections of a user: with a limit of 2, two on node0 and two on node1 all stay;
    a third on node1 closes node1's oldest, and node0's are untouched, older though they are."""
    async with cluster(sim, tmp_path, [redis_server.url] * 2, max_connections_per_user=2) as apps, \
            contextlib.AsyncExitStack() as stack:
        conns: list[list[Browser]] = [[], []]
        for node in (0, 0, 1, 1, 1):
            c = await stack.enter_async_context(Browser.connect(apps[node].port))
            await c.send({"action": "auth", "token": TOKEN})
            await c.expect("authenticated")
            conns[node].append(c)
        assert (await conns[1][0].expect("warning"))["code"] == "connection_limit"
        for c in [*conns[0], *conns[1][1:]]:
            await c.send({"action": "ping"})
            await c.expect("pong")
            assert not c.of_type("warning")
        assert [a.identity.sessions.counts() for a in apps] == [[2], [2]]


async def test_a_node_cut_off_from_redis_and_a_redis_restart(sim, tmp_path, redis_server):
    proxy = Proxy(redis_server.port)
    await proxy.start()
    try:
        # node0 reaches Redis through the proxy; node1 directly. Make node0 the leader first.
        async with running(node_config(sim, tmp_path, proxy.url, "node0")) as n0:
            await wait_until(lambda: n0.engine.is_leader and sim.sessions(DATA) == 1, timeout=10, what="node0 leads")
            async with running(node_config(sim, tmp_path, redis_server.url, "node1")) as n1, \
                    Browser.connect(n0.port) as c0, Browser.connect(n1.port) as c1:
                for browser in (c0, c1):
                    await browser.send({"action": "subscribe", "symbol": "AAPL"})
                    await browser.expect("subscribed")
                await trade_reaches(c0, sim, "AAPL", 10.0)
                await trade_reaches(c1, sim, "AAPL", 10.5)

                proxy.cut()  # the leader loses Redis: it fences itself, node1 takes over
                await wait_until(lambda: n1.engine.is_leader and not n0.engine.is_leader, timeout=15,
                                 what="node1 takes over")
                await wait_until(lambda: n0.status()["cluster"]["redis"] == "down", what="node0 reports redis down")
                await c0.expect(lambda m: m.get("type") == "status" and m["upstream"]["state"] != "connected")
                await trade_reaches(c1, sim, "AAPL", 11.0)
                proxy.heal()
                await wait_until(lambda: n0.status()["cluster"]["redis"] == "up", timeout=15, what="node0 back")
                await trade_reaches(c0, sim, "AAPL", 12.0)  # the client stayed connected all along

                redis_server.stop()
                await wait_until(lambda: all(a.status()["cluster"]["redis"] == "down" for a in (n0, n1)),
                                 timeout=15, what="both see redis down")
                await c1.expect(lambda m: m.get("type") == "status" and m["upstream"]["state"] != "connected")
                redis_server.start()
                await wait_until(lambda: leader([n0, n1]) is not None and sim.sessions(DATA) == 1, timeout=20,
                                 what="a leader again")
                await trade_reaches(c0, sim, "AAPL", 13.0)
                await trade_reaches(c1, sim, "AAPL", 13.5)
                assert sim.sessions(DATA) == 1 and sim.sessions(TRADING) <= 1
        assert sim.session_refusals == 0
    finally:
        await proxy.close()


async def test_unreachable_redis_at_start_is_a_config_error(sim, tmp_path):
    from tests.support.relay import free_port
    from trade_stream.core.engine import EngineUnavailable

    app = App(node_config(sim, tmp_path, f"redis://127.0.0.1:{free_port()}/0", "lonely"))
    with pytest.raises(EngineUnavailable, match=r"TRADE_STREAM_REDIS_URL=redis://127\.0\.0\.1"):
        await app.start()
    await app.stop()


async def test_sigkill_the_leader_during_a_burst_of_fills(sim, tmp_path, redis_server):
    """Real daemons: the leader dies mid-burst; a survivor takes over, reconciles over REST, and every order's
    lifecycle (``new``, then ``fill``) reaches every surviving client exactly once, also for orders made while
    no node held the trading stream."""
    from tests.integration.test_ops import TS, Proc, empty_env_file

    env_file = empty_env_file(tmp_path)
    procs: dict[str, Proc] = {}
    try:
        for i in range(3):
            name = f"node{i}"
            env = daemon_env(tmp_path / name, sim, redis_server, name)
            procs[name] = Proc([str(TS), "--env-file", env_file], cwd=tmp_path, env=env)
        ports = {name: await asyncio.to_thread(p.port) for name, p in procs.items()}
        await wait_until(lambda: sim.sessions(DATA) == 1 and listening(sim) == 1, timeout=20,
                         what="one leader holding both streams")
        async with contextlib.AsyncExitStack() as stack:
            clients = {n: await stack.enter_async_context(Browser.connect(port)) for n, port in ports.items()}
            for browser in clients.values():
                await browser.send({"action": "subscribe", "symbol": "AAPL"})
                await browser.send({"action": "auth", "token": TOKEN})
                await browser.send({"action": "subscribe", "channel": "orders"})
                await browser.expect("orders_snapshot")
            status = await wait_until(lambda: (s := http_get(ports["node0"], "/api/stream/status")[1])["cluster"]
                                      ["nodes"] == sorted(procs) and s, what="every node seen")
            lead = status["cluster"]["leader"]
            assert lead in procs
            orders = [sim.submit_order("AAPL", "buy", 1, "limit", 100) for _ in range(10)]
            for order in orders[:5]:
                sim.fill_order(order["id"], price=99.0)
            await clients["node0"].expect(lambda m: m.get("type") == "order_update" and m["event"] == "fill")
            procs[lead].popen.send_signal(signal.SIGKILL)  # mid-burst: some fills may never be journaled by it
            procs[lead].popen.wait(10)
            for order in orders[5:]:
                sim.fill_order(order["id"], price=98.0)
            gap = [sim.submit_order("AAPL", "buy", 1, "limit", 100) for _ in range(5)]  # nobody holds the stream
            for order in gap:
                sim.fill_order(order["id"], price=97.0)
            orders += gap
            survivors = [n for n in procs if n != lead]
            wanted = {o["id"] for o in orders}
            for name in survivors:
                browser = clients[name]

                def filled(b: Browser = browser) -> set[str]:
                    return {m["data"]["order_id"] for m in b.of_type("order_update") if m["event"] == "fill"}

                while filled() != wanted:
                    await browser.expect(lambda m: m.get("type") == "order_update", timeout=20)
                fills = [m for m in browser.of_type("order_update") if m["event"] == "fill"]
                assert len(fills) == len(wanted), [(m["id"], m["data"]["order_id"], m["reconciled"]) for m in fills]
                # Every order's whole lifecycle, once each and in order, also for the orders made in the gap,
                # whose ``new`` only REST reconciliation could recover.
                events = {o["id"]: [m["event"] for m in browser.of_type("order_update")
                                    if m["data"]["order_id"] == o["id"]] for o in orders}
                assert all(e == ["new", "fill"] for e in events.values()), events
                assert all(m["reconciled"] for m in browser.of_type("order_update")
                           if m["data"]["order_id"] in {o["id"] for o in gap})
            ids = [sorted(m["id"] for m in clients[n].of_type("order_update")) for n in survivors]
            assert ids[0] == ids[1]  # the same ids on every node
            await trade_reaches(clients[survivors[0]], sim, "AAPL", 77.0)
            await trade_reaches(clients[survivors[1]], sim, "AAPL", 77.5)
        assert sim.session_refusals == 0
    finally:
        await stop_all(procs.values())


async def test_check_says_which_node_leads(sim, tmp_path, redis_server):
    from trade_stream.ops.check import run as check_run

    lines: list[str] = []
    async with cluster(sim, tmp_path, [redis_server.url] * 2) as apps:
        cfg = node_config(sim, tmp_path, redis_server.url, "checker")
        assert await check_run(cfg, "AAPL", 0.0, 5.0, lines.append) == 0
        lead = leader(apps).cfg.node_id
    assert any(line.startswith("OK   cluster:") and f"leader {lead}" in line for line in lines), lines
    assert sim.session_refusals == 0


async def test_crypto_and_news_sources_are_held_by_the_leader_and_reach_clients_on_every_node(sim, tmp_path,
                                                                                                redis_server):
    crypto, news = "/v1beta3/crypto/us", "/v1beta1/news"
    async with cluster(sim, tmp_path, [redis_server.url] * 2) as apps:
        follower = next(a for a in apps if a is not leader(apps))
        async with Browser.connect(follower.port) as browser:
            await browser.send({"action": "subscribe", "symbols": ["BTC/USD"], "channels": ["trades"]})
            await browser.expect("subscribed")
            await browser.send({"action": "subscribe", "channel": "news", "symbols": ["AAPL"]})
            await browser.expect(lambda m: m.get("type") == "subscribed" and m.get("channels") == ["news"])
            # One connection per source, opened by the leader for the follower's client.
            await wait_until(lambda: sim.subscriptions(crypto).get("trades") == ["BTC/USD"], timeout=10,
                             what="the leader subscribed the pair upstream")
            await wait_until(lambda: sim.subscriptions(news).get("news") == ["AAPL"], timeout=10,
                             what="the leader subscribed the news upstream")
            assert sim.sessions(crypto) == 1 and sim.sessions(news) == 1

            async def crypto_trade_reaches(price: float) -> None:
                for _ in range(40):
                    sim.inject_trade("BTC/USD", price, 1, path=crypto)
                    with contextlib.suppress(AssertionError, TimeoutError):
                        await browser.expect(lambda m: m.get("type") == "trade" and m["symbol"] == "BTC/USD"
                                             and m["data"]["price"] == price, timeout=0.3)
                        return
                raise AssertionError("no BTC/USD trade reached the follower's client")

            await crypto_trade_reaches(65000.5)
            for _ in range(40):
                sim.inject_news(["AAPL"], headline="Cluster headline")
                with contextlib.suppress(AssertionError, TimeoutError):
                    await browser.expect(lambda m: m.get("type") == "news"
                                         and m["data"]["headline"] == "Cluster headline", timeout=0.3)
                    break
            else:
                raise AssertionError("no news reached the follower's client")
        assert sim.session_refusals == 0


async def test_each_account_has_its_own_shared_order_log_and_trading_session(tmp_path, redis_server):
    from tests.integration.test_accounts import KEYS, accounts_file
    from trade_stream.simulator import SimConfig, Simulator

    async with Simulator(SimConfig(host="127.0.0.1", port=0, accounts=dict(KEYS.values()),
                                   rate_per_symbol=0.0)) as sim:
        accounts = accounts_file(sim, tmp_path)
        overrides = {"accounts": accounts, "api_key": KEYS["paper"][0], "secret_key": KEYS["paper"][1]}
        async with contextlib.AsyncExitStack() as stack:
            apps = [await stack.enter_async_context(running(node_config(sim, tmp_path, redis_server.url, f"n{i}",
                                                                        **overrides))) for i in range(2)]
            # One trading session per account, all held by the leader.
            await wait_until(lambda: leader(apps) is not None and listening(sim) == 2, timeout=15,
                             what="the leader holding both accounts' trading streams")
            follower = next(a for a in apps if a is not leader(apps))
            sim.submit_order("AAPL", "buy", 1, key=KEYS["paper"][0])
            sim.submit_order("MSFT", "buy", 2, key=KEYS["live"][0])
            sim.submit_order("TSLA", "buy", 3, key=KEYS["live"][0])

            def logged(app: App) -> dict[str, list[str]]:
                return {o.account: [e.data.get("symbol") for e in o.journal.since(0)] for o in app.accounts}

            await wait_until(lambda: logged(follower) == {"paper": ["AAPL"], "live": ["MSFT", "TSLA"]},
                             timeout=10, what="each account's events in its own log on the follower")
            by_account = {o.account: o for o in follower.accounts}
            assert [e.id for e in by_account["live"].journal.since(0)] == [1, 2]  # ids per account
            assert by_account["paper"].epoch != by_account["live"].epoch
            assert sim.session_refusals == 0


async def orders_on(port: int, stack: contextlib.AsyncExitStack, since: str | None = None) -> Browser:
    """An authenticated client on ``port`` subscribed to orders (resuming after ``since``), snapshot read."""
    browser = await stack.enter_async_context(Browser.connect(port))
    await browser.send({"action": "auth", "token": TOKEN})
    await browser.expect("authenticated")
    await browser.send({"action": "subscribe", "channel": "orders", **({"since": since} if since else {})})
    await browser.expect("orders_snapshot")
    return browser


async def fill_reaches(clients: list[Browser], sim: Any, price: float) -> list[dict[str, Any]]:
    order = sim.submit_order("AAPL", "buy", 1, "limit", 100)
    sim.fill_order(order["id"], price=price)
    return [await c.expect(lambda m: m.get("type") == "order_update" and m["event"] == "fill"
                           and m["data"]["order_id"] == order["id"], timeout=15) for c in clients]


async def test_redis_restart_without_persistence_resets_the_order_log_on_every_node(sim, tmp_path):
    """Redis comes back empty: a new epoch, ids from 1. Every running node notices, tells its clients
    ``orders_reset``, relays the new log's events, and a client resuming with an old id is told to refetch."""
    redis = RedisServer(tmp_path / "volatile", persist=False)
    redis.start()
    try:
        async with cluster(sim, tmp_path, [redis.url] * 2) as apps, contextlib.AsyncExitStack() as stack:
            clients = [await orders_on(a.port, stack) for a in apps]
            before = await fill_reaches(clients, sim, 99.0)
            old_epoch = apps[0].accounts.orders["default"].epoch
            old_id = f"{old_epoch}-{before[0]['id']}"  # the position a client keeps (SSE ids, REST cursors)

            redis.stop()
            redis.start()  # same port, nothing kept
            resets = [await c.expect("orders_reset", timeout=20) for c in clients]
            new_epoch = resets[0]["epoch"]
            assert new_epoch != old_epoch and {r["epoch"] for r in resets} == {new_epoch}
            await wait_until(lambda: {a.accounts.orders["default"].epoch for a in apps} == {new_epoch},
                             what="every node on the new epoch")
            await wait_until(lambda: leader(apps) is not None and listening(sim) == 1, timeout=20,
                             what="a leader again")
            after = await fill_reaches(clients, sim, 98.0)
            assert len({f["id"] for f in after}) == 1  # the same id on both nodes, in the new log
            assert after[0]["id"] in [e.id for e in apps[1].accounts.orders["default"].journal.since(0)]

            late = await stack.enter_async_context(Browser.connect(apps[1].port))
            await late.send({"action": "auth", "token": TOKEN})
            await late.expect("authenticated")
            await late.send({"action": "subscribe", "channel": "orders", "since": old_id})
            reset = await late.expect("orders_reset", timeout=10)
            assert reset["epoch"] == new_epoch
        assert sim.session_refusals == 0
    finally:
        redis.stop()


async def test_sse_last_event_id_and_rest_since_resume_on_another_node(sim, tmp_path, redis_server):
    """Over real HTTP: a client reads order events from node0's SSE port, reconnects to node1 with its last id
    and gets exactly the rest; REST ``/api/orders/events?since=`` on node1 continues node0's cursor."""
    from tests.support.relay import free_port
    from tests.support.sse import sse_get

    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with contextlib.AsyncExitStack() as stack:
        n0, n1 = apps = [await stack.enter_async_context(running(node_config(
            sim, tmp_path, redis_server.url, f"node{i}", sse_port=free_port()))) for i in range(2)]
        await wait_until(lambda: leader(apps) is not None and listening(sim) == 1, timeout=15,
                         what="a leader holding the trading stream")
        async with sse_get(n0.sse.port, "/api/stream/orders?format=legacy", auth) as r:
            await r.until("connected")
            first = [sim.submit_order("AAPL", "buy", 1, "limit", 100)["id"] for _ in range(3)]
            seen = [await r.until("order_update", timeout=10) for _ in range(3)]
        assert [e.json()["data"]["order_id"] for e in seen] == first
        last = seen[-1].id
        assert last is not None and last.startswith(f"{n0.accounts.orders['default'].epoch}-")
        status, page = await asyncio.to_thread(http_get, n0.port, "/api/orders/events?since=0", TOKEN)
        assert status == 200 and [e["data"]["order_id"] for e in page["events"]] == first

        rest = [sim.submit_order("MSFT", "buy", 1, "limit", 100)["id"] for _ in range(2)]  # while it is away
        async with sse_get(n1.sse.port, "/api/stream/orders?format=legacy", {**auth, "Last-Event-ID": last}) as r:
            resumed = [await r.until("order_update", timeout=10) for _ in range(2)]
            assert [e.json()["data"]["order_id"] for e in resumed] == rest
            with pytest.raises(TimeoutError):
                await r.until("order_update", timeout=0.5)  # nothing twice
            assert [int(e.id.rsplit("-", 1)[1]) for e in resumed] == [int(last.rsplit("-", 1)[1]) + 1 + i
                                                                       for i in range(2)]
        status, more = await asyncio.to_thread(http_get, n1.port, f"/api/orders/events?since={page['cursor']}",
                                               TOKEN)
        assert status == 200 and not more["reset"]
        assert [e["data"]["order_id"] for e in more["events"]] == rest
        assert more["cursor"].startswith(f"{n0.accounts.orders['default'].epoch}-")
        status, none = await asyncio.to_thread(http_get, n0.port, f"/api/orders/events?since={more['cursor']}",
                                               TOKEN)
        assert status == 200 and none["events"] == [] and not none["reset"]
    assert sim.session_refusals == 0


async def test_redis_url_with_a_password(sim, tmp_path):
    """``redis://:PASSWORD@host`` joins a Redis with ``requirepass``; a wrong password is a start-up error."""
    from trade_stream.core.engine import EngineUnavailable

    redis = RedisServer(tmp_path / "locked", password="s3cret-pw")
    redis.start()
    try:
        async with cluster(sim, tmp_path, [redis.url] * 2) as apps, Browser.connect(apps[1].port) as browser:
            assert all(a.status()["cluster"]["redis"] == "up" for a in apps)
            await browser.send({"action": "subscribe", "symbol": "AAPL"})
            await browser.expect("subscribed")
            await trade_reaches(browser, sim, "AAPL", 42.0)
            assert "s3cret-pw" not in str(apps[0].status())
        wrong = App(node_config(sim, tmp_path, redis.url.replace("s3cret-pw", "wrong"), "intruder"))
        with pytest.raises(EngineUnavailable, match="TRADE_STREAM_REDIS_URL=") as info:
            await wrong.start()
        await wrong.stop()
        assert "wrong" not in str(info.value)
        assert sim.session_refusals == 0
    finally:
        redis.stop()


async def test_after_a_flushall_the_next_leader_waits_out_the_lease_and_never_meets_a_406(sim, tmp_path,
                                                                                          redis_server):
    """FLUSHALL takes the lease from under a running leader. The ordering that hurts: the follower's ``SET NX``
    lands before the leader's next renewal (the leader's link to Redis is held back here to make that ordering
    certain). The follower holds the lease, but opens no session until the old leader has provably stopped: it
    stops at once when its renewal finds the lease gone, no second session is ever refused, never two leaders."""
    import redis.asyncio as aioredis

    proxy = Proxy(redis_server.port)
    await proxy.start()
    r = aioredis.Redis.from_url(redis_server.url)
    try:
        async with contextlib.AsyncExitStack() as stack:
            first = await stack.enter_async_context(running(node_config(sim, tmp_path, proxy.url, "node0")))
            await wait_until(lambda: first.engine.is_leader and sim.sessions(DATA) == 1 and listening(sim) == 1,
                             timeout=15, what="node0 leading with both streams")
            second = await stack.enter_async_context(running(node_config(sim, tmp_path, redis_server.url, "node1")))
            apps = [first, second]
            async with Browser.connect(second.port) as browser:
                await browser.send({"action": "subscribe", "symbol": "AAPL"})
                await browser.expect("subscribed")
                await trade_reaches(browser, sim, "AAPL", 10.0)

                proxy.hold()
                await r.flushall()
                for _ in range(300):  # the follower's next lease round (a third of the lease) takes the lease
                    if await r.get("trade-stream:leader") == b"node1":
                        break
                    await asyncio.sleep(0.01)
                else:
                    raise AssertionError("node1 never took the flushed lease")
                # While node0 still holds its sessions, node1 must not open its own: give it the chance to.
                with contextlib.suppress(AssertionError):
                    await wait_until(lambda: sim.session_refusals or sim.sessions(DATA) > 1, timeout=0.5,
                                     what="a second session")
                assert leader(apps) is first and sim.session_refusals == 0 and sim.sessions(DATA) == 1
                proxy.release()

                await wait_until(lambda: leader(apps) is second and sim.sessions(DATA) == 1
                                 and listening(sim) == 1, timeout=15, what="node1 leading with both streams")
                assert not first.engine.is_leader
                await trade_reaches(browser, sim, "AAPL", 11.0)
        assert sim.session_refusals == 0
    finally:
        await r.aclose()
        await proxy.close()


async def test_a_leader_stopped_cleanly_hands_over_without_the_wait(sim, tmp_path, redis_server, caplog):
    """A leader that stops closes its sessions, then releases the lease with a handover mark: the next node
    leads at once, without the lease-long wait a flushed or expired lease needs, and without a 406."""
    caplog.set_level("INFO", logger="trade_stream.engines.redis")
    async with running(node_config(sim, tmp_path, redis_server.url, "node0")) as first:
        await wait_until(lambda: first.engine.is_leader and sim.sessions(DATA) == 1, timeout=15, what="node0 leads")
        assert [r for r in caplog.records if "cluster_lease_claimed node=node0" in r.getMessage()]  # it waited
        async with running(node_config(sim, tmp_path, redis_server.url, "node1")) as second:
            await wait_until(lambda: len(second.status()["cluster"]["nodes"]) == 2, what="both nodes seen")
            await first.stop()
            await wait_until(lambda: second.engine.is_leader and sim.sessions(DATA) == 1 and listening(sim) == 1,
                             timeout=15, what="node1 leading with both streams")
    messages = [r.getMessage() for r in caplog.records]
    assert any("cluster_leadership_gained node=node1" in m for m in messages)
    assert not any("cluster_lease_claimed node=node1" in m for m in messages)  # the handover proved node0 gone
    assert sim.session_refusals == 0


async def test_rediss_to_a_tls_redis_with_a_private_ca(sim, tmp_path):
    """``rediss://`` to a real TLS-only ``redis-server`` (certificate made by the test): the cluster works over it
    with the CA named in the URL, and without the CA the node refuses the server's certificate at start."""
    from trade_stream.core.engine import EngineUnavailable

    redis = RedisServer(tmp_path / "tls", tls=True)
    redis.start()
    try:
        assert redis.url.startswith("rediss://")
        async with cluster(sim, tmp_path, [redis.url] * 2) as apps, contextlib.AsyncExitStack() as stack:
            assert all(a.status()["cluster"]["redis"] == "up" for a in apps)
            follower = next(a for a in apps if a is not leader(apps))
            browser = await orders_on(follower.port, stack)
            await browser.send({"action": "subscribe", "symbol": "AAPL"})
            await browser.expect("subscribed")
            await trade_reaches(browser, sim, "AAPL", 42.0)
            await fill_reaches([browser], sim, 41.0)
        untrusted = App(node_config(sim, tmp_path, redis.url.partition("?")[0], "untrusted"))
        with pytest.raises(EngineUnavailable, match=r"TRADE_STREAM_REDIS_URL=rediss://.*certificate verify failed"):
            await untrusted.start()
        await untrusted.stop()
        assert sim.session_refusals == 0
    finally:
        redis.stop()


async def test_a_sentinel_failover_mid_burst_loses_no_order_event_and_opens_no_second_session(sim, tmp_path):
    """A real master, its replica and two real Sentinels; the nodes reach the master through
    ``redis+sentinel://``. The master is killed (SIGKILL) in the middle of a burst of orders: the Sentinels
    promote the replica, every node follows it, every order's lifecycle reaches the clients on both nodes once
    and in order, no second Alpaca session is ever refused, and ``trade-stream check`` shows the new master."""
    from trade_stream.ops.check import run as check_run

    master = RedisServer(tmp_path / "master")
    master.start()
    replica = RedisServer(tmp_path / "replica", replica_of=master.port)
    replica.start()
    sentinels = [Sentinel(tmp_path / f"sentinel{i}", master) for i in range(2)]
    try:
        for s in sentinels:
            s.start()
        url = f"redis+sentinel://{','.join(f'127.0.0.1:{s.port}' for s in sentinels)}/mymaster/0"
        async with cluster(sim, tmp_path, [url] * 2) as apps, contextlib.AsyncExitStack() as stack:
            clients = [await orders_on(a.port, stack) for a in apps]
            orders = []
            for i in range(16):
                if i == 6:
                    master.kill()
                order = sim.submit_order("AAPL", "buy", 1, "limit", 100)
                sim.fill_order(order["id"], price=99.0)
                orders.append(order)
                await asyncio.sleep(0.05)
            for browser in clients:
                def lifecycle(b: Browser = browser) -> dict[str, list[str]]:
                    return {o["id"]: [m["event"] for m in b.of_type("order_update")
                                      if m["data"]["order_id"] == o["id"]] for o in orders}

                while not all(lifecycle().values()) or any(e[-1] != "fill" for e in lifecycle().values()):
                    await browser.expect(lambda m: m.get("type") == "order_update", timeout=30)
                await browser.drain(0.3)
                wrong = {k: [(m["id"], m["event"], m["reconciled"]) for m in browser.of_type("order_update")
                             if m["data"]["order_id"] == k] for k, e in lifecycle().items() if e != ["new", "fill"]}
                assert not wrong, (orders.index(next(o for o in orders if o["id"] in wrong)), wrong)
            assert [m["id"] for m in clients[0].of_type("order_update")] == \
                [m["id"] for m in clients[1].of_type("order_update")]  # the same ids on both nodes
            await wait_until(lambda: leader(apps) is not None and sim.sessions(DATA) == 1
                             and listening(sim) == 1, timeout=20, what="a leader holding both streams")
            assert all(a.status()["cluster"]["redis"] == "up" for a in apps)

            lines: list[str] = []
            assert await check_run(node_config(sim, tmp_path, url, "checker"), "AAPL", 0.0, 5.0, lines.append) == 0
            assert any(line.startswith(f"OK   sentinel: master mymaster at 127.0.0.1:{replica.port},")
                       and "quorum 1, 2 of 2 sentinels answered" in line for line in lines), lines
        assert sim.session_refusals == 0
    finally:
        for s in sentinels:
            s.stop()
        replica.stop()
        master.stop()


async def test_a_live_event_and_its_reconciled_twin_get_into_the_shared_log_once(redis_server):
    """A new leader reconciles from its replica, which may not yet hold what another node is still appending: the
    live ``fill`` (keyed by execution id) and the one reconciliation derives from REST (keyed by order state) are
    the same event. Whichever reaches Redis second is dropped, in either order."""
    import redis.asyncio as aioredis

    from trade_stream.engines.redis_orders import RedisOrderLog

    r = aioredis.Redis.from_url(redis_server.url)
    log = RedisOrderLog(r, "twins", 7.0, 0.05)
    try:
        await log.load()
        appending = asyncio.ensure_future(log.append_loop())
        for n, first_live in enumerate((True, False)):
            order = {"id": f"order-{n}", "symbol": "AAPL", "status": "filled", "filled_qty": "1"}
            live = ({"event": "fill", "order": order, "execution_id": f"x-{n}", "qty": "1"}, False, None)
            reconciled = ({"event": "fill", "order": order, "qty": "1"}, True, f"r:order-{n}:filled:1")
            for data, was_reconciled, dedupe in (live, reconciled) if first_live else (reconciled, live):
                log.append(data, was_reconciled, dedupe)
        await wait_until(lambda: not log._ops, what="appends written")
        await log.sync()
        assert [(e.data["order"]["id"], e.reconciled) for e in log.since(0)] == [("order-0", False),
                                                                                ("order-1", True)]
        log.close()
        await asyncio.wait_for(appending, 5)
    finally:
        await r.aclose()


async def test_behind_sentinel_an_order_event_is_written_once_a_replica_has_it(tmp_path):
    """Replication is asynchronous: a master killed right after it took an event, before its replica got it, would
    take the event with it. Here the replica's link is held back (a proxy) while an event is appended through
    Sentinel, then the master is killed and the Sentinel promotes the replica: the event is in the new master's
    stream, because the append was not done until a replica confirmed it."""
    import redis.asyncio as aioredis

    from trade_stream.engines.redis_orders import RedisOrderLog
    from trade_stream.engines.redis_url import client

    master = RedisServer(tmp_path / "master")
    master.start()
    link = Proxy(master.port)
    await link.start()
    replica = RedisServer(tmp_path / "replica", replica_of=link.port)
    await asyncio.to_thread(replica.start)
    sentinel = Sentinel(tmp_path / "sentinel", master)
    await asyncio.to_thread(sentinel.start)
    r = client(f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster/0", socket_timeout=2, socket_connect_timeout=1)
    promoted = aioredis.Redis(port=replica.port)
    log = RedisOrderLog(r, "wait", 7.0, 0.05, replicated=True)
    try:
        await log.load()
        appending = asyncio.ensure_future(log.append_loop())
        order = {"id": "order-1", "symbol": "AAPL", "status": "filled", "filled_qty": "1"}
        link.hold()
        log.append({"event": "fill", "order": order, "execution_id": "x-1", "qty": "1"})
        direct = aioredis.Redis(port=master.port)
        for _ in range(200):  # the master has it; the replica does not
            if await direct.xlen("wait:orders:stream"):
                break
            await asyncio.sleep(0.01)
        await direct.aclose()
        await asyncio.sleep(0.3)  # for the reply to come back: without WAIT the append would count as done now
        assert log._ops, "the append was taken as done before any replica had it"
        master.kill()
        await link.close()
        for _ in range(600):
            if (await promoted.info("replication"))["role"] == "master":
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the Sentinel did not promote the replica")
        await wait_until(lambda: not log._ops, timeout=20, what="the append written to the new master")
        rows = await promoted.xrange("wait:orders:stream")
        assert len(rows) == 1 and b"x-1" in rows[0][1][b"e"]
        log.close()
        await asyncio.wait_for(appending, 5)
    finally:
        await promoted.aclose()
        await r.aclose()
        sentinel.stop()
        replica.stop()
        master.stop()
