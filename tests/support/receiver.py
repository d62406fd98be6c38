"""A webhook receiver on 127.0.0.1 for tests: h11 over asyncio streams, told what to answer request by request.

``script`` is consumed one entry per request: an int status (``500``, ``400``), ``("429", seconds)`` for that
status with ``Retry-After``, ``"hang"`` (read the request, never answer), ``("big", n)`` (200 with an n-byte body,
written until the client stops reading) or ``("drip", seconds)`` (the status line one byte every ``seconds``, for
ever). When it is empty every request gets ``default`` (200). Every request is recorded (headers, body, the answer
given, the body bytes written), so a test can check ids, order, signatures and how much a client read.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import h11


async def read_request(conn: h11.Connection, reader: asyncio.StreamReader
                       ) -> tuple[h11.Request, dict[str, str], bytes] | None:
    """One whole request (its head, headers lower-cased, and body), or None when the peer closed first or sent
    something else."""
    request, body = None, b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(65536)
            if not data:
                return None
            conn.receive_data(data)
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage) and request is not None:
            return request, {k.decode().lower(): v.decode() for k, v in request.headers}, body
        else:
            return None


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int | None  # None: never answered (hang, drip)
    sent: int = 0  # body bytes written (a big answer stops when the client closes)
    at: float = field(default_factory=time.monotonic)  # when the request had been read
    finished: bool = False  # a big answer: written whole, or cut off by the client


@dataclass
class Receiver:
    script: list[Any] = field(default_factory=list)
    default: Any = 200
    seen: list[Received] = field(default_factory=list)
    server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/hook"

    async def start(self) -> Receiver:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self._tasks):
            task.cancel()

    def acked(self) -> list[Received]:
        return [r for r in self.seen if r.status is not None and 200 <= r.status < 300]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                got = await read_request(conn, reader)
                if got is None:
                    return
                _, headers, body = got
                action = self.script.pop(0) if self.script else self.default
                if action == "hang":
                    self.seen.append(Received(headers, body, None))
                    await asyncio.sleep(3600)
                    return
                if isinstance(action, tuple) and action[0] == "drip":
                    self.seen.append(Received(headers, body, None))
                    for byte in b"HTTP/1.1 200 OK\r\n" * 1000:
                        writer.write(bytes([byte]))
                        await writer.drain()
                        await asyncio.sleep(action[1])
                    return
                if isinstance(action, tuple) and action[0] == "big":
                    await self._big(writer, conn, headers, body, action[1])
                    return
                extra: list[tuple[bytes, bytes]] = []
                if isinstance(action, tuple):
                    action, wait = int(action[0]), action[1]
                    extra.append((b"Retry-After", str(wait).encode()))
                status = int(action)
                self.seen.append(Received(headers, body, status))
                reply = f'{{"status":{status}}}'.encode()
                writer.write(conn.send(h11.Response(status_code=status, headers=[
                    (b"Content-Type", b"application/json"), (b"Content-Length", str(len(reply)).encode()),
                    *extra])))
                writer.write(conn.send(h11.Data(data=reply)))
                writer.write(conn.send(h11.EndOfMessage()))
                await writer.drain()
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError, asyncio.CancelledError):
            pass  # a hanging answer is cancelled when the receiver stops
        finally:
            if task is not None:
                self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _big(self, writer: asyncio.StreamWriter, conn: h11.Connection, headers: dict[str, str], body: bytes,
                   size: int) -> None:
        """200 with a ``size``-byte body, written in 64 KiB chunks until done or the client closes."""
        got = Received(headers, body, 200)
        self.seen.append(got)
        writer.write(conn.send(h11.Response(status_code=200, headers=[
            (b"Content-Type", b"application/octet-stream"), (b"Content-Length", str(size).encode())])))
        chunk = b"x" * 65536
        try:
            while got.sent < size:
                piece = chunk[:size - got.sent]
                writer.write(conn.send(h11.Data(data=piece)))
                await writer.drain()
                got.sent += len(piece)
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
        finally:
            got.finished = True
