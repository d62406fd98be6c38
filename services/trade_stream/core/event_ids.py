"""Event ids as clients send them back: one parser for the WebSocket ``since``, SSE ``Last-Event-ID`` and the
REST ``?since=``.

An id is ``<n>`` or ``<epoch>-<n>``: ``n`` a journal (or replay-ring) id, ``epoch`` the random name of the
journal that issued it, so an id from a deleted or replaced journal is recognised as foreign instead of being
read as a position in the new one. ``n`` must fit SQLite's INTEGER and orjson's integers (0..2^63-1).

Anything else (negative, too large, not a number) is an *unknown* id, not an error: a browser sends back
whatever id it last saw, from any relay, and the only honest answer to an id we never issued is a reset, so the
client refetches state. Unknown ids are reported back as ``-1``: echoing the raw value could not even be encoded.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeGuard

MAX_ID = 2**63 - 1
_ID = re.compile(r"(?:([0-9A-Za-z]{1,32})-)?([0-9]{1,19})")  # [0-9], not \d: no other scripts' digits


@dataclass(frozen=True)
class EventId:
    n: int  # -1: unknown
    epoch: str | None = None  # None: a plain integer, taken to mean the current journal

    @property
    def known(self) -> bool:
        return self.n >= 0


UNKNOWN = EventId(-1)


def parse(raw: object) -> EventId | None:
    """None when no id was given; ``UNKNOWN`` when one was given that we cannot have issued."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool):
        return UNKNOWN
    if isinstance(raw, int):
        return EventId(raw) if 0 <= raw <= MAX_ID else UNKNOWN
    if not isinstance(raw, str):
        return UNKNOWN
    found = _ID.fullmatch(raw.strip())
    if found is None or int(found.group(2)) > MAX_ID:
        return UNKNOWN
    return EventId(int(found.group(2)), found.group(1))


def cursor(epoch: str, n: int) -> str:
    """The id as the relay hands it out where a string is possible (SSE ``id:``, REST ``cursor``)."""
    return f"{epoch}-{n}"


# --- several sources: one position per source ---------------------------------------------------------------
#
# A stream that follows several sources at once cannot say where its client is with one id. The compound form
# names a position in each: ``<source>:<id>,<source>:<id>``, sources in a stable order. A source is an account
# (a user who sees several accounts follows each journal: ``<account>:<epoch>-<n>``; account names have no ``:``
# or ``,``), the notification store of /api/stream/alerts (``notifications:<n>``), or an app channel, ``@`` and
# its name (``@agent-status:<ms>-<seq>``; ``@`` is no account's first character, and a channel name may hold a
# ``:`` but no id does, so the position is what follows the last ``:``). SSE events carry it as their id (so
# Last-Event-ID resumes every source exactly), the REST ``cursor`` too. A stream with one source that is not an
# app channel keeps that source's plain id (``<epoch>-<n>``, ``<n>``); a channel's position is always named.

_ACCOUNT = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_ACCOUNTS = 100
CHANNEL_SOURCE = "@"
NOTIFICATIONS = "notifications"  # the alerts stream's notification store, as a source
MAX_PARTS = 110  # accounts, the notification store and the channels a stream carries


def is_compound(raw: object) -> TypeGuard[str]:
    return isinstance(raw, str) and ":" in raw


def _parts(raw: str) -> list[tuple[str, str]]:
    out = []
    for part in raw.split(",")[:MAX_PARTS]:
        name, _, rest = part.strip().rpartition(":")
        out.append((name, rest))
    return out


def parse_compound(raw: str) -> dict[str, EventId]:
    """``{account: id}``; a malformed part makes that account's id unknown (a reset), never an error. Channel
    parts are not accounts' (``channel_positions`` reads them)."""
    out: dict[str, EventId] = {}
    for name, rest in _parts(raw):
        if _ACCOUNT.fullmatch(name) and len(out) < MAX_ACCOUNTS:
            out[name] = parse(rest) or UNKNOWN
    return out


def channel_positions(raw: str | None) -> dict[str, str]:
    """``{channel: "<ms>-<seq>"}`` of a compound id's channel parts, the ids as sent (the channel's history says
    whether it still holds one; a garbled one gets a reset there). Not a compound id: none."""
    if not is_compound(raw):
        return {}
    return {name[1:]: rest for name, rest in _parts(raw) if name.startswith(CHANNEL_SOURCE) and len(name) > 1}


def channel_part(channel: str) -> str:
    """The source name of an app channel in a compound id."""
    return CHANNEL_SOURCE + channel


def compound(positions: dict[str, str]) -> str:
    """The compound id of ``{source: id}``, sources in a stable order."""
    return ",".join(f"{name}:{positions[name]}" for name in sorted(positions))


CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ULID_RE = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")  # 26 Crockford digits, at most 128 bits: upper case only


def is_ulid(value: object) -> bool:
    return isinstance(value, str) and ULID_RE.fullmatch(value) is not None


def ulid_ms(ulid: str) -> int:
    """The millisecond a ULID was made in (its first 10 digits)."""
    value = 0
    for ch in ulid[:10].upper():
        value = value * 32 + CROCKFORD.index(ch)
    return value


def ulid_floor(ms: int) -> str:
    """The smallest ULID of that millisecond: ``since_id`` with it replays everything from then on."""
    ms = max(0, ms)
    head = "".join(CROCKFORD[(ms >> shift) & 31] for shift in range(45, -1, -5))
    return head + "0" * 16


def ulid_ceiling(ms: int) -> str:
    """The largest ULID of that millisecond: every ULID made up to then sorts at or below it."""
    return ulid_floor(ms)[:10] + "Z" * 16


def new_ulid(seconds: float | None = None) -> str:
    """A ULID (48 bits of milliseconds, 80 random bits, Crockford base32), as Alpaca's ``event_id``: for an event
    that came without one (an older trading stream, a polled fill), so the events API can serve it."""
    ms = int((time.time() if seconds is None else seconds) * 1000)
    value = (ms << 80) | secrets.randbits(80)
    return "".join(CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def rfc3339_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- app channels: Redis Stream entry ids -----------------------------------------------------------------------
#
# Both engines give channel events ids of the shape Redis gives a Stream entry, ``<ms>-<seq>``: the millisecond
# it was recorded in and a sequence within that millisecond, increasing per channel. Compared as (ms, seq).

_STREAM_ID = re.compile(r"([0-9]{1,15})-([0-9]{1,19})")


def parse_stream_id(raw: object) -> tuple[int, int] | None:
    """``(ms, seq)`` of a ``<ms>-<seq>`` id; None for anything else (an id we cannot have issued: a reset)."""
    if not isinstance(raw, str):
        return None
    found = _STREAM_ID.fullmatch(raw)
    if found is None or int(found.group(2)) > MAX_ID:
        return None
    return int(found.group(1)), int(found.group(2))


def stream_id(ms: int, seq: int) -> str:
    return f"{ms}-{seq}"


def next_stream_id(last: tuple[int, int] | None, now_ms: int) -> tuple[int, int]:
    """The id after ``last`` at ``now_ms``, as Redis picks one for ``XADD *``: never going back when the clock
    does."""
    if last is None or now_ms > last[0]:
        return now_ms, 0
    return last[0], last[1] + 1
