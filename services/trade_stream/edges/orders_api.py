"""``GET /api/orders/events`` on the main port: the token-protected REST fallback of the order stream.

``?since=<id>`` pages through the journal of each account the caller's user sees (``?account=`` narrows to one):
one account answers with its own ``<epoch>-<n>`` cursor, several with a compound cursor (core/event_ids.py), one
``<account>:<epoch>-<n>`` per account, so each journal resumes from its own position. The credential is read by
edges/http/credentials.py (Bearer or the session cookie) and goes through the one credential check
(``Identity.resolve``), so failed-auth throttling applies here too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trade_stream.core.accounts import Accounts
from trade_stream.core.event_ids import UNKNOWN, EventId, compound, is_compound, parse, parse_compound
from trade_stream.core.users import Credentials, User
from trade_stream.edges.http.credentials import RequestCredentials, refusal
from trade_stream.edges.http.request import Request
from trade_stream.edges.http.responses import Response, json

PATH = "/api/orders/events"


class OrdersApi:
    def __init__(self, accounts: Accounts, identity: Credentials, credentials: RequestCredentials,
                 cors: Callable[[Request], dict[str, str]]) -> None:
        self.accounts = accounts
        self.identity = identity
        self.credentials = credentials
        self.cors = cors

    def __call__(self, request: Request) -> Response:
        headers = self.cors(request)
        user = self.credentials.user(self.identity, request)
        if not isinstance(user, User):
            return refusal(user, headers)
        names = self.accounts.visible(user)
        wanted = request.query.get("account", "")
        if wanted:
            if wanted not in names:
                return json(404, {"error": "Not Found", "message": f"no account {wanted!r} for you"}, headers)
            names = [wanted]
        if not names:
            return json(403, {"error": "Forbidden", "message": f"user {user.name} may see no account"}, headers)
        raw = request.query.get("since", "")
        if len(names) == 1:
            since = raw and (parse_compound(raw).get(names[0], UNKNOWN) if is_compound(raw) else parse(raw))
            status, body = self.accounts.orders[names[0]].events_since(since or EventId(0))  # unknown: a reset
            return json(status, body, headers)
        return json(*self.merged(names, raw), headers)

    def merged(self, names: list[str], raw: str) -> tuple[int, dict[str, Any]]:
        """Several accounts: each journal from its own position; ``cursor`` is compound. An account the cursor
        does not name starts from its beginning."""
        sinces = parse_compound(raw) if is_compound(raw) else {}
        events: list[dict[str, Any]] = []
        positions: dict[str, str] = {}
        resets: dict[str, str] = {}
        more = False
        for name in names:
            status, body = self.accounts.orders[name].events_since(sinces.get(name, EventId(0)))
            if status != 200:
                return status, {**body, "account": name}
            events += body["events"]
            positions[name] = body["cursor"]
            more = more or body["more"]
            if body["reset"]:
                resets[name] = body.get("reason", "")
        out: dict[str, Any] = {"events": events, "cursor": compound(positions), "more": more, "reset": bool(resets)}
        if resets:
            out["reason"] = "; ".join(f"{n}: {r}" for n, r in resets.items())
            out["resets"] = resets
        return 200, out
