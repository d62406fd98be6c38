"""Symbols Alpaca would refuse: refused locally, and a refused resubscribe cannot block the good symbols."""

from __future__ import annotations

import pytest

from tests.support.relay import Browser, relay_config, running, wait_until

pytestmark = pytest.mark.timeout(30)
DATA = "/v2/iex"


@pytest.mark.parametrize("symbol", ["-", ".", "/", "1ABC", "-AAPL"])
async def test_symbols_alpaca_would_refuse_are_refused_locally(sim, tmp_path, symbol):
    async with running(relay_config(sim, tmp_path)) as app, Browser.connect(app.port) as browser:
        await browser.send({"action": "subscribe", "symbol": symbol})
        err = await browser.expect("error")
        assert err["code"] == "invalid_symbol" and err["symbol"] == symbol
        assert app.relay.hub.wanted() == set()
        for good in ("BRK.B", "BF-B", "BTC/USD"):  # class-share spellings stay accepted; a "/" makes a crypto pair
            await browser.send({"action": "subscribe", "symbol": good})
            assert (await browser.expect(lambda m: m.get("type") in ("subscribed", "error")))["type"] == "subscribed"
        await browser.send({"action": "subscribe", "symbol": "BRK/B"})  # a pair needs BASE/QUOTE of 2+ each
        err = await browser.expect("error")
        assert err["code"] == "invalid_symbol" and "BTC/USD" in err["message"]


async def test_a_refused_symbol_in_the_resubscribe_is_isolated_and_the_rest_is_held(sim, tmp_path):
    async with running(relay_config(sim, tmp_path)) as app:
        await wait_until(lambda: app.relay.sources.default.upstream.connected, what="upstream connected")
        async with Browser.connect(app.port) as good, Browser.connect(app.port) as bad:
            await good.send({"action": "subscribe", "symbols": ["AAPL", "MSFT", "NVDA"]})
            await good.expect("subscribed")
            sim.refuse_symbols({"ZZBAD"})  # Alpaca's rules are stricter than ours for this one
            sim.reject_handshakes(503, times=10)  # keep upstream away while the bad symbol is taken
            sim.cut_all()
            await wait_until(lambda: not app.relay.sources.default.upstream.connected, what="upstream down")
            await bad.send({"action": "subscribe", "symbol": "ZZBAD"})
            await bad.expect("subscribed")  # accepted locally: nothing upstream to ask
            err = await bad.expect("error", timeout=15)
            assert err["code"] == "upstream_rejected" and err["symbol"] == "ZZBAD"
            await wait_until(lambda: sim.subscriptions(DATA)["trades"] == ["AAPL", "MSFT", "NVDA"], timeout=10,
                             what="the good symbols held upstream")
            sim.inject_trade("MSFT", price=10.0)
            assert (await good.expect("trade"))["symbol"] == "MSFT"
            assert "ZZBAD" not in app.relay.hub.wanted_symbols()


async def test_fresh_symbol_churn_is_budgeted_and_subscribing_held_symbols_stays_free(sim, tmp_path):
    async with running(relay_config(sim, tmp_path, upstream_changes_per_client=3, linger=0)) as app:
        await wait_until(lambda: app.relay.sources.default.upstream.connected, what="upstream connected")
        async with Browser.connect(app.port) as churner, Browser.connect(app.port) as other:
            for symbol in ("AA", "AB", "AC"):
                await churner.send({"action": "subscribe", "symbol": symbol})
                await churner.expect("subscribed")
                await churner.send({"action": "unsubscribe", "symbol": symbol})
                await churner.expect("unsubscribed")
            await churner.send({"action": "subscribe", "symbol": "AD"})
            err = await churner.expect("error")
            assert err["code"] == "rate_limited" and "per minute" in err["message"]
            sent = [m for m in sim.received_on(DATA) if m.get("action") == "subscribe"]
            assert [m["trades"] for m in sent] == [["AA"], ["AB"], ["AC"]]
            await other.send({"action": "subscribe", "symbol": "MSFT"})  # another connection: its own budget
            await other.expect("subscribed")
    async with running(relay_config(sim, tmp_path, upstream_changes_per_client=1, upstream_changes_total=1)) as app:
        await wait_until(lambda: app.relay.sources.default.upstream.connected, what="upstream connected")
        async with Browser.connect(app.port) as first, Browser.connect(app.port) as second:
            await first.send({"action": "subscribe", "symbol": "AAPL"})
            await first.expect("subscribed")
            await second.send({"action": "subscribe", "symbol": "AAPL"})  # already held upstream: free
            await second.expect("subscribed")
            await second.send({"action": "subscribe", "symbol": "MSFT"})  # the relay-wide budget is spent
            err = await second.expect("error")
            assert err["code"] == "rate_limited" and "relay" in err["message"]
