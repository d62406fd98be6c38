"""Replaying the order journal to a client that comes back with the last event id it saw.

``plan`` decides where the replay starts and whether it can be complete. When it cannot (an unknown id, an id
from another journal, past retention, more than the replay limit) the client is told to reset: it refetches
state instead of trusting a gap. ``replay`` (shared by WebSocket and SSE) reads the journal in pages and waits for
the client's socket to drain between them, so a long replay neither blocks the loop nor piles up in one client's
buffer. Live events that arrive meanwhile are in the journal already and come in a later page; the last page is
read and the client joins the live set with no await in between, so nothing is lost or sent twice. ``page`` is the
same plan answered over REST, one bounded page per request.

The pager works on the ``JournalWriter``, not on a journal: a fault during a replay closes the journal, and the
replay must see that at the next page and tell the client to reset. The client is one ``Reader``, what the pager
needs of it in its own protocol's terms, which is how WebSocket and SSE clients share the one pager.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trade_stream.core.event_ids import EventId
from trade_stream.core.fanout import Paced
from trade_stream.core.journal import Entry
from trade_stream.core.orders.journal_writer import JOURNAL_ERRORS, JournalWriter

REPLAY_PAGE = 500  # journal rows read per step of a replay
REPLAY_LIMIT = 100_000  # a longer replay is cut short with a reset: the client refetches state instead


@dataclass(frozen=True)
class Resume:
    """Where a client's replay starts, and why it cannot be complete (a reset), if it cannot."""

    start: int | None  # replay the journal after this id; None: no journal to replay from
    reset: str | None = None


@dataclass(frozen=True)
class Reader:
    """The client a replay writes to, in the terms of its own protocol (WebSocket or SSE)."""

    peer: Paced  # what it still owes paces the pages
    frame: Callable[[Entry], bytes]  # one entry as the client's wire format
    write: Callable[[bytes, int], bool]  # frames joined, and how many; False: the client is cut off or gone
    reset: Callable[[str], None]  # the replay cannot be complete: tell the client to refetch state
    join: Callable[[], None]  # add it to the live set (called with no await since the last read)
    alive: Callable[[], bool]  # False: it left or asked for something else; stop without joining


def plan(writer: JournalWriter, since: EventId | None) -> Resume:
    """Where to resume a client that last saw ``since`` (None: it asks for live events only)."""
    journal = writer.journal
    if journal is None:
        return Resume(None, f"order journal unavailable, nothing to replay: {writer.fault}" if since else None)
    try:
        journal.check()
        last, first = journal.last_id(), journal.first_id()
    except JOURNAL_ERRORS as exc:
        writer.fail(exc)
        return plan(writer, since)
    if since is None:
        return Resume(last)
    if not since.known:
        return Resume(0, "unknown event id; refetch state")
    if since.epoch is not None and since.epoch != journal.epoch:
        return Resume(0, f"event id from another journal (epoch {since.epoch}; this one is {journal.epoch}): "
                         "it was recreated; refetch state")
    if since.n > last:
        return Resume(0, f"event id {since.n} is past the journal's last id {last}: it was recreated; "
                         "refetch state")
    if first and since.n < first - 1:
        return Resume(since.n, f"events before id {first} are past retention; refetch state")
    return Resume(since.n)


async def replay(writer: JournalWriter, start: int | None, reader: Reader, limit: int = REPLAY_LIMIT) -> None:
    """The journal after ``start`` to ``reader``, page by page, then join it to the live set."""
    peer = reader.peer
    budget = max(1, peer.cap // 4)  # what one step may add to the client's buffer
    try:
        if start is not None and writer.journal is not None:
            if writer.journal.count_after(start, limit + 1) > limit:
                reader.reset(f"more than {limit} events to replay; refetch state")
                start = writer.journal.last_id()
        while start is not None and writer.journal is not None:
            entries = writer.journal.since(start, REPLAY_PAGE)
            frames: list[bytes] = []
            size = 0
            for entry in entries:
                data = reader.frame(entry)
                if frames and size + len(data) > budget:
                    break
                frames.append(data)
                size += len(data)
            if frames:
                if not reader.write(b"".join(frames), len(frames)):
                    return  # cut off or gone
                start = entries[len(frames) - 1].id
            if len(frames) == len(entries) < REPLAY_PAGE:
                break  # caught up: join with no await since that read
            # Poll: WebSocket and SSE clients write to their transports directly, outside any drain().
            while peer.backlog() > budget and not peer.closing():  # noqa: ASYNC110
                await asyncio.sleep(0.005)
            await asyncio.sleep(0)  # let the loop run between pages even when the socket keeps up
            if not reader.alive():
                return
        if start is None:
            reader.reset(f"order journal unavailable, nothing to replay: {writer.fault}")
    except JOURNAL_ERRORS as exc:
        writer.fail(exc)
        reader.reset(f"order journal failed during the replay: {writer.fault}")
    reader.join()


def page(writer: JournalWriter, since: EventId, limit: int,
         message: Callable[[Entry], dict[str, Any]], account: str) -> tuple[int, dict[str, Any]]:
    """The REST answer: (status, body). ``cursor`` is what to pass as ``since`` next time."""
    resume = plan(writer, since)
    try:
        if resume.start is None or writer.journal is None:
            raise sqlite3.OperationalError("journal not open")
        entries = writer.journal.since(resume.start, limit)
    except JOURNAL_ERRORS as exc:
        if writer.journal is not None:
            writer.fail(exc)
        return 503, {"error": "Service Unavailable", "message": writer.fault or str(exc)}
    epoch = writer.journal.epoch
    last = entries[-1].id if entries else resume.start
    body = {"events": [message(e) for e in entries], "last_id": last, "epoch": epoch, "account": account,
            "cursor": f"{epoch}-{last}", "more": len(entries) == limit, "reset": resume.reset is not None}
    if resume.reset:
        body["reason"] = resume.reset
    return 200, body
