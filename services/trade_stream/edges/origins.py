"""Which browser origins may connect. Shared by the WebSocket port, its JSON endpoints and the SSE side-port."""

from __future__ import annotations

from urllib.parse import urlsplit

LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


class OriginPolicy:
    """``*`` allows any origin. Always allowed: the daemon's own origin (the Host the browser reached, so the page
    it serves connects on any port) and http(s)://localhost / 127.0.0.1 on any port, which covers the page served
    by Apache on the same machine. A configured list adds to these rather than replacing them: setting it for an
    Apache host must not lock out the daemon's own page. A request without Origin is not from a browser page and
    is allowed."""

    def __init__(self, allowed: tuple[str, ...]) -> None:
        self.any = "*" in allowed
        self.allowed = {o.lower() for o in allowed if o != "*"}

    def allows(self, origin: str | None, host: str | None) -> bool:
        if origin is None or self.any:
            return True
        origin = origin.strip().rstrip("/").lower()
        if origin in self.allowed:
            return True
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https"):
            return False
        if (parts.hostname or "") in LOCAL_HOSTS:
            return True
        return host is not None and parts.netloc == host.strip().lower()

    def cors_origin(self, origin: str | None, host: str | None) -> str | None:
        """The Access-Control-Allow-Origin value for this request, or None to send none."""
        if origin is None:
            return "*" if self.any else None
        return origin if self.allows(origin, host) else None


SETTING = "TRADE_STREAM_ALLOWED_ORIGINS"


def refusal_message(origin: str | None, allowed: tuple[str, ...]) -> str:
    """What a refused page (and its operator) needs to read: the exact setting and value that lets it in."""
    wanted = ",".join([*(o for o in allowed if o != "*"), (origin or "").rstrip("/")])
    return (f"origin {origin} is not allowed to connect; add it to {SETTING} "
            f"(e.g. {SETTING}={wanted}) and restart trade-stream")
