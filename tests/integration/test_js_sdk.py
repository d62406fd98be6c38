"""Alpaca's JS SDK v3 (data_stream_v2) against the relay through an upstream drop. It calls ``data.forEach`` on
every frame, so one non-Alpaca frame crashes the Node process. Skips without node or the SDK (tests/run.sh
installs it into tests/js)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.relay import TOKEN, relay_config, running, wait_until

JS = Path(__file__).resolve().parent.parent / "js"
NODE = shutil.which("node")
pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(NODE is None or not (JS / "node_modules" / "@alpacahq" / "alpaca-trade-api").is_dir(),
                       reason="node or the JS SDK is missing (tests/run.sh installs it with npm)"),
]


async def next_line(proc: asyncio.subprocess.Process, pred: Any) -> dict[str, Any]:
    while True:
        raw = await asyncio.wait_for(proc.stdout.readline(), 10)  # type: ignore[union-attr]
        assert raw, f"the SDK's Node process ended (exit {await proc.wait()}): {(await proc.stderr.read())[-800:]!r}"  # type: ignore[union-attr]
        line = orjson.loads(raw)
        if pred(line):
            return line


async def test_js_sdk_v3_data_stream_survives_an_upstream_drop(sim, tmp_path):
    async with running(relay_config(sim, tmp_path, linger=0)) as app:
        await wait_until(lambda: app.relay.sources.default.upstream.connected)
        proc = await asyncio.create_subprocess_exec(
            NODE, str(JS / "data_stream_v2.js"), f"ws://127.0.0.1:{app.port}/v2/iex", "bot", TOKEN, "AAPL",
            cwd=JS, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            await next_line(proc, lambda m: m["event"] == "connected")
            await wait_until(lambda: sim.subscriptions("/v2/iex")["trades"] == ["AAPL"], what="upstream AAPL")
            before = app.relay.sources.default.upstream.status.reconnects
            sim.cut_all()
            await wait_until(lambda: app.relay.sources.default.upstream.status.reconnects > before
                                     and app.relay.sources.default.upstream.connected,
                             what="relay reconnected")
            await wait_until(lambda: sim.subscriptions("/v2/iex")["trades"] == ["AAPL"], what="resubscribed")
            sim.inject_trade("AAPL", price=77.5)
            trade = await next_line(proc, lambda m: m["event"] == "trade")
            assert trade == {"event": "trade", "symbol": "AAPL", "price": 77.5}
            assert proc.returncode is None
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
