"""Several Alpaca accounts and per-user access, over real sockets against the simulator serving two accounts.

Two accounts (``paper``, ``live``), three users (alice: paper, bob: live, carol: both). Every private path gives
each user exactly their accounts' events and nothing else; the checks try every path with every user."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

import jwt
import orjson
import pytest
from websockets.asyncio.client import connect

from tests.support.relay import FAST, TOKEN, Browser, free_port, http_get, relay_config, running, wait_until
from tests.support.sse import sse_get
from trade_stream.edges.identity import UserRecord, hash_token, write_users
from trade_stream.records import accounts as account_specs
from trade_stream.simulator import SimConfig, Simulator

pytestmark = pytest.mark.timeout(40)

KEYS = {"paper": ("PKPAPER", "SPAPER"), "live": ("PKLIVE", "SLIVE")}
USERS = {"alice": ("alice-token-" + "a" * 32, ["paper"]), "bob": ("bob-token-" + "b" * 32, ["live"]),
         "carol": ("carol-token-" + "c" * 32, ["paper", "live"])}
JWT_SECRET = "jwt-secret-for-tests-0123456789abcdef"


@pytest.fixture
async def sim2():
    async with Simulator(SimConfig(host="127.0.0.1", port=0, accounts=dict(KEYS.values()),
                                   rate_per_symbol=0.0)) as s:
        yield s


def accounts_file(sim, tmp_path):
    path = tmp_path / "accounts.toml"
    text = ""
    for i, (name, (key, secret)) in enumerate(KEYS.items()):
        text += (f'[[account]]\nname = "{name}"\nkey_id = "{key}"\nsecret = "{secret}"\nbase_url = "{sim.http_url}"\n'
                 f'trading_stream_url = "{sim.ws_url}/stream"\nmarket_data = {"true" if i == 0 else "false"}\n\n')
    path.write_text(text)
    return account_specs.load(str(path), {})


@contextlib.asynccontextmanager
async def two_accounts(sim2, tmp_path, **overrides):
    users = tmp_path / "users.toml"
    write_users(str(users), [UserRecord(n, hash_token(t), tuple(a)) for n, (t, a) in USERS.items()])
    cfg = relay_config(sim2, tmp_path / "state", sse_port=free_port(), accounts=accounts_file(sim2, tmp_path),
                       users_file=str(users), jwt_secret=JWT_SECRET, api_key=KEYS["paper"][0],
                       secret_key=KEYS["paper"][1], timings=FAST, **overrides)
    async with running(cfg) as a:
        await wait_until(lambda: a.relay.sources.default.upstream.connected
                                 and all(t.connected for t in a.tradings.values()),
                         what="every stream up")
        yield a


@pytest.fixture
async def app2(sim2, tmp_path):
    async with two_accounts(sim2, tmp_path) as a:
        yield a


@pytest.fixture
async def app2_refusing(sim2, tmp_path):
    """``app2`` with TRADE_STREAM_CONNECTION_LIMIT_POLICY=refuse."""
    async with two_accounts(sim2, tmp_path, connection_limit_policy="refuse") as a:
        yield a



async def place(sim, app, per_account: int = 1) -> None:
    before = app.stats.order_events
    for name in KEYS:
        for _ in range(per_account):
            sim.submit_order("AAPL", "buy", 1, key=KEYS[name][0])
    await wait_until(lambda: app.stats.order_events >= before + per_account * len(KEYS), what="journaled")


async def ws_accounts(app, token: str) -> set[str]:
    async with Browser.connect(app.port) as c:
        await c.send({"action": "auth", "token": token})
        await c.expect("authenticated")
        await c.send({"action": "subscribe", "channel": "orders", "since": 0})
        await c.drain(0.6)
        kinds = ("order_update", "orders_snapshot", "position_update", "notification")
        return {m["account"] if "account" in m else m["data"]["account"] for m in c.seen if m["type"] in kinds}


async def sse_accounts(app, path: str, token: str) -> set[str]:
    async with sse_get(app.sse.port, path, {"Authorization": f"Bearer {token}", "Last-Event-ID": "0"}) as r:
        assert r.status == 200
        seen: set[str] = set()
        try:
            while True:
                ev = await r.next(0.6)
                if ev.event in ("order:update", "order:fill", "alert:new"):
                    seen.add(ev.json()["account"])
        except TimeoutError:
            return seen


async def trading_accounts(app, token: str, account: str) -> str | set[str]:
    async with connect(f"ws://127.0.0.1:{app.port}/stream", ping_interval=None, close_timeout=0.5) as ws:
        await ws.send(orjson.dumps({"action": "auth", "key": account, "secret": token}).decode())
        status = orjson.loads(await ws.recv())["data"]["status"]
        if status != "authorized":
            return status
        await ws.send(orjson.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}).decode())
        orjson.loads(await ws.recv())
        return status


async def test_every_private_path_gives_each_user_exactly_their_accounts(sim2, app2):
    await place(sim2, app2)
    for user, (token, allowed) in USERS.items():
        want = set(allowed)
        assert await ws_accounts(app2, token) == want, ("ws", user)
        assert await sse_accounts(app2, "/api/stream/orders", token) == want, ("sse orders", user)
        assert await sse_accounts(app2, "/api/stream/alerts", token) == want, ("sse alerts", user)
        status, body = await asyncio.to_thread(http_get, app2.port, "/api/orders/events?since=0", token)
        assert status == 200 and {e["account"] for e in body["events"]} == want, ("rest events", user)
        status, body = await asyncio.to_thread(http_get, app2.port, "/api/notifications/trades", token)
        assert status == 200 and {n["account"] for n in body["notifications"]} == want, ("rest notes", user)
        for account in KEYS:
            expected = "authorized" if account in allowed else "unauthorized"
            assert await trading_accounts(app2, token, account) == expected, ("compat /stream", user, account)
    # the token user sees every account
    status, body = await asyncio.to_thread(http_get, app2.port, "/api/orders/events?since=0", TOKEN)
    assert {e["account"] for e in body["events"]} == set(KEYS)


async def test_live_events_reach_only_their_accounts_users_and_the_compat_stream(sim2, app2):
    clients = {}
    stack = contextlib.AsyncExitStack()
    for user, (token, _) in USERS.items():
        c = await stack.enter_async_context(Browser.connect(app2.port))
        await c.send({"action": "auth", "token": token})
        await c.expect("authenticated")
        await c.send({"action": "subscribe", "channel": "orders"})
        await c.expect("orders_snapshot")
        clients[user] = c
    async with connect(f"ws://127.0.0.1:{app2.port}/stream", ping_interval=None, close_timeout=0.5) as bot:
        await bot.send(orjson.dumps({"action": "auth", "key": "live", "secret": USERS["carol"][0]}).decode())
        await bot.recv()
        await bot.send(orjson.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}).decode())
        await bot.recv()
        orders = {name: sim2.submit_order("MSFT", "buy", 1, key=KEYS[name][0])["id"] for name in KEYS}
        got = orjson.loads(await asyncio.wait_for(bot.recv(), 5))
        assert got["data"]["order"]["id"] == orders["live"]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(bot.recv(), 0.5)  # the paper order never comes
    for user, c in clients.items():
        deadline = time.monotonic() + 5
        while {m["account"] for m in c.of_type("order_update")} != set(USERS[user][1]):
            assert time.monotonic() < deadline, (user, c.of_type("order_update"))
            await c.drain(0.1)
        await c.drain(0.3)
        assert {m["account"] for m in c.of_type("order_update")} == set(USERS[user][1]), user
    await stack.aclose()


async def test_sse_compound_ids_resume_every_account_after_a_drop(sim2, app2):
    token = USERS["carol"][0]
    await place(sim2, app2)
    async with sse_get(app2.sse.port, "/api/stream/orders", {"Authorization": f"Bearer {token}"}) as r:
        await r.until("connected")
        await place(sim2, app2)
        first = [await r.until("order:update") for _ in range(2)]
    last = first[-1].id
    assert "paper:" in last and "live:" in last  # the position in each journal
    await place(sim2, app2)  # while the client is away
    async with sse_get(app2.sse.port, "/api/stream/orders", {"Authorization": f"Bearer {token}",
                                                             "Last-Event-ID": last}) as r:
        replayed = [(await r.until("order:update")).json() for _ in range(2)]
        assert {e["account"] for e in replayed} == set(KEYS)
        with pytest.raises(TimeoutError):
            await r.until("order:update", timeout=0.5)  # nothing twice
    # the REST cursor resumes the same way
    status, body = await asyncio.to_thread(http_get, app2.port, "/api/orders/events?since=0", token)
    status, again = await asyncio.to_thread(http_get, app2.port, f"/api/orders/events?since={body['cursor']}", token)
    assert status == 200 and again["events"] == [] and not again["reset"]


def mint(claims: dict, key: str = JWT_SECRET, alg: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=alg)


async def ws_auth(app, token: str) -> dict:
    async with Browser.connect(app.port) as c:
        await c.send({"action": "auth", "token": token})
        return await c.expect(lambda m: m.get("type") in ("authenticated", "error"))


async def test_jwt_valid_expired_wrong_signature_none_and_accountless(app2):
    now = int(time.time())
    good = mint({"sub": "dave", "accounts": ["live"], "exp": now + 60})
    assert (await ws_auth(app2, good))["type"] == "authenticated"
    assert await ws_accounts(app2, good) <= {"live"}
    cases = {
        "expired": mint({"sub": "dave", "accounts": ["live"], "exp": now - 10}),
        "signature": mint({"sub": "dave", "accounts": ["live"], "exp": now + 60}, key=JWT_SECRET[::-1]),
        "'none'": jwt.encode({"sub": "dave", "accounts": ["live"], "exp": now + 60}, None, algorithm="none"),
        "accounts": mint({"sub": "dave", "exp": now + 60}),
    }
    for word, token in cases.items():
        reply = await ws_auth(app2, token)
        assert reply["type"] == "error" and reply["code"] == "unauthorized", word
        assert word in reply["message"], (word, reply["message"])


async def test_jwt_exp_must_be_a_number_within_the_maximum_lifetime(app2):
    now = int(time.time())
    claims = {"sub": "dave", "accounts": ["live"]}
    for exp, word in ((str(now + 60), "exp must be a JSON number"), (10**30, "TRADE_STREAM_JWT_MAX_LIFETIME"),
                      (now + 86400 + 120, "TRADE_STREAM_JWT_MAX_LIFETIME")):
        reply = await ws_auth(app2, mint({**claims, "exp": exp}))
        assert reply["type"] == "error" and reply["code"] == "unauthorized", exp
        assert word in reply["message"], (exp, reply["message"])
    assert (await ws_auth(app2, mint({**claims, "exp": now + 86400 - 120})))["type"] == "authenticated"
    assert (await ws_auth(app2, mint({**claims, "exp": now + 60.5})))["type"] == "authenticated"


async def test_jwt_audience_and_issuer_are_checked_when_set(sim2, tmp_path):
    cfg = relay_config(sim2, tmp_path / "state", accounts=accounts_file(sim2, tmp_path), jwt_secret=JWT_SECRET,
                       jwt_audience="trade-ui", jwt_issuer="https://app.example", jwt_max_lifetime=0,
                       api_key=KEYS["paper"][0], secret_key=KEYS["paper"][1], timings=FAST)
    base = {"sub": "dave", "accounts": ["live"], "exp": int(time.time()) + 10**6}  # no lifetime limit here
    async with running(cfg) as app:
        good = {**base, "aud": "trade-ui", "iss": "https://app.example"}
        assert (await ws_auth(app, mint(good)))["type"] == "authenticated"
        assert (await ws_auth(app, mint({**good, "aud": ["other", "trade-ui"]})))["type"] == "authenticated"
        for claims, word in (({**good, "aud": "other"}, "aud is not 'trade-ui'"),
                             ({**base, "iss": "https://app.example"}, "'aud'"),
                             ({**good, "iss": "https://evil.example"}, "iss is not 'https://app.example'"),
                             ({**base, "aud": "trade-ui"}, "'iss'")):
            reply = await ws_auth(app, mint(claims))
            assert reply["type"] == "error" and word in reply["message"], (claims, reply["message"])


async def test_jwt_expiry_ends_the_stream_and_a_refresh_keeps_it_without_a_gap(sim2, app2):
    now = time.time()
    async with Browser.connect(app2.port) as c:
        await c.send({"action": "auth", "token": mint({"sub": "erin", "accounts": ["paper"], "exp": int(now) + 2})})
        await c.expect("authenticated")
        await c.send({"action": "subscribe", "channel": "orders"})
        await c.expect("orders_snapshot")
        await c.send({"action": "auth", "token": mint({"sub": "erin", "accounts": ["paper"], "exp": int(now) + 60})})
        await c.expect("authenticated")
        await asyncio.sleep(max(0.0, now + 2.3 - time.time()))  # past the first token's expiry
        sim2.submit_order("AAPL", "buy", 1, key=KEYS["paper"][0])
        await c.expect("order_update")  # still streaming
        assert not [m for m in c.seen if m.get("code") == "token_expired"]
    async with Browser.connect(app2.port) as c:
        soon = int(time.time()) + 2
        await c.send({"action": "auth", "token": mint({"sub": "erin", "accounts": ["paper"], "exp": soon})})
        await c.expect("authenticated")
        await c.send({"action": "subscribe", "channel": "orders"})
        await c.expect("orders_snapshot")
        expired = await c.expect(lambda m: m.get("code") == "token_expired", timeout=5)
        assert "expired" in expired["message"]
        sim2.submit_order("AAPL", "buy", 1, key=KEYS["paper"][0])
        await c.drain(0.5)
        assert not c.of_type("order_update")


async def test_under_refuse_the_eleventh_connection_of_one_user_is_refused_others_unaffected(app2_refusing):
    app2 = app2_refusing
    token = USERS["alice"][0]
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(10):
            c = await stack.enter_async_context(Browser.connect(app2.port))
            await c.send({"action": "auth", "token": token})
            await c.expect("authenticated")
        reply = await ws_auth(app2, token)
        assert reply["type"] == "error" and reply["code"] == "too_many_connections", reply
        async with sse_get(app2.sse.port, "/api/stream/orders", {"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 429
        assert (await ws_auth(app2, USERS["bob"][0]))["type"] == "authenticated"
        await c.drain(0.2)
        assert not c.of_type("warning")  # nobody was closed for the refused ones


async def test_by_default_the_eleventh_connection_of_one_user_closes_that_users_oldest_only(app2):
    """The default policy, close_oldest, counts per user: alice's eleventh closes alice's oldest; bob, who opened
    his connection before all of alice's, keeps it."""
    alice, bob = USERS["alice"][0], USERS["bob"][0]
    async with contextlib.AsyncExitStack() as stack:
        bobs = await stack.enter_async_context(Browser.connect(app2.port))
        await bobs.send({"action": "auth", "token": bob})
        await bobs.expect("authenticated")
        alices = []
        for _ in range(11):
            c = await stack.enter_async_context(Browser.connect(app2.port))
            await c.send({"action": "auth", "token": alice})
            await c.expect("authenticated")
            alices.append(c)
        warning = await alices[0].expect("warning")
        assert warning["code"] == "connection_limit" and "TRADE_STREAM_MAX_CONNECTIONS_PER_USER" in warning["message"]
        for c in [bobs, *alices[1:]]:
            await c.send({"action": "ping"})
            await c.expect("pong")
            assert not c.of_type("warning")
        assert app2.identity.sessions.counts() == [10, 1]


async def test_ten_wrong_tokens_then_the_right_one_is_accepted(app2):
    for i in range(10):
        assert (await ws_auth(app2, f"wrong-{i}"))["type"] == "error"
    for _ in range(12):
        assert (await ws_auth(app2, "the-same-wrong-one"))["type"] == "error"
    for token, _ in USERS.values():
        assert (await ws_auth(app2, token))["type"] == "authenticated"
    assert (await ws_auth(app2, mint({"sub": "f", "accounts": ["paper"], "exp": int(time.time()) + 60})))[
        "type"] == "authenticated"


def test_a_bad_accounts_file_names_the_account_and_field(tmp_path):
    path = tmp_path / "a.toml"
    path.write_text('[[account]]\nname = "paper"\nkey_id = "K"\nsecret_env = "NOPE_NOT_SET"\n')
    with pytest.raises(ValueError, match=r"account #1 \('paper'\): secret_env: environment variable NOPE_NOT_SET"):
        account_specs.load(str(path), {})


def test_user_cli_adds_lists_and_removes_and_stores_only_a_hash(tmp_path, capsys):
    from trade_stream.cli import main
    from trade_stream.edges.identity import Identity

    path = str(tmp_path / "users.toml")
    accounts = tmp_path / "accounts.toml"
    accounts.write_text('[[account]]\nname = "paper"\nkey_id = "K"\nsecret_env = "NOT_NEEDED_HERE"\n'
                        '[[account]]\nname = "live"\nkey_id = "K2"\nsecret_env = "NOT_NEEDED_EITHER"\n')
    assert main(["user", "--users-file", path, "add", "zoe", "--accounts", "paper",
                 "--accounts-file", str(accounts)]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert token not in (tmp_path / "users.toml").read_text()
    user = Identity("", ["paper", "live"], users_file=path).resolve(token, "1.2.3.4")
    assert user.name == "zoe" and user.accounts == frozenset({"paper"})
    assert main(["user", "--users-file", path, "list"]) == 0 and "zoe" in capsys.readouterr().out
    assert main(["user", "--users-file", path, "remove", "zoe"]) == 0
    assert Identity("", ["paper"], users_file=path).resolve(token, "1.2.3.4").code == "unauthorized"


@pytest.mark.timeout(60)
async def test_the_market_clock_uses_the_market_data_accounts_base_url(sim2, tmp_path):
    """/api/clock is called with the market-data account's keys, so it goes to that account's base_url, not to
    ALPACA_BASE_URL (which here points nowhere)."""
    from tests.integration.test_ops import TS, Proc, clean_env, empty_env_file

    accounts_file(sim2, tmp_path)  # accounts.toml: paper (market_data, base_url = the simulator) and live
    env = clean_env(tmp_path, TRADE_STREAM_ACCOUNTS_FILE=str(tmp_path / "accounts.toml"),
                    ALPACA_BASE_URL="http://127.0.0.1:9", ALPACA_DATA_URL=sim2.http_url,
                    ALPACA_DATA_STREAM_URL=f"{sim2.ws_url}/v2/iex")
    daemon = Proc([str(TS), "--host", "127.0.0.1", "--port", "0", "--env-file", empty_env_file(tmp_path)],
                  cwd=tmp_path, env=env)
    try:
        port = await asyncio.to_thread(daemon.port)  # the simulator's loop runs meanwhile
        status, clock = await asyncio.to_thread(http_get, port, "/api/clock")
        assert status == 200 and isinstance(clock.get("is_open"), bool), (status, clock)
    finally:
        daemon.kill()


@pytest.fixture
def user_cli(tmp_path, monkeypatch, capsys):
    """`trade-stream user …` in this process, with an env file naming the users and accounts files: (run, users)
    where run(*args) is (exit code, stderr)."""
    from trade_stream.cli import main

    for name in [n for n in os.environ if n.startswith(("TRADE_STREAM_", "ALPACA_"))]:
        monkeypatch.delenv(name)
    accounts = tmp_path / "accounts.toml"
    accounts.write_text('[[account]]\nname = "paper"\nkey_id = "K"\nsecret_env = "NOT_SET_ANYWHERE"\n'
                        '[[account]]\nname = "live"\nkey_id = "K2"\nsecret_env = "NOT_SET_EITHER"\n')
    users = tmp_path / "users.toml"
    env_file = tmp_path / "tools.env"
    env_file.write_text(f"TRADE_STREAM_USERS_FILE={users}\nTRADE_STREAM_ACCOUNTS_FILE={accounts}\n")

    def run(*args: str) -> tuple[int, str]:
        code = main([a.replace("ENV", str(env_file)) for a in args])
        return code, capsys.readouterr().err

    return run, users


def test_user_add_refuses_an_account_the_accounts_file_lacks_and_writes_nothing(user_cli, tmp_path):
    run, users = user_cli
    code, err = run("user", "--env-file", "ENV", "add", "eve", "--accounts", "paper,nosuch")
    assert code == 2 and not users.exists()
    assert err.strip() == (f"trade-stream user: user 'eve' names account 'nosuch', which this relay does not have "
                           f"(accounts: live, paper); checked against the accounts file {tmp_path / 'accounts.toml'}; "
                           "nothing written")


def test_user_takes_env_file_before_or_after_the_subcommand_and_names_a_duplicate(user_cli):
    run, users = user_cli
    assert run("user", "add", "eve", "--accounts", "paper", "--env-file", "ENV") == (0, "")
    assert run("user", "--env-file", "ENV", "add", "ann", "--accounts", "live") == (0, "")
    assert run("--env-file", "ENV", "user", "list") == (0, "")
    assert run("user", "remove", "ann", "--env-file", "ENV") == (0, "")
    before = users.read_text()
    code, err = run("user", "add", "eve", "--accounts", "live", "--env-file", "ENV")
    assert code == 2 and users.read_text() == before
    assert err.strip() == (f"trade-stream user: user 'eve' already exists in {users}; use `trade-stream user "
                           "remove eve` first to give it a new token")


def test_user_cli_takes_the_env_file_before_the_tool_name(tmp_path, capsys):
    """``trade-stream --env-file F user add NAME`` (the form the setup guide gives an admin of the service): the
    env file names the users file, wherever --env-file stands."""
    from trade_stream.cli import main

    users = tmp_path / "users.toml"
    env = tmp_path / "trade-stream.env"
    env.write_text(f"TRADE_STREAM_USERS_FILE={users}\n")
    assert main(["--env-file", str(env), "user", "add", "zoe", "--accounts", "default"]) == 0
    assert main([f"--env-file={env}", "user", "add", "yan", "--accounts", "default"]) == 0
    assert main(["--env-file", str(env), "user", "list"]) == 0
    listed = capsys.readouterr().out
    assert "zoe\taccounts=default" in listed and "yan\taccounts=default" in listed


def test_user_cli_keeps_the_users_files_mode_and_group(tmp_path):
    """The service reads the users file through its group (root:trade-stream 0640, written by root): a rewrite by
    ``user add`` or ``remove`` keeps that mode and group, else the running service could not re-read it."""
    import os
    import stat

    from trade_stream.cli import main

    path = tmp_path / "users.toml"
    path.write_text("# users\n")
    gid = 4242 if os.geteuid() == 0 else os.getegid()  # root may give it any group, as install.sh does
    os.chown(path, -1, gid)
    path.chmod(0o640)
    assert main(["user", "--users-file", str(path), "add", "zoe", "--accounts", "default"]) == 0
    assert (stat.S_IMODE(path.stat().st_mode), path.stat().st_gid) == (0o640, gid)
    assert main(["user", "--users-file", str(path), "remove", "zoe"]) == 0
    assert (stat.S_IMODE(path.stat().st_mode), path.stat().st_gid) == (0o640, gid)
    fresh = tmp_path / "new.toml"
    assert main(["user", "--users-file", str(fresh), "add", "zoe", "--accounts", "default"]) == 0
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600


# --- the per-user SSE API: /api/stream/orders, /positions, /trading, /prices, /metrics --------------------------

PRIVATE_SSE = {"/api/stream/orders": "orders", "/api/stream/positions": "positions", "/api/stream/trading": "trading"}
ORDER_FIELDS = {"orderId", "account", "symbol", "side", "status", "qty", "filledQty", "filledAvgPrice", "timestamp"}


async def fill_each(sim, app, symbol: str = "AAPL", price: float = 10.0) -> None:
    """One filled buy in every account, journaled and applied to positions."""
    before = app.stats.order_events
    for name in KEYS:
        sim.fill_order(sim.submit_order(symbol, "buy", 1, key=KEYS[name][0])["id"], price=price)
    await wait_until(lambda: app.stats.order_events >= before + 2 * len(KEYS), what="journaled")
    await wait_until(lambda: all(symbol in o.positions.by_symbol for o in app.accounts), what="positions")


async def sse_collect(app, path: str, token: str | None, last: str | None = "0", quiet: float = 0.6):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if last is not None:
        headers["Last-Event-ID"] = last
    async with sse_get(app.sse.port, path, headers) as r:
        assert r.status == 200, (path, r.status, r.body)
        with contextlib.suppress(TimeoutError):
            while True:
                await r.next(quiet)
        return r


def of(r, event: str) -> list[dict]:
    return [e.json() for e in r.events if e.event == event]


async def test_new_sse_paths_give_each_user_exactly_their_accounts(sim2, app2):
    await fill_each(sim2, app2)
    for user, (token, allowed) in USERS.items():
        want = set(allowed)
        r = await sse_collect(app2, "/api/stream/orders", token)
        updates, fills = of(r, "order:update"), of(r, "order:fill")
        assert {u["account"] for u in updates} == want and {f["account"] for f in fills} == want, user
        assert all(ORDER_FIELDS <= set(u) for u in updates), updates[0]
        assert {f["status"] for f in fills} == {"filled"} and {f["filledQty"] for f in fills} == {"1"}
        assert not of(r, "order_update") and not of(r, "position:update")
        r = await sse_collect(app2, "/api/stream/positions", token, last=None)
        first = of(r, "position:update")[0]
        assert first["initializing"] and {p["account"] for p in first["positions"]} == want, user
        assert first["totalValue"] == pytest.approx(sum(p["marketValue"] for p in first["positions"]))
        assert not of(r, "order:update")
        r = await sse_collect(app2, "/api/stream/trading", token)
        assert {u["account"] for u in of(r, "order:update")} == want, user
        assert {p["account"] for e in of(r, "position:update") for p in e["positions"]} == want, user
    legacy = await sse_collect(app2, "/api/stream/orders?format=legacy", USERS["alice"][0])
    assert {e["account"] for e in of(legacy, "order_update")} == {"paper"} and not of(legacy, "order:update")


async def test_positions_follow_fills_and_price_moves_of_the_users_accounts_only(sim2, app2):
    await fill_each(sim2, app2)
    async with sse_get(app2.sse.port, "/api/stream/positions", {"Authorization": f"Bearer {USERS['alice'][0]}"}) \
            as alice, sse_get(app2.sse.port, "/api/stream/positions",
                              {"Authorization": f"Bearer {USERS['bob'][0]}"}) as bob:
        for r in (alice, bob):
            assert (await r.until("position:update")).json()["initializing"]
        await wait_until(lambda: "AAPL" in sim2.subscriptions("/v2/iex")["trades"], what="positions priced")
        sim2.inject_trade("AAPL", price=25.0)
        for r, account in ((alice, "paper"), (bob, "live")):
            moved = (await r.until("position:update")).json()
            assert [(p["account"], p["currentPrice"]) for p in moved["positions"]] == [(account, 25.0)]
            assert "initializing" not in moved
        sim2.fill_order(sim2.submit_order("MSFT", "buy", 2, key=KEYS["paper"][0])["id"], price=5)
        got = (await alice.until("position:update")).json()["positions"]
        assert got[0]["account"] == "paper" and got[0]["symbol"] == "MSFT" and got[0]["qty"] == "2"
        with pytest.raises(TimeoutError):
            await bob.until("position:update", timeout=0.5)  # paper's MSFT is not bob's business


async def test_new_sse_paths_headers_ids_401_and_replay_after_a_drop(sim2, app2):
    port, token = app2.sse.port, USERS["carol"][0]
    for path, kind in PRIVATE_SSE.items():
        for headers in ({}, {"Authorization": "Bearer wrong-token"}):
            async with sse_get(port, path, headers) as r:
                assert r.status == 401 and r.headers["www-authenticate"] == "Bearer", path
        headers = {"Authorization": f"Bearer {token}", "Origin": "http://localhost:8080", "Accept-Encoding": "gzip"}
        async with sse_get(port, path, headers) as r:
            assert r.status == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            assert r.headers["cache-control"] == "no-cache" and r.headers["content-encoding"] == "gzip"
            assert r.headers["access-control-allow-origin"] == "http://localhost:8080"
            assert (await r.until("connected")).json()["client_id"].startswith(f"carol-{kind}-")
    await fill_each(sim2, app2)
    # trading: every event's id (a position's too) resumes the orders exactly
    auth = {"Authorization": f"Bearer {token}"}
    async with sse_get(port, "/api/stream/trading", auth) as r:
        snap = await r.until("position:update")
        assert snap.id and "paper:" in snap.id and "live:" in snap.id
        await place(sim2, app2)
        last = [await r.until("order:update") for _ in range(2)][-1]
    assert last.id != snap.id
    await place(sim2, app2)  # while away
    async with sse_get(port, "/api/stream/trading", {**auth, "Last-Event-ID": last.id}) as r:
        replayed = [(await r.until("order:update")).json() for _ in range(2)]
        assert {e["account"] for e in replayed} == set(KEYS) and {e["status"] for e in replayed} == {"new"}
        again = (await r.until("position:update")).json()
        assert again["initializing"] and {p["account"] for p in again["positions"]} == set(KEYS)
        with pytest.raises(TimeoutError):
            await r.until("order:update", timeout=0.5)
    # positions: a reconnect gets the whole state again, id = where the journals are
    async with sse_get(port, "/api/stream/positions", {**auth, "Last-Event-ID": last.id}) as r:
        ev = await r.until("position:update")
        assert ev.json()["initializing"] and ev.id and ev.id != last.id


async def test_prices_stream_is_public_merges_trades_and_quotes_and_replays(sim2, app2):
    port = app2.sse.port
    async with sse_get(port, "/api/stream/prices?symbols=AAPL", {"Origin": "http://localhost:8080"}) as r:
        assert r.status == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["access-control-allow-origin"] == "http://localhost:8080"
        first = await r.until("price:update")
        assert first.json()["initializing"] is True and first.json()["symbol"] == "AAPL"
        assert first.json()["price"] is not None and first.id is None  # the snapshot: state, not a stream event
        await wait_until(lambda: "AAPL" in sim2.subscriptions("/v2/iex")["quotes"], what="quotes held")
        sim2.inject_trade("AAPL", price=123.5)
        trade = await r.until("price:update")
        assert trade.json()["price"] == 123.5 and "initializing" not in trade.json()
        sim2.inject_quote("AAPL", bid=123.0, ask=124.0)
        quote = await r.until("price:update")
        assert (quote.json()["price"], quote.json()["bid"], quote.json()["ask"]) == (123.5, 123.0, 124.0)
        assert int(quote.id) == int(trade.id) + 1
    sim2.inject_trade("AAPL", price=130.0)  # while away: the reconnect hold records it
    await asyncio.sleep(0.2)
    async with sse_get(port, "/api/stream/prices?symbols=AAPL", {"Last-Event-ID": quote.id}) as r:
        missed = await r.until("price:update")
        assert missed.json()["price"] == 130.0 and int(missed.id) == int(quote.id) + 1
        assert not [e for e in r.events if e.event == "reset"]
    async with sse_get(port, "/api/stream/prices") as r:
        assert r.status == 400


async def test_prices_above_a_thousand_a_second_send_the_latest_per_symbol(sim2, app2):
    async with sse_get(app2.sse.port, "/api/stream/prices?symbols=AAPL") as r:
        await r.until("price:update")
        await wait_until(lambda: "AAPL" in sim2.subscriptions("/v2/iex")["trades"], what="held")
        sent = 3000
        for i in range(sent):
            sim2.inject_trade("AAPL", price=1000.0 + i)
            if i % 200 == 0:
                await asyncio.sleep(0)
        got = []
        while not got or got[-1]["price"] != 1000.0 + sent - 1:
            got.append((await r.until("price:update")).json())
        assert len(got) < sent  # coalesced, and the last price arrived
    await wait_until(lambda: not app2.sse.price_codec.pending, what="coalescing table drained")


async def test_metrics_counts_streams_and_names_users_only_for_an_admin(app2):
    port = app2.sse.port
    async with sse_get(port, "/api/stream/orders", {"Authorization": f"Bearer {USERS['carol'][0]}"}) as a, \
            sse_get(port, "/api/stream/positions", {"Authorization": f"Bearer {USERS['alice'][0]}"}) as b, \
            sse_get(port, "/api/stream/prices?symbols=AAPL") as c:
        for r, first in ((a, "connected"), (b, "position:update"), (c, "price:update")):
            await r.until(first)
        status, public = await asyncio.to_thread(http_get, port, "/api/stream/metrics", None)
        assert status == 200
        assert public["connections"]["orders"] == 1 and public["connections"]["positions"] == 1
        assert public["connections"]["prices"] == 1 and public["users"] == [1, 1]
        assert public["events_sent"]["positions"] >= 1 and "prices" in public["replay_buffers"]
        _, alice = await asyncio.to_thread(http_get, port, "/api/stream/metrics", USERS["alice"][0])
        assert alice["users"] == [1, 1]  # not an admin
        _, admin = await asyncio.to_thread(http_get, port, "/api/stream/metrics", TOKEN)
        assert admin["users"] == {"alice": 1, "carol": 1}


async def test_jwt_expiry_ends_sse_streams_and_the_compatible_stream(app2):
    soon = int(time.time()) + 2
    token = mint({"sub": "gina", "accounts": ["paper"], "exp": soon})
    async with sse_get(app2.sse.port, "/api/stream/orders", {"Authorization": f"Bearer {token}"}) as r, \
            sse_get(app2.sse.port, "/api/stream/trading", {"Authorization": f"Bearer {token}"}) as t, \
            connect(f"ws://127.0.0.1:{app2.port}/stream", ping_interval=None, close_timeout=0.5) as ws:
        await ws.send(orjson.dumps({"action": "auth", "key": "paper", "secret": token}).decode())
        assert orjson.loads(await ws.recv())["data"]["status"] == "authorized"
        await ws.send(orjson.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}).decode())
        await ws.recv()
        for stream in (r, t):
            err = await stream.until("error", timeout=6)
            assert err.json()["code"] == "token_expired" and time.time() >= soon - 0.05
            with pytest.raises(EOFError):
                await stream.next(2)  # the stream ended
        reply = orjson.loads(await asyncio.wait_for(ws.recv(), 6))
        assert reply["action"] == "error" and "expired" in reply["data"]["error_message"]
        with pytest.raises(Exception, match=r"1008|close"):
            await asyncio.wait_for(ws.recv(), 3)


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
async def test_jwt_signed_with_a_private_key_is_checked_with_the_public_key(sim2, tmp_path, alg):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    def new_key():
        return rsa.generate_private_key(65537, 2048) if alg == "RS256" else ec.generate_private_key(ec.SECP256R1())

    key, other = new_key(), new_key()
    pem = tmp_path / "jwt.pub"
    pem.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    cfg = relay_config(sim2, tmp_path / "state", accounts=accounts_file(sim2, tmp_path), jwt_public_key=str(pem),
                       api_key=KEYS["paper"][0], secret_key=KEYS["paper"][1])
    claims = {"sub": "hana", "accounts": ["live"], "exp": int(time.time()) + 60}
    async with running(cfg) as app:
        assert (await ws_auth(app, jwt.encode(claims, key, algorithm=alg)))["type"] == "authenticated"
        assert await ws_accounts(app, jwt.encode(claims, key, algorithm=alg)) <= {"live"}
        wrong = await ws_auth(app, jwt.encode(claims, other, algorithm=alg))
        assert wrong["code"] == "unauthorized" and "signature" in wrong["message"]
        hmac_one = await ws_auth(app, mint(claims))  # HS256 is not accepted without TRADE_STREAM_JWT_SECRET
        assert hmac_one["code"] == "unauthorized" and "algorithm" in hmac_one["message"]


@pytest.mark.timeout(30)
def test_a_user_naming_an_unknown_account_stops_the_start_with_one_line(sim2, tmp_path):
    from tests.integration.test_ops import TS, assert_one_line, clean_env, empty_env_file, run

    accounts_file(sim2, tmp_path)  # accounts.toml: paper and live
    users = tmp_path / "users.toml"
    write_users(str(users), [UserRecord("alice", hash_token("t" * 40), ("paper",)),
                             UserRecord("zed", hash_token("z" * 40), ("paper", "papr"))])
    bad = run([str(TS), "--env-file", empty_env_file(tmp_path)], cwd=tmp_path,
              env=clean_env(tmp_path, TRADE_STREAM_ACCOUNTS_FILE=str(tmp_path / "accounts.toml"),
                            TRADE_STREAM_USERS_FILE=str(users)))
    line = assert_one_line(bad.stderr)
    assert bad.returncode == 2 and "'zed'" in line and "'papr'" in line and "TRADE_STREAM_USERS_FILE" in line, line


async def test_jwt_accounts_this_relay_does_not_have_are_ignored_and_logged_once(app2, caplog):
    token = mint({"sub": "ivan", "accounts": ["live", "nope"], "exp": int(time.time()) + 60})
    assert (await ws_auth(app2, token))["type"] == "authenticated"
    assert await ws_accounts(app2, token) == {"live"}
    assert (await ws_auth(app2, token))["type"] == "authenticated"
    logged = [r for r in caplog.records if "jwt_unknown_accounts" in r.getMessage()]
    assert len(logged) == 1 and "nope" in logged[0].getMessage()
