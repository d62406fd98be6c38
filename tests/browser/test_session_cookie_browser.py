"""A web app's page in headless Chromium, served from another origin than the relay, opens a private SSE stream
with ``new EventSource(url, {withCredentials: true})``: the browser sends the session cookie set for the relay's
host, the relay answers the CORS check with the page's origin and ``Access-Control-Allow-Credentials``, and
order events arrive. The same page's plain EventSource (no credentials) sends no cookie and gets no stream."""

from __future__ import annotations

import pytest

from tests.browser.helpers import BROWSER_LOOP, CHROMIUM, PageWatch, free_port, static_server
from tests.support.relay import relay_config, running, wait_until
from trade_stream.edges.identity import UserRecord, hash_token, new_token, write_users

pytestmark = [pytest.mark.browser, BROWSER_LOOP, pytest.mark.timeout(60),
              pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")]

COOKIE = "ts_session"
PAGE = """<!doctype html><meta charset="utf-8"><title>orders</title><body><script>
window.events = []; window.users = []; window.failures = 0;
const params = new URLSearchParams(location.search);
const es = new EventSource(params.get("src"), {withCredentials: params.get("credentials") === "1"});
es.addEventListener("connected", (e) => window.users.push(JSON.parse(e.data).client_id.split("-")[0]));
es.addEventListener("order:update", (e) => window.events.push(JSON.parse(e.data)));
es.onerror = () => { window.failures += 1; if (params.get("credentials") !== "1") es.close(); };
</script></body>"""


async def test_event_source_with_credentials_sends_the_relays_cookie_and_receives_order_events(sim, tmp_path,
                                                                                                 browser):
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(PAGE)
    (site / "favicon.ico").write_bytes(b"")
    token_id, token = new_token()
    users = tmp_path / "users.toml"
    write_users(str(users), [UserRecord("alice", hash_token(token), ("default",), False, token_id)])
    cfg = relay_config(sim, tmp_path / "state", sse_port=free_port(), auth_cookie=COOKIE, users_file=str(users))
    async with running(cfg) as app:
        await wait_until(lambda: app.tradings["default"].connected, what="trading stream up")
        src = f"http://127.0.0.1:{app.sse.port}/api/stream/orders"
        with static_server(site) as web_port:
            context = await browser.new_context()  # closed by the fixture
            # the web app's login set this cookie for the relay's host (any port: cookies ignore ports)
            await context.add_cookies([{"name": COOKIE, "value": token, "url": f"http://127.0.0.1:{app.sse.port}",
                                        "httpOnly": True, "sameSite": "Lax"}])
            page = await context.new_page()
            watch = PageWatch(page, "session_cookie_event_source")
            await page.goto(f"http://127.0.0.1:{web_port}/index.html?credentials=1&src={src}")
            await page.wait_for_function("window.users.length === 1", timeout=10_000)
            assert await page.evaluate("window.users") == ["alice"]
            sim.submit_order("AAPL", "buy", 3)
            await page.wait_for_function("window.events.some((e) => e.event === 'new')", timeout=10_000)
            events = await page.evaluate("window.events")
            assert {(e["symbol"], e["account"]) for e in events} == {("AAPL", "default")}
            assert await page.evaluate("window.failures") == 0

            # Without withCredentials Chromium sends no cookie: the stream is refused (401) and the page
            # sees only an error. Chromium logs its own line for the refused resource.
            plain = await context.new_page()
            plain_watch = PageWatch(plain, "session_cookie_event_source_plain")
            await plain.goto(f"http://127.0.0.1:{web_port}/index.html?credentials=0&src={src}")
            await plain.wait_for_function("window.failures >= 1", timeout=10_000)
            assert await plain.evaluate("window.users") == []
            assert plain_watch.errors == ["console.error: Failed to load resource: the server responded with a "
                                          "status of 401 (Unauthorized)"]
            await watch.finish()
