"""Demo mode: the Alpaca simulator in-process on an ephemeral loopback port, the relay pointed at it through the
same upstream code path as production, and a simulated trader so the orders panel has something to show.

This is the only production module that imports the simulator, and only when --demo is given.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random

from trade_stream.config import Config
from trade_stream.simulator import SimConfig, Simulator

log = logging.getLogger("trade_stream.demo")
KEY, SECRET = "DEMO_KEY", "DEMO_SECRET"
TRADER_SYMBOLS = ("AAPL", "MSFT", "NVDA", "TSLA", "SPY")


async def start(cfg: Config) -> tuple[Simulator, Config]:
    sim = Simulator(SimConfig(host="127.0.0.1", port=0, accounts={KEY: SECRET}, intraday_history=True))
    await sim.start()
    log.warning("DEMO MODE: market data and orders are SIMULATED (simulator at %s)", sim.http_url)
    return sim, dataclasses.replace(
        cfg, api_key=KEY, secret_key=SECRET, base_url=sim.http_url, data_url=sim.http_url,
        data_stream_url=f"{sim.ws_url}/v2/{cfg.data_feed}", trading_stream_url=f"{sim.ws_url}/stream",
    )


async def trader(sim: Simulator, interval: float = 20.0, rng: random.Random | None = None) -> None:
    """Every ``interval`` seconds: a limit buy filled in two parts, later sold; never runs a position short."""
    rng = rng or random.Random()
    held: dict[str, int] = {}
    while True:
        await asyncio.sleep(interval)
        symbol = rng.choice(TRADER_SYMBOLS)
        price = round(sim.market.price(symbol), 2)
        if held.get(symbol) and rng.random() < 0.5:
            qty, side = held.pop(symbol), "sell"
        else:
            qty, side = rng.randint(2, 20) * 5, "buy"
            held[symbol] = held.get(symbol, 0) + qty
        order = sim.submit_order(symbol, side, qty, type="limit", limit_price=price)
        await asyncio.sleep(1.5)
        sim.fill_order(order["id"], qty=qty // 2, price=price)
        await asyncio.sleep(1.5)
        sim.fill_order(order["id"], price=price)
