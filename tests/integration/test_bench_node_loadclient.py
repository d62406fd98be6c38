"""The Node load client (``bench/node/loadclient.mjs``) is a drop-in for the Python one: the bench merges both
kinds' histograms and compares their counts with the simulator's, so its timestamp parsing, buckets and counting
across the window's edges must be the Python client's, and it must refuse what it cannot do (stallers)."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import subprocess
import time
from pathlib import Path

import orjson
import pytest

from trade_stream.bench import peers
from trade_stream.bench.histogram import Histogram
from trade_stream.bench.loadclient import NS, Window, WsClient, ts_ns
from trade_stream.bench.runner import load_argv
from trade_stream.core.framing import text_frame

NODE = shutil.which("node")
pytestmark = [pytest.mark.timeout(30),
              pytest.mark.skipif(NODE is None, reason="node missing (tests/run.sh installs it)")]
START = 1_700_000_000 * NS
END = START + 2 * NS


def selftest(lines: list[dict]) -> list:
    """Each line through ``loadclient.mjs --selftest``: a parsed timestamp or a histogram per line."""
    assert NODE is not None
    proc = subprocess.run([NODE, str(peers.NODE_LOAD_CLIENT), "--selftest"], capture_output=True, text=True,
                          timeout=20, input="".join(json.dumps(line) + "\n" for line in lines))
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_timestamps_parse_to_the_same_ns_as_python():
    stamps = ["2026-12-01T16:00:00Z",  # a whole second: Go drops the fraction
              "2026-12-01T16:00:00.123456789Z",  # nine digits
              "2026-12-01T16:00:00.5Z", "2026-12-01T16:00:59.000001Z", "1999-12-31T23:59:59.99999999Z",
              "2026-12-01T16:00:00.25+01:00", "2026-12-01T16:00:00-05:30"]  # offsets: the generic path
    got = selftest([{"ts": s} for s in stamps])
    assert [sec * NS + frac for sec, frac in got] == [ts_ns(s.encode()) for s in stamps]


def test_histogram_buckets_and_max_match_python():
    latencies = [0.0, 0.4, 0.999, 1.0, math.e, 24_999.5, 1e15]  # below 1 µs, on 1 µs, past the last bucket
    latencies += [0.5 * 1.0137 ** k for k in range(2000)]  # 0.5 µs to ~400 s, several values per bucket
    [node] = selftest([{"us": latencies}])
    hist = Histogram()
    for us in latencies:
        hist.add(us)
    assert node == hist.to_json()


def trade(ns: int) -> bytes:
    secs, frac = divmod(ns, NS)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"
    return text_frame(orjson.dumps({"type": "trade", "symbol": "AAPL",
                                    "data": {"timestamp": stamp, "price": 1.0, "size": 1}}))


async def read_client_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One masked client frame of under 126 bytes of payload: (opcode, unmasked payload)."""
    head = await reader.readexactly(2)
    n = head[1] & 0x7F
    assert head[1] & 0x80 and n < 126, head
    key = await reader.readexactly(4)
    body = await reader.readexactly(n)
    return head[0] & 0x0F, bytes(b ^ key[i % 4] for i, b in enumerate(body))


async def test_a_read_across_the_window_edges_counts_like_the_python_client(tmp_path: Path):
    """A relay stand-in answers the handshake and the subscribe, pings, then writes five trades stamped on both
    sides of both edges at once: the Node client answers the ping with the same payload and counts early,
    inside and late exactly as the Python client does on the same bytes."""
    chunk = trade(START - 1) + trade(START) + trade(START + NS) + trade(END - 1) + trade(END)
    go = asyncio.Event()
    pong: list[tuple[int, bytes]] = []

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                     + text_frame(b'{"type":"welcome"}'))
        opcode, payload = await read_client_frame(reader)
        assert (opcode, orjson.loads(payload)) == (0x1, {"action": "subscribe", "symbols": ["AAPL"]})
        writer.write(text_frame(b'{"type":"subscribed","symbol":"AAPL"}') + bytes((0x89, 2)) + b"hi")
        pong.append(await read_client_frame(reader))
        await go.wait()
        writer.write(chunk)
        await writer.drain()
        await reader.read()  # until the client goes
        writer.close()

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"host": "127.0.0.1", "port": port, "clients": [{"symbols": ["AAPL"]}]}))
    assert NODE is not None
    proc = await asyncio.create_subprocess_exec(NODE, str(peers.NODE_LOAD_CLIENT), str(spec),
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None

    async def ask(cmd: dict) -> dict:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write((json.dumps(cmd) + "\n").encode())
        return json.loads(await proc.stdout.readline())

    try:
        ready = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
        assert (ready["event"], ready["connected"], ready["failed"]) == ("ready", 1, 0), ready
        proc.stdin.write((json.dumps({"cmd": "window", "start_ns": START, "end_ns": END}) + "\n").encode())
        await ask({"cmd": "report"})  # answered after the window line, so the window is set before the trades
        go.set()
        while True:  # the trades may take a moment to arrive; the test's timeout bounds the wait
            rep = await ask({"cmd": "report"})
            if rep["early"] + rep["late"] + sum(got for _, got in rep["per_client"]) >= 5:
                break
            await asyncio.sleep(0.05)
        proc.stdin.close()
        assert await asyncio.wait_for(proc.wait(), 10) == 0  # stdin closed: the process exits
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        server.close()

    window = Window(start_ns=START, end_ns=END)
    py = WsClient(window, 0, "127.0.0.1", 1, ["AAPL"], batch=False, staller=False)
    py.upgraded = True
    py.data_received(chunk)
    assert (rep["early"], rep["per_client"], rep["late"]) == (window.early, [[0, py.received]], window.late)
    assert (rep["early"], rep["per_client"], rep["late"]) == (1, [[0, 3]], 1)
    assert sum(rep["hist"]["counts"]) == window.hist.total == 3
    assert (rep["lost"], rep["staller_closed"], rep["errors"]) == (0, [], [])
    assert pong == [(0xA, b"hi")]


def test_a_spec_with_a_staller_is_refused_with_one_line(tmp_path: Path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"host": "127.0.0.1", "port": 1,
                                "clients": [{"symbols": ["AAPL"]}, {"symbols": ["AAPL"], "stall": True}]}))
    assert NODE is not None
    proc = subprocess.run([NODE, str(peers.NODE_LOAD_CLIENT), str(spec)], capture_output=True, text=True,
                          timeout=20)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr.strip().splitlines() == [
        "loadclient.mjs: the spec has 1 staller(s); Node cannot shrink a socket's receive buffer, so run "
        "stallers in the Python load client (trade_stream.bench.loadclient)"]


def test_the_runner_starts_node_load_clients_but_keeps_stallers_in_python(tmp_path: Path):
    spec = tmp_path / "load-0.json"
    assert load_argv("node", spec, stallers=False)[1:] == [str(peers.NODE_LOAD_CLIENT), str(spec)]
    assert load_argv("node", spec, stallers=True)[1:] == ["-m", "trade_stream.bench.loadclient", str(spec)]
    assert load_argv("python", spec, stallers=False)[1:] == ["-m", "trade_stream.bench.loadclient", str(spec)]
