"""The US equity calendar (NYSE rules) for any year: holidays, early closes, sessions and the phase of an instant.

Pure: dates and datetimes in, dates and datetimes out, no clock of its own. The simulator asks it what a stock
feed does at the simulated instant (nothing overnight, sparse trades before the open and after the close), and
answers Alpaca's ``/v2/clock`` and ``/v2/calendar`` from it. Holidays are computed by rule rather than listed, so
the simulator is right in any year: New Year's Day (a Saturday one is not moved back into the old year), Martin
Luther King Jr. Day, Washington's Birthday, Good Friday (from the date of Easter), Memorial Day, Juneteenth (since
2022), Independence Day, Labor Day, Thanksgiving and Christmas; a Saturday holiday is observed on the Friday
before, a Sunday one on the Monday after. Early closes (13:00) fall on the day before Independence Day, the day
after Thanksgiving and Christmas Eve, when those are trading days. One-off closures (national days of mourning)
are not rules and are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")
PRE_OPEN, OPEN, CLOSE, EARLY_CLOSE, POST_CLOSE = time(4, 0), time(9, 30), time(16, 0), time(13, 0), time(20, 0)

CLOSED, PRE, REGULAR, POST = "closed", "pre", "regular", "post"


@dataclass(frozen=True)
class Session:
    """One trading day: extended hours from ``pre_open`` to ``post_close``, the regular session from ``open`` to
    ``close`` (13:00 on an early close; the post-market then ends at 17:00). All in New York time."""

    day: date
    pre_open: datetime
    open: datetime
    close: datetime
    post_close: datetime

    @property
    def early(self) -> bool:
        return self.close.time() != CLOSE


def easter(year: int) -> date:
    """Easter Sunday (Gregorian; the anonymous algorithm, also known as Meeus/Jones/Butcher)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    ell = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * ell) // 451
    month, day = divmod(h + ell - 7 * m + 114, 31)
    return date(year, month, day + 1)


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    """The n-th ``weekday`` (Monday = 0) of a month; n = -1 is the last one."""
    if n > 0:
        first = date(year, month, 1)
        return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))
    last = (date(year, month + 1, 1) if month < 12 else date(year + 1, 1, 1)) - timedelta(days=1)
    return last - timedelta(days=(last.weekday() - weekday) % 7)


def _observed(day: date) -> date:
    """Saturday holidays are observed on Friday, Sunday ones on Monday."""
    if day.weekday() == 5:
        return day - timedelta(days=1)
    if day.weekday() == 6:
        return day + timedelta(days=1)
    return day


@lru_cache(maxsize=64)
def holidays(year: int) -> dict[date, str]:
    """The full-day exchange holidays of ``year`` (the dates observed), with their names."""
    out = {}
    new_year = date(year, 1, 1)
    if new_year.weekday() != 5:  # NYSE rule 7.2: a Saturday New Year's Day is not observed on Dec 31
        out[_observed(new_year)] = "New Year's Day"
    out[_nth_weekday(year, 1, 0, 3)] = "Martin Luther King Jr. Day"
    out[_nth_weekday(year, 2, 0, 3)] = "Washington's Birthday"
    out[easter(year) - timedelta(days=2)] = "Good Friday"
    out[_nth_weekday(year, 5, 0, -1)] = "Memorial Day"
    if year >= 2022:
        out[_observed(date(year, 6, 19))] = "Juneteenth National Independence Day"
    out[_observed(date(year, 7, 4))] = "Independence Day"
    out[_nth_weekday(year, 9, 0, 1)] = "Labor Day"
    out[_nth_weekday(year, 11, 3, 4)] = "Thanksgiving Day"
    out[_observed(date(year, 12, 25))] = "Christmas Day"
    return out


def is_trading_day(day: date) -> bool:
    return day.weekday() < 5 and day not in holidays(day.year)


@lru_cache(maxsize=64)
def early_closes(year: int) -> frozenset[date]:
    """Days the regular session ends at 13:00: before Independence Day, after Thanksgiving, Christmas Eve."""
    candidates = (date(year, 7, 3), _nth_weekday(year, 11, 3, 4) + timedelta(days=1), date(year, 12, 24))
    return frozenset(d for d in candidates if is_trading_day(d))


def session(day: date) -> Session | None:
    """The trading session of ``day``, or None on weekends and holidays."""
    if not is_trading_day(day):
        return None
    close = EARLY_CLOSE if day in early_closes(day.year) else CLOSE
    post = time(close.hour + 4, close.minute)
    at = lambda t: datetime.combine(day, t, NEW_YORK)  # noqa: E731 - four uses in one expression
    return Session(day, at(PRE_OPEN), at(OPEN), at(close), at(post))


def phase(now: datetime) -> str:
    """What the stock market is doing at ``now``: ``pre`` (04:00 to the open), ``regular``, ``post`` (the close
    to 20:00, or 17:00 after an early close) or ``closed`` (overnight, weekends, holidays)."""
    local = now.astimezone(NEW_YORK)
    s = session(local.date())
    if s is None or not s.pre_open <= local < s.post_close:
        return CLOSED
    if local < s.open:
        return PRE
    return REGULAR if local < s.close else POST


def overnight(now: datetime) -> bool:
    """Whether the overnight session (Blue Ocean ATS: 20:00 to 04:00 New York time, the nights from Sunday to
    Thursday) is trading at ``now``."""
    local = now.astimezone(NEW_YORK)
    if local.time() >= POST_CLOSE:
        return local.weekday() in (6, 0, 1, 2, 3)
    return local.time() < PRE_OPEN and local.weekday() in (0, 1, 2, 3, 4)


def next_session(after: date) -> Session:
    """The first session on a day after ``after``."""
    day = after + timedelta(days=1)
    while (s := session(day)) is None:
        day += timedelta(days=1)
    return s


def previous_session(before: date) -> Session:
    """The last session on a day before ``before``."""
    day = before - timedelta(days=1)
    while (s := session(day)) is None:
        day -= timedelta(days=1)
    return s


def last_regular_session(now: datetime) -> Session:
    """The latest session whose regular hours have begun by ``now`` (today's once it opened, else an earlier one):
    the day a stock's history and daily bar belong to."""
    local = now.astimezone(NEW_YORK)
    s = session(local.date())
    return s if s is not None and s.open <= local else previous_session(local.date())


def next_open_close(now: datetime) -> tuple[datetime, datetime]:
    """Alpaca's ``next_open`` and ``next_close``: the next regular open strictly after ``now`` and the end of the
    regular session that is running now, or else of the next one."""
    local = now.astimezone(NEW_YORK)
    today = session(local.date())
    upcoming = today if today is not None and local < today.open else next_session(local.date())
    closing = today if today is not None and local < today.close else upcoming
    return upcoming.open, closing.close


def sessions_between(start: date, end: date) -> list[Session]:
    """Every session from ``start`` to ``end``, both included."""
    out, day = [], start
    while day <= end:
        if (s := session(day)) is not None:
            out.append(s)
        day += timedelta(days=1)
    return out
