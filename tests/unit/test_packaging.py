"""A normal (non-editable) install carries the page, so `/` is served outside a checkout too, and the bench's
Node relay, so `trade-stream bench --rounds` runs there after `npm install --prefix`."""

import subprocess
import sys
import zipfile

import pytest

from trade_stream import config


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(out), str(config.REPO_ROOT)], check=True, capture_output=True)
    [wheel] = out.glob("trade_stream-*.whl")
    return zipfile.ZipFile(wheel).namelist()


@pytest.mark.timeout(120)
def test_wheel_ships_the_page(wheel_names):
    for page_file in ("index.html", "style.css", "config.js", "favicon.svg", "js/app.js", "js/client/index.js",
                      "js/client/react.js", "examples/prices.html"):
        assert any(n.endswith(f".data/data/share/trade-stream/public_html/{page_file}") for n in wheel_names), page_file


@pytest.mark.timeout(120)
def test_wheel_ships_the_node_relay_without_node_modules(wheel_names):
    bench = {n for n in wheel_names if n.startswith("trade_stream/bench/node/")}
    assert bench == {"trade_stream/bench/node/relay.mjs", "trade_stream/bench/node/package.json"}


def test_config_errors_are_plain_words():
    with pytest.raises(ValueError, match="whole number between 0 and 65535"):
        config._int_range(0, 65535)("abc")
