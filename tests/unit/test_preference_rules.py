"""Notification kinds and preferences: the pure rule and its defaults, validation, the store; the notification
store's scope (an account, or named users), hidden kinds, and its migration from files of the first schema;
Broker events' sentences."""

from __future__ import annotations

import os
import sqlite3

import orjson
import pytest

from trade_stream.core import preferences
from trade_stream.core.notification_store import SqliteNotificationStore
from trade_stream.core.notifications import describe, describe_account_status, describe_activity, kind_of
from trade_stream.core.preferences import (
    CHANNELS,
    KINDS,
    Preferences,
    PreferencesUnavailable,
    SqlitePreferenceStore,
    parse,
    wants,
)

pytestmark = pytest.mark.timeout(30)


def test_defaults_fills_rejections_price_alerts_everywhere_the_rest_on_the_bell_and_webhooks():
    for kind in ("fills", "rejections", "price_alerts"):
        assert all(wants(None, kind, c) for c in CHANNELS)
    for kind in ("order_events", "account_status", "activities"):
        assert [c for c in CHANNELS if wants(None, kind, c)] == ["bell", "webhooks"]
    assert [c for c in CHANNELS if wants(None, "a_kind_from_the_future", c)] == ["bell", "webhooks"]


def test_a_stored_kind_wins_and_the_others_keep_their_defaults():
    prefs = {"fills": frozenset({"email"}), "activities": frozenset()}
    assert [c for c in CHANNELS if wants(prefs, "fills", c)] == ["email"]
    assert not any(wants(prefs, "activities", c) for c in CHANNELS)
    assert wants(prefs, "rejections", "push") and wants(prefs, "account_status", "bell")


@pytest.mark.parametrize(("body", "field"), [
    ({"fill": ["bell"]}, "fill: unknown kind"),
    ({"fills": "bell"}, "fills: must be a list"),
    ({"fills": ["bell", "pager"]}, "fills: unknown channel 'pager'"),
    ({"fills": [1]}, "fills: must be a list"),
    ([], "send {"),
    ({}, "send {"),
])
def test_parse_names_the_wrong_field(body, field):
    out = parse(body)
    assert isinstance(out, str) and out.startswith(field)


async def test_the_store_keeps_preferences_across_a_reopen_and_answers_channels(tmp_path):
    path = tmp_path / "preferences.sqlite3"
    prefs = Preferences(SqlitePreferenceStore(path))
    assert prefs.channels("alice", "activities") == frozenset({"bell", "webhooks"})
    view = await prefs.update("alice", {"activities": frozenset({"email", "push"})})
    assert view["activities"] == ["email", "push"] and view["fills"] == list(CHANNELS)
    await prefs.update("alice", {"fills": frozenset({"bell"})})  # a second change keeps the first
    prefs.close()
    again = Preferences(SqlitePreferenceStore(path))
    assert again.channels("alice", "activities") == frozenset({"email", "push"})
    assert again.channels("alice", "fills") == frozenset({"bell"})
    assert again.channels("bob", "fills") == frozenset(CHANNELS)
    assert set(again.view("alice")) == set(KINDS)
    again.close()


async def test_a_failed_write_changes_nothing_in_memory(tmp_path):
    store = SqlitePreferenceStore(tmp_path / "p.sqlite3")
    prefs = Preferences(store)
    store.db.close()  # every write now fails as a broken file would
    with pytest.raises(PreferencesUnavailable, match="cannot be written"):
        await prefs.update("alice", {"fills": frozenset()})
    assert prefs.channels("alice", "fills") == frozenset(CHANNELS)


def test_every_type_has_a_kind():
    assert kind_of("order_filled") == kind_of("order_partial_fill") == "fills"
    assert kind_of("order_rejected") == "rejections"
    assert {kind_of(t) for t in ("order_accepted", "order_cancelled", "order_other")} == {"order_events"}
    assert (kind_of("price_alert"), kind_of("account_status"), kind_of("activity")) == (
        "price_alerts", "account_status", "activities")
    assert describe("fill", {"order": {"symbol": "AAPL"}})["kind"] == "fills"


def test_broker_sentences():
    status = describe_account_status({"account_id": "4f2a9c1e-0000-4000-8000-000000000001",
                                      "status_from": "APPROVED", "status_to": "ACTIVE", "at": "t"})
    assert status["message"] == "Account 4f2a9c1e\u2026 is now ACTIVE" and status["level"] == "info"
    assert describe_account_status({"account_id": "x", "status_to": "ACCOUNT_CLOSED"})["level"] == "warning"
    div = describe_activity({"activity_type": "DIV", "net_amount": "12.4", "symbol": "AAPL"})
    assert (div["message"], div["type"], div["kind"]) == ("Dividend: $12.40 from AAPL", "activity", "activities")
    assert describe_activity({"activity_type": "FEE", "net_amount": "-1"})["message"] == "Fee: -$1.00"
    assert describe_activity({"activity_type": "SPLIT", "net_amount": "0", "symbol": "AAPL"})["message"] == \
        "Stock split: AAPL"
    assert describe_activity({"activity_type": "XYZ"})["message"] == "XYZ"
    rejected = describe("order_cancel_rejected", {"order": {"symbol": "AAPL", "side": "buy", "qty": "1"},
                                                  "reason": "order is already filled"})
    assert rejected["reason"] == "order is already filled"
    assert rejected["message"] == "Buy 1 AAPL: order cancel rejected (order is already filled)"


def note(kind_type: str, message: str = "m") -> dict:
    return {"type": kind_type, "level": "info", "message": message, "kind": kind_of(kind_type)}


def test_store_scope_accounts_and_named_users(tmp_path):
    store = SqliteNotificationStore(tmp_path / "n.sqlite3")
    a = store.add("s1", "acct", note("order_filled"))
    b = store.add("s2", None, note("price_alert"), users=["alice"])
    c = store.add("s3", "acct", note("price_alert"), users=["bob"])  # an account as context only
    assert a is not None and b is not None and c is not None and b["account"] is None
    assert [n["id"] for n in store.list("alice", ["acct"])] == [b["id"], a["id"]]
    assert [n["id"] for n in store.list("bob", None)] == [c["id"], a["id"]]  # seeing every account is not enough
    assert [n["id"] for n in store.list("carol", ["other"])] == []
    assert store.unread_count("alice", ["acct"]) == 2
    assert store.mark_read("carol", [b["id"]], ["acct"]) == []  # not hers to mark
    assert [n["id"] for n in store.list("alice", ["acct"], hidden=["fills"])] == [b["id"]]
    assert store.unread_count("alice", ["acct"], hidden=["price_alerts"]) == 1
    outbox = store.since(0, 10)
    assert [n.get("users") for n in outbox] == [None, ["alice"], ["bob"]]
    assert [n["id"] for n in store.since(0, 10, "bob", ["acct"], ["fills"])] == [c["id"]]
    store.close()


def test_a_file_of_the_first_schema_is_migrated_keeping_rows_and_read_state(tmp_path):
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE notifications (id INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL UNIQUE,
            account TEXT NOT NULL, created REAL NOT NULL, payload BLOB NOT NULL);
        CREATE TABLE read_upto (user TEXT PRIMARY KEY, upto INTEGER NOT NULL);
        CREATE TABLE reads (user TEXT NOT NULL, id INTEGER NOT NULL, PRIMARY KEY (user, id));
    """)
    for i, t in enumerate(("order_filled", "order_rejected", "order_accepted"), 1):
        db.execute("INSERT INTO notifications(source, account, created, payload) VALUES (?, 'default', 1e10, ?)",
                   (f"e-{i}", orjson.dumps({"type": t, "message": t, "level": "info"})))
    db.execute("INSERT INTO reads(user, id) VALUES ('default', 1)")
    db.commit()
    db.close()
    store = SqliteNotificationStore(path)
    listed = store.list("default", None)
    assert [(n["id"], n["type"], n["read"]) for n in listed] == [(3, "order_accepted", False),
                                                                 (2, "order_rejected", False),
                                                                 (1, "order_filled", True)]
    assert [n["id"] for n in store.list("default", None, hidden=["fills"])] == [3, 2]
    assert [n["id"] for n in store.list("default", None, hidden=["order_events"])] == [2, 1]
    assert store.add("e-4", "default", note("order_filled"))["id"] == 4
    store.close()
    reopened = SqliteNotificationStore(path)  # a migrated file opens as it is
    assert reopened.unread_count("default", None) == 3
    reopened.close()


def test_unknown_stored_kinds_and_channels_are_left_out(tmp_path):
    path = tmp_path / "p.sqlite3"
    store = SqlitePreferenceStore(path)
    store.db.execute("INSERT INTO preferences(user, updated, payload) VALUES ('a', 0, ?)",
                     (orjson.dumps({"fills": ["bell", "pager"], "weather": ["bell"]}),))
    store.close()
    again = SqlitePreferenceStore(path)
    assert again.get("a") == {"fills": frozenset({"bell"})}
    again.close()
    assert preferences.effective(None)["fills"] == list(CHANNELS)


def test_the_audience_of_an_account_follows_the_users_file_and_its_reloads(tmp_path, monkeypatch):
    """Who a notification of an account is for without a connection: the users file's users who see it (a
    ``*`` user sees every account) and the TRADE_STREAM_TOKEN user; a reloaded file changes the answer."""
    from trade_stream.edges import identity as identity_module
    from trade_stream.edges.identity import Identity, hash_token, write_users
    from trade_stream.records.users import UserRecord

    path = str(tmp_path / "users.toml")
    write_users(path, [UserRecord("alice", hash_token("a"), ("paper",)), UserRecord("ops", hash_token("o"), ("*",)),
                       UserRecord("bob", hash_token("b"), ("live",))])
    monkeypatch.setattr(identity_module, "RELOAD_EVERY", 0.0)
    ident = Identity("the-token", ["paper", "live"], users_file=path)
    assert sorted(ident.audience("paper")) == ["alice", "default", "ops"]
    assert sorted(ident.audience("live")) == ["bob", "default", "ops"]
    assert Identity("", ["paper", "live"], users_file=path).audience("paper") == ["alice", "ops"]
    write_users(path, [UserRecord("carol", hash_token("c"), ("paper", "live"))])
    os.utime(path, (1, 1))  # a new mtime, as any edit gives it
    assert sorted(ident.audience("paper")) == ["carol", "default"]
