"""A normal (non-editable) install carries the page, so `/` is served outside a checkout too."""

import subprocess
import sys
import zipfile

import pytest

from trade_stream import config


@pytest.mark.timeout(120)
def test_wheel_ships_the_page(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(config.REPO_ROOT)], check=True, capture_output=True)
    [wheel] = tmp_path.glob("trade_stream-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for page_file in ("index.html", "style.css", "config.js", "favicon.svg", "js/app.js"):
        assert any(n.endswith(f".data/data/share/trade-stream/public_html/{page_file}") for n in names), page_file


def test_config_errors_are_plain_words():
    with pytest.raises(ValueError, match="whole number between 0 and 65535"):
        config._int_range(0, 65535)("abc")
