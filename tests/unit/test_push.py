"""Web Push's pure parts: the VAPID settings, a PushSubscription's checks, the message, its TTL and urgency, the
VAPID token (verified as a push service does, with PyJWT) and the aes128gcm body (decrypted as a browser does)."""

from __future__ import annotations

import base64
import os
import time

import http_ece
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from trade_stream.config import Timings
from trade_stream.core.push_subscriptions import SqlitePushSubscriptions
from trade_stream.edges.outbox import Delivery
from trade_stream.edges.push import MAX_PLAINTEXT, PushSender, VapidSigner, message, urgency_and_ttl
from trade_stream.edges.push_subscriptions import parse
from trade_stream.records import vapid

pytestmark = pytest.mark.timeout(10)
KEYS = vapid.generate("mailto:ops@example.com")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def browser() -> tuple[ec.EllipticCurvePrivateKey, bytes, dict]:
    key, auth = ec.generate_private_key(ec.SECP256R1()), os.urandom(16)
    point = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return key, auth, {"endpoint": "https://push.example.net:8443/wpush/v2/abc",
                       "keys": {"p256dh": b64(point), "auth": b64(auth)}}


def test_env_lines_load_back_and_the_public_key_is_an_uncompressed_point():
    lines = dict(line.split("=", 1) for line in vapid.env_lines(KEYS))
    keys = vapid.load(*(lines[s] for s in vapid.SETTINGS))
    assert keys.public_key == KEYS.public_key and keys.subject == "mailto:ops@example.com"
    point = vapid.b64url_decode(keys.public_key)
    assert len(point) == 65 and point[0] == 4 and "=" not in keys.public_key
    assert len(vapid.b64url_decode(lines["TRADE_STREAM_VAPID_PRIVATE_KEY"])) == 32


@pytest.mark.parametrize("private, public, subject, setting", [
    ("abcd", None, "mailto:a@b.c", "TRADE_STREAM_VAPID_PRIVATE_KEY"),
    ("a+b/", None, "mailto:a@b.c", "TRADE_STREAM_VAPID_PRIVATE_KEY"),
    (None, "BAAA", "mailto:a@b.c", "TRADE_STREAM_VAPID_PUBLIC_KEY"),
    (None, "other", "mailto:a@b.c", "TRADE_STREAM_VAPID_PUBLIC_KEY is not the public key"),
    (None, None, "a@b.c", "TRADE_STREAM_VAPID_SUBJECT"),
    (None, None, "mailto:a@b.c\r\nX: y", "TRADE_STREAM_VAPID_SUBJECT"),
    (None, None, "http://example.com", "TRADE_STREAM_VAPID_SUBJECT"),
])
def test_bad_vapid_settings_name_the_setting(private, public, subject, setting):
    lines = dict(line.split("=", 1) for line in vapid.env_lines(KEYS))
    if public == "other":
        public = vapid.generate(subject).public_key
    with pytest.raises(ValueError) as exc:
        vapid.load(private or lines["TRADE_STREAM_VAPID_PRIVATE_KEY"], public or KEYS.public_key, subject)
    assert str(exc.value).startswith(setting)


def test_a_subscription_is_checked_field_by_field():
    _, _, sub = browser()
    assert parse(sub) == (sub["endpoint"], sub["keys"]["p256dh"], sub["keys"]["auth"])
    off_curve = b64(b"\x04" + b"\x01" * 64)
    for body, field in [({**sub, "endpoint": "javascript:alert(1)"}, "endpoint"),
                        ({**sub, "endpoint": "https://push.example/a b"}, "endpoint"),
                        ({**sub, "endpoint": "https://x/" + "a" * 3000}, "endpoint"),
                        ({**sub, "keys": {**sub["keys"], "p256dh": off_curve}}, "keys.p256dh"),
                        ({**sub, "keys": {**sub["keys"], "auth": b64(os.urandom(32))}}, "keys.auth"),
                        ({**sub, "keys": []}, "keys"), ([], "send")]:
        with pytest.raises(ValueError) as exc:
            parse(body)
        assert str(exc.value).startswith(field), body


def test_the_message_fits_a_push_and_levels_set_urgency_and_ttl():
    note = {"id": 7, "type": "order_filled", "level": "info", "message": "Buy 1 AAPL filled at $1.00",
            "trade_id": "t-1", "account": "default", "symbol": "AAPL", "read": False, "source": "e-1"}
    shown = orjson.loads(message(note))
    assert shown["title"] == "Order filled" and shown["tag"] == "trade-stream-7" and "read" not in shown
    long = orjson.loads(message({**note, "message": "x" * 10_000}))
    assert len(message({**note, "message": "x" * 10_000})) <= MAX_PLAINTEXT and long["body"].endswith("…")
    assert urgency_and_ttl("error") == ("high", 900)
    assert urgency_and_ttl("warning") == ("high", 3600)
    assert urgency_and_ttl("info") == urgency_and_ttl("unknown") == ("normal", 86400)


def test_the_vapid_token_verifies_with_the_public_key_and_is_cached_per_origin():
    signer = VapidSigner(KEYS)
    now = time.time()
    header = signer.header("https://push.example.net:8443", now)
    scheme, params = header.split(" ", 1)
    parts = dict(p.split("=", 1) for p in params.split(","))
    assert scheme == "vapid" and parts["k"] == KEYS.public_key
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), vapid.b64url_decode(parts["k"]))
    claims = jwt.decode(parts["t"], public, algorithms=["ES256"], audience="https://push.example.net:8443")
    assert claims["sub"] == "mailto:ops@example.com" and now < claims["exp"] <= now + 86400
    assert signer.header("https://push.example.net:8443", now + 60) == header
    assert signer.header("https://push.example.net:8443", now + 12 * 3600) != header  # renewed before it ends
    assert signer.header("https://other.example", now) != header


async def test_the_body_decrypts_with_the_browsers_keys_and_an_expired_one_is_not_sent(tmp_path):
    key, auth, sub = browser()
    subs = SqlitePushSubscriptions(tmp_path / "s.sqlite3", per_user=5)
    record, _ = await subs.add("ann", sub["endpoint"], sub["keys"]["p256dh"], sub["keys"]["auth"])
    sender = PushSender(KEYS, subs, None, list, Timings())
    body = message({"id": 1, "type": "order_rejected", "level": "warning", "message": "rejected"})
    now = time.time()
    row = Delivery(1, "d-1", record.id, "o", "order_rejected", body, now - 100, 0, now, "push")
    endpoint, headers, encrypted = sender.request(row, now)
    assert endpoint == sub["endpoint"] and headers["Urgency"] == "high" and headers["TTL"] == "3500"
    assert headers["Content-Encoding"] == "aes128gcm" and len(encrypted) <= 4096
    assert http_ece.decrypt(encrypted, private_key=key, auth_secret=auth, version="aes128gcm") == body
    late = sender.request(row, now + 3600)
    assert not late.delivered and not late.retryable and "TTL" in late.error
    await subs.gone(record.id)
    assert "removed" in sender.request(row, now).error
    subs.close()
