"""One response type, its helpers, and the CORS rule, for both ports.

A handler returns a ``Response``; the port writes it (websockets' ``Response`` on the main port, h11 events on
the SSE side-port), adding only what that port adds to every answer. Error bodies have one shape everywhere:
``{"error": <reason phrase>, "message": <what to do>}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import orjson

from trade_stream.edges.origins import OriginPolicy


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None  # None: no Content-Type (a 204, a preflight)
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        return HTTPStatus(self.status).phrase


def response(status: int, body: bytes, content_type: str | None, headers: Mapping[str, str] | None = None
             ) -> Response:
    return Response(status, body, content_type, dict(headers or {}))


def json(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(status, orjson.dumps(payload), "application/json", dict(headers or {}))


def error_body(status: int, message: str) -> dict[str, str]:
    return {"error": HTTPStatus(status).phrase, "message": message}


def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return json(status, error_body(status, message), headers)


def preflight(methods: str, allow_headers: str) -> dict[str, str]:
    """The headers of a CORS preflight answer (204) for a resource taking ``methods``."""
    return {"Access-Control-Allow-Methods": methods, "Access-Control-Allow-Headers": allow_headers,
            "Access-Control-Max-Age": "600"}


class Cors:
    """Which origin a response may be read from: the one rule (``OriginPolicy``) for every route of both ports.

    With ``credentials`` (the session cookie is on, TRADE_STREAM_AUTH_COOKIE) an origin that may use the cookie
    (``OriginPolicy.allows_credentials``) also gets ``Access-Control-Allow-Credentials: true``, always beside its
    own origin echoed exactly: browsers refuse ``*`` with credentials, and ``*`` in the setting is never a reason
    to send them. An origin let in only by ``*`` still reads public answers, without cookies."""

    def __init__(self, origins: OriginPolicy, credentials: bool = False) -> None:
        self.origins = origins
        self.credentials = credentials

    def allow(self, headers: Mapping[str, str]) -> str | None:
        """The ``Access-Control-Allow-Origin`` value for a request with these headers, or None."""
        return self.origins.cors_origin(headers.get("Origin"), headers.get("Host"))

    def grant(self, headers: Mapping[str, str]) -> dict[str, str]:
        """``Access-Control-Allow-Origin`` (and ``-Credentials``) for a request with these headers, or none."""
        allow = self.allow(headers)
        if allow is None:
            return {}
        origin = headers.get("Origin")
        if self.credentials and origin is not None and self.origins.allows_credentials(origin, headers.get("Host")):
            return {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true"}
        return {"Access-Control-Allow-Origin": allow}

    def headers(self, request: Any) -> dict[str, str]:
        """The CORS grant and ``Vary: Origin`` when the origin may read the answer, else none."""
        grant = self.grant(request.headers)
        return {**grant, "Vary": "Origin"} if grant else {}
