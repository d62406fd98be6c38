"""What a credential check costs: a users-file token carries an id that selects the one user to verify, so a
right or wrong token costs at most one hash with 10,000 users, and a source over the failed-auth limit costs
none. Counted on the running daemon (``Identity.token_hashes``), over REST from real loopback addresses."""

from __future__ import annotations

import asyncio
import functools
import http.client
import secrets

import pytest

from tests.support.relay import relay_config, running, wait_until
from trade_stream.cli import main
from trade_stream.edges.identity import UserRecord, hash_token, new_token, write_users

pytestmark = pytest.mark.timeout(60)

USERS = 10_000


def get_events(port: int, token: str, source: str = "127.0.0.1") -> int:
    """GET /api/orders/events with a Bearer token from ``source`` (a loopback address): the status."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=(source, 0))
    try:
        conn.request("GET", "/api/orders/events?since=0", headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def many_users(n: int) -> list[UserRecord]:
    out = []
    for i in range(n):
        token_id, token = new_token()
        out.append(UserRecord(f"u{i}", hash_token(token), ("default",), False, token_id))
    return out


def add_user(path: str, name: str, capsys) -> str:
    assert main(["user", "--users-file", path, "add", name, "--accounts", "default"]) == 0
    return capsys.readouterr().out.strip().splitlines()[-1]


async def check_cost(app, tok: str, source: str = "127.0.0.1") -> tuple[int, int]:
    """One REST call with ``tok`` from ``source``: its status, and how many token hashes the check took."""
    before = app.identity.token_hashes
    status = await asyncio.to_thread(get_events, app.port, tok, source)
    return status, app.identity.token_hashes - before


async def test_with_ten_thousand_users_each_check_costs_at_most_one_hash_and_a_flood_none(sim, tmp_path, capsys):
    path = str(tmp_path / "users.toml")
    write_users(path, many_users(USERS - 1))
    token = add_user(path, "alice", capsys)
    assert token.startswith("tsu_") and token.split("_")[1] in (tmp_path / "users.toml").read_text()
    async with running(relay_config(sim, tmp_path / "state", users_file=path, token="")) as app:
        await wait_until(lambda: app.tradings["default"].connected)
        cost = functools.partial(check_cost, app)
        assert await cost(token) == (200, 1)
        assert await cost("guess-" + secrets.token_hex(8)) == (401, 0)  # no id: nobody to hash against
        wrong_secret = token[:21] + "x" * (len(token) - 21)  # alice's id, a wrong secret
        assert [await cost(wrong_secret) for _ in range(10)] == [(401, 1)] * 10
        assert await cost(wrong_secret) == (429, 0)  # throttled before hashing
        # A flood of distinct wrong tokens from one address: 100 counted, then 429 for every one, none hashed.
        flood = [await cost(f"tsu_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}") for _ in range(120)]
        assert flood.count((401, 0)) == 89 and flood.count((429, 0)) == 31  # 11 failures were counted above
        assert await cost(token) == (200, 1)  # the right token from the flooded address: accepted, one hash
        assert await cost(wrong_secret, "127.0.0.2") == (401, 1)  # another address has its own count


async def test_tokens_without_an_id_keep_working_and_a_throttled_source_is_not_hashed_against_them(
        sim, tmp_path, capsys):
    path = str(tmp_path / "users.toml")
    legacy = {f"old{i}": secrets.token_urlsafe(32) for i in range(50)}
    write_users(path, [UserRecord(n, hash_token(t), ("default",)) for n, t in legacy.items()])
    token = add_user(path, "alice", capsys)
    assert (tmp_path / "users.toml").read_text().count("token_id") == 1
    async with running(relay_config(sim, tmp_path / "state", users_file=path, token="")) as app:
        await wait_until(lambda: app.tradings["default"].connected)
        cost = functools.partial(check_cost, app)
        assert (await cost(legacy["old7"]))[0] == 200
        assert await cost("guess") == (401, 50)  # an id-less credential is tried against each id-less user
        for _ in range(99):
            await cost(secrets.token_urlsafe(32))
        assert await cost("guess-again") == (429, 0)  # over the per-address limit: no hashing at all
        assert await cost(legacy["old7"]) == (429, 0)  # an id-less token too: checking it costs 50 hashes
        assert await cost(token) == (200, 1)  # a token with an id is still checked, at one hash
        assert (await cost(legacy["old7"], "127.0.0.2"))[0] == 200  # elsewhere the old token works
