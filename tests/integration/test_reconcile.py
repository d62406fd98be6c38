"""Reconciliation after a trading-stream gap finds every change, however many newer orders bury it."""

from __future__ import annotations

import asyncio
import urllib.request

import orjson
import pytest

from tests.support.relay import relay_config, running, wait_until

pytestmark = pytest.mark.timeout(60)
STREAM = "/stream"


async def test_a_gtc_fill_during_a_gap_is_found_behind_more_than_a_page_of_newer_orders(sim, tmp_path):
    async with running(relay_config(sim, tmp_path)) as app:
        await wait_until(lambda: app.tradings["default"].connected, what="trading up")
        gtc = sim.submit_order("AAPL", "buy", 7, "limit", 100, time_in_force="gtc")
        await wait_until(lambda: app.stats.order_events >= 1, what="the GTC order's new event")
        sim.fail_next_auth(401, times=1, path=STREAM)
        sim.cut_all()
        await wait_until(lambda: not app.tradings["default"].connected, what="trading down")
        url = f"{sim.http_url}/_sim/order?symbol=MSFT&qty=1&count=501"  # one more than Alpaca's largest page
        newer = orjson.loads(await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read()))
        assert len(newer) == 501
        sim.fill_order(gtc["id"], price=99.5)
        await wait_until(lambda: app.tradings["default"].connected and app.tradings["default"].status.reconnects >= 1,
                         timeout=20,
                         what="trading back")
        await wait_until(lambda: any(e.event == "fill" for e in app.accounts.orders["default"].journal.since(0)),
                         timeout=20,
                         what="the GTC fill reconciled")
        fills = [e for e in app.accounts.orders["default"].journal.since(0) if e.event == "fill"]
        assert [(e.data["order_id"], e.data["qty"], e.reconciled) for e in fills] == [(gtc["id"], "7", True)]
        news = {e.data["order_id"] for e in app.accounts.orders["default"].journal.since(0) if e.event == "new"}
        assert {o["id"] for o in newer} <= news  # and every newer order, across both pages
