"""What /healthz answers: is each upstream (market data, trading) up, and is every supervised task running?

An upstream is down once it has not been connected for longer than the grace period, whatever the reason: a
network fault, a config error such as 402 (which stays down until a human acts), or a session that keeps failing
because what it hands events to is broken. A short reconnect inside the grace period is not worth failing a
probe for: a load balancer or Kubernetes would otherwise pull the relay for a blip the relay fixes itself.
"""

from __future__ import annotations

import time
from typing import Any

from trade_stream.core.upstream_state import UpstreamState
from trade_stream.ops.supervisor import Supervisor


def upstream_health(status: UpstreamState, grace: float, now: float | None = None) -> dict[str, Any]:
    now = time.monotonic() if now is None else now
    down_for = None if status.down_since is None else max(0.0, now - status.down_since)
    return {"ok": down_for is None or down_for <= grace, "state": status.state.value, "error": status.error,
            "error_code": status.error_code, "down_for": None if down_for is None else round(down_for, 1),
            "reconnects": status.reconnects}


def report(upstreams: dict[str, UpstreamState], supervisor: Supervisor, grace: float) -> dict[str, Any]:
    """The health view: ``ok`` is False when an upstream or a task has been down for longer than ``grace``."""
    now = time.monotonic()
    views = {name: upstream_health(status, grace, now) for name, status in upstreams.items()}
    failing = supervisor.failing(grace, now)
    down = sorted(name for name, view in views.items() if not view["ok"])
    return {"ok": not down and not failing, "down": down + failing, "grace": grace, "upstreams": views,
            "tasks": supervisor.view()}
