"""What the SSE side-port reads of app channels beyond chanpub's replay: a channel's newest retained events
(``Rings.tail``, the memory engine's ``channel_tail``), and the alert shape checked at publish."""

from __future__ import annotations

import orjson
import pytest

from trade_stream.core.channels import Publication, Refusal, Rings, parse_body

pytestmark = pytest.mark.timeout(10)


def test_tail_is_the_newest_retained_events_oldest_first():
    rings = Rings(history=3, ttl_ms=1000, max_channels=10)
    ids = [rings.append(Publication("ai-decisions", "e", {"n": n}), now_ms=100 + n).id for n in range(5)]
    assert [e.id for e in rings.tail("ai-decisions", 10, now_ms=110)] == ids[2:]  # the history keeps 3
    assert [e.id for e in rings.tail("ai-decisions", 1, now_ms=110)] == ids[-1:]
    assert rings.tail("ai-decisions", 0, now_ms=110) == []
    assert rings.tail("strategies:none", 5, now_ms=110) == []
    assert [e.id for e in rings.tail("ai-decisions", 5, now_ms=1104)] == ids[4:]  # the rest are over 1000 ms old


def test_an_alert_is_checked_for_the_alert_shape_at_publish():
    good = {"alertId": "a1", "level": "error", "message": "margin call", "timestamp": "2026-01-02T10:30:00Z"}
    assert parse_body(orjson.dumps({"channel": "alerts", "event": "alert:new", "data": good})) == \
        [Publication("alerts", "alert:new", good)]
    for bad, word in (({**good, "level": "fatal"}, "level"), ({**good, "alertId": 7}, "alertId"),
                      ({k: v for k, v in good.items() if k != "message"}, "message"),
                      ({**good, "timestamp": "yesterday"}, "timestamp"), ({}, "alertId")):
        refused = parse_body(orjson.dumps({"channel": "alerts", "event": "alert:new", "data": bad}))
        assert isinstance(refused, Refusal) and refused.status == 400 and word in refused.message, bad
    # other channels carry any object
    assert not isinstance(parse_body(b'{"channel": "agent-status", "event": "e", "data": {"level": "x"}}'),
                          Refusal)
