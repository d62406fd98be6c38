"""Demo mode: the Alpaca simulator in-process on an ephemeral loopback port, the relay pointed at it through the
same upstream code path as production, and a simulated trader so the orders panel has something to show.

The simulated market keeps real US market hours by default (``--demo-session live``): at night and at weekends
crypto trades and stocks rest at their last price, as the market clock on the page says. ``--demo-session open``
shifts the simulator's clock into a regular session (the latest one's 10:30 New York time, unless the market has
been open an hour and stays open another) for demos at any hour; the page shows that simulated clock. The
simulator knows a fixed universe of well-known symbols (simulator/config.py KNOWN_SYMBOLS): a made-up ticker is
unknown, as it is at Alpaca.

With ``--broker`` the simulator's Broker API (simulator/broker.py) runs in-process too, with a few customer
accounts: the daemon consumes its event streams as it would Alpaca's, a broker trader places and fills orders in
those accounts (now and then a dividend), and each simulated customer gets a JWT for their own account, printed
as a page link, so the page shows that customer's events and nobody else's.

This is the only production module that imports the simulator, and only when --demo is given.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import secrets
import time
from decimal import Decimal

import jwt

from trade_stream.config import Config
from trade_stream.simulator import SimConfig, Simulator
from trade_stream.simulator.broker import BrokerSim
from trade_stream.simulator.clock import Clock
from trade_stream.simulator.config import KNOWN_SYMBOLS

log = logging.getLogger("trade_stream.demo")
KEY, SECRET = "DEMO_KEY", "DEMO_SECRET"
TRADER_SYMBOLS = ("AAPL", "MSFT", "NVDA", "TSLA", "SPY")


BROKER_KEY, BROKER_SECRET = "DEMO_BROKER_KEY", "DEMO_BROKER_SECRET"
CUSTOMERS = ("alice", "bob", "carol")  # one Broker account each


async def start(cfg: Config) -> tuple[Simulator, Config]:
    clock = Clock.for_session(cfg.demo_session)
    sim = Simulator(SimConfig(host="127.0.0.1", port=0, accounts={KEY: SECRET}, intraday_history=True,
                              clock=clock, universe=KNOWN_SYMBOLS))
    await sim.start()
    log.warning("DEMO MODE: market data and orders are SIMULATED (simulator at %s)", sim.http_url)
    if clock.shifted:
        log.warning("DEMO MODE: the simulated clock reads %s New York time (--demo-session %s)",
                    clock.now().strftime("%a %Y-%m-%d %H:%M"), cfg.demo_session)
    return sim, dataclasses.replace(
        cfg, api_key=KEY, secret_key=SECRET, base_url=sim.http_url, data_url=sim.http_url,
        data_stream_url=f"{sim.ws_url}/v2/{cfg.data_feed}", trading_stream_url=f"{sim.ws_url}/stream",
    )


async def start_broker(cfg: Config) -> tuple[BrokerSim, Config, dict[str, tuple[str, str]]]:
    """The simulator's Broker API with one account per simulated customer, and the config pointed at it. Returns
    customer -> (account id, JWT): the JWT secret is the configured one, or a fresh one for this run."""
    bsim = await BrokerSim(key=BROKER_KEY, secret=BROKER_SECRET, accounts=len(CUSTOMERS), heartbeat=10.0).start()
    log.warning("DEMO MODE: Broker API SIMULATED (%d accounts at %s)", len(CUSTOMERS), bsim.url)
    secret = cfg.jwt_secret or secrets.token_urlsafe(32)
    lifetime = min(30 * 86400, cfg.jwt_max_lifetime or 30 * 86400)  # the longest the relay accepts, up to 30 days
    customers = {}
    for name, account in zip(CUSTOMERS, bsim.accounts, strict=True):
        token = jwt.encode({"sub": name, "accounts": [account], "exp": int(time.time()) + lifetime}, secret,
                           algorithm="HS256")
        customers[name] = (account, token)
    return bsim, dataclasses.replace(
        cfg, broker_api_key=BROKER_KEY, broker_secret_key=BROKER_SECRET, broker_base_url=bsim.url,
        jwt_secret=secret, jwt_public_key=""), customers


async def broker_trader(bsim: BrokerSim, sim: Simulator, interval: float = 10.0,
                        rng: random.Random | None = None, accounts: list[str] | None = None) -> None:
    """Every ``interval`` seconds, in a random customer account (of ``accounts``, default all): a buy filled in
    two parts (``new``, ``partial_fill``, ``fill``); now and then a dividend on what the account holds."""
    rng = rng or random.Random()
    while True:
        await asyncio.sleep(interval)
        account = rng.choice(accounts or list(bsim.accounts))
        symbol = rng.choice(TRADER_SYMBOLS)
        price = round(sim.market.price(symbol), 2)
        qty = rng.randint(1, 10) * 2
        first = bsim.fill(account, symbol, qty // 2, price, partial_of=qty)
        await asyncio.sleep(1.5)
        bsim.fill_order(account, first["order"], Decimal(qty - qty // 2),
                        Decimal(str(price)))
        if rng.random() < 0.2:
            bsim.dividend(account, symbol, "0.24", qty)


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
