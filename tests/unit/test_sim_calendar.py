"""The simulator's US equity calendar (simulator/calendar.py) against known NYSE dates, the phases of a day, and the
regular session that ``Clock.in_session`` finds at any hour."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from tests.support.clocks import EARLY_CLOSE_AFTER, HOLIDAY, OPEN, OVERNIGHT, POST, PRE, WEEKEND, ny
from trade_stream.simulator import calendar
from trade_stream.simulator.clock import Clock
from trade_stream.simulator.rest import market_calendar, market_clock

pytestmark = pytest.mark.timeout(10)


def test_holidays_by_rule_match_the_published_nyse_dates():
    assert sorted(calendar.holidays(2026)) == [
        date(2026, 1, 1), date(2026, 1, 19), date(2026, 2, 16), date(2026, 4, 3), date(2026, 5, 25),
        date(2026, 6, 19), date(2026, 7, 3), date(2026, 9, 7), date(2026, 11, 26), date(2026, 12, 25)]
    assert calendar.holidays(2026)[date(2026, 4, 3)] == "Good Friday"
    assert date(2027, 7, 5) in calendar.holidays(2027)  # July 4th on a Sunday: observed Monday
    assert date(2027, 12, 24) in calendar.holidays(2027)  # Christmas on a Saturday: observed Friday
    assert date(2027, 12, 31) not in calendar.holidays(2027)  # New Year's Day 2028 is a Saturday: not observed
    assert date(2021, 6, 18) not in calendar.holidays(2021) and date(2022, 6, 20) in calendar.holidays(2022)
    assert calendar.easter(2024) == date(2024, 3, 31) and calendar.easter(2025) == date(2025, 4, 20)


def test_early_closes_and_sessions():
    assert calendar.early_closes(2026) == {date(2026, 11, 27), date(2026, 12, 24)}  # July 3rd is the holiday
    assert calendar.early_closes(2025) == {date(2025, 7, 3), date(2025, 11, 28), date(2025, 12, 24)}
    s = calendar.session(date(2026, 11, 27))
    assert s is not None and s.early and (s.close.hour, s.post_close.hour) == (13, 17)
    assert calendar.session(date(2026, 11, 26)) is None and calendar.session(date(2026, 11, 28)) is None


def test_phases_of_the_pinned_hours():
    assert [calendar.phase(t) for t in (PRE, OPEN, POST, OVERNIGHT, HOLIDAY, EARLY_CLOSE_AFTER, WEEKEND)] == [
        "pre", "regular", "post", "closed", "closed", "post", "closed"]
    assert calendar.phase(ny(2026, 11, 24, 9, 29, 59)) == "pre" and calendar.phase(ny(2026, 11, 24, 16)) == "post"
    assert calendar.phase(ny(2026, 11, 24, 20)) == "closed" and calendar.phase(ny(2026, 11, 24, 4)) == "pre"
    assert calendar.overnight(OVERNIGHT) and not calendar.overnight(OPEN) and not calendar.overnight(WEEKEND)
    assert calendar.overnight(ny(2026, 11, 29, 21)) and not calendar.overnight(ny(2026, 11, 27, 21))  # Sun, Fri


def test_alpaca_clock_and_calendar_follow_it():
    holiday = market_clock(HOLIDAY)
    assert holiday["is_open"] is False
    assert holiday["next_open"] == "2026-11-27T09:30:00-05:00" and holiday["next_close"] == "2026-11-27T13:00:00-05:00"
    assert market_clock(OPEN)["is_open"] is True and market_clock(OPEN)["next_close"] == "2026-11-24T16:00:00-05:00"
    weekend = market_clock(WEEKEND)
    assert weekend["next_open"] == "2026-11-30T09:30:00-05:00" and weekend["timestamp"].startswith("2026-11-28T12:00")
    days = market_calendar(OPEN, {"start": "2026-11-24", "end": "2026-11-30"})
    assert [(d["date"], d["open"], d["close"]) for d in days] == [
        ("2026-11-24", "09:30", "16:00"), ("2026-11-25", "09:30", "16:00"), ("2026-11-27", "09:30", "13:00"),
        ("2026-11-30", "09:30", "16:00")]
    assert days[0]["session_open"] == "0400" and days[2]["session_close"] == "1700"


def quarter_hours(first: date, last: date) -> list[datetime]:
    """Every quarter hour (in UTC, so the days clocks change in New York are neither short nor long of any)."""
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    return [start + timedelta(minutes=15 * k) for k in range(((last - first).days + 1) * 96)]


def test_an_open_session_at_any_hour_has_an_hour_behind_it_and_an_hour_ahead():
    """``--demo-session open`` and the tests' simulator, at every quarter hour of the weeks of both clock changes,
    Thanksgiving, and Christmas to the New Year: a regular session that opened an hour ago or more (a sparkline's
    hour of minute bars, right after the open too) and closes an hour later or more; the wall clock itself while
    that holds, else 10:30 of an earlier or the same day, never ahead of the wall clock."""
    hour, second = timedelta(hours=1), timedelta(seconds=1)
    spans = ((date(2026, 10, 29), date(2026, 11, 3)), (date(2026, 11, 23), date(2026, 12, 1)),
             (date(2026, 12, 23), date(2027, 1, 5)), (date(2027, 3, 11), date(2027, 3, 16)))
    for real in [t for first, last in spans for t in quarter_hours(first, last)]:
        now = Clock.in_session(real).now()  # read a moment (well under a second) after the clock started
        s = calendar.session(now.date())
        assert s is not None and s.open + hour <= now and now + hour <= s.close + second, (real, now)
        live = calendar.last_regular_session(real)
        if live.open + hour <= real and real + hour <= live.close:
            assert abs(now - real) < second, (real, now)
        else:
            assert (now.hour, now.minute) == (10, 30) and now <= real, (real, now)
