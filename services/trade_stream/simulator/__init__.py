"""A standalone Alpaca simulator speaking the real wire protocols, for tests, demos and benchmarks.

It serves, on one port: the market-data streams (``/v2/{iex,sip,delayed_sip,test}``,
``/v1beta1/{boats,overnight}``), the trading stream (``/stream``), Alpaca's REST GET endpoints (``/v2/...``)
and a control API (``/_sim/...``). It keeps US market hours at its clock (``SimConfig.clock``, calendar.py).
It imports nothing from the rest of trade_stream.
"""

from .clock import Clock
from .config import BASIC_PLAN, DATA_PATHS, TRADING_PATH, UNLIMITED_PLAN, Plan, SimConfig
from .server import Received, Simulator

__all__ = [
    "BASIC_PLAN",
    "DATA_PATHS",
    "TRADING_PATH",
    "UNLIMITED_PLAN",
    "Clock",
    "Plan",
    "Received",
    "SimConfig",
    "Simulator",
]
