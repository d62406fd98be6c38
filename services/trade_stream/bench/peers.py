"""The relays ``--rounds`` measures beside trade-stream: the Node ``ws`` relay and the raw-write floor.

The Node relay (``node/relay.mjs``) is what a Node developer would write with the ``ws`` package; the floor
(``baseline.py --raw``) is one Python ``transport.write`` per client per message and nothing else. Both speak the
load clients' protocol and print ``ready <port>`` once their upstream session is authenticated.

The Node relay needs ``node`` on PATH and ``ws`` installed next to the script (its own ``package.json``;
``tests/run.sh`` installs it). ``require_node`` says in one line which is missing and how to get it, before any
run starts.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

NODE_DIR = Path(__file__).with_name("node")
NODE_RELAY = NODE_DIR / "relay.mjs"
NODE_LOAD_CLIENT = NODE_DIR / "loadclient.mjs"
#: The relays of one round, in the order each round runs them.
ROUND = ("ours", "node", "raw")


class MissingTool(RuntimeError):
    """Something the Node relay needs is not installed; the message is the whole fix."""


def require_node() -> str:
    """The path of ``node``, once ``ws`` is known to be importable by the relay script."""
    node = shutil.which("node")
    if node is None:
        raise MissingTool("the Node relay needs node (18 or newer) on PATH: apt-get install nodejs npm, "
                          "or drop --rounds")
    if not (NODE_DIR / "node_modules" / "ws" / "package.json").is_file():
        raise MissingTool(f"the Node relay needs the ws package: npm install --prefix {NODE_DIR} "
                          "(tests/run.sh does this), or drop --rounds")
    return node


def require_node_client() -> str:
    """The path of ``node``, once the Node load client (``--load-client node``) is known to be there. It speaks raw
    frames over ``net`` sockets, so unlike the relay it needs no package."""
    node = shutil.which("node")
    if node is None:
        raise MissingTool("the Node load client needs node (18 or newer) on PATH: apt-get install nodejs npm, "
                          "or use --load-client python")
    if not NODE_LOAD_CLIENT.is_file():
        raise MissingTool(f"the Node load client is missing: {NODE_LOAD_CLIENT} (reinstall trade-stream), "
                          "or use --load-client python")
    return node


def argv(kind: str, port: int, upstream: str, key: str, secret: str) -> list[str]:
    """How to start the peer ``kind`` ("node" or "raw") on ``port`` against the simulator at ``upstream``."""
    common = ["--port", str(port), "--upstream", upstream, "--key", key, "--secret", secret]
    if kind == "node":
        return [require_node(), str(NODE_RELAY), *common]
    if kind == "raw":
        return [sys.executable, "-m", "trade_stream.bench.baseline", "--raw", *common]
    raise ValueError(f"unknown peer {kind!r}")
