"""Helpers for tests that run the real relay against the real simulator over loopback sockets."""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

from trade_stream.app import App
from trade_stream.config import Config, Timings
from trade_stream.simulator import SimConfig
from trade_stream.simulator.clock import Clock

KEY, SECRET, TOKEN = "KEY", "SECRET", "test-token-123456"
FAST = Timings(reconnect_min=0.05, reconnect_max=0.2, conn_limit_wait=0.6, rate_limited_wait=0.6,
               config_error_wait=0.6, auth_retries=1, auth_retry_delay=0.05, open_timeout=3, shutdown_grace=1.0,
               journal_retry=0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port: int, path: str, token: str | None = None) -> tuple[int, dict[str, Any]]:
    """GET a JSON route of the relay on 127.0.0.1 (a Bearer ``token`` if given): (status, decoded body)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read() or b"{}")


def sim_config() -> SimConfig:
    """The ``sim`` fixture's simulator: deterministic (no automatic data), knowing the relay's key. Its clock is in
    a regular session (the wall clock from an hour after the open to an hour before the close, else a session's
    10:30), so a test that turns the generator on gets stock trades at any real hour; tests about other hours pin
    their own clock (tests/support/clocks.py)."""
    return SimConfig(host="127.0.0.1", port=0, accounts={KEY: SECRET}, rate_per_symbol=0.0, clock=Clock.in_session())


def relay_config(sim: Any, state_dir: Path, **overrides: Any) -> Config:
    values: dict[str, Any] = dict(
        api_key=KEY, secret_key=SECRET, data_stream_url=f"{sim.ws_url}/v2/iex",
        trading_stream_url=f"{sim.ws_url}/stream", base_url=sim.http_url, data_url=sim.http_url,
        host="127.0.0.1", port=0, linger=0.3, ping_interval=0, token=TOKEN, state_dir=str(state_dir),
        timings=FAST,
    )
    values.update(overrides)
    return Config(**values)


async def wait_until(cond: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


@asynccontextmanager
async def running(cfg: Config):
    app = App(cfg)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


class Browser:
    """A test client speaking the browser protocol; keeps every message it got."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []
        self._cursor = 0

    @classmethod
    @asynccontextmanager
    async def connect(cls, port: int, path: str = "/", **kwargs: Any):
        kwargs.setdefault("close_timeout", 0.5)
        async with connect(f"ws://127.0.0.1:{port}{path}", ping_interval=None, **kwargs) as ws:
            yield cls(ws)

    async def send(self, msg: Any) -> None:
        await self.ws.send(msg if isinstance(msg, str | bytes) else orjson.dumps(msg).decode())

    async def expect(self, pred: Callable[[dict[str, Any]], bool] | str, timeout: float = 5.0) -> dict[str, Any]:
        """The next message (after those already matched) satisfying ``pred`` (or of that ``type``)."""
        test = (lambda m: m.get("type") == pred) if isinstance(pred, str) else pred
        deadline = time.monotonic() + timeout
        while True:
            for i in range(self._cursor, len(self.seen)):
                if test(self.seen[i]):
                    self._cursor = i + 1
                    return self.seen[i]
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching message within {timeout}s; got {self.seen[self._cursor:][-5:]}")
            raw = await asyncio.wait_for(self.ws.recv(), left)
            msg = orjson.loads(raw)
            self.seen.extend(msg if isinstance(msg, list) else [msg])

    async def drain(self, seconds: float = 0.2) -> None:
        """Read whatever arrives for ``seconds``."""
        try:
            while True:
                raw = await asyncio.wait_for(self.ws.recv(), seconds)
                msg = orjson.loads(raw)
                self.seen.extend(msg if isinstance(msg, list) else [msg])
        except TimeoutError:
            pass

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.seen if m.get("type") == kind]


def small_socket(port: int, rcvbuf: int = 8192):
    """A connected socket with a small receive buffer, so a client that stops reading backs up the server
    quickly instead of after the kernel's autotuned tens of megabytes."""
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


def fill_journal(path: Path, count: int, pad: int = 0) -> None:
    """``count`` order events written straight into a journal (one transaction), as a long history to replay."""
    from trade_stream.core.journal import Journal

    journal = Journal(path)
    journal.db.execute("BEGIN")
    for i in range(count):
        order = {"id": f"old-{i}", "symbol": "AAPL", "side": "buy", "status": "new", "note": "x" * pad}
        journal.append({"event": "new", "order": order, "timestamp": f"2026-01-01T00:00:{i}Z", "order_id": order["id"],
                        "symbol": "AAPL", "side": "buy", "status": "new"})
    journal.db.execute("COMMIT")
    journal.close()
