"""Pinned simulated hours for the tests that depend on the time of day, so they pass at any real hour.

Each is an instant in New York time around Thanksgiving 2026: a normal Tuesday, the holiday, the early close the
day after, the weekend and the Monday after it. None depends on today's date: the daemon bounds a bars request by
its own window, so a page whose market clock is in the past still gets the bars of its day.
``Clock.starting_at(OPEN)`` runs from 10:30 on; ``Clock.frozen_at(...)`` stays put. ``bars_window`` asks for bars
in a simulated clock's time, as the page does.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from trade_stream.simulator.calendar import NEW_YORK
from trade_stream.simulator.clock import Clock


def ny(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=NEW_YORK)  # type: ignore[misc]


OPEN = ny(2026, 11, 24, 10, 30)  # Tuesday, the regular session
PRE = ny(2026, 11, 24, 7, 0)  # Tuesday, before the open
POST = ny(2026, 11, 24, 17, 30)  # Tuesday, after the close
NIGHT = ny(2026, 11, 24, 21, 0)  # Tuesday night, the extended hours over too
OVERNIGHT = ny(2026, 11, 25, 2, 0)  # Wednesday night-time
HOLIDAY = ny(2026, 11, 26, 11, 0)  # Thanksgiving Day: closed
EARLY_CLOSE_AFTER = ny(2026, 11, 27, 14, 0)  # Black Friday: the session closed at 13:00
WEEKEND = ny(2026, 11, 28, 12, 0)  # Saturday
MONDAY_PRE = ny(2026, 11, 30, 7, 0)  # Monday before the open: the last session was Friday's, closed at 13:00


def bars_window(clock: Clock, span: timedelta = timedelta(hours=1)) -> dict[str, str]:
    """``start`` and ``end`` of an ``/api/bars`` request for the last ``span`` up to ``clock``'s now, as the page
    asks in the market's time. A request without them ends at the daemon's wall clock, which a simulator replaying
    the latest session (nights, weekends, holidays) is hours or days behind."""
    end = clock.now().astimezone(UTC)
    return {"start": f"{end - span:%Y-%m-%dT%H:%M:%SZ}", "end": f"{end:%Y-%m-%dT%H:%M:%SZ}"}
