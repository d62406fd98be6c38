"""App channels' pure rules (core/channels.py) and the node hub's resume (core/app_channels.py): names, the
publish body, ids, retention and replay, access, and a resume that meets live events during its history read."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from trade_stream.core import event_ids
from trade_stream.core.app_channels import AppChannels
from trade_stream.core.channels import (
    Access,
    ChannelEvent,
    Publication,
    Refusal,
    Reset,
    Rings,
    check_channel,
    from_record,
    parse_body,
    record_of,
    replay,
)
from trade_stream.core.users import User

pytestmark = pytest.mark.timeout(10)


def test_channel_names():
    for good in ("strategies:abc", "strategies:A_b.c-1", "app:x", "app:" + "n" * 64, "ai-decisions", "alerts",
                 "agent-status"):
        assert check_channel(good) == good
    for bad in ("strategies:", "app:" + "n" * 65, "app:a b", "app:é", "orders", "news", "strategies:a:b", "",
                None, 7, "APP:x", "alerts "):
        assert check_channel(bad) is None


def test_publish_bodies():
    one = parse_body(b'{"channel": "app:x", "event": "e", "data": {"a": 1}, "users": ["alice", "bob"]}')
    assert one == [Publication("app:x", "e", {"a": 1}, frozenset({"alice", "bob"}))]
    assert parse_body(b'{"channel": "agent-status", "event": "e"}') == [Publication("agent-status", "e", {})]
    batch = parse_body(b'[{"channel": "app:x", "event": "a"}, {"channel": "app:y", "event": "b"}]')
    assert [p.channel for p in batch] == ["app:x", "app:y"]  # type: ignore[union-attr]
    for body, words in ((b"", "not JSON"), (b"[]", "empty"), (b"3", "JSON object"),
                        (b'{"channel": "app:x", "event": "e", "extra": 1}', "unknown field"),
                        (b'{"event": "e"}', "missing"), (b'{"channel": "app:x", "event": "a b"}', '"event"'),
                        (b'{"channel": "app:x", "event": "e", "users": "alice"}', '"users"'),
                        (b'{"channel": "app:x", "event": "e", "users": ["a b"]}', '"users"'),
                        (b"[" + b",".join([b'{"channel": "app:x", "event": "e"}'] * 1001) + b"]", "at most 1000")):
        refused = parse_body(body)
        assert isinstance(refused, Refusal) and refused.status == 400 and words in refused.message, body[:60]


def test_stored_records_round_trip_and_foreign_ones_are_skipped():
    pub = Publication("app:x", "e", {"k": [1, 2]}, frozenset({"bob", "alice"}))
    assert from_record("app:x", "5-0", record_of(pub)) == ChannelEvent("app:x", "5-0", "e", {"k": [1, 2]},
                                                                       pub.users)
    for junk in (b"nope", b"[]", b'{"event": 1, "data": {}}'):
        assert from_record("app:x", "5-0", junk) is None


def test_stream_ids_increase_even_when_the_clock_goes_back():
    assert event_ids.next_stream_id(None, 1000) == (1000, 0)
    assert event_ids.next_stream_id((1000, 0), 1000) == (1000, 1)
    assert event_ids.next_stream_id((1000, 1), 900) == (1000, 2)
    assert event_ids.next_stream_id((1000, 2), 1001) == (1001, 0)
    assert event_ids.parse_stream_id("1700000000000-3") == (1700000000000, 3)
    for bad in ("17", "a-1", "1-", "-1", "1-2-3", 5, None, "1-99999999999999999999"):
        assert event_ids.parse_stream_id(bad) is None


def test_rings_keep_a_count_an_age_and_a_bounded_table():
    rings = Rings(history=3, ttl_ms=10_000, max_channels=2)
    ids = [rings.append(Publication("app:a", "e", {"n": n}), 1000 + n).id for n in range(5)]
    assert ids == ["1000-0", "1001-0", "1002-0", "1003-0", "1004-0"]
    assert [e.id for e in rings.channels["app:a"]] == ids[2:]
    assert [e.data["n"] for e in rings.since("app:a", ids[2], 100, 2000)] == [3, 4]  # type: ignore[union-attr]
    assert isinstance(rings.since("app:a", ids[1], 100, 2000), Reset)  # trimmed by count
    assert isinstance(rings.since("app:a", ids[3], 100, 1003 + 10_001), Reset)  # too old
    rings.append(Publication("app:b", "e", {}), 3000)
    rings.append(Publication("app:a", "e", {}), 3001)  # app:a is the most recently published again
    rings.append(Publication("app:c", "e", {}), 3002)
    assert set(rings.channels) == {"app:a", "app:c"}  # app:b, published to longest ago, went


def test_a_full_table_evicts_a_channel_nobody_holds_first():
    held = {"app:a"}
    rings = Rings(history=3, ttl_ms=10_000, max_channels=2, held=lambda: held)
    for n, channel in enumerate(("app:a", "app:b", "app:c")):  # app:a is the oldest, but held
        rings.append(Publication(channel, "e", {}), 1000 + n)
    assert set(rings.channels) == {"app:a", "app:c"}
    held.update({"app:c"})
    rings.append(Publication("app:d", "e", {}), 2000)  # every one held: the oldest goes
    assert set(rings.channels) == {"app:c", "app:d"}


def test_replay_bounds():
    events = [ChannelEvent("app:x", f"{1000 + n}-0", "e", {"n": n}) for n in range(10)]
    assert [e.data["n"] for e in replay("app:x", events, "1005-0", 4, 2000, 5000)] == [6, 7, 8, 9]  # type: ignore
    assert replay("app:x", events, "1009-0", 4, 2000, 5000) == []
    assert replay("app:x", events, "1004-0", 4, 2000, 5000) == Reset("app:x", "too many missed events")
    assert isinstance(replay("app:x", events, "1004-1", 4, 2000, 5000), Reset)  # never issued
    assert isinstance(replay("app:x", events, "x", 4, 2000, 5000), Reset)


def test_access():
    access = Access(public=("app:status", "strategies:demo-*"))
    alice = User("alice", None)
    carol = User("carol", None, channels=("app:*",))
    root = User("root", None, admin=True, channels=())
    assert access.may_subscribe(None, "app:status") and access.may_subscribe(None, "strategies:demo-1")
    assert not access.may_subscribe(None, "app:other")
    assert access.may_subscribe(alice, "strategies:x")
    assert access.may_subscribe(carol, "app:x") and not access.may_subscribe(carol, "alerts")
    assert access.may_subscribe(root, "alerts")


class Holder:
    """A subscriber as the hub sees one: it records what it was sent."""

    def __init__(self) -> None:
        self.got: list[Any] = []

    def send(self, data: Any, count: int = 1) -> bool:
        self.got.append(data)
        return True

    def fan(self, data: Any, holders: list[Any], count: int = 1) -> None:
        for h in holders:
            h.send(data, count)


class Codec:
    def event(self, event: ChannelEvent) -> Any:
        return event.id

    def reset(self, channel: str) -> Any:
        return "reset"


async def test_a_resume_meeting_live_events_has_no_gap_and_no_duplicate():
    """Live events that arrive while the history is read are held, and those the history already had are
    dropped: the subscriber gets every id once, in order."""
    rings = Rings(100, 60_000, 10)
    published = [rings.append(Publication("app:x", "e", {}), 1000 + n) for n in range(5)]
    reading, release = asyncio.Event(), asyncio.Event()

    async def history(channel: str, since: str, limit: int) -> list[ChannelEvent] | Reset:
        reading.set()
        await release.wait()
        return rings.since(channel, since, limit, 2000)

    hub = AppChannels(history, Access(), history_limit=100)
    holder, codec = Holder(), Codec()
    assert hub.subscribe(holder, "app:x", User("alice", None), codec, since=published[1].id) is None
    await reading.wait()
    late = rings.append(Publication("app:x", "e", {}), 1500)  # in the history the read returns, and live
    hub.deliver(published[4])  # an event the history also has, delivered live late
    hub.deliver(late)
    release.set()
    await asyncio.sleep(0.01)
    newer = rings.append(Publication("app:x", "e", {}), 1600)
    hub.deliver(newer)
    assert holder.got == [published[2].id, published[3].id, published[4].id, late.id, newer.id]


async def test_a_reset_resume_still_gets_the_live_events_that_came_meanwhile():
    release = asyncio.Event()

    async def history(channel: str, since: str, limit: int) -> list[ChannelEvent] | Reset:
        await release.wait()
        return Reset(channel, "too old")

    hub = AppChannels(history, Access())
    holder = Holder()
    hub.subscribe(holder, "app:x", User("alice", None), Codec(), since="1-0")
    hub.deliver(ChannelEvent("app:x", "5-0", "e", {}))
    hub.deliver(ChannelEvent("app:x", "6-0", "e", {}, frozenset({"bob"})))  # not alice's
    release.set()
    await asyncio.sleep(0.01)
    assert holder.got == ["reset", "5-0"]
    hub.drop(holder)
    assert not hub.subs and not hub.channels_of(holder)


def test_channel_settings_are_checked_at_start(tmp_path):
    """A bad channel setting stops the start with one line naming it (exit 2 in the daemon)."""
    import argparse

    from trade_stream import config

    def load(**env: str) -> config.Config:
        return config.load(argparse.Namespace(env_file="/dev/null"), {"ALPACA_API_KEY": "k", "ALPACA_SECRET_KEY": "s",
                                                                      **env}, tmp_path)

    assert load(TRADE_STREAM_PUBLIC_CHANNELS="app:status, alerts").public_channels == ("app:status", "alerts")
    for env, words in ((("TRADE_STREAM_PUBLIC_CHANNELS", "app:a b"), "is not a channel glob"),
                       (("TRADE_STREAM_PUBLISH_MAX_BYTES", "100"), "between 1024 and 1048576"),
                       (("TRADE_STREAM_CHANNEL_HISTORY", "0"), "between 1 and 100000"),
                       (("TRADE_STREAM_CHANNEL_HISTORY_TTL", "0"), ">= 1")):
        with pytest.raises(config.ConfigError) as err:
            load(**dict([env]))
        assert str(err.value).startswith(env[0]) and words in str(err.value) and "\n" not in str(err.value)
    users = tmp_path / "users.toml"
    users.write_text('[[user]]\nname = "a"\ntoken_hash = "sha256:' + "0" * 32 + ":" + "0" * 64
                     + '"\naccounts = ["*"]\nchannels = "app:*"\n')
    with pytest.raises(config.ConfigError) as err:
        load(TRADE_STREAM_USERS_FILE=str(users))
    assert "channels must be a list of channel globs" in str(err.value)
    assert config.mask(load(TRADE_STREAM_PUBLISH_KEY="secret-key-1234").publish_key) == "****1234"
