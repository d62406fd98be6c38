"""App channels: what an app publishes to its browsers, and who may see it. Pure: no I/O, no clock of its own.

The app (a strategy runner, an AI agent, an alerting job) posts events to ``POST /api/publish``; browsers
subscribe to channels on the WebSocket or the SSE side-port and get every event of the channel, from any node
of a cluster. This module holds the rules both sides share:

- the channel names: ``strategies:<id>``, ``app:<name>`` (``<id>``/``<name>`` 1-64 of ``A-Za-z0-9_.-``) and
  the fixed ``ai-decisions``, ``alerts``, ``agent-status`` (``check_channel``);
- one ``Publication`` (channel, event name, data object, and the users it is addressed to, or None for
  everyone allowed on the channel), and the publish body parsed into them (``parse_body``: one object, or an
  array published in order), or the ``Refusal`` (status, one line) to answer;
- the ``ChannelEvent`` an engine hands back: a publication with its id, ``<ms>-<seq>`` as a Redis Stream
  entry id, in both engines, increasing per channel (``event_ids.parse_stream_id`` reads one back);
- who sees what (``Access``): a user may subscribe to a channel its ``channels`` globs match (None: every
  channel; the users file's ``channels`` field, a JWT's ``channels`` claim), an admin to every channel, an
  anonymous client only to the ``TRADE_STREAM_PUBLIC_CHANNELS`` globs; an event with ``users`` reaches only
  those users, whoever else is on the channel, admins included (``addressed_to``);
- what a resume id (``since``, ``Last-Event-ID``) gets from a channel's retained events (``replay``): the events
  after it, or a ``Reset`` when the id is not one the history still holds (trimmed, too old, garbled, or from
  a stream that was recreated) or more than ``limit`` events are missed.
"""

from __future__ import annotations

import collections
import fnmatch
import itertools
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import orjson

from trade_stream.core import event_ids

NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
PREFIXES = ("strategies:", "app:")
FIXED = ("ai-decisions", "alerts", "agent-status")
CHANNEL_RULE = ("a channel is strategies:<id>, app:<name> (1-64 of A-Z a-z 0-9 _ . -), ai-decisions, alerts "
                "or agent-status")
EVENT_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
EVENT_RULE = '"event" must be 1-64 of A-Z a-z 0-9 _ . : -'
USER_RE = re.compile(r"[A-Za-z0-9._@-]{1,64}")  # as the users file's names
MAX_USERS = 1000  # addressees of one event
MAX_BATCH = 1000  # publications in one POST


def check_channel(raw: object) -> str | None:
    """The channel name when ``raw`` is one (see ``CHANNEL_RULE``), else None."""
    if not isinstance(raw, str):
        return None
    if raw in FIXED:
        return raw
    for prefix in PREFIXES:
        if raw.startswith(prefix) and NAME_RE.fullmatch(raw[len(prefix):]):
            return raw
    return None


@dataclass(frozen=True)
class Publication:
    channel: str
    event: str
    data: dict[str, Any]
    users: frozenset[str] | None = None  # None: everyone allowed on the channel


@dataclass(frozen=True)
class ChannelEvent:
    """A publication as the cluster recorded it: ``id`` is ``<ms>-<seq>``, increasing per channel."""

    channel: str
    id: str
    event: str
    data: dict[str, Any]
    users: frozenset[str] | None = None


def event_of(channel: str, event_id: str, pub: Publication) -> ChannelEvent:
    return ChannelEvent(channel, event_id, pub.event, pub.data, pub.users)


def record_of(pub: Publication) -> bytes:
    """A publication's stored form (what ``from_record`` reads back)."""
    rec: dict[str, Any] = {"event": pub.event, "data": pub.data}
    if pub.users is not None:
        rec["users"] = sorted(pub.users)
    return orjson.dumps(rec)


def from_record(channel: str, event_id: str, raw: bytes | str) -> ChannelEvent | None:
    """A stored event back (None when the record is not one of ours: it is skipped, never fatal)."""
    try:
        rec = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("event"), str) or not isinstance(rec.get("data"), dict):
        return None
    users = rec.get("users")
    return ChannelEvent(channel, event_id, rec["event"], rec["data"],
                        frozenset(users) if isinstance(users, list) else None)


# --- the publish body ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    status: int
    message: str  # one line


def parse_body(body: bytes) -> list[Publication] | Refusal:
    """``{"channel","event","data"[,"users"]}`` or a JSON array of them (at most ``MAX_BATCH``), in order."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return Refusal(400, 'the body is not JSON: send {"channel": …, "event": …, "data": {…}}')
    items = parsed if isinstance(parsed, list) else [parsed]
    if not items:
        return Refusal(400, "the batch is empty: send at least one event")
    if len(items) > MAX_BATCH:
        return Refusal(400, f"a batch holds at most {MAX_BATCH} events; split it")
    out = []
    for n, item in enumerate(items):
        pub = parse_publication(item)
        if isinstance(pub, str):
            return Refusal(400, f"event {n}: {pub}" if isinstance(parsed, list) else pub)
        out.append(pub)
    return out


def parse_publication(item: object) -> Publication | str:
    """One publication, or what is wrong with it (one line)."""
    if not isinstance(item, dict):
        return 'each event must be a JSON object {"channel": …, "event": …, "data": {…}}'
    unknown = sorted(set(item) - {"channel", "event", "data", "users"})
    if unknown:
        return f"unknown field {unknown[0][:40]!r}: an event has channel, event, data and users"
    channel = check_channel(item.get("channel"))
    if channel is None:
        shown = item.get("channel")
        return f"unknown channel {str(shown)[:80]!r}: {CHANNEL_RULE}" if shown is not None else \
            f'"channel" is missing: {CHANNEL_RULE}'
    event = item.get("event")
    if event is None:
        return '"event" is missing: name the event, e.g. "strategy:update"'
    if not isinstance(event, str) or not EVENT_RE.fullmatch(event):
        return EVENT_RULE
    data = item.get("data", {})
    if not isinstance(data, dict):
        return '"data" must be a JSON object'
    wrong = check_data(channel, data)
    if wrong is not None:
        return wrong
    users = item.get("users")
    if users is not None:
        if not isinstance(users, list) or not users or len(users) > MAX_USERS \
                or not all(isinstance(u, str) and USER_RE.fullmatch(u) for u in users):
            return f'"users" must be a non-empty list of at most {MAX_USERS} user names (omit it for everyone)'
        users = frozenset(users)
    return Publication(channel, event, data, users)


ALERT_LEVELS = ("info", "warning", "error")
ALERT_RULE = ('an alert on "alerts" has data {"alertId": "…", "level": "info", "warning" or "error", '
              '"message": "…", "timestamp": "<ISO 8601>"}')


def check_data(channel: str, data: dict[str, Any]) -> str | None:
    """What is wrong with ``data`` for ``channel`` (None: nothing). Events on ``alerts`` are the SSE API's alerts:
    browsers show them by level, and an ``error`` one is written past any throttle, so its shape is checked at
    publish rather than found wrong in a browser."""
    if channel != "alerts":
        return None
    for key in ("alertId", "message", "timestamp"):
        if not isinstance(data.get(key), str) or not data[key]:
            return f'"{key}" is missing or not a string: {ALERT_RULE}'
    if data.get("level") not in ALERT_LEVELS:
        return f'"level" must be info, warning or error: {ALERT_RULE}'
    try:
        datetime.fromisoformat(data["timestamp"])
    except ValueError:
        return f'"timestamp" is not an ISO 8601 time: {ALERT_RULE}'
    return None


# --- who sees what -----------------------------------------------------------------------------------------------


def matches(globs: Sequence[str], channel: str) -> bool:
    return any(fnmatch.fnmatchcase(channel, g) for g in globs)


class Viewer(Protocol):
    """Who subscribes, as access sees it (core.users.User)."""

    @property
    def admin(self) -> bool: ...

    @property
    def channels(self) -> tuple[str, ...] | None: ...  # globs it may subscribe to; None: every channel


@dataclass(frozen=True)
class Access:
    """Channel access: ``public`` globs anonymous clients may subscribe to (default none)."""

    public: tuple[str, ...] = ()

    def may_subscribe(self, user: Viewer | None, channel: str) -> bool:
        """``user`` None: a client that has not authenticated."""
        if user is None:
            return matches(self.public, channel)
        if user.admin:
            return True
        return user.channels is None or matches(user.channels, channel)


def addressed_to(users: frozenset[str] | None, name: str | None) -> bool:
    """Whether an event addressed to ``users`` (None: everyone) reaches the holder named ``name``."""
    return users is None or (name is not None and name in users)


# --- resuming ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reset:
    """The resume id cannot be served without a gap: the client refetches its state."""

    channel: str
    reason: str


def replay(channel: str, events: Sequence[ChannelEvent], since: str, limit: int, now_ms: int,
           ttl_ms: int) -> list[ChannelEvent] | Reset:
    """What follows ``since`` in ``events`` (a channel's retained events, oldest first, ids increasing), or why
    a resume from it would have a gap. ``since`` must be the id of a retained event younger than ``ttl_ms``; at
    most ``limit`` events may follow it. Events older than ``ttl_ms`` are not replayed."""
    key = event_ids.parse_stream_id(since)
    if key is None:
        return Reset(channel, "unknown id")
    if key[0] < now_ms - ttl_ms:
        return Reset(channel, "too old")
    at = next((i for i, e in enumerate(events) if event_ids.parse_stream_id(e.id) == key), None)
    if at is None:
        return Reset(channel, "not in the channel's history")
    after = list(itertools.islice(events, at + 1, None))
    if len(after) > limit:
        return Reset(channel, "too many missed events")
    return after


class Rings:
    """Every channel's retained events in one process (the memory engine's history): at most ``history`` events
    per channel, none older than ``ttl_ms``, and at most ``max_channels`` channels; a new channel past that
    evicts the one published to longest ago that nobody here holds (``held``: the channels with subscribers),
    or the one published to longest ago when every one is held. An evicted channel's resume ids get a reset,
    as any trimmed id does."""

    def __init__(self, history: int, ttl_ms: int, max_channels: int,
                 held: Callable[[], Collection[str]] = frozenset) -> None:
        self.history, self.ttl_ms, self.max_channels = history, ttl_ms, max_channels
        self.held = held
        self.channels: dict[str, collections.deque[ChannelEvent]] = {}  # insertion order: least recent first
        self._last: dict[str, tuple[int, int]] = {}  # the last id issued per channel, kept while it is held

    def append(self, pub: Publication, now_ms: int) -> ChannelEvent:
        ring = self.channels.pop(pub.channel, None)
        if ring is None:
            ring = collections.deque(maxlen=self.history)
            if len(self.channels) >= self.max_channels:
                held = self.held()
                victim = next((c for c in self.channels if c not in held), next(iter(self.channels)))
                del self.channels[victim]
                self._last.pop(victim, None)
        self.channels[pub.channel] = ring  # most recently published last
        key = event_ids.next_stream_id(self._last.get(pub.channel), now_ms)
        self._last[pub.channel] = key
        event = event_of(pub.channel, event_ids.stream_id(*key), pub)
        ring.append(event)
        self._trim(ring, now_ms)
        return event

    def since(self, channel: str, since: str, limit: int, now_ms: int) -> list[ChannelEvent] | Reset:
        ring = self.channels.get(channel)
        if ring is None:
            return Reset(channel, "not in the channel's history")
        self._trim(ring, now_ms)
        return replay(channel, ring, since, limit, now_ms, self.ttl_ms)

    def tail(self, channel: str, limit: int, now_ms: int) -> list[ChannelEvent]:
        """The newest ``limit`` retained events of ``channel``, oldest first."""
        ring = self.channels.get(channel)
        if ring is None:
            return []
        self._trim(ring, now_ms)
        return list(ring)[-limit:] if limit > 0 else []

    def _trim(self, ring: collections.deque[ChannelEvent], now_ms: int) -> None:
        floor = now_ms - self.ttl_ms
        while ring and (event_ids.parse_stream_id(ring[0].id) or (0, 0))[0] < floor:
            ring.popleft()
