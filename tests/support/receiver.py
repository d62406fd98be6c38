"""A webhook receiver on 127.0.0.1 for tests: h11 over asyncio streams, told what to answer request by request.

``script`` is consumed one entry per request: an int status (``500``, ``400``), ``("429", seconds)`` for a 429
with ``Retry-After``, or ``"hang"`` (read the request, never answer). When it is empty every request gets 200.
Every request is recorded (headers, body, the answer given), so a test can check ids, order and signatures.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import h11


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int | None  # None: never answered (hang)


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
                request, body = None, b""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await reader.read(65536)
                        if not data:
                            return
                        conn.receive_data(data)
                    elif isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        body += bytes(event.data)
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    else:
                        return
                assert request is not None
                headers = {k.decode().lower(): v.decode() for k, v in request.headers}
                action = self.script.pop(0) if self.script else self.default
                if action == "hang":
                    self.seen.append(Received(headers, body, None))
                    await asyncio.sleep(3600)
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
