"""The one shape of every stream kind on the side-port: accept → open → hold → pump → release.

A stream kind is a route's handler. ``accept`` looks at the request alone and answers it (a 400, a 401, …) or
returns the connection's state; the server then runs the template on the connection's ``Channel``: ``verify``
may still answer it when that takes a look elsewhere (a 404 for a strategy the channel's history does not
hold), before anything of the stream is written or taken; ``open``
writes the head and makes the writer, ``hold`` replays what the client missed and joins the live fan-out (False
when the stream already ended, e.g. an ``until`` in the past), ``pump`` keeps it alive until the client leaves,
and ``release`` gives back whatever ``accept`` and ``hold`` took, whatever happened. One template instead of one
``try``/``finally`` per kind is what keeps a slot, a session or a hub hold from leaking when a new kind is added.

The private kinds share one credential check (``authorize``) and the per-user connection limit (``admit``): each
one's state is ``Seated``, its place in its user's count, which a newer connection of the user may take; the
template then ends the stream with a ``warning`` event (at once, or at its opening if it has not opened yet).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from trade_stream.core.protocol import encode
from trade_stream.core.users import Credentials, Seat, User
from trade_stream.edges.http.credentials import RequestCredentials, refusal
from trade_stream.edges.http.request import Request
from trade_stream.edges.http.responses import Response, error
from trade_stream.edges.sse.channel import Channel
from trade_stream.edges.sse.client import SseClient
from trade_stream.edges.sse.wire import event_bytes

S = TypeVar("S")


@dataclass(eq=False)
class Opened(Generic[S]):
    """An accepted request: the stream kind and this connection's state, ready to run on its channel."""

    stream: Stream[S]
    state: S

    async def run(self, channel: Channel) -> None:
        await self.stream.serve(channel, self.state)


@dataclass(eq=False)
class Seated:
    """A private stream's state: its user, and its place in the user's connection count (``Sessions`` keys the
    place by this state). A newer connection of the user may take it (``take``, the seat's ``close``): the stream
    then ends with its kind's warning, at once when it is open, else as soon as it opens."""

    user: User
    _end: Callable[[str], None] | None = field(default=None, init=False, repr=False)
    _taken: str | None = field(default=None, init=False, repr=False)

    def take(self, message: str) -> None:
        if self._taken is None:
            self._taken = message
            if self._end is not None:
                self._end(message)

    def opened(self, end: Callable[[str], None]) -> None:
        self._end = end
        if self._taken is not None:
            end(self._taken)


class Stream(Generic[S]):
    kind = ""

    def __call__(self, request: Request) -> Response | Opened[S]:
        state = self.accept(request)
        return state if isinstance(state, Response) else Opened(self, state)

    def accept(self, request: Request) -> Response | S:
        raise NotImplementedError

    async def verify(self, channel: Channel, state: S) -> Response | None:
        """The answer to give instead of a stream, found by awaiting something; None: go on. Nothing is taken
        yet, so nothing is released after an answer."""
        return None

    def open(self, channel: Channel, state: S) -> SseClient:
        raise NotImplementedError

    async def hold(self, channel: Channel, client: SseClient, state: S) -> bool:
        raise NotImplementedError

    async def pump(self, channel: Channel, client: SseClient, state: S) -> None:
        await channel.pump(client)

    def release(self, client: SseClient, state: S) -> None:
        client.finish()

    def warning(self, message: str) -> bytes:
        """What a stream whose place a newer connection of its user took gets before it ends."""
        return event_bytes("warning", encode({"type": "warning", "code": "connection_limit", "message": message}))

    async def serve(self, channel: Channel, state: S) -> None:
        answer = await self.verify(channel, state)
        if answer is not None:
            channel.respond(answer)
            return
        client = self.open(channel, state)
        try:
            if isinstance(state, Seated):
                state.opened(lambda message: end_with(channel, client, self.warning(message)))
            if await self.hold(channel, client, state):
                await self.pump(channel, client, state)
        finally:
            self.release(client, state)


def end_with(channel: Channel, client: SseClient, last: bytes) -> None:
    """Write ``last`` after what is queued and end the stream, without waiting on the socket; a client that does
    not take those bytes within the grace (it stopped reading) is aborted."""
    client.write(last)
    client.end()
    transport = client.transport
    if transport.get_write_buffer_size():  # else it is closed already
        asyncio.get_running_loop().call_later(channel.shared.cfg.timings.shutdown_grace, transport.abort)


def authorize(identity: Credentials | None, credentials: RequestCredentials, request: Request) -> User | Response:
    """The credential check of the private streams (edges/http/credentials.py: the header, ``?token=``, the
    session cookie): the user, or the 401/403/429 to answer."""
    found = credentials.user(identity, request, query=True)
    return found if isinstance(found, User) else refusal(found)


def admit(identity: Credentials, state: Seated, request: Request, kind: str) -> Response | None:
    """The user's connection limit (TRADE_STREAM_MAX_CONNECTIONS_PER_USER): one more closes the user's oldest, or
    gets 429 (TRADE_STREAM_CONNECTION_LIMIT_POLICY). ``state`` is the connection's place, released by the
    stream's ``release``."""
    seat = Seat(f"sse-{kind}", request.ip, state.take)
    refused = identity.sessions.admit(state.user.name, state, seat)
    return None if refused is None else error(429, refused.message, {"Retry-After": "10"})
