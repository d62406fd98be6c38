"""A minimal SSE test client over raw asyncio streams: checks headers and reads chunked (optionally gzipped)
event streams incrementally, so a test sees each event when it arrives."""

from __future__ import annotations

import asyncio
import zlib
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import orjson


@dataclass
class Event:
    event: str = "message"
    data: str = ""
    id: str | None = None
    comment: str | None = None

    def json(self):
        return orjson.loads(self.data)


@dataclass
class SseResponse:
    status: int
    headers: dict[str, str]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    body: bytes = b""
    gzip: bool = False
    _z: object = None
    _text: str = ""
    events: list[Event] = field(default_factory=list)
    chunks: int = 0

    async def _chunk(self) -> bytes:
        size_line = await self.reader.readline()
        if not size_line:
            raise EOFError("stream closed")
        size = int(size_line.strip(), 16)
        data = await self.reader.readexactly(size + 2)
        if size == 0:
            raise EOFError("stream ended")
        self.chunks += 1
        return data[:-2]

    async def next(self, timeout: float = 5.0, comments: bool = False) -> Event:
        """The next event (or comment, if asked), reading chunks as needed."""
        while True:
            parsed = self._parse_one(comments)
            if parsed is not None:
                return parsed
            data = await asyncio.wait_for(self._chunk(), timeout)
            if self.gzip:
                if self._z is None:
                    self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
                data = self._z.decompress(data)  # type: ignore[attr-defined]
                assert data.endswith(b"\n\n"), "each gzip chunk must decompress to whole events (sync flush)"
            self._text += data.decode()

    def _parse_one(self, comments: bool) -> Event | None:
        while "\n\n" in self._text:
            block, self._text = self._text.split("\n\n", 1)
            ev = Event()
            seen = False
            for line in block.split("\n"):
                if line.startswith(":"):
                    ev.comment = line[1:].strip()
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                seen = True
                if name == "data":
                    ev.data = value if not ev.data else ev.data + "\n" + value
                elif name == "event":
                    ev.event = value
                elif name == "id":
                    ev.id = value
                elif name == "retry":
                    ev.event, ev.data = "retry", value
            if seen or (comments and ev.comment is not None):
                self.events.append(ev)
                return ev
        return None

    async def until(self, event: str, timeout: float = 5.0) -> Event:
        while True:
            ev = await self.next(timeout)
            if ev.event == event:
                return ev


@asynccontextmanager
async def sse_get(port: int, target: str, headers: dict[str, str] | list[tuple[str, str]] | None = None,
                  method: str = "GET", sock=None, body: bytes = b""):
    """One request over a fresh connection (``headers`` as pairs when one is sent twice), its answer's head read
    and, when it has a Content-Length, its body; a stream is read on from the response."""
    if sock is not None:
        reader, writer = await asyncio.open_connection(sock=sock)
    else:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    lines += [f"{k}: {v}" for k, v in pairs]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        if ":" in line:
            k, _, v = line.partition(":")
            parsed[k.strip().lower()] = v.strip()
    resp = SseResponse(int(status_line.split()[1]), parsed, reader, writer,
                       gzip=parsed.get("content-encoding") == "gzip")
    if "content-length" in parsed and method != "HEAD":
        resp.body = await reader.readexactly(int(parsed["content-length"]))
    try:
        yield resp
    finally:
        writer.transport.abort()
