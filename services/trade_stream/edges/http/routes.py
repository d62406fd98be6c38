"""A port's routes, declared as one table before the port starts.

A ``Route`` names a path (or, with ``prefix=True``, everything under it), the methods the table answers for it,
and one handler taking the ``Request``. ``methods=None`` hands every method to the handler, for a resource that
answers its own preflight and 405s (the notifications API). What a handler returns is the port's business: a
``Response`` on the main port (or an awaitable of one, for a route that calls out), a ``Response`` or a stream on
the SSE side-port.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from trade_stream.edges.http.request import Request

GET = ("GET", "HEAD")


@dataclass(frozen=True)
class Route:
    path: str
    handler: Callable[[Request], Any]
    methods: tuple[str, ...] | None = GET
    prefix: bool = False  # also every path under ``path + "/"``

    def matches(self, path: str) -> bool:
        return path == self.path or (self.prefix and path.startswith(self.path + "/"))


class Router:
    """Finds a path's route: exact paths first, then the prefixes in the order declared. A path declared twice is
    refused at construction (the table is built before anything starts, so that is a start-up error)."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = list(routes)
        self._exact: dict[str, Route] = {}
        for route in self.routes:
            if route.path in self._exact:
                raise ValueError(f"route {route.path} declared twice")
            self._exact[route.path] = route
        self._prefixes = [r for r in self.routes if r.prefix]

    def find(self, path: str) -> Route | None:
        found = self._exact.get(path)
        if found is not None:
            return found
        return next((r for r in self._prefixes if r.matches(path)), None)

    @property
    def paths(self) -> list[str]:
        return [r.path for r in self.routes]
