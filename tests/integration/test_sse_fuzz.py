"""A bounded, seeded fuzz of the SSE side-port's HTTP parsing and query strings, over real TCP sockets.

Random request lines, hostile headers (huge, duplicated, non-ASCII, NUL, CR/LF injection attempts in
X-Correlation-ID and Last-Event-ID) and random query strings on every SSE path. Every request must get a response
that is not a 5xx and nothing may log a traceback; afterwards a normal request still streams, and the per-address
admission counts are back to zero. Failing seeds are reproducible: the assertion names the request.
"""

from __future__ import annotations

import asyncio
import logging
import random
from urllib.parse import quote

import pytest

from tests.support.relay import TOKEN, free_port, relay_config, running, wait_until
from tests.support.sse import sse_get

pytestmark = pytest.mark.timeout(60)
REQUESTS = 300
PARALLEL = 8
PATHS = ["/api/stream/trades", "/api/stream/orders", "/api/stream/status", "/", "/api/stream", "/api/stream/trades/",
         "//api/stream/trades", "/API/STREAM/TRADES", "*", "http://x/api/stream/trades"]
METHODS = [b"GET"] * 6 + [b"HEAD", b"OPTIONS", b"POST", b"DELETE", b"PATCH", b"get", b"G\xc3\x89T", b"CONNECT"]
VERSIONS = [b"HTTP/1.1"] * 8 + [b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1x", b"", b"HTTP/9"]
NASTY = ["", " ", "%00", "\x00", "%0d%0a", "\r\n", "\n", "é", "\U0001f4a9", "%ff%fe", "%", "%%", "&", "=", ";", ",",
         "..", "../../etc/passwd", "*", "'", '"', "<script>", "\\", "\t", "+", "%2C", "a" * 300, "-1", "1e400", "nan",
         "inf", "-inf", "0x10", "9" * 18, str(2**63 - 1), "-" + "9" * 18, "1_000", " 5 ", "٣"]


def nasty(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.4:
        return rng.choice(NASTY)
    if roll < 0.7:
        return "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ.-/0123456789") for _ in range(rng.randint(1, 18)))
    return "".join(chr(rng.randint(0, 0x2FF)) for _ in range(rng.randint(0, 12)))


def query(rng: random.Random) -> str:
    params = []
    for _ in range(rng.randint(0, 6)):
        name = rng.choice(["symbols", "channels", "throttle_ms", "lastEventId", "last_event_id", "token", "symbols",
                           "x", "", "symbols[]"])
        if name == "symbols" and rng.random() < 0.5:
            value = ",".join(rng.choice(["AAPL", "MSFT", "BRK.B", "aapl", " TSLA ", nasty(rng)])
                             for _ in range(rng.randint(0, 140)))
        elif name == "channels" and rng.random() < 0.5:
            value = ",".join(rng.sample(["trades", "quotes", "bars", "", "TRADES"], rng.randint(0, 3)))
        elif name == "throttle_ms" and rng.random() < 0.5:
            value = rng.choice(["0", "1", "250", "-5", "1e400", "nan", "inf", "99999999999999999999", "0.5"])
        elif name == "token" and rng.random() < 0.3:
            value = TOKEN
        else:
            value = nasty(rng)
        raw = rng.random() < 0.3  # sometimes unencoded, as a hostile client would send it
        params.append(f"{name}={value if raw else quote(value, safe=',')}")
    return "&".join(params)


def header_value(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.15:
        return b"x" * rng.choice([1000, 9000, 70000])  # huge
    if roll < 0.3:
        return b"abc\r\nSet-Cookie: injected=1"  # CR/LF injection attempt
    if roll < 0.4:
        return rng.choice([b"a\x00b", b"a\rb", b"a\nb", b"\x7f", b"\xff\xfe", b" padded ", b""])
    if roll < 0.5:
        return str(rng.choice([0, 1, 2**63 - 1, -1, 10**18])).encode()  # ids up to 2^63 only (see the brief)
    return nasty(rng).encode("utf-8", "surrogatepass")


def printable(rng: random.Random) -> bytes:
    """A header value HTTP allows (visible ASCII, Latin-1, inner spaces and tabs), possibly hostile to us."""
    chars = [rng.choice([32, 9, *range(33, 127), *range(0xA0, 0x100)]) for _ in range(rng.randint(0, 130))]
    return bytes(chars).strip(b" \t") or b"x"


def request(rng: random.Random) -> bytes:
    """Half the requests are well-formed HTTP with fuzzed queries and header values (they reach the streams);
    the other half are hostile at the HTTP level too."""
    hostile = rng.random() < 0.5
    target = rng.choice(PATHS[:3] if not hostile else PATHS)
    if rng.random() < 0.85:
        target += "?" + query(rng)
    if hostile and rng.random() < 0.2:
        target = nasty(rng)
    if not hostile:
        target = quote(target, safe="/?&=,%:+*.-_~")
    method = rng.choice(METHODS) if hostile else rng.choice([b"GET"] * 8 + [b"OPTIONS", b"HEAD"])
    version = rng.choice(VERSIONS) if hostile else b"HTTP/1.1"
    line = method + b" " + target.encode("utf-8", "surrogatepass") + b" " + version
    headers = [b"Host: 127.0.0.1"] if rng.random() < 0.9 or not hostile else []
    for _ in range(rng.randint(0, 6)):
        name = rng.choice([b"X-Correlation-ID", b"Last-Event-ID", b"Authorization", b"Origin", b"Accept-Encoding",
                           b"Cookie", b"X-\xc3\xa9", b"Bad Name", b"", b"Host"][:None if hostile else 6])
        value = header_value(rng) if hostile else printable(rng)
        if name == b"Last-Event-ID" and not hostile and rng.random() < 0.5:
            value = str(rng.choice([0, 1, 5, 2**63 - 1, -1, rng.randint(0, 10**6)])).encode()
        if name == b"Authorization" and rng.random() < 0.5:
            value = b"Bearer " + rng.choice([TOKEN.encode(), value])
        if name == b"Accept-Encoding" and rng.random() < 0.7:
            value = b"gzip"
        headers.append(name + b": " + value)
        if rng.random() < 0.2:
            headers.append(headers[-1])  # duplicated
    return line + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"


async def exchange(port: int, data: bytes, linger: float) -> bytes:
    """Send one request, return the response head; a stream is kept open ``linger`` seconds (events flow)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        if linger and b"text/event-stream" in head:
            await asyncio.sleep(linger)
        return head
    except asyncio.IncompleteReadError as exc:
        return exc.partial
    finally:
        writer.transport.abort()


async def trades(sim) -> None:
    """Market data flowing the whole time, so throttling, replay recording and gzip run too."""
    while True:
        for symbol in ("AAPL", "MSFT", "BRK.B", "TSLA"):
            sim.inject_trade(symbol, price=1.0)
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("seed", [20261123, 7, 31])
async def test_fuzzed_requests_never_500_never_trace_and_leave_nothing_behind(sim, tmp_path, caplog, seed):
    caplog.set_level(logging.INFO)
    rng = random.Random(seed)
    cases = [(request(rng), rng.choice([0, 0, 0.01, 0.05])) for _ in range(REQUESTS)]
    async with running(relay_config(sim, tmp_path, sse_port=free_port())) as app:
        await wait_until(lambda: app.relay.sources.default.upstream.connected)
        port = app.sse.port
        anchor_cm = sse_get(port, "/api/stream/trades?symbols=AAPL,MSFT,BRK.B,TSLA&throttle_ms=20",
                            {"Accept-Encoding": "gzip"})
        anchor = await anchor_cm.__aenter__()  # keeps the symbols upstream, so fuzzed streams get events at once
        await wait_until(lambda: len(sim.subscriptions("/v2/iex")["trades"]) == 4, what="symbols upstream")
        feed = asyncio.create_task(trades(sim))
        for start in range(0, len(cases), PARALLEL):
            batch = [case for case, _ in cases[start:start + PARALLEL]]
            lingers = [linger for _, linger in cases[start:start + PARALLEL]]
            answers = await asyncio.gather(*(exchange(port, c, t) for c, t in zip(batch, lingers, strict=True)))
            for case, answer in zip(batch, answers, strict=True):
                assert answer.startswith(b"HTTP/1.1 "), f"no response to {case[:300]!r}: {answer[:200]!r}"
                status = int(answer[9:12])
                assert status < 500, f"{status} for {case[:300]!r}"
                assert b"injected" not in answer, f"header injection echoed for {case[:300]!r}"
        # Upstream's own complaints are left out: a symbol the relay accepts but Alpaca does not (a leading digit)
        # is the symbol-validation fix in protocol.py, made separately.
        feed.cancel()
        await anchor.until("trade")
        await anchor_cm.__aexit__(None, None, None)
        traces = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()
                  or (r.levelno >= logging.ERROR and r.name != "trade_stream.upstream.market_data")]
        assert not traces, traces[0].getMessage() + "\n" + caplog.text[-3000:]

        async with sse_get(port, "/api/stream/trades?symbols=AAPL") as r:
            assert r.status == 200
            await r.until("connected")
        await wait_until(lambda: not app.sse.clients and not app.sse.order_clients, what="streams closed")
        await wait_until(lambda: app.sse.admission.per_ip == {}, what="admission counts back to zero")
