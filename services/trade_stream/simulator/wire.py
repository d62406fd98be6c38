"""Wire encoding: JSON or msgpack frames, each message serialized once however many clients get it.

A market-data frame is an array of messages. Arrays concatenate cheaply in both codecs, so a message is
encoded once (lazily, per codec) and a per-connection frame is just a header plus a join of the parts.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import orjson

from .market import parse_ts

#: Market-data message type -> the subscription channel that receives it. Corrections (c) and
#: cancel/errors (x) ride on the trades subscription, as on Alpaca.
TYPE_CHANNEL: dict[str, str] = {
    "t": "trades",
    "q": "quotes",
    "b": "bars",
    "u": "updatedBars",
    "d": "dailyBars",
    "s": "statuses",
    "l": "lulds",
    "i": "imbalances",
    "c": "trades",
    "x": "trades",
    "o": "orderbooks",
    "n": "news",
}


#: Fields Alpaca's msgpack codec sends as Timestamps (ext type -1): ``t`` everywhere, the stocks ``r`` receive
#: time (the Go SDK decodes it with DecodeTime), news ``created_at``/``updated_at`` (alpaca-py calls
#: ``.to_datetime()`` on them) and perp pricing ``ft``.
TIME_FIELDS = frozenset(("t", "r", "created_at", "updated_at", "ft"))


def _timestamp(value: object) -> object:
    if not isinstance(value, str):
        return value
    try:
        return msgpack.Timestamp.from_unix_nano(parse_ts(value))
    except ValueError:
        return value


def to_msgpack_form(msg: dict, ns: int | None = None) -> dict:
    """Replace the RFC-3339 time fields by msgpack Timestamps, as Alpaca's msgpack codec does (``ns``, when
    known, is ``t`` already parsed)."""
    if TIME_FIELDS.isdisjoint(msg):
        return msg
    out = {k: _timestamp(v) if k in TIME_FIELDS else v for k, v in msg.items()}
    if ns is not None and isinstance(msg.get("t"), str):
        out["t"] = msgpack.Timestamp.from_unix_nano(ns)
    return out


class Out:
    """One outgoing data message with its routing key and cached encodings."""

    __slots__ = ("_json", "_mp", "channel", "msg", "ns", "symbol")

    def __init__(self, msg: dict, ns: int | None = None) -> None:
        self.msg = msg
        self.ns = ns
        self.channel = TYPE_CHANNEL.get(msg.get("T", ""), "")
        # News has no ``S``: it goes to subscribers of any symbol it names.
        self.symbol = msg.get("S") if "S" in msg else tuple(msg.get("symbols") or ())
        self._json: bytes | None = None
        self._mp: bytes | None = None

    def json(self) -> bytes:
        if self._json is None:
            self._json = orjson.dumps(self.msg)
        return self._json

    def mp(self) -> bytes:
        if self._mp is None:
            self._mp = msgpack.packb(to_msgpack_form(self.msg, self.ns))
        return self._mp


def json_frame(parts: list[bytes]) -> bytes:
    return b"[" + b",".join(parts) + b"]"


def msgpack_array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 2**16:
        return b"\xdc" + struct.pack(">H", n)
    return b"\xdd" + struct.pack(">I", n)


def msgpack_frame(parts: list[bytes]) -> bytes:
    return msgpack_array_header(len(parts)) + b"".join(parts)


def frame(outs: list[Out], use_msgpack: bool) -> bytes:
    """One market-data frame (a JSON or msgpack array) holding ``outs``."""
    if use_msgpack:
        return msgpack_frame([o.mp() for o in outs])
    return json_frame([o.json() for o in outs])


def encode_data(messages: list[dict], use_msgpack: bool) -> bytes:
    """Encode control or raw messages as one market-data array frame."""
    return frame([Out(m) for m in messages], use_msgpack)


def encode_trading(message: dict, use_msgpack: bool) -> bytes:
    """Trading-stream messages are single objects (not arrays), always sent in binary frames."""
    return msgpack.packb(message) if use_msgpack else orjson.dumps(message)


def decode_client(data: str | bytes, use_msgpack: bool) -> Any:
    """Decode a client message; raises ValueError on malformed input.

    A msgpack session speaks msgpack only, as every SDK does (alpaca-py ``msgpack.packb``, Go
    ``msgpack.Marshal``): a text frame there is invalid syntax. A JSON session decodes either frame as JSON.
    """
    if use_msgpack:
        if not isinstance(data, bytes):
            raise ValueError("text frame on a msgpack session")
        try:
            return msgpack.unpackb(data)
        except Exception as exc:
            raise ValueError("invalid msgpack") from exc
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError("invalid json") from exc
