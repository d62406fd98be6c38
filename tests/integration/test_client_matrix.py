"""The client matrix (issue 13, "Done when"): real Alpaca clients against the relay pointed at the simulator, over
loopback, each through an upstream drop (``sim.cut_all``) and a refusal (Alpaca's 405 on a small plan; on the
trading stream, a wrong secret), with no crash and the data each expects.

Clients: alpaca-py (StockDataStream, CryptoDataStream, NewsDataStream, OptionDataStream, TradingStream; alpaca-py
speaks msgpack only), the JavaScript SDK v3 (``@alpacahq/alpaca-trade-api`` 3.x: data_stream_v2,
crypto_stream_v1beta3, news_stream, option_stream, trade_ws) and v4 (4.x, installed as the npm alias
``alpaca-v4``: stockStream, cryptoStream, newsStream, optionStream, trading.stream), the Go SDK's messages
replayed from its source (msgpack; marketdata/stream/subscription.go getSubChangeMessage sends every channel key,
unset ones nil), and a plain JSON client as Alpaca's docs show it. JS rows skip without node or the packages
(tests/run.sh installs them)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import orjson
import pytest
from websockets.asyncio.client import connect

from tests.support import sdk
from tests.support.relay import KEY, TOKEN, relay_config, running, wait_until

pytestmark = pytest.mark.timeout(40)
JS = Path(__file__).resolve().parent.parent / "js"
NODE = shutil.which("node")
JS_MODULES = {"v3": JS / "node_modules" / "@alpacahq" / "alpaca-trade-api", "v4": JS / "node_modules" / "alpaca-v4"}
GO_SDK_CHANNELS = ("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "imbalances", "lulds",
                   "orderbooks", "news", "pricing")


@dataclass(frozen=True)
class Stream:
    path: str
    source: str  # the relay's source (upstream/sources.py)
    a: str  # the symbol the client holds
    b: str  # the one a plan of one symbol refuses
    channel: str


STREAMS = {
    "stocks": Stream("/v2/iex", "stocks:iex", "AAPL", "MSFT", "trades"),
    "crypto": Stream("/v1beta3/crypto/us", "crypto:us", "BTC/USD", "ETH/USD", "trades"),
    "news": Stream("/v1beta1/news", "news", "AAPL", "MSFT", "news"),
    "options": Stream("/v1beta1/indicative", "options:indicative", "AAPL261218C00230000", "SPY261218P00550000",
                      "trades"),
    "trading": Stream("/stream", "", "", "", ""),
}

#: One row per client: (family, stream).
CLIENTS = [(family, kind) for family in ("alpaca-py", "js-v3", "js-v4") for kind in STREAMS] + \
    [("go-replay", kind) for kind in ("stocks", "crypto", "news", "options")] + [("json", "stocks"), ("json", "crypto")]


class Client:
    """What a test sees of one client: normalized events, a way to add a symbol, and whether it still runs."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.errors: list[Any] = []
        self.seen: list[dict[str, Any]] = []  # every event, for the failure message

    async def subscribe(self, symbol: str) -> None:
        raise NotImplementedError

    def alive(self) -> bool:
        return True

    async def expect(self, pred: Any, timeout: float = 8.0) -> dict[str, Any]:
        async def wait() -> dict[str, Any]:
            while True:
                event = await self.events.get()
                self.seen.append(event)
                if event.get("event") == "error":
                    self.errors.append(event.get("error"))
                elif pred(event):
                    return event
        try:
            return await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"expected event did not come; seen: {self.seen[-10:]!r}") from None


# --- alpaca-py -------------------------------------------------------------------------------------------------


class PyClient(Client):
    def __init__(self, stream: Any, got: asyncio.Queue[Any], kind: str) -> None:
        super().__init__()
        self.stream, self.kind = stream, kind
        self.pump = asyncio.create_task(self._pump(got))

    async def _pump(self, got: asyncio.Queue[Any]) -> None:
        while True:
            item = await got.get()
            if self.kind == "trading":
                self.events.put_nowait({"event": "data", "order": str(item.order.id)})
            elif self.kind == "news":
                self.events.put_nowait({"event": "data", "headline": item.headline})
            elif hasattr(item, "price"):  # trades (quotes and order books have no price)
                self.events.put_nowait({"event": "data", "symbol": item.symbol, "price": item.price})

    async def subscribe(self, symbol: str) -> None:
        channel = "news" if self.kind == "news" else "trades"
        handler = next(iter(self.stream._handlers[channel].values()))
        method = self.stream.subscribe_news if self.kind == "news" else self.stream.subscribe_trades
        # alpaca-py waits on its own loop for the send (run_coroutine_threadsafe(...).result()): call it from a
        # thread, as its docs mean it to be called, or the loop blocks on itself.
        await asyncio.to_thread(method, handler, symbol)


@contextlib.asynccontextmanager
async def alpaca_py(url: str, kind: str, symbol: str) -> AsyncIterator[Client]:
    if kind == "trading":
        async with sdk.trading_stream(url, "bot", TOKEN) as got:
            client = PyClient(None, got, kind)
            yield client
    else:
        opener = {"stocks": sdk.stock_stream, "crypto": sdk.crypto_stream, "news": sdk.news_stream,
                  "options": sdk.option_stream}[kind]
        async with opener(url, "bot", TOKEN, symbol) as (stream, got):
            client = PyClient(stream, got, kind)
            yield client
    client.pump.cancel()


# --- the JavaScript SDK, v3 and v4 ------------------------------------------------------------------------------


class JsClient(Client):
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        super().__init__()
        self.proc = proc
        self.pump = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        assert self.proc.stdout is not None
        while raw := await self.proc.stdout.readline():
            if raw.startswith(b"{"):  # v3's news client console.logs its subscribes on the same stdout
                self.events.put_nowait(orjson.loads(raw))

    async def subscribe(self, symbol: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(orjson.dumps({"subscribe": symbol}) + b"\n")
        await self.proc.stdin.drain()

    def alive(self) -> bool:
        return self.proc.returncode is None


@contextlib.asynccontextmanager
async def js_sdk(version: str, url: str, kind: str, symbol: str) -> AsyncIterator[Client]:
    if NODE is None or not JS_MODULES[version].is_dir():
        pytest.skip("node or the JS SDK is missing (tests/run.sh installs them with npm)")
    proc = await asyncio.create_subprocess_exec(
        NODE, str(JS / "client.js"), version, kind, url, "bot", TOKEN, symbol, cwd=JS, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    client = JsClient(proc)
    try:
        yield client
        assert client.alive(), f"the Node process ended: {(await proc.stderr.read())[-800:]!r}"  # type: ignore[union-attr]
    finally:
        client.pump.cancel()
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


# --- raw clients: the Go SDK's messages (msgpack), and plain JSON -------------------------------------------------


class RawClient(Client):
    def __init__(self, ws: Any, use_msgpack: bool, channel: str) -> None:
        super().__init__()
        self.ws, self.msgpack, self.channel = ws, use_msgpack, channel
        self.pump = asyncio.create_task(self._pump())

    def encode(self, msg: dict[str, Any]) -> bytes | str:
        return msgpack.packb(msg) if self.msgpack else orjson.dumps(msg).decode()

    async def _pump(self) -> None:
        async for frame in self.ws:
            assert isinstance(frame, bytes) == self.msgpack, "a frame in the wrong codec"
            msgs = msgpack.unpackb(frame) if self.msgpack else orjson.loads(frame)
            assert isinstance(msgs, list) and all("T" in m for m in msgs), f"not Alpaca-shaped: {msgs!r}"
            for m in msgs:
                if m["T"] == "error":
                    self.events.put_nowait({"event": "error", "error": m["code"]})
                elif m["T"] == "n":
                    self.events.put_nowait({"event": "data", "headline": m["headline"]})
                elif m["T"] == "t":
                    self.events.put_nowait({"event": "data", "symbol": m["S"], "price": m["p"]})

    async def subscribe(self, symbol: str) -> None:
        msg = {"action": "subscribe", self.channel: [symbol]}
        if self.msgpack:  # the Go SDK: every channel key, unset ones nil
            msg = {"action": "subscribe", **{ch: msg.get(ch) for ch in GO_SDK_CHANNELS}}
        await self.ws.send(self.encode(msg))


@contextlib.asynccontextmanager
async def raw(url: str, kind: str, symbol: str, use_msgpack: bool) -> AsyncIterator[Client]:
    headers = {"Content-Type": "application/msgpack"} if use_msgpack else {}
    async with connect(url, additional_headers=headers, ping_interval=None, close_timeout=0.5) as ws:
        decode = msgpack.unpackb if use_msgpack else orjson.loads
        assert decode(await ws.recv()) == [{"T": "success", "msg": "connected"}]
        client = RawClient(ws, use_msgpack, STREAMS[kind].channel)
        await ws.send(client.encode({"action": "auth", "key": "bot", "secret": TOKEN}))
        assert decode(await ws.recv()) == [{"T": "success", "msg": "authenticated"}]
        client.pump = asyncio.create_task(client._pump())
        await client.subscribe(symbol)
        yield client
        assert not client.pump.done() or client.pump.cancelled(), client.pump.exception()
        client.pump.cancel()


def open_client(family: str, url: str, kind: str, symbol: str) -> Any:
    if family == "alpaca-py":
        return alpaca_py(url, kind, symbol)
    if family.startswith("js-"):
        return js_sdk(family[3:], url, kind, symbol)
    return raw(url, kind, symbol, use_msgpack=family == "go-replay")


# --- the matrix ---------------------------------------------------------------------------------------------------


def inject(sim: Any, kind: str, mark: float) -> Any:
    """Publish something the client must get, carrying ``mark``; returns what identifies it."""
    s = STREAMS[kind]
    if kind == "trading":
        return sim.submit_order("AAPL", "buy", 1, type="limit", limit_price=mark)["id"]
    if kind == "news":
        return sim.inject_news([s.a], f"headline {mark}")["headline"]
    if kind == "crypto":
        sim.push_stamped([sim.market.crypto_trade(s.a, mark, 0.01)], s.path)
    else:
        sim.inject_trade(s.a, mark, 1, path=s.path)
    return mark


def got(kind: str, what: Any) -> Any:
    if kind == "trading":
        return lambda e: e.get("order") == what
    if kind == "news":
        return lambda e: e.get("headline") == what
    return lambda e: e.get("price") == what and e.get("symbol") == STREAMS[kind].a


@pytest.mark.parametrize(("family", "kind"), CLIENTS, ids=[f"{f}-{k}" for f, k in CLIENTS])
async def test_client_through_an_upstream_drop_and_a_refusal(sim, tmp_path, family, kind):
    s = STREAMS[kind]
    async with running(relay_config(sim, tmp_path, linger=0)) as app:
        await wait_until(lambda: app.relay.sources.default.upstream.connected and app.tradings["default"].connected,
                         what="both streams up")
        url = f"ws://127.0.0.1:{app.port}{s.path}"
        async with open_client(family, url, kind, s.a) as client:
            if kind == "trading":
                first = None
                for attempt in range(40):  # until the client listens: events before that are not replayed
                    first = inject(sim, kind, 100 + attempt)
                    with contextlib.suppress(AssertionError):
                        await client.expect(got(kind, first), timeout=0.25)
                        break
                else:
                    pytest.fail("the trading client never got an order event")
                upstream = app.tradings["default"]
            else:
                src = app.relay.sources.source(s.source)
                await wait_until(lambda: s.a in sim.subscriptions(s.path)[s.channel], what="held upstream")
                await client.expect(got(kind, inject(sim, kind, 101.25)))
                upstream = src.upstream
            # 1. an upstream drop: the client sees nothing odd, then gets data again
            before = upstream.status.reconnects
            sim.cut_all()
            await wait_until(lambda: upstream.status.reconnects > before and upstream.connected, what="reconnected")
            if kind != "trading":
                await wait_until(lambda: s.a in sim.subscriptions(s.path)[s.channel], what="resubscribed")
            await client.expect(got(kind, inject(sim, kind, 102.5)))
            # 2. a refusal
            if kind == "trading":  # a wrong secret is refused; the client holding the stream is untouched
                async with connect(url, ping_interval=None) as bad:
                    await bad.send(orjson.dumps({"action": "auth", "key": "bot", "secret": "wrong"}).decode())
                    assert orjson.loads(await bad.recv())["data"]["status"] == "unauthorized"
            else:  # the account's plan holds one symbol: Alpaca refuses the second with 405
                sim.set_plan(KEY, symbol_limit=1)
                await client.subscribe(s.b)
                await wait_until(lambda: any("405" in str(e) or "symbol limit" in str(e) for e in _seen(client))
                                 if family not in ("alpaca-py", "js-v3") else True, what="405 reached the client")
                assert s.b not in sim.subscriptions(s.path)[s.channel]
            await client.expect(got(kind, inject(sim, kind, 103.75)))
            assert client.alive()


def _seen(client: Client) -> list[Any]:
    """Errors the client reported so far (drains pending events into ``errors``, keeping data for later)."""
    keep = []
    while not client.events.empty():
        event = client.events.get_nowait()
        (client.errors.append(event.get("error")) if event.get("event") == "error" else keep.append(event))
    for event in keep:
        client.events.put_nowait(event)
    return client.errors
