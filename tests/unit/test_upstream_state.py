"""The upstream state record: enum members inside, the same plain strings in every view it produces."""

import orjson
import pytest

from trade_stream.core.upstream_state import LinkState, UpstreamState

pytestmark = pytest.mark.timeout(10)


def test_views_carry_plain_strings():
    view = UpstreamState(state=LinkState.CONNECTED).to_dict()
    assert type(view["state"]) is str and view["state"] == "connected"
    assert orjson.loads(orjson.dumps(view))["state"] == "connected"


def test_a_state_from_another_nodes_view_is_the_member():
    assert LinkState("reconnecting") is LinkState.RECONNECTING
    assert f"{LinkState.ERROR}" == "error" and LinkState.DISCONNECTED == "disconnected"
    with pytest.raises(ValueError):
        LinkState("up")
