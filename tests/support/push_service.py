"""A Web Push service on 127.0.0.1 for tests, doing what a browser vendor's does with an application server's
message (RFC 8030): check the VAPID token (RFC 8292) and, standing in for the browser too, decrypt the aes128gcm
payload (RFC 8291) with the subscription's private key and auth secret.

``subscribe()`` makes a subscription the way a browser does: a fresh P-256 key pair and a 16-byte auth secret,
an endpoint on this service, as ``PushSubscription.toJSON()``. ``vapid_public_key`` is the key every token must
be signed with (the daemon's ``applicationServerKey``). Each request is checked and recorded (``seen``); one
that fails a check is answered 401 or 400 with the reason, so a test sees what was wrong. ``script`` is consumed
one status per accepted request (``500``, ``410``), then ``default`` (201, as push services answer); an endpoint
never subscribed (or ``unsubscribe``d) is 404.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Any

import h11
import http_ece
import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.receiver import read_request


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class BrowserKeys:
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes


@dataclass
class Pushed:
    path: str
    headers: dict[str, str]
    status: int
    claims: dict[str, Any] | None = None
    payload: dict[str, Any] | None = None  # the decrypted message
    error: str = ""
    at: float = field(default_factory=time.time)


@dataclass
class PushService:
    vapid_public_key: str
    script: list[int] = field(default_factory=list)
    default: int = 201
    seen: list[Pushed] = field(default_factory=list)
    keys: dict[str, BrowserKeys] = field(default_factory=dict)  # path -> the browser's side of a subscription
    server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def origin(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def start(self) -> PushService:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self._tasks):
            task.cancel()

    def subscribe(self, name: str | None = None) -> dict[str, Any]:
        """A new subscription as the browser's ``PushSubscription.toJSON()``."""
        path = f"/push/{name or b64url(os.urandom(12))}"
        key = ec.generate_private_key(ec.SECP256R1())
        auth = os.urandom(16)
        self.keys[path] = BrowserKeys(key, auth)
        point = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        return {"endpoint": self.origin + path, "expirationTime": None,
                "keys": {"p256dh": b64url(point), "auth": b64url(auth)}}

    def unsubscribe(self, subscription: dict[str, Any]) -> None:
        self.keys.pop(subscription["endpoint"].removeprefix(self.origin), None)

    def delivered(self) -> list[Pushed]:
        return [p for p in self.seen if 200 <= p.status < 300]

    def check(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Pushed]:
        """What a push service checks, then what the browser does: (status, record)."""
        got = Pushed(path, headers, 0)
        scheme, _, params = headers.get("authorization", "").partition(" ")
        parts = dict(p.strip().split("=", 1) for p in params.split(",") if "=" in p)
        if scheme.lower() != "vapid" or "t" not in parts or "k" not in parts:
            got.error = "no VAPID Authorization: vapid t=…,k=…"
            return 401, got
        if parts["k"] != self.vapid_public_key:
            got.error = f"k={parts['k']} is not the application server key of the subscription"
            return 403, got
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(parts["k"]))
        try:
            claims = jwt.decode(parts["t"], public, algorithms=["ES256"], audience=self.origin,
                                options={"require": ["aud", "exp", "sub"]})
        except jwt.PyJWTError as exc:
            got.error = f"VAPID token refused: {exc}"
            return 403, got
        got.claims = claims
        if not time.time() < claims["exp"] <= time.time() + 86400:
            got.error = f"exp {claims['exp']} is not within the next 24 hours"
            return 403, got
        if not str(claims["sub"]).startswith(("mailto:", "https://")):
            got.error = f"sub {claims['sub']!r} is neither mailto: nor https:"
            return 403, got
        if headers.get("content-encoding") != "aes128gcm" or not headers.get("ttl", "").isdigit():
            got.error = "Content-Encoding must be aes128gcm, and TTL a number of seconds"
            return 400, got
        if len(body) > 4096:
            got.error = f"payload of {len(body)} bytes is over 4096"
            return 413, got
        browser = self.keys.get(path)
        if browser is None:
            got.error = "no such subscription"
            return 404, got
        try:
            plain = http_ece.decrypt(body, private_key=browser.private_key, auth_secret=browser.auth,
                                     version="aes128gcm")
            got.payload = orjson.loads(plain)
        except Exception as exc:  # what the browser would drop: undecryptable
            got.error = f"cannot decrypt: {type(exc).__name__}: {exc}"
            return 400, got
        return 0, got

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                received = await read_request(conn, reader)
                if received is None:
                    return
                request, headers, body = received
                status, got = self.check(request.target.decode(), headers, body)
                if status == 0:
                    status = self.script.pop(0) if self.script else self.default
                got.status = status
                self.seen.append(got)
                reply = orjson.dumps({"status": status, "error": got.error})
                writer.write(conn.send(h11.Response(status_code=status, headers=[
                    (b"Content-Type", b"application/json"), (b"Content-Length", str(len(reply)).encode())])))
                writer.write(conn.send(h11.Data(data=reply)))
                writer.write(conn.send(h11.EndOfMessage()))
                await writer.drain()
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError, asyncio.CancelledError):
            pass
        finally:
            if task is not None:
                self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()
