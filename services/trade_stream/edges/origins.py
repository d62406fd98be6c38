"""Which browser origins may connect. Shared by the WebSocket port, its JSON endpoints and the SSE side-port."""

from __future__ import annotations

from urllib.parse import urlsplit

LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


class OriginPolicy:
    """``*`` allows any origin. Always allowed: the daemon's own origin (the Host the browser reached, so the page
    it serves connects on any port) and http(s)://localhost / 127.0.0.1 on any port, which covers the page served
    by Apache on the same machine. A configured list adds to these rather than replacing them: setting it for an
    Apache host must not lock out the daemon's own page. A request without Origin is not from a browser page and
    is allowed.

    Credentials the browser attaches by itself (the session cookie) are a stricter matter: ``*`` lets any page
    read public data, but must not let any page act with a visitor's cookie. So ``allows_credentials`` ignores
    ``*`` and admits only the listed origins, the daemon's own and localhost."""

    def __init__(self, allowed: tuple[str, ...]) -> None:
        self.any = "*" in allowed
        self.allowed = {o.lower() for o in allowed if o != "*"}

    def allows(self, origin: str | None, host: str | None) -> bool:
        return origin is None or self.any or self._named(origin, host)

    def allows_credentials(self, origin: str | None, host: str | None) -> bool:
        """May a request from ``origin`` use a credential its browser sent unasked (a cookie)? No Origin: not a
        page, so nobody else's page can be behind it."""
        return origin is None or self._named(origin, host)

    def _named(self, origin: str, host: str | None) -> bool:
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


def cookie_refusal_message(origin: str | None, allowed: tuple[str, ...]) -> str:
    """Why a request carrying the session cookie from another site's page is refused, and what lets it in."""
    wanted = ",".join([*(o for o in allowed if o != "*"), (origin or "").rstrip("/")])
    return (f"origin {origin} may not use the session cookie (a page of another site cannot act with it); list it "
            f"in {SETTING} (e.g. {SETTING}={wanted}, * does not count for cookies) and restart trade-stream")
