"""One line per event, key=value fields, so logs grep and parse without a schema."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s level=%(levelname)s logger=%(name)s event=%(message)s"


def setup(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # websockets logs every failed handshake at INFO/ERROR with tracebacks; our own lines say what matters.
    logging.getLogger("websockets").setLevel(max(logging.WARNING, logging.getLevelName(level)))
