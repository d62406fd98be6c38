"""The Web Push application server's identity (VAPID, RFC 8292) as a plain record: a P-256 key pair and a contact.

The keys take the forms browsers and every Web Push library use:

- ``TRADE_STREAM_VAPID_PRIVATE_KEY``: the private scalar, 32 bytes, base64url without padding;
- ``TRADE_STREAM_VAPID_PUBLIC_KEY``: the public key as an uncompressed point (65 bytes, ``0x04 || X || Y``),
  base64url without padding: what the page passes to ``pushManager.subscribe`` as ``applicationServerKey``;
- ``TRADE_STREAM_VAPID_SUBJECT``: ``mailto:you@example.com`` or an ``https://`` URL, the ``sub`` claim a push
  service uses to reach the operator.

The public key is derivable from the private one; it is a setting anyway so that the env file shows what
browsers hold, and it is checked to match: a pair that does not would sign tokens no push service accepts for
the subscriptions made with the public key. Pure: cryptography only, nothing here connects.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

SETTINGS = ("TRADE_STREAM_VAPID_PRIVATE_KEY", "TRADE_STREAM_VAPID_PUBLIC_KEY", "TRADE_STREAM_VAPID_SUBJECT")
# RFC 8292 section 2.1: a mailto: URI or an https: URL. One address, nothing that could end a header.
SUBJECT_RE = re.compile(r"(mailto:[^@\s<>,;\"]+@[^@\s<>,;\"]+|https://[^\s\"<>]+)")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    """Base64url with or without padding; ValueError for anything else (standard base64's + and / included)."""
    text = text.strip()
    if not re.fullmatch(r"[A-Za-z0-9_-]*=*", text):
        raise ValueError("is not base64url (letters, digits, - and _)")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        raise ValueError("is not base64url (letters, digits, - and _)") from None


def public_point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


@dataclass(frozen=True)
class VapidKeys:
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)
    public_key: str  # base64url of the uncompressed point: applicationServerKey
    subject: str


def generate(subject: str) -> VapidKeys:
    key = ec.generate_private_key(ec.SECP256R1())
    return VapidKeys(key, b64url(public_point(key.public_key())), subject)


def env_lines(keys: VapidKeys) -> list[str]:
    """The three lines ready for the env file."""
    scalar = keys.private_key.private_numbers().private_value.to_bytes(32, "big")
    return [f"TRADE_STREAM_VAPID_PRIVATE_KEY={b64url(scalar)}", f"TRADE_STREAM_VAPID_PUBLIC_KEY={keys.public_key}",
            f"TRADE_STREAM_VAPID_SUBJECT={keys.subject}"]


def check_subject(subject: str) -> str:
    subject = subject.strip()
    if not SUBJECT_RE.fullmatch(subject):
        raise ValueError("must be mailto:you@example.com or an https:// URL where a push service can reach you")
    return subject


def load(private: str, public: str, subject: str) -> VapidKeys:
    """The three settings as keys; ValueError starting with the setting at fault, saying how to fix it."""
    fix = "run `trade-stream push keys` and copy its three lines into the env file"
    try:
        scalar = b64url_decode(private)
        if len(scalar) != 32:
            raise ValueError(f"is {len(scalar)} bytes, not the 32 of a P-256 private key")
        key = ec.derive_private_key(int.from_bytes(scalar, "big"), ec.SECP256R1())
    except ValueError as exc:
        raise ValueError(f"TRADE_STREAM_VAPID_PRIVATE_KEY {exc}: {fix}") from None
    try:
        point = b64url_decode(public)
        if len(point) != 65 or point[0] != 4:
            raise ValueError("is not an uncompressed P-256 point (65 bytes starting 0x04)")
    except ValueError as exc:
        raise ValueError(f"TRADE_STREAM_VAPID_PUBLIC_KEY {exc}: {fix}") from None
    if point != public_point(key.public_key()):
        raise ValueError(f"TRADE_STREAM_VAPID_PUBLIC_KEY is not the public key of TRADE_STREAM_VAPID_PRIVATE_KEY: "
                         f"{fix}")
    try:
        subject = check_subject(subject)
    except ValueError as exc:
        raise ValueError(f"TRADE_STREAM_VAPID_SUBJECT {exc}") from None
    return VapidKeys(key, b64url(point), subject)
