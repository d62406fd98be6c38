"""One request type for every HTTP handler, whichever server parsed it.

Both ports reduce what their parser gives them to this: the method, the path without its query, the query as
``name -> last value``, the headers as a case-insensitive mapping, the client's address and, on the main port,
the small body ``http_body.py`` read ahead of websockets. Handlers never see websockets' or h11's objects, so one
handler signature serves both ports.

The headers are any case-insensitive ``Mapping``: the main port hands on websockets' own ``Headers`` (so what it
does with a repeated header is websockets' rule, as it always was there), the side-port this module's
``Headers``, built from h11's list.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs


class Headers(Mapping[str, str]):
    """Request headers looked up without regard to case; a header sent twice keeps its last value (a hostile
    client's duplicates must not turn into a 500). ``get_all`` gives every value in the order sent, as
    websockets' ``Headers`` does, for a header that may be split over several lines (``Cookie``)."""

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self._all: dict[str, list[str]] = {}
        for name, value in pairs:
            self._all.setdefault(name.lower(), []).append(value)
        self._values = {name: values[-1] for name, values in self._all.items()}

    def get_all(self, name: str) -> list[str]:
        return list(self._all.get(name.lower(), ()))

    def __getitem__(self, name: str) -> str:
        return self._values[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def query_of(raw: str) -> dict[str, str]:
    """``a=1&a=2&b=`` -> ``{"a": "2"}``: the last value of each parameter, blank values dropped."""
    return {k: v[-1] for k, v in parse_qs(raw).items()}


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # without the query
    headers: Mapping[str, str]  # case-insensitive lookups
    query: dict[str, str] = field(default_factory=dict)
    ip: str = "?"
    body: bytes | None = None  # main port only: a small body read ahead of websockets (http_body.py)
    body_error: int | None = None  # 413 or 400 when that body could not be taken

    def bearer(self) -> str:
        """The token of ``Authorization: Bearer <token>``, or ""."""
        auth = self.headers.get("authorization", "")
        return auth[7:] if auth[:7].lower() == "bearer " else ""

    def header_values(self, name: str) -> list[str]:
        """Every value of a header, in the order sent (both ports' header maps have ``get_all``)."""
        get_all = getattr(self.headers, "get_all", None)
        if get_all is not None:
            return list(get_all(name))
        value = self.headers.get(name)
        return [] if value is None else [value]
