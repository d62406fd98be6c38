"""The simulator's US equity calendar (simulator/calendar.py) against known NYSE dates, and the phases of a day."""

from __future__ import annotations

from datetime import date

import pytest

from tests.support.clocks import EARLY_CLOSE_AFTER, HOLIDAY, OPEN, OVERNIGHT, POST, PRE, WEEKEND, ny
from trade_stream.simulator import calendar
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
