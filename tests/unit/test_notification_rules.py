"""Trade notifications: event types, sentences, number formatting; the store's per-user read state and scoping;
the webhook targets file."""

from __future__ import annotations

import pytest

from trade_stream import config
from trade_stream.core.notification_store import SqliteNotificationStore
from trade_stream.core.notifications import describe, fmt_money, fmt_qty, number
from trade_stream.edges.webhooks import payload, retry_after, sign, sign_body
from trade_stream.records import webhook_targets


def order(**kw):
    base = {"id": "o-1", "symbol": "AAPL", "side": "buy", "qty": "100", "notional": None, "filled_qty": "0",
            "filled_avg_price": None, "status": "new"}
    return {**base, **kw}


@pytest.mark.parametrize(("event", "data", "kind", "message"), [
    ("new", {"order": order()}, "order_accepted", "Buy 100 AAPL accepted"),
    ("accepted", {"order": order(status="accepted")}, "order_accepted", "Buy 100 AAPL accepted"),
    ("fill", {"order": order(filled_qty="100", filled_avg_price="150.25", status="filled"), "price": "150.25",
              "qty": "100"}, "order_filled", "Buy 100 AAPL filled at $150.25"),
    ("partial_fill", {"order": order(filled_qty="40", filled_avg_price="150.1", status="partially_filled"),
                      "price": "150.1", "qty": "40"}, "order_partial_fill",
     "Buy 40 of 100 AAPL partially filled at $150.10"),
    ("canceled", {"order": order(status="canceled")}, "order_cancelled", "Buy 100 AAPL cancelled"),
    ("canceled", {"order": order(status="canceled", filled_qty="40")}, "order_cancelled",
     "Buy 100 AAPL cancelled (40 filled)"),
    ("rejected", {"order": order(symbol="TSLA", side="sell", qty="10", status="rejected")}, "order_rejected",
     "Sell 10 TSLA rejected"),
    ("rejected", {"order": order(symbol="TSLA", side="sell", qty="10", status="rejected"),
                  "reason": "insufficient buying power"}, "order_rejected",
     "Sell 10 TSLA rejected: insufficient buying power"),
    ("expired", {"order": order(status="expired")}, "order_expired", "Buy 100 AAPL expired"),
    ("replaced", {"order": order(status="replaced")}, "order_replaced", "Buy 100 AAPL replaced"),
    ("done_for_day", {"order": order()}, "order_other", "Buy 100 AAPL: done for day"),
    ("pending_new", {"order": order()}, "order_other", "Buy 100 AAPL: pending new"),
    ("order_cancel_rejected", {"order": order(), "reason": "TOO_LATE_TO_CANCEL"}, "order_other",
     "Buy 100 AAPL: order cancel rejected (TOO_LATE_TO_CANCEL)"),
    ("some_future_event", {"order": order()}, "order_other", "Buy 100 AAPL: some future event"),
    ("new", {"order": order(qty=None, notional="500")}, "order_accepted", "Buy $500.00 of AAPL accepted"),
    ("fill", {"order": order(qty=None, notional="500", filled_qty="3.289473684", filled_avg_price="152",
                             status="filled"), "price": "152", "qty": "3.289473684"}, "order_filled",
     "Buy 3.289473684 AAPL filled at $152.00"),
    ("fill", {"order": order(qty="0.5", filled_qty="0.500000000", filled_avg_price="1234.5000",
                             status="filled"), "price": "1234.5", "qty": "0.5"}, "order_filled",
     "Buy 0.5 AAPL filled at $1,234.50"),
])
def test_each_event_type_gets_its_type_and_sentence(event, data, kind, message):
    note = describe(event, data)
    assert (note["type"], note["message"]) == (kind, message)
    assert note["level"] == ("warning" if kind == "order_rejected" else "info")
    assert note["trade_id"] == "o-1" and note["action"] in ("BUY", "SELL") and note["event"] == event


def test_fill_fields_and_number_formatting():
    note = describe("fill", {"order": order(filled_qty="100", filled_avg_price="150.250000000", status="filled"),
                             "price": "150.25", "qty": "100", "timestamp": "2026-01-02T15:00:00.123456789Z"})
    assert (note["fill_price"], note["quantity"], note["status"]) == ("150.25", "100", "filled")
    assert note["timestamp"] == "2026-01-02T15:00:00.123456789Z"
    assert fmt_qty(number("1250.000")) == "1,250" and fmt_qty(number("0.001")) == "0.001"
    assert fmt_money(number("0.0001")) == "$0.0001" and fmt_money(number("105.8988475")) == "$105.8988475"
    assert fmt_money(number("150")) == "$150.00" and number("NaN") is None and number("abc") is None
    assert describe("fill", {})["message"] == "Order ? filled"  # a malformed event still becomes a sentence


def test_read_state_is_per_user_and_scoped_by_account(tmp_path):
    store = SqliteNotificationStore(tmp_path / "n.sqlite3")
    a1 = store.add("e-1", "acct-a", {"type": "order_filled", "message": "one"})
    a2 = store.add("e-2", "acct-a", {"type": "order_filled", "message": "two"})
    b1 = store.add("e-3", "acct-b", {"type": "order_rejected", "message": "three"})
    assert store.add("e-1", "acct-a", {"type": "order_filled"}) is None  # the same event twice is stored once
    assert a1["id"] < a2["id"] < b1["id"]
    assert [n["id"] for n in store.list("alice", ["acct-a"])] == [a2["id"], a1["id"]]  # newest first
    assert [n["id"] for n in store.list("bob", ["acct-b"])] == [b1["id"]]  # never another account's
    assert store.mark_read("alice", [a1["id"], b1["id"]], ["acct-a"]) == [a1["id"]]  # b1 is not alice's to mark
    assert store.unread_count("alice", ["acct-a"]) == 1 and store.unread_count("carol", ["acct-a"]) == 2
    assert [n["read"] for n in store.list("alice", ["acct-a"])] == [False, True]
    assert [n["id"] for n in store.list("alice", ["acct-a"], unread_only=True)] == [a2["id"]]
    assert store.mark_read("alice", None, ["acct-a"]) == [a2["id"]]
    assert store.unread_count("alice", ["acct-a"]) == 0 and store.unread_count("carol", ["acct-a"]) == 2
    a3 = store.add("e-4", "acct-a", {"type": "order_accepted", "message": "four"})
    assert [n["id"] for n in store.list("alice", ["acct-a"], unread_only=True)] == [a3["id"]]
    assert [n["id"] for n in store.since(a1["id"], 10, "alice", ["acct-a"])] == [a2["id"], a3["id"]]
    store.close()
    reopened = SqliteNotificationStore(tmp_path / "n.sqlite3")  # durable: read state survives a restart
    assert reopened.unread_count("alice", ["acct-a"]) == 1 and reopened.last_id() == a3["id"]
    reopened.close()


def write(tmp_path, text):
    path = tmp_path / "hooks.toml"
    path.write_text(text)
    return str(path)


def test_webhooks_file_parses_and_each_mistake_names_target_and_field(tmp_path):
    path = write(tmp_path, '[[target]]\nname = "desk"\nurl = "https://h.example/x"\nsecret_env = "DESK_SECRET"\n'
                           'events = ["order_filled"]\n\n[[target]]\nname = "chat"\nurl = "http://127.0.0.1:9/s"\n'
                           'format = "slack"\ntimeout = 2.5\n')
    desk, chat = webhook_targets.load(path, {"DESK_SECRET": "s3cret"})
    assert desk.secret == "s3cret" and "s3cret" not in repr(desk) and desk.wants("order_filled", "any")
    assert not desk.wants("order_accepted", "any") and chat.wants("order_other", "x") and chat.timeout == 2.5
    for text, expected in (
        ('[[target]]\nname = "a"\n', "target #1 ('a'): url must be"),
        ('[[target]]\nname = "a"\nurl = "https://x"\nevents = ["order_filed"]\n', "events: unknown type"),
        ('[[target]]\nname = "a"\nurl = "https://x"\nsecret_env = "NOPE"\n', "secret_env: environment variable NOPE"),
        ('[[target]]\nname = "a"\nurl = "https://x"\nformat = "teams"\n', "format must be one of"),
        ('[[target]]\nname = "a"\nurl = "https://x"\ncolour = 1\n', "unknown field 'colour'"),
        ('[[target]]\nname = "a"\nurl = "https://x"\n[[target]]\nname = "a"\nurl = "https://y"\n', "used twice"),
        ("[[target]\n", "is not valid TOML"),
    ):
        with pytest.raises(config.ConfigError) as info:
            config.load_webhooks(write(tmp_path, text), {})
        line = str(info.value)
        assert line.startswith("TRADE_STREAM_WEBHOOKS_FILE=") and expected in line and "\n" not in line, line


def test_payload_formats_signature_and_retry_after():
    target = webhook_targets.WebhookTarget("t", "https://x", secret="k")
    note = {"id": 7, "type": "order_filled", "message": "Buy 1 AAPL filled at $1.00", "read": False}
    body = payload(target, "d-1", note)
    assert b'"delivery_id":"d-1"' in body and b'"read"' not in body
    assert sign_body("k", b"abc") == "sha256=" + "342e519ce0ad6c03a36b98eeb3f1d130db4813b9df4d1160eda488d712dc78ee"
    # the Standard Webhooks specification's own example (a whsec_ secret is the key it encodes)
    assert sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
                b'{"test": 2432232314}') == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    slack = webhook_targets.WebhookTarget("s", "https://x", format="slack")
    discord = webhook_targets.WebhookTarget("d", "https://x", format="discord")
    assert payload(slack, "d", note) == b'{"text":"Buy 1 AAPL filled at $1.00"}'
    assert payload(discord, "d", note) == b'{"content":"Buy 1 AAPL filled at $1.00"}'
    assert retry_after("3", 0) == 3 and retry_after("soon", 0) is None and retry_after(None, 0) is None
    assert retry_after("Thu, 01 Jan 1970 00:01:40 GMT", 40.0) == 60.0
