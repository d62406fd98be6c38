"""The simulator's units, shared by the market and the day it synthesizes for a new symbol (intraday.py): time in
ns since the epoch, written as Alpaca's servers write it, the New York calendar day, and prices to Alpaca's tick.
"""

from __future__ import annotations

import time
from datetime import datetime

from .calendar import NEW_YORK

NS = 1_000_000_000
MINUTE_NS = 60 * NS

_ts_cache: tuple[int, str] = (-1, "")


def format_ts(ns: int) -> str:
    """RFC-3339 UTC with nanoseconds, as Go's ``time.RFC3339Nano`` prints it (Alpaca's servers are Go).

    Like Go, trailing zeros of the fraction are trimmed and a whole second has no fraction at all, so
    ``...05.123456789Z``, ``...05.12Z`` and ``...05Z`` are all possible: a client must parse any length.
    """
    global _ts_cache
    sec, frac = divmod(ns, NS)
    cached_sec, prefix = _ts_cache
    if sec != cached_sec:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _ts_cache = (sec, prefix)
    if not frac:
        return prefix + "Z"
    return f"{prefix}.{frac:09d}".rstrip("0") + "Z"


def new_york_midnight(ns: int) -> int:
    """The start of the New York calendar day holding ``ns``, in ns since the epoch."""
    day = datetime.fromtimestamp(ns // NS, NEW_YORK).date()
    midnight = datetime(day.year, day.month, day.day, tzinfo=NEW_YORK)
    return int(midnight.timestamp()) * NS


def round_price(price: float) -> float:
    """Cents at or above $1, hundredths of a cent below (Reg NMS sub-penny rule)."""
    return round(price, 2) if price >= 1.0 else round(price, 4)
