"""The state of one upstream connection, as the relay, health and metrics read it.

Core reports it to clients and across nodes, ops turns it into health and metrics, and the upstream clients set
it; the record lives here so that none of them reaches up into another for it. ``LinkState`` is a ``StrEnum``:
its members compare equal to, format and serialize as the strings the status views have always carried.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class LinkState(StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    ERROR = "error"  # refused for a reason retrying will not fix (bad keys, wrong feed)
    RECONNECTING = "reconnecting"  # the Broker API event stream between attempts


@dataclass
class UpstreamState:
    state: LinkState = LinkState.DISCONNECTED
    error: str | None = None
    error_code: int | None = None
    since: float = field(default_factory=time.time)
    reconnects: int = 0
    connected_once: bool = False
    down_since: float | None = field(default_factory=time.monotonic)  # None while connected; what health reads

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state.value, "error": self.error, "error_code": self.error_code,
                "since": round(self.since, 3), "reconnects": self.reconnects}
