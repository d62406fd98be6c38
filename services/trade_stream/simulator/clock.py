"""The simulator's idea of the time: the wall clock, or the wall clock shifted (or stopped) at a chosen instant.

Everything in the simulated market reads this one clock: trade and bar timestamps, the minute and daily bar
windows, the synthesized day, the market phase that decides what the stock feeds send, and Alpaca's ``/v2/clock``
and ``/v2/calendar``. The trading side (orders, fills) keeps the wall clock, as Alpaca's does, because clients
reconcile orders by their own clock. A test pins it to the hour it is about (before the open, a holiday) and
passes at any real hour; the demo shifts it into a regular session to show a live market at night.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from .calendar import NEW_YORK, last_regular_session

NS = 1_000_000_000


class Clock:
    """Callable: the simulated time in ns since the epoch. ``offset_ns`` is added to the wall clock; a ``frozen``
    clock stays at its instant until ``set`` moves it (the asyncio timers keep real time either way)."""

    def __init__(self, offset_ns: int = 0, frozen_ns: int | None = None) -> None:
        self.offset_ns = offset_ns
        self.frozen_ns = frozen_ns

    @classmethod
    def starting_at(cls, instant: datetime) -> Clock:
        """Running from ``instant`` (an aware datetime) on, at the wall clock's pace."""
        return cls(offset_ns=_ns(instant) - time.time_ns())

    @classmethod
    def frozen_at(cls, instant: datetime) -> Clock:
        return cls(frozen_ns=_ns(instant))

    @classmethod
    def in_session(cls, now: datetime | None = None) -> Clock:
        """A regular session at any real hour, an hour or more of it gone (a page's "1 h" of minute bars, a day's
        trades to show) and another hour to go: the wall clock itself while that holds, else running from 10:30 New
        York time of the latest session whose 10:30 has come by ``now`` (wall time by default), which leaves at
        least two and a half hours of session. Never ahead of the wall clock: right after an open it is the
        previous session's 10:30."""
        real = (now or datetime.now(UTC)).astimezone(UTC)
        last = last_regular_session(real - timedelta(hours=1))
        if real + timedelta(hours=1) <= last.close:
            return cls(offset_ns=(_ns(now) - time.time_ns()) if now else 0)
        day = last.day
        return cls.starting_at(datetime(day.year, day.month, day.day, 10, 30, tzinfo=NEW_YORK))

    @classmethod
    def for_session(cls, session: str) -> Clock:
        """``live``: the wall clock (real US market hours); ``open``: a regular session at any hour
        (``in_session``); else an RFC 3339 time with its offset, the clock running from it. ValueError otherwise."""
        if session == "live":
            return cls()
        if session == "open":
            return cls.in_session()
        try:
            instant = datetime.fromisoformat(session.replace("Z", "+00:00"))
        except ValueError:
            instant = None
        if instant is None or instant.tzinfo is None:
            raise ValueError("must be live, open, or an RFC 3339 time with its offset such as "
                             "2026-12-05T07:00:00-05:00")
        return cls.starting_at(instant)

    def __call__(self) -> int:
        return self.frozen_ns if self.frozen_ns is not None else time.time_ns() + self.offset_ns

    @property
    def shifted(self) -> bool:
        """True unless this is the plain wall clock."""
        return self.frozen_ns is not None or self.offset_ns != 0

    def now(self) -> datetime:
        """The simulated time in New York."""
        return datetime.fromtimestamp(self() / NS, NEW_YORK)

    def set(self, instant: datetime) -> None:
        """Move the clock to ``instant``; a frozen clock stays frozen there, a running one runs on from it."""
        if self.frozen_ns is not None:
            self.frozen_ns = _ns(instant)
        else:
            self.offset_ns = _ns(instant) - time.time_ns()


def _ns(instant: datetime) -> int:
    if instant.tzinfo is None:
        raise ValueError("the clock needs an aware datetime (with a time zone)")
    return int(instant.timestamp()) * NS + instant.microsecond * 1000
