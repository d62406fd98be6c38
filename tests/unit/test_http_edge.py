"""The one HTTP shape of both ports, without sockets: the request, the route table, the main port's routing
and framing, CORS, and the orders endpoint's merge of several journals."""

from __future__ import annotations

import pytest

from trade_stream.core.event_ids import EventId, is_compound, parse_compound
from trade_stream.edges.http.credentials import Presented, RequestCredentials, cookie_values
from trade_stream.edges.http.request import Headers, Request, query_of
from trade_stream.edges.http.responses import Cors, error, json
from trade_stream.edges.http.routes import Route, Router
from trade_stream.edges.orders_api import OrdersApi
from trade_stream.edges.origins import OriginPolicy
from trade_stream.edges.web import StaticFiles, Web, to_websockets

pytestmark = pytest.mark.timeout(10)


def get(path: str, method: str = "GET", **headers: str) -> Request:
    return Request(method, path, Headers(headers.items()))


def test_headers_are_case_insensitive_and_a_repeated_header_keeps_its_last_value():
    headers = Headers([("Origin", "a"), ("origin", "b"), ("X-Correlation-ID", "c")])
    assert headers["ORIGIN"] == "b" and headers.get("x-correlation-id") == "c" and len(headers) == 2


def test_query_keeps_the_last_value_and_drops_blank_ones():
    assert query_of("a=1&a=2&b=&c=%2C") == {"a": "2", "c": ","}


def test_bearer_token_is_read_from_authorization_only_with_the_bearer_scheme():
    assert Request("GET", "/", Headers([("Authorization", "bEaReR tok")])).bearer() == "tok"
    assert Request("GET", "/", Headers([("Authorization", "Basic dG9r")])).bearer() == ""
    assert get("/").bearer() == ""


def test_a_cookie_is_found_among_others_quoted_or_split_over_several_headers_and_its_first_value_wins():
    assert cookie_values(["a=1; ts=tok; b=2"], "ts") == ["tok"]
    assert cookie_values(['a=1', 'ts="q tok"'], "ts") == ["q tok"]
    assert cookie_values(["ts=first; ts=second"], "ts") == ["first", "second"]
    # names that Set-Cookie syntax reserves, an unparsable pair before ours, a prefix of our name, an empty one
    assert cookie_values(['path=/; x="unclosed; ts_x=no; ts=; ts =yes'], "ts") == ["yes"]
    assert cookie_values(["tsx=no; ats=no"], "ts") == []
    assert Request("GET", "/", Headers([("Cookie", "a=1"), ("cookie", "ts=t")])).header_values("COOKIE") == [
        "a=1", "ts=t"]


def test_the_explicit_credential_comes_before_the_cookie_and_a_foreign_page_cannot_use_the_cookie():
    creds = RequestCredentials("ts", OriginPolicy(("https://app.example", "*")))
    both = [("Cookie", "ts=from-cookie")]
    assert creds.presented(get("/", Cookie="ts=c")) == Presented("c", "cookie")
    assert creds.presented(Request("GET", "/", Headers([*both, ("Authorization", "Bearer h")]))) == \
        Presented("h", "bearer")
    assert creds.presented(Request("GET", "/", Headers(both), {"token": "q"}), query=True) == Presented("q", "query")
    assert creds.presented(Request("GET", "/", Headers(both), {"token": "q"})) == Presented("from-cookie", "cookie")
    foreign = creds.presented(Request("GET", "/", Headers([*both, ("Origin", "https://evil.example")])))
    assert not isinstance(foreign, Presented) and foreign.code == "forbidden_origin"
    assert creds.presented(Request("GET", "/", Headers([*both, ("Origin", "https://app.example")]))).source == \
        "cookie"
    assert RequestCredentials("", OriginPolicy(())).presented(get("/", Cookie="ts=c")) == Presented()


def test_cors_with_the_cookie_on_grants_credentials_to_named_origins_never_through_the_wildcard():
    cors = Cors(OriginPolicy(("https://ok.example", "*")), credentials=True)
    assert cors.headers(get("/", Origin="https://ok.example")) == {
        "Access-Control-Allow-Origin": "https://ok.example", "Access-Control-Allow-Credentials": "true",
        "Vary": "Origin"}
    assert cors.headers(get("/", Origin="https://other.example")) == {
        "Access-Control-Allow-Origin": "https://other.example", "Vary": "Origin"}
    assert cors.headers(get("/")) == {"Access-Control-Allow-Origin": "*", "Vary": "Origin"}
    off = Cors(OriginPolicy(("https://ok.example",)))  # no cookie configured: no credentials granted
    assert "Access-Control-Allow-Credentials" not in off.headers(get("/", Origin="https://ok.example"))


def test_router_finds_exact_paths_first_then_prefixes_and_only_under_them():
    exact, under = Route("/api/x/read", lambda r: 1), Route("/api/x", lambda r: 2, methods=None, prefix=True)
    router = Router([under, exact])
    assert router.find("/api/x/read") is exact
    assert router.find("/api/x") is under and router.find("/api/x/7/read") is under
    assert router.find("/api/xy") is None and router.find("/api") is None


def test_a_path_declared_twice_is_refused_when_the_table_is_built():
    with pytest.raises(ValueError, match="/healthz declared twice"):
        Router([Route("/healthz", lambda r: 1), Route("/healthz", lambda r: 2)])


@pytest.fixture
def web(tmp_path):
    (tmp_path / "index.html").write_text("<p>page</p>")
    seen: list[str] = []

    def api(request: Request):
        seen.append(request.method)
        return json(200, {"method": request.method})

    table = [Route("/healthz", lambda r: json(200, {"ok": True})),
             Route("/api/notes", api, methods=None, prefix=True)]
    return Web(StaticFiles(str(tmp_path)), table), seen


def test_a_route_taking_every_method_gets_them_all_and_the_others_answer_405_with_allow(web):
    site, seen = web
    assert site.handle(get("/api/notes/1/read", "POST")).status == 200 and seen == ["POST"]
    refused = site.handle(get("/healthz", "DELETE"))
    assert refused.status == 405 and refused.headers == {"Allow": "GET, HEAD"}
    assert site.handle(get("/index.html", "PUT")).status == 405  # a static file takes GET and HEAD only


def test_unknown_api_paths_are_404_json_and_other_paths_fall_through_to_the_page(web):
    site, _ = web
    missing = site.handle(get("/api/nothing"))
    assert missing.status == 404 and missing.content_type == "application/json"
    assert site.handle(get("/")).body == b"<p>page</p>"
    assert site.handle(get("/../etc/passwd")).status == 404  # never outside the root
    assert site.handle(get("/a\x01b")).status == 400


def test_head_keeps_the_length_of_the_get_and_sends_no_body():
    resp = to_websockets(error(404, "no"), head=True)
    assert resp.body == b"" and int(resp.headers["Content-Length"]) == len(error(404, "no").body)
    assert resp.headers["Cache-Control"] == "no-cache" and resp.headers["Connection"] == "close"


def test_error_bodies_have_one_shape():
    assert error(429, "slow down").body == b'{"error":"Too Many Requests","message":"slow down"}'


def test_cors_names_an_allowed_origin_and_nothing_for_a_refused_one():
    cors = Cors(OriginPolicy(("https://ok.example",)))
    assert cors.headers(get("/", Origin="https://ok.example")) == {
        "Access-Control-Allow-Origin": "https://ok.example", "Vary": "Origin"}
    assert cors.headers(get("/", Origin="https://evil.example")) == {}


class FakeOrders:
    """One account's journal as the endpoint sees it: ``events_since`` pages from a position."""

    def __init__(self, account: str, events: list[int], reset: str = "") -> None:
        self.account, self.events, self.reset = account, events, reset

    def events_since(self, since: EventId) -> tuple[int, dict]:
        after = [n for n in self.events if n > since.n]
        body = {"events": [{"account": self.account, "n": n} for n in after],
                "cursor": f"e{self.account}-{self.events[-1]}", "more": False, "reset": bool(self.reset)}
        if self.reset:
            body["reason"] = self.reset
        return 200, body


class FakeAccounts:
    def __init__(self, *orders: FakeOrders) -> None:
        self.orders = {o.account: o for o in orders}


def test_several_accounts_merge_into_one_page_with_a_compound_cursor_and_each_reset_named():
    api = OrdersApi(FakeAccounts(FakeOrders("a", [1, 2]), FakeOrders("b", [5], reset="epoch changed")),
                    None, None, lambda r: {})  # merged() reads no credential
    status, body = api.merged(["a", "b"], "")
    assert status == 200
    assert [(e["account"], e["n"]) for e in body["events"]] == [("a", 1), ("a", 2), ("b", 5)]
    assert is_compound(body["cursor"]) and set(parse_compound(body["cursor"])) == {"a", "b"}
    assert body["reset"] is True and body["resets"] == {"b": "epoch changed"}
    assert body["reason"] == "b: epoch changed"
