"""Web Push subscriptions as a browser posts them: its ``PushSubscription``, checked.

A subscription is the browser's ``subscription.toJSON()``: ``endpoint`` (the push service URL a message is
POSTed to), ``keys.p256dh`` (the browser's P-256 public key, 65 bytes uncompressed, base64url) and ``keys.auth``
(a 16-byte secret, base64url); the two keys are what each message is encrypted to (RFC 8291). ``parse`` checks
all of it, so a malformed one is refused with a 400 naming the field instead of failing at every delivery.

What is kept of each, the per-user bound and where they are kept: core/push_subscriptions.py.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec

from trade_stream.records.vapid import b64url_decode

MAX_ENDPOINT = 2048  # browsers' endpoints are a few hundred characters


def parse_endpoint(value: object) -> str:
    """A push endpoint: an http(s) URL with a host, no credentials or fragment; ValueError naming the field."""
    if not isinstance(value, str) or not value or len(value) > MAX_ENDPOINT:
        raise ValueError(f"endpoint: must be the subscription's push service URL (at most {MAX_ENDPOINT} "
                         "characters)")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError:
        raise ValueError("endpoint: is not a URL") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("endpoint: must be an https:// URL of a push service")
    if "@" in parts.netloc or parts.fragment or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError("endpoint: must not carry credentials, a fragment, spaces or control characters")
    return value


def parse(body: object) -> tuple[str, str, str]:
    """(endpoint, p256dh, auth) of a PushSubscription JSON, or ValueError naming the field at fault."""
    if not isinstance(body, dict):
        raise ValueError('send the PushSubscription as JSON: {"endpoint": "https://…", "keys": {"p256dh": "…", '
                         '"auth": "…"}}')
    endpoint = parse_endpoint(body.get("endpoint"))
    keys = body.get("keys")
    if not isinstance(keys, dict):
        raise ValueError("keys: must be an object with p256dh and auth")
    p256dh, auth = keys.get("p256dh"), keys.get("auth")
    try:
        point = b64url_decode(p256dh) if isinstance(p256dh, str) else b""
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        if len(point) != 65:
            raise ValueError
    except ValueError:
        raise ValueError("keys.p256dh: must be the browser's P-256 public key, 65 bytes uncompressed, "
                         "base64url") from None
    try:
        secret = b64url_decode(auth) if isinstance(auth, str) else b""
    except ValueError:
        secret = b""
    if len(secret) != 16:
        raise ValueError("keys.auth: must be the subscription's 16-byte auth secret, base64url")
    assert isinstance(p256dh, str) and isinstance(auth, str)
    return endpoint, p256dh.strip(), auth.strip()
