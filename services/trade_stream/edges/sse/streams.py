"""The one shape of every stream kind on the side-port: accept → open → hold → pump → release.

A stream kind is a route's handler. ``accept`` looks at the request alone and answers it (a 400, a 401, …) or
returns the connection's state; the server then runs the template on the connection's ``Channel``: ``verify``
may still answer it when that takes a look elsewhere (a 404 for a strategy the channel's history does not
hold), before anything of the stream is written or taken; ``open``
writes the head and makes the writer, ``hold`` replays what the client missed and joins the live fan-out (False
when the stream already ended, e.g. an ``until`` in the past), ``pump`` keeps it alive until the client leaves,
and ``release`` gives back whatever ``accept`` and ``hold`` took, whatever happened. One template instead of one
``try``/``finally`` per kind is what keeps a slot, a session or a hub hold from leaking when a new kind is added.

The private kinds share one credential check (``authorize``) and the per-user connection limit (``admit``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from trade_stream.core.orders import AuthThrottled
from trade_stream.core.users import Credentials, User
from trade_stream.edges.http.request import Request
from trade_stream.edges.http.responses import Response, error, json
from trade_stream.edges.sse.channel import Channel
from trade_stream.edges.sse.client import SseClient

S = TypeVar("S")


@dataclass(eq=False)
class Opened(Generic[S]):
    """An accepted request: the stream kind and this connection's state, ready to run on its channel."""

    stream: Stream[S]
    state: S

    async def run(self, channel: Channel) -> None:
        await self.stream.serve(channel, self.state)


class Stream(Generic[S]):
    kind = ""

    def __call__(self, request: Request) -> Response | Opened[S]:
        state = self.accept(request)
        return state if isinstance(state, Response) else Opened(self, state)

    def accept(self, request: Request) -> Response | S:
        raise NotImplementedError

    async def verify(self, state: S) -> Response | None:
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

    async def serve(self, channel: Channel, state: S) -> None:
        answer = await self.verify(state)
        if answer is not None:
            channel.respond(answer)
            return
        client = self.open(channel, state)
        try:
            if await self.hold(channel, client, state):
                await self.pump(channel, client, state)
        finally:
            self.release(client, state)


def authorize(identity: Credentials | None, request: Request) -> User | Response:
    """The credential check of the private streams (edges/identity.py): the user, or the 401/429 to answer."""
    token = stream_token(request)
    found = identity.resolve(token, request.ip) if (identity is not None and token) else None
    if isinstance(found, AuthThrottled):
        return error(429, found.message, {"Retry-After": str(found.retry_after)})
    if not isinstance(found, User):
        message = found.message if found is not None else "private streams need a token (Authorization: Bearer …)"
        return json(401, {"error": "Unauthorized", "message": message}, {"WWW-Authenticate": "Bearer"})
    return found


def stream_token(request: Request) -> str:
    """``Authorization: Bearer <token>``, else ``?token=`` (EventSource cannot set headers)."""
    auth = request.headers.get("authorization", "")
    return auth[7:] if auth[:7].lower() == "bearer " else request.query.get("token", "")


def admit(identity: Credentials, user: User, holder: object) -> Response | None:
    """The user's connection limit (TRADE_STREAM_MAX_CONNECTIONS_PER_USER): one more gets 429. ``holder`` is
    the connection's state, released by the stream's ``release``."""
    refused = identity.sessions.admit(user.name, holder)
    return None if refused is None else error(429, refused.message, {"Retry-After": "10"})
