"""Order updates of each account: private, journaled before they are relayed, replayable with ``since``,
reconciled over REST after gaps, and positions marked to market.

``Orders`` (service.py) is the one object the rest of the daemon holds per account; it composes pieces with one
job each, which are tested on their own with a fake journal and a fake REST client:

- ``journal_writer.py``: append to the journal; when it fails, keep events in memory, retry, report the fault;
- ``replay.py``: where a returning client resumes, and the journal to it page by page (or one REST page);
- ``reconcile.py``: after a gap, REST against the journal, and the missed events published once each;
- ``marking.py``: positions marked to live trades through a private price tap, pushed at a bounded rate;
- ``events.py``: the pure shapes: the relay's fields on an event, the lifecycle a REST order implies.
"""

from trade_stream.core.orders.events import alpaca_fields, missed_lifecycle, parse_ts, sanitize, sanitize_order
from trade_stream.core.orders.replay import Resume
from trade_stream.core.orders.service import AuthThrottled, Orders

__all__ = ["AuthThrottled", "Orders", "Resume", "alpaca_fields", "missed_lifecycle", "parse_ts", "sanitize",
           "sanitize_order"]
