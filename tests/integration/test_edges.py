"""Edge cases from the hardening review: an orders unsubscribe racing the snapshot, NUL bytes in paths, hostile
X-Correlation-ID values, and the generated token kept out of the journal under systemd."""

from __future__ import annotations

import asyncio
import logging
import re
import stat

import pytest

from tests.support.relay import TOKEN, Browser, relay_config, running, wait_until
from tests.support.sse import sse_get

pytestmark = pytest.mark.timeout(30)
SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,100}")


@pytest.fixture
async def app(app_sse):
    return app_sse


class GatedRest:
    """The real REST client, with order listing held until the test opens the gate (so the test decides when
    the orders snapshot comes back, instead of racing it)."""

    def __init__(self, rest) -> None:
        self.rest = rest
        self.gate = asyncio.Event()
        self.waiting = 0

    async def orders(self, limit: int = 100):
        self.waiting += 1
        await self.gate.wait()
        return await self.rest.orders(limit)

    def __getattr__(self, name):
        return getattr(self.rest, name)


async def test_orders_unsubscribe_while_the_snapshot_is_being_fetched_stops_updates(sim, app):
    gated = app.accounts.orders["default"].rest = GatedRest(app.accounts.orders["default"].rest)
    async with Browser.connect(app.port) as c:
        await c.send({"action": "auth", "token": TOKEN})
        await c.expect("authenticated")
        await c.send({"action": "subscribe", "channel": "orders"})
        await c.expect(lambda m: m.get("type") == "subscribed" and m.get("channel") == "orders")
        await wait_until(lambda: gated.waiting == 1, what="snapshot being fetched")
        await c.send({"action": "unsubscribe", "channel": "orders"})
        await c.expect(lambda m: m.get("type") == "unsubscribed" and m.get("channel") == "orders")
        gated.gate.set()
        await wait_until(lambda: not app.accounts.orders["default"]._starting, what="subscribe start finished")
        order = sim.submit_order("AAPL", "buy", 1)
        sim.fill_order(order["id"], price=10)
        await wait_until(lambda: app.stats.order_events >= 2, what="events journaled")
        await c.send({"action": "ping"})
        await c.expect("pong")  # everything the relay sent before this has arrived
        assert not c.of_type("order_update") and not c.of_type("orders_snapshot")
        assert not c.of_type("position_update")
        # Subscribing again works normally.
        await c.send({"action": "subscribe", "channel": "orders"})
        await c.expect("orders_snapshot")


async def raw_request(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    try:
        return await asyncio.wait_for(reader.read(65536), 5)
    finally:
        writer.close()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


async def test_a_nul_byte_in_a_path_is_a_client_error_on_both_ports_without_a_traceback(sim, app, caplog):
    caplog.set_level(logging.INFO)
    for port in (app.port, app.sse.port):
        for target in (b"/%00", b"/\x00", b"/index.html\x00.png", b"/api/stream/trades\x00?symbols=AAPL"):
            response = await raw_request(port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            assert response.startswith(b"HTTP/1.1 4"), (port, target, response[:80])
            assert status_of(response) in (400, 404)
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    async with sse_get(app.sse.port, "/api/stream/status") as r:
        assert r.status == 200


@pytest.mark.parametrize("header", [b"Authorization: Bearer \x7f", b"Authorization: Bearer a\x00b", b"X-Note: \x01",
                                    b"Not a header line", b": no name", b"Bad Name: x"])
async def test_a_malformed_header_on_the_main_port_is_answered_400_not_dropped(sim, app, caplog, header):
    response = await raw_request(app.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 400 "), response[:120]  # an answer, not a silent close
    assert b"malformed HTTP request" in response and b"\x7f" not in response.split(b"\r\n\r\n", 1)[1]
    response = await raw_request(app.port, b"POST /api/notifications/trades/read HTTP/1.1\r\nHost: x\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert status_of(response) == 501 and b"Content-Length" in response
    assert status_of(await raw_request(app.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")) in (200, 503)
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


@pytest.mark.parametrize("value", ["a" * 99 + " b", " padded ", "x" * 500, "tab\there", "é-unicode", "semi;colon",
                                   "\x7f", "   "])
async def test_hostile_correlation_ids_are_sanitized_or_replaced(sim, app, value):
    headers = {"X-Correlation-ID": value}
    async with sse_get(app.sse.port, "/api/stream/trades?symbols=AAPL", headers) as r:
        assert r.status == 200
        echoed = r.headers["x-correlation-id"]
        assert SAFE_ID.fullmatch(echoed), echoed
        if value == " padded ":
            assert echoed == "padded"
        assert (await r.until("connected")).json()["correlation_id"] == echoed
    async with sse_get(app.sse.port, "/api/stream/status", headers) as r:
        assert r.status == 200 and SAFE_ID.fullmatch(r.headers["x-correlation-id"])


@pytest.mark.parametrize("marker", ["INVOCATION_ID", "JOURNAL_STREAM", "NOTIFY_SOCKET"])
async def test_generated_token_is_not_printed_under_systemd(sim, tmp_path, capsys, caplog, monkeypatch, marker):
    caplog.set_level(logging.INFO)
    for name in ("INVOCATION_ID", "JOURNAL_STREAM", "NOTIFY_SOCKET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(marker, str(tmp_path / "notify") if marker == "NOTIFY_SOCKET" else "8:12345")
    generated = "generated-token-abcdef123456"
    async with running(relay_config(sim, tmp_path, token=generated, token_generated=True)) as app:
        port = app.port
    out = capsys.readouterr()
    assert generated not in out.out and generated not in out.err
    assert not [r for r in caplog.records if generated in r.getMessage()]
    path = tmp_path / "page-url"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == f"http://127.0.0.1:{port}/#token={generated}"
    assert any(str(path) in r.getMessage() for r in caplog.records), "the log says where to find it"


async def test_generated_token_is_printed_in_a_terminal_as_before(sim, tmp_path, capsys, monkeypatch):
    for name in ("INVOCATION_ID", "JOURNAL_STREAM", "NOTIFY_SOCKET"):
        monkeypatch.delenv(name, raising=False)
    generated = "generated-token-abcdef123456"
    async with running(relay_config(sim, tmp_path, token=generated, token_generated=True)) as app:
        port = app.port
    assert f"http://127.0.0.1:{port}/#token={generated}" in capsys.readouterr().out
    assert not (tmp_path / "page-url").exists()
