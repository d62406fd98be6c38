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
    """Which origin a response may be read from: the one rule (``OriginPolicy``) for every route of both ports."""

    def __init__(self, origins: OriginPolicy) -> None:
        self.origins = origins

    def allow(self, headers: Mapping[str, str]) -> str | None:
        """The ``Access-Control-Allow-Origin`` value for a request with these headers, or None."""
        return self.origins.cors_origin(headers.get("Origin"), headers.get("Host"))

    def headers(self, request: Any) -> dict[str, str]:
        """``Access-Control-Allow-Origin`` and ``Vary: Origin`` when the origin may read the answer, else none."""
        allow = self.allow(request.headers)
        return {"Access-Control-Allow-Origin": allow, "Vary": "Origin"} if allow else {}
