"""REST for a user's notification preferences on the main port (user auth as the notifications API):

- ``GET /api/notifications/preferences``: ``{"preferences": {kind: [channel, …], …}, "kinds": […],
  "channels": […]}``, every kind with its channels (stored, or the default);
- ``PUT /api/notifications/preferences`` with ``{kind: [channel, …], …}``: any subset of the kinds, each replaced
  by the channels given (``[]``: none); the others keep theirs. Answers as GET does, what is stored now. An
  unknown kind or channel is a 400 naming the field;
- ``OPTIONS``: the CORS preflight (204).

The rule and the defaults are core/preferences.py; the credential is read as the notifications API reads it, so
a foreign page's cookie cannot change anyone's preferences.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson

from trade_stream.core.preferences import CHANNELS, KINDS, Preferences, PreferencesUnavailable, Prefs, parse
from trade_stream.core.users import Credentials, User
from trade_stream.edges.http.credentials import RequestCredentials, refusal
from trade_stream.edges.http.request import Request
from trade_stream.edges.http.responses import Response, error, json, preflight, response

log = logging.getLogger("trade_stream.edges.preferences_api")

PATH = "/api/notifications/preferences"
ALLOWED = "GET, PUT, OPTIONS"
PREFLIGHT = preflight(ALLOWED, "Content-Type, Authorization")


class PreferencesApi:
    def __init__(self, preferences: Preferences, identity: Credentials, credentials: RequestCredentials,
                 cors: Callable[[Request], dict[str, str]]) -> None:
        self.preferences = preferences
        self.identity = identity
        self.credentials = credentials
        self.cors = cors

    def __call__(self, request: Request) -> Response | Awaitable[Response]:
        """Every method of PATH (its route takes them all: it answers its own 405s); a PUT is answered once the
        store has it."""
        headers = self.cors(request)
        method = request.method
        if method == "OPTIONS":
            return response(204, b"", "text/plain", {**headers, **PREFLIGHT})
        if method not in ("GET", "HEAD", "PUT"):
            return error(405, f"{method} is not supported here", {**headers, "Allow": ALLOWED})
        user = self.credentials.user(self.identity, request)
        if not isinstance(user, User):
            return refusal(user, headers)
        if method != "PUT":
            return json(200, self.answer(self.preferences.view(user.name)), headers)
        if request.body_error is not None:
            return error(request.body_error, "the body must be JSON of at most 64 KiB with a Content-Length", headers)
        try:
            body = orjson.loads(request.body or b"")
        except orjson.JSONDecodeError:
            return error(400, "the body is not JSON: send {\"<kind>\": [\"<channel>\", …], …}", headers)
        changes = parse(body)
        if isinstance(changes, str):
            return error(400, changes, headers)
        return self._store(user, changes, headers)

    async def _store(self, user: User, changes: Prefs, headers: dict[str, str]) -> Response:
        try:
            view = await self.preferences.update(user.name, changes)
        except PreferencesUnavailable as exc:
            log.error("preferences_store_fault user=%s error=%s", user.name, exc)
            return error(503, str(exc), headers)
        log.info("preferences_updated user=%s kinds=%s", user.name, ",".join(sorted(changes)))
        return json(200, self.answer(view), headers)

    @staticmethod
    def answer(view: dict[str, list[str]]) -> dict[str, object]:
        return {"preferences": view, "kinds": list(KINDS), "channels": list(CHANNELS)}
