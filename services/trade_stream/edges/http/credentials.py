"""Where a request's credential comes from: the one reading of it for every HTTP endpoint that takes one, and the
session cookie of the browser WebSocket's handshake.

A credential is looked for in this order, and the first one found is the only one used:

1. ``Authorization: Bearer <token>``;
2. ``?token=``, on the SSE side-port only (EventSource cannot set a header; elsewhere a token in a URL would
   only end up in logs);
3. the session cookie named by ``TRADE_STREAM_AUTH_COOKIE`` (off when unset).

The explicit ones come first because they are what the client chose for this very request, while the browser
attaches the cookie to every request for the relay's domain unasked: a page or script that names a token (another
user's, an admin's, a fresh one) must get that token's user, not whoever's session the cookie holds, and a stale
cookie must not shadow a good token. A wrong explicit credential is not retried with the cookie: it is answered
as wrong, so what a client sent is never silently swapped for something it did not send.

The cookie is the one credential a page of another site can make the browser send. So a request carrying it
from an Origin that may not use credentials (``OriginPolicy.allows_credentials``) is refused (403) before it is
checked: without that, any site could read a visitor's private streams over a WebSocket (cross-site WebSocket
hijacking; the handshake is not subject to CORS) or mark their notifications read with a simple POST. Requests
without Origin are not from a page and keep the cookie.
"""

from __future__ import annotations

from dataclasses import dataclass

from trade_stream.core.orders import AuthThrottled
from trade_stream.core.protocol import ClientError
from trade_stream.core.users import Credentials, User
from trade_stream.edges.http.request import Request
from trade_stream.edges.http.responses import Response, error, json
from trade_stream.edges.origins import OriginPolicy, cookie_refusal_message

FORBIDDEN = "forbidden_origin"  # the code of a cookie refused for its Origin (answered 403)


@dataclass(frozen=True)
class Presented:
    """What a request presented: the credential, and where it was found (``bearer``, ``query``, ``cookie``, or
    ``""`` when nothing was)."""

    credential: str = ""
    source: str = ""


def cookie_values(headers: list[str], name: str) -> list[str]:
    """Every non-empty value of cookie ``name`` in these ``Cookie`` header values, in the order sent.

    A Cookie header is ``name=value`` pairs joined by ``;`` (RFC 6265 §4.2.1), a value optionally in double quotes.
    Parsed here rather than with ``http.cookies.SimpleCookie``, which reads Set-Cookie syntax: it takes names such
    as ``path`` or ``expires`` for attributes, and it stops at the first pair it cannot parse, so another cookie
    of the site with an unusual value would hide ours. A browser sends the cookie of the most specific path (then
    the oldest) first, which is why the first value is the one used."""
    found = []
    for header in headers:
        for pair in header.split(";"):
            key, eq, value = pair.partition("=")
            if not eq or key.strip() != name:
                continue
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            if value:
                found.append(value)
    return found


class RequestCredentials:
    """The credential of a request (the order above), and the cookie's Origin rule; ``cookie`` is the name from
    TRADE_STREAM_AUTH_COOKIE, ``""`` for none."""

    def __init__(self, cookie: str, origins: OriginPolicy, allowed: tuple[str, ...] = ()) -> None:
        self.cookie = cookie
        self.origins = origins
        self.allowed = allowed  # the configured origins, for the refusal's advice

    def from_cookie(self, request: Request) -> str:
        """The session cookie's credential, or "" (no cookie configured, or none sent)."""
        if not self.cookie:
            return ""
        values = cookie_values(request.header_values("cookie"), self.cookie)
        return values[0] if values else ""

    def cookie_refusal(self, request: Request) -> str | None:
        """Why this request may not use the session cookie it carries (its page is of a foreign origin), or None."""
        origin = request.headers.get("origin")
        if origin is None or not self.from_cookie(request):
            return None
        if self.origins.allows_credentials(origin, request.headers.get("host")):
            return None
        return cookie_refusal_message(origin, self.allowed)

    def presented(self, request: Request, query: bool = False) -> Presented | ClientError:
        """The credential to check (``query``: ``?token=`` counts too), or the refusal of a foreign page's
        cookie."""
        bearer = request.bearer()
        if bearer:
            return Presented(bearer, "bearer")
        token = request.query.get("token", "") if query else ""
        if token:
            return Presented(token, "query")
        cookie = self.from_cookie(request)
        if not cookie:
            return Presented()
        refused = self.cookie_refusal(request)
        return ClientError(FORBIDDEN, refused) if refused is not None else Presented(cookie, "cookie")

    def user(self, identity: Credentials | None, request: Request, query: bool = False) -> User | ClientError:
        """The user the request's credential names (through the one check, ``Identity.resolve``, and its failed-auth
        throttle), or why not: ``AuthThrottled`` (429), ``forbidden_origin`` (403), ``unauthorized`` (401)."""
        found = self.presented(request, query)
        if isinstance(found, ClientError):
            return found
        if not found.credential or identity is None:
            return ClientError("unauthorized", self.missing(query))
        return identity.resolve(found.credential, request.ip)

    def missing(self, query: bool) -> str:
        ways = ["Authorization: Bearer <token>", *(["?token=<token>"] if query else []),
                *([f"the {self.cookie} cookie"] if self.cookie else [])]
        return "this needs a credential: send " + ", or ".join(ways)


def refusal(found: ClientError, headers: dict[str, str] | None = None) -> Response:
    """The answer to a request whose credential was refused: 429 with Retry-After, 403 for a foreign page's cookie,
    else 401 with ``WWW-Authenticate: Bearer``; ``headers`` (CORS) on each."""
    extra = dict(headers or {})
    if isinstance(found, AuthThrottled):
        return error(429, found.message, {**extra, "Retry-After": str(found.retry_after)})
    if found.code == FORBIDDEN:
        return error(403, found.message, extra)
    return json(401, {"error": "Unauthorized", "message": found.message}, {**extra, "WWW-Authenticate": "Bearer"})
