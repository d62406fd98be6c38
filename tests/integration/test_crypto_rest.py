"""Crypto pairs over Alpaca's crypto REST (``/v1beta3/crypto/{loc}/...``): the snapshot a browser gets on
subscribe and the page's chart backfill (``/api/bars``), with alpaca-py's CryptoHistoricalDataClient against the
simulator, which serves those paths in alpaca-py's shapes."""

from __future__ import annotations

import asyncio
import urllib.parse
import urllib.request
from typing import Any

import orjson
import pytest
from alpaca.data.historical import CryptoHistoricalDataClient
from alpaca.data.requests import CryptoBarsRequest, CryptoSnapshotRequest
from alpaca.data.timeframe import TimeFrame

from tests.support.clocks import bars_window
from tests.support.relay import Browser, relay_config, running

pytestmark = pytest.mark.timeout(30)
CRYPTO = "/v1beta3/crypto/us"


def http_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


async def test_browser_subscribing_a_pair_gets_a_snapshot_from_the_crypto_rest(sim, tmp_path):
    sent = sim.inject_trade("BTC/USD", price=64_321.5, size=0.25, path=CRYPTO)
    quote = sim.inject_quote("BTC/USD", bid=64_320.0, ask=64_323.0, path=CRYPTO)
    async with running(relay_config(sim, tmp_path)) as app:
        async with Browser.connect(app.port) as c:
            await c.send({"action": "subscribe", "symbols": ["BTC/USD"], "channels": ["trades"]})
            snap = await c.expect("snapshot")
    assert snap["symbol"] == "BTC/USD"
    data = snap["data"]
    assert data["latest_trade"]["price"] == 64_321.5 and data["latest_trade"]["size"] == 0.25
    assert data["latest_trade"]["timestamp"] == sent["t"]
    assert data["latest_quote"]["bid_price"] == quote["bp"] and data["latest_quote"]["ask_price"] == quote["ap"]
    assert data["daily"]["close"] == 64_321.5 and isinstance(data["prev_close"], float)
    assert any(p.startswith(f"{CRYPTO}/snapshots") for p in sim.rest_requests)
    assert not any("/stocks/" in p for p in sim.rest_requests)  # the pair never went to the stock endpoints


async def test_api_bars_for_a_pair_come_from_the_crypto_bars_endpoint(sim, tmp_path):
    for price in (64_000.0, 64_100.0):
        sim.inject_trade("BTC/USD", price=price, size=0.5, path=CRYPTO)
    async with running(relay_config(sim, tmp_path, crypto_location="eu-1")) as app:
        query = urllib.parse.urlencode({"symbol": "BTC/USD", "timeframe": "1Min", **bars_window(sim.clock)})
        status, body = await asyncio.to_thread(http_json, f"http://127.0.0.1:{app.port}/api/bars?{query}")
    assert status == 200 and body["symbol"] == "BTC/USD"
    assert body["bars"] and body["bars"][-1]["c"] == 64_100.0 and body["bars"][-1]["v"] == 1.0
    assert any(p.startswith("/v1beta3/crypto/eu-1/bars") for p in sim.rest_requests)  # the configured location
    assert not any("/stocks/" in p for p in sim.rest_requests)


async def test_simulator_crypto_rest_in_alpaca_pys_shapes(sim):
    """alpaca-py's own models parse the simulator's crypto snapshots and bars (no keys: crypto data needs none)."""
    sim.inject_trade("ETH/USD", price=3_210.25, size=1.5, path=CRYPTO)
    client = CryptoHistoricalDataClient(url_override=sim.http_url)
    snaps = await asyncio.to_thread(client.get_crypto_snapshot, CryptoSnapshotRequest(symbol_or_symbols=["ETH/USD"]))
    eth = snaps["ETH/USD"]
    assert eth.latest_trade.price == 3_210.25 and eth.latest_trade.size == 1.5
    assert eth.latest_quote.bid_price < eth.latest_quote.ask_price and eth.daily_bar.close == 3_210.25
    assert eth.previous_daily_bar is not None and eth.minute_bar is not None
    bars = await asyncio.to_thread(client.get_crypto_bars,
                                   CryptoBarsRequest(symbol_or_symbols="ETH/USD", timeframe=TimeFrame.Minute))
    assert bars["ETH/USD"][-1].close == 3_210.25 and bars["ETH/USD"][-1].volume == 1.5
    status, body = await asyncio.to_thread(http_json, sim.http_url + "/v1beta3/crypto/xx/snapshots?symbols=ETH/USD")
    assert status == 404
    status, body = await asyncio.to_thread(http_json, sim.http_url + "/v1beta3/crypto/us/latest/trades?symbols=AAPL")
    assert status == 400 and "invalid symbol" in body["message"]
