"""Two Python relays the real one is measured against: the naive design, and the raw-write floor.

Both hold one upstream connection to the simulator and speak the same client protocol as trade-stream (welcome,
subscribe, one ``subscribed`` per symbol, trade messages shaped by ``protocol.market_message``), so the same load
clients run against all of them. Both run on uvloop like the daemon, so a comparison is about the fan-out, not
the event loop.

- naive (``--compare``): for each upstream message, for each client holding its symbol,
  ``await client.send(json.dumps(msg))``. Stdlib json, serialized per client, websockets' own framing per send,
  no slow-client policy (a stalled client blocks the loop in ``send``).
- raw (``--raw``, a peer in ``--rounds``): each message encoded and framed once, then one ``transport.write`` of
  that frame per holder, nothing else: no buffer bound, no stall rule, no counters. What one Python write per
  client per message costs at least, the floor under trade-stream's own per-delivery cost.

Prints ``ready <port>`` once upstream is authenticated.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from typing import Any

import orjson
import uvloop
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from trade_stream.core.framing import text_frame
from trade_stream.core.protocol import market_message


class BaselineRelay:
    def __init__(self, upstream_url: str, key: str, secret: str) -> None:
        self.upstream_url = upstream_url
        self.key, self.secret = key, secret
        self.holders: dict[str, set[ServerConnection]] = {}
        self.upstream: ClientConnection | None = None

    async def handler(self, ws: ServerConnection) -> None:
        mine: set[str] = set()
        try:
            await ws.send(json.dumps({"type": "welcome", "version": "baseline", "channels": ["trades"]}))
            async for raw in ws:
                msg = json.loads(raw)
                if msg.get("action") != "subscribe":
                    await ws.send(json.dumps({"type": "error", "code": "unknown_action",
                                              "message": "the baseline only knows subscribe"}))
                    continue
                symbols = msg.get("symbols") or [msg.get("symbol")]
                new = [s for s in symbols if s not in self.holders]
                for s in symbols:
                    self.holders.setdefault(s, set()).add(ws)
                    mine.add(s)
                if new and self.upstream is not None:
                    await self.upstream.send(json.dumps({"action": "subscribe", "trades": new}))
                for s in symbols:
                    await ws.send(json.dumps({"type": "subscribed", "symbol": s, "channels": ["trades"]}))
        except ConnectionClosed:
            pass
        finally:
            for s in mine:
                self.holders.get(s, set()).discard(ws)

    async def run_upstream(self, ready: asyncio.Event) -> None:
        async with connect(self.upstream_url, compression=None, max_size=None) as up:
            json.loads(await up.recv())  # [{"T":"success","msg":"connected"}]
            await up.send(json.dumps({"action": "auth", "key": self.key, "secret": self.secret}))
            reply = json.loads(await up.recv())
            if reply[0].get("msg") != "authenticated":
                raise RuntimeError(f"upstream auth failed: {reply}")
            self.upstream = up
            ready.set()
            async for raw in up:
                await self.on_frame(raw)

    async def on_frame(self, raw: str | bytes) -> None:
        for m in json.loads(raw):
            await self.fan_out(m)

    async def fan_out(self, m: dict[str, Any]) -> None:
        """The naive loop under test: one json.dumps and one awaited send per client per message."""
        msg = market_message(m)
        if msg is None:
            return
        for client in list(self.holders.get(m.get("S", ""), ())):
            try:
                await client.send(json.dumps(msg))
            except ConnectionClosed:
                pass


class RawWriteRelay(BaselineRelay):
    """The floor: one encode and one frame per message, one ``transport.write`` per holder, never awaited."""

    async def on_frame(self, raw: str | bytes) -> None:
        holders = self.holders
        for m in orjson.loads(raw):
            clients = holders.get(m.get("S", ""))
            if not clients:
                continue
            msg = market_message(m)
            if msg is None:
                continue
            frame = text_frame(orjson.dumps(msg))
            for client in clients:
                try:  # a try costs nothing until it catches: the write stays the only work per holder
                    client.transport.write(frame)
                except RuntimeError:  # uvloop: the transport closed; the handler drops the client
                    pass


async def main_async(args: argparse.Namespace) -> None:
    relay = (RawWriteRelay if args.raw else BaselineRelay)(args.upstream, args.key, args.secret)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serve(relay.handler, "127.0.0.1", args.port) as server:
        ready = asyncio.Event()
        upstream = asyncio.create_task(relay.run_upstream(ready))
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait({upstream, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if upstream.done():
            upstream.result()  # raises the upstream failure
        print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.wait({upstream, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
        upstream.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await upstream
        for ws in list(server.connections):
            ws.transport.abort()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m trade_stream.bench.baseline")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="simulator market-data URL, ws://127.0.0.1:P/v2/iex")
    parser.add_argument("--key", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--raw", action="store_true", help="the raw-write floor instead of the naive relay")
    uvloop.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
