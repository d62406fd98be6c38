"""Server-side WebSocket frames built once and written to many transports.

With no extension negotiated (compression off), a server frame is the same bytes for every client: FIN + opcode,
a length, and the unmasked payload. Building it once per message instead of once per client is most of what makes
fan-out cheap (services/PERFORMANCE.md measures it).
"""

from __future__ import annotations

import struct

_TEXT = 0x81  # FIN + text opcode
_BINARY = 0x82  # FIN + binary opcode


def _frame(first: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", first, 126, n) + payload
    return struct.pack("!BBQ", first, 127, n) + payload


def text_frame(payload: bytes) -> bytes:
    """A complete text frame; ``payload`` must be UTF-8 (orjson output is)."""
    return _frame(_TEXT, payload)


def binary_frame(payload: bytes) -> bytes:
    return _frame(_BINARY, payload)
