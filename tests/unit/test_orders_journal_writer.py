"""The order journal writer: append, and when the journal fails keep events in memory, retry, recover, then
write what was kept in order — against a fake journal that can be broken and mended by hand."""

import logging
import sqlite3
from pathlib import Path

import pytest

from tests.support.orders_fakes import FakeLog, Opener, Spawned
from trade_stream.core.orders import journal_writer
from trade_stream.core.orders.journal_writer import JournalWriter
from trade_stream.core.stats import Stats

pytestmark = pytest.mark.timeout(10)

DISK = sqlite3.OperationalError("disk I/O error")


class Listener:
    def __init__(self) -> None:
        self.entries: list[int] = []
        self.events: list[str] = []
        self.recovered: list[str | None] = []
        self.log_resets: list[str] = []

    def on_entry(self, entry):
        self.entries.append(entry.id)
        self.events.append(entry.data["event"])

    def on_log_reset(self, reason):
        self.log_resets.append(reason)

    def on_recovered(self, reset):
        self.recovered.append(reset)


def event(name: str, order_id: str = "A") -> dict:
    return {"event": name, "order": {"id": order_id, "status": name, "filled_qty": "0"}, "timestamp": name}


def make(*logs, retry: float = 0.0) -> tuple[JournalWriter, Listener, Spawned, Opener, Stats]:
    listener, spawned, opener, stats = Listener(), Spawned(), Opener(*logs), Stats()
    writer = JournalWriter(Path("/state/orders.sqlite3"), stats, listener, spawned, retry=retry, open_log=opener)
    writer.start()
    return writer, listener, spawned, opener, stats


async def test_an_append_is_journaled_then_told_to_the_listener_once():
    log = FakeLog()
    writer, listener, _, _, stats = make(log)
    entry = writer.append(event("new"))
    assert entry is not None and entry.id == 1 and log.entries == [entry]
    assert writer.append(event("new")) is None  # the same event again: a duplicate, told to nobody
    assert listener.entries == [1]
    assert writer.health()["state"] == "ok" and stats.journal_ok == 1 and stats.journal_errors == 0


async def test_a_fault_keeps_events_in_order_and_recovery_writes_them_before_later_ones():
    log = FakeLog()
    writer, listener, spawned, _, stats = make(log)
    writer.append(event("new"))
    log.broken = DISK
    assert writer.append(event("partial_fill")) is None  # the append fails: kept, not lost
    health = writer.health()
    assert health["state"] == "fault" and "disk I/O error" in health["error"] and health["pending_events"] == 1
    assert writer.journal is None and log.closed and stats.journal_ok == 0 and stats.journal_errors == 1
    assert writer.append(event("fill")) is None  # the journal is down: kept behind the first, no new error
    assert writer.pending == 2 and stats.journal_errors == 1
    assert listener.entries == [1]  # nothing kept was relayed yet

    log.broken = None  # the disk is mended; the same file opens again
    await spawned.settle()
    assert listener.events == ["new", "partial_fill", "fill"] and listener.entries == [1, 2, 3]
    assert listener.recovered == [None]  # the same journal (epoch): no reset, but reconcile
    assert writer.health() == {"state": "ok", "journal": "/state/orders.sqlite3", "epoch": log.epoch,
                               "error": None, "fault_for": None, "pending_events": 0}
    assert stats.journal_ok == 1
    assert writer.append(event("canceled")).id == 4  # straight through again, after the kept ones


async def test_a_journal_that_cannot_be_opened_is_retried_until_it_opens():
    log = FakeLog()
    writer, listener, spawned, opener, stats = make(DISK, DISK, DISK, log)
    assert writer.journal is None and writer.health()["state"] == "fault" and stats.journal_ok == 0
    assert writer.append(event("new")) is None
    await spawned.settle()
    assert opener.calls == 4 and writer.journal is log
    assert listener.events == ["new"] and listener.recovered == [None]
    assert stats.journal_errors == 3  # each failed open counts; the fault is one episode


async def test_the_fault_is_logged_once_per_episode_naming_the_file_and_the_fix(caplog):
    log = FakeLog()
    writer, _, spawned, _, _ = make(log, DISK, DISK, log)
    log.broken = DISK
    with caplog.at_level(logging.ERROR, logger="trade_stream.core.orders"):
        writer.append(event("new"))
        log.broken = None
        await spawned.settle()
    faults = [r.getMessage() for r in caplog.records if r.getMessage().startswith("journal_fault")]
    assert len(faults) == 1 and "/state/orders.sqlite3" in faults[0] and "TRADE_STREAM_STATE_DIR" in faults[0]


async def test_a_journal_back_with_another_epoch_tells_the_listener_to_reset():
    old, new = FakeLog(epoch="aaaa"), FakeLog(epoch="bbbb")
    writer, listener, spawned, _, _ = make(old, new)
    old.broken = DISK
    writer.append(event("new"))
    await spawned.settle()
    assert writer.journal is new and writer.epoch == "bbbb" and [e.data["event"] for e in new.entries] == ["new"]
    assert len(listener.recovered) == 1 and "recreated (epoch bbbb)" in listener.recovered[0]


async def test_a_failure_while_flushing_keeps_the_rest_and_tries_again():
    log = FakeLog()
    writer, listener, spawned, _, stats = make(log)
    log.broken = DISK
    for name in ("new", "partial_fill", "fill"):
        writer.append(event(name))
    tried: list[str] = []
    append = log.append

    def fails_once_on_the_second(data, reconciled=False, dedupe=None):
        tried.append(data["event"])
        if len(tried) == 2:
            raise DISK
        return append(data, reconciled, dedupe)

    log.append = fails_once_on_the_second
    log.broken = None
    await spawned.settle()
    assert tried == ["new", "partial_fill", "partial_fill", "fill"]  # the failed one first again, not skipped
    assert listener.events == ["new", "partial_fill", "fill"] and writer.pending == 0
    assert stats.journal_errors == 2 and writer.health()["state"] == "ok"


async def test_beyond_the_memory_limit_events_are_dropped_once_logged_and_left_to_reconciliation(
        monkeypatch, caplog):
    monkeypatch.setattr(journal_writer, "PENDING_LIMIT", 3)
    log = FakeLog()
    writer, listener, spawned, _, _ = make(log)
    log.broken = DISK
    with caplog.at_level(logging.ERROR, logger="trade_stream.core.orders"):
        for i in range(5):
            writer.append(event("new", order_id=f"o{i}"))
    assert writer.pending == 3
    full = [r for r in caplog.records if r.getMessage().startswith("journal_backlog_full")]
    assert len(full) == 1
    log.broken = None
    await spawned.settle()
    assert [e.data["order"]["id"] for e in log.entries] == ["o0", "o1", "o2"]
    assert listener.recovered == [None]  # the listener reconciles: REST brings back o3 and o4


async def test_a_shared_log_reset_is_passed_on_and_its_epoch_taken():
    log = FakeLog(epoch="aaaa")
    writer, listener, spawned, _, _ = make(log)
    assert log.on_entry == listener.on_entry  # entries other nodes append reach the listener directly
    log.epoch = "cccc"
    log.on_reset("the order log was recreated")
    assert listener.log_resets == ["the order log was recreated"]
    log.broken = DISK
    writer.append(event("new"))
    log.broken = None
    await spawned.settle()
    assert listener.recovered == [None]  # back in the epoch it last announced: no second reset
