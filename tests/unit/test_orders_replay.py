"""Replay of the order journal to a returning client: where it resumes, when it must reset, and paging that
waits for the client's socket and joins the live set right after the last read — with a fake journal."""

import sqlite3
from pathlib import Path

import pytest

from tests.support.orders_fakes import FakeClient, FakeLog, FakeTransport, NoRecovery, Opener
from trade_stream.core.event_ids import UNKNOWN, EventId
from trade_stream.core.orders import replay
from trade_stream.core.orders.journal_writer import JournalWriter
from trade_stream.core.orders.replay import REPLAY_PAGE, Reader, Resume
from trade_stream.core.stats import Stats

pytestmark = pytest.mark.timeout(10)


class Quiet:
    def on_entry(self, entry): ...
    def on_log_reset(self, reason): ...
    def on_recovered(self, reset): ...


def writer_on(log: FakeLog) -> JournalWriter:
    writer = JournalWriter(Path("/state/orders.sqlite3"), Stats(), Quiet(), NoRecovery(),
                           open_log=Opener(log))
    writer.start()
    return writer


class Run:
    """One replay's client side, recording what it was given in order."""

    def __init__(self, client: FakeClient, write_ok: bool = True) -> None:
        self.client = client
        self.pages: list[list[int]] = []
        self.log: list[str] = []
        self.resets: list[str] = []
        self.joined = 0
        self.alive = True
        self.write_ok = write_ok
        self.on_write = None

    def reader(self) -> Reader:
        def frame(entry):
            return f"{entry.id};".encode()

        def write(data, count):
            ids = [int(x) for x in data.decode().split(";") if x]
            assert len(ids) == count
            self.pages.append(ids)
            self.log.append("write")
            if self.on_write is not None:
                self.on_write()
            return self.write_ok

        def reset(reason):
            self.resets.append(reason)
            self.log.append("reset")

        def join():
            self.joined += 1
            self.log.append("join")

        return Reader(self.client, frame, write, reset, join, lambda: self.alive)

    @property
    def ids(self) -> list[int]:
        return [i for page in self.pages for i in page]


def test_plan_live_only_starts_at_the_last_id():
    log = FakeLog()
    log.add(3)
    assert replay.plan(writer_on(log), None) == Resume(3)


def test_plan_resumes_after_a_known_id_of_this_journal():
    log = FakeLog(epoch="e1")
    log.add(5)
    writer = writer_on(log)
    assert replay.plan(writer, EventId(2)) == Resume(2)
    assert replay.plan(writer, EventId(2, "e1")) == Resume(2)
    assert replay.plan(writer, EventId(5)) == Resume(5)


@pytest.mark.parametrize(("since", "start", "words"), [
    (UNKNOWN, 0, "unknown event id"),
    (EventId(2, "other"), 0, "event id from another journal (epoch other; this one is e1)"),
    (EventId(9), 0, "event id 9 is past the journal's last id 5"),
])
def test_plan_resets_an_id_that_cannot_be_from_this_journal(since, start, words):
    log = FakeLog(epoch="e1")
    log.add(5)
    plan = replay.plan(writer_on(log), since)
    assert plan.start == start and words in plan.reset and plan.reset.endswith("refetch state")


def test_plan_past_retention_replays_what_is_left_and_resets():
    log = FakeLog()
    log.dropped_before = 10  # ids 1..10 pruned
    log.add(3)
    assert replay.plan(writer_on(log), EventId(4)) == Resume(4, "events before id 11 are past retention; "
                                                                 "refetch state")
    assert replay.plan(writer_on(log), EventId(10)) == Resume(10)  # nothing it has not seen is gone


def test_plan_without_a_journal_has_nothing_to_replay():
    log = FakeLog()
    writer = writer_on(log)
    log.broken = sqlite3.OperationalError("disk I/O error")
    plan = replay.plan(writer, EventId(1))  # the check fails: a fault, then the plan of a journal that is down
    assert plan.start is None and plan.reset.startswith("order journal unavailable, nothing to replay: ")
    assert "disk I/O error" in plan.reset and writer.health()["state"] == "fault"
    assert replay.plan(writer, None) == Resume(None)  # live only: no reset to announce


async def test_replay_sends_every_entry_once_in_pages_then_joins():
    log = FakeLog()
    log.add(2 * REPLAY_PAGE + 7)
    run = Run(FakeClient())
    await replay.replay(writer_on(log), 0, run.reader())
    assert [len(p) for p in run.pages] == [REPLAY_PAGE, REPLAY_PAGE, 7]
    assert run.ids == list(range(1, 2 * REPLAY_PAGE + 8)) and run.log[-1] == "join" and run.joined == 1


async def test_a_page_is_cut_to_a_quarter_of_the_clients_buffer_cap():
    log = FakeLog()
    log.add(20)  # frames "1;" .. "20;": 2 or 3 bytes
    run = Run(FakeClient(cap=40))  # 10 bytes per step
    await replay.replay(writer_on(log), 0, run.reader())
    assert run.ids == list(range(1, 21))
    assert all(len(";".join(map(str, p))) + 1 <= 10 for p in run.pages) and len(run.pages) > 5


async def test_the_next_page_waits_until_the_socket_has_drained():
    log = FakeLog()
    log.add(10)
    transport = FakeTransport(sizes=[1000, 1000, 1000])  # over the budget three times, then drained
    run = Run(FakeClient(cap=20, transport=transport))  # 5 bytes per step: two frames of one digit a page
    full_left: list[int] = []
    run.on_write = lambda: full_left.append(len(transport.sizes))
    await replay.replay(writer_on(log), 0, run.reader())
    assert run.ids == list(range(1, 11)) and len(run.pages) > 2
    assert full_left[0] == 3 and set(full_left[1:]) == {0}  # the second page only once all three were waited out


async def test_events_appended_during_the_replay_come_in_a_later_page_before_the_join():
    log = FakeLog()
    log.add(REPLAY_PAGE)
    run = Run(FakeClient())
    run.on_write = lambda: log.add(3) if len(run.pages) == 1 else None  # live events while the first is sent
    await replay.replay(writer_on(log), 0, run.reader())
    assert run.ids == list(range(1, REPLAY_PAGE + 4)) and run.log[-1] == "join" and run.joined == 1


async def test_a_replay_over_the_limit_resets_and_joins_at_the_end():
    log = FakeLog()
    log.add(50)
    run = Run(FakeClient())
    await replay.replay(writer_on(log), 10, run.reader(), limit=20)
    assert run.resets == ["more than 20 events to replay; refetch state"] and run.pages == []
    assert run.log == ["reset", "join"]


async def test_a_client_that_left_between_pages_does_not_join():
    log = FakeLog()
    log.add(2 * REPLAY_PAGE)
    run = Run(FakeClient())
    run.on_write = lambda: setattr(run, "alive", False)
    await replay.replay(writer_on(log), 0, run.reader())
    assert len(run.pages) == 1 and run.joined == 0


async def test_a_client_cut_off_by_a_write_does_not_join():
    log = FakeLog()
    log.add(3)
    run = Run(FakeClient(), write_ok=False)
    await replay.replay(writer_on(log), 0, run.reader())
    assert run.pages == [[1, 2, 3]] and run.joined == 0


async def test_a_journal_failing_mid_replay_resets_the_client_and_still_joins_it():
    log = FakeLog()
    log.add(2 * REPLAY_PAGE)
    writer = writer_on(log)
    run = Run(FakeClient())
    run.on_write = lambda: setattr(log, "broken", sqlite3.OperationalError("disk I/O error"))
    await replay.replay(writer, 0, run.reader())
    assert len(run.pages) == 1 and run.log[-2:] == ["reset", "join"]
    assert run.resets[0].startswith("order journal failed during the replay: ") and writer.journal is None


async def test_no_journal_resets_and_joins_live():
    log = FakeLog()
    writer = writer_on(log)
    log.broken = sqlite3.OperationalError("disk I/O error")
    writer.append({"event": "new", "order": {"id": "A"}})  # the fault
    run = Run(FakeClient())
    await replay.replay(writer, None, run.reader())
    assert run.log == ["reset", "join"] and "nothing to replay" in run.resets[0]


def message(entry):
    return {"id": entry.id}


def test_a_page_over_rest_carries_the_cursor_and_whether_there_is_more():
    log = FakeLog(epoch="e1")
    log.add(5)
    writer = writer_on(log)
    status, body = replay.page(writer, EventId(1), 3, message, "acct")
    assert status == 200 and body == {"events": [{"id": 2}, {"id": 3}, {"id": 4}], "last_id": 4, "epoch": "e1",
                                      "account": "acct", "cursor": "e1-4", "more": True, "reset": False}
    status, body = replay.page(writer, EventId(4, "e1"), 3, message, "acct")
    assert body["events"] == [{"id": 5}] and body["cursor"] == "e1-5" and body["more"] is False
    status, body = replay.page(writer, EventId(5, "e1"), 3, message, "acct")
    assert body["events"] == [] and body["cursor"] == "e1-5"  # caught up: the same cursor again


def test_a_page_for_a_foreign_id_starts_over_and_says_why():
    log = FakeLog(epoch="e1")
    log.add(2)
    status, body = replay.page(writer_on(log), EventId(7, "old"), 10, message, "acct")
    assert status == 200 and body["reset"] is True and "another journal" in body["reason"]
    assert [e["id"] for e in body["events"]] == [1, 2]


def test_a_page_without_a_journal_is_503_with_the_fault():
    log = FakeLog()
    writer = writer_on(log)
    log.broken = sqlite3.OperationalError("disk I/O error")
    status, body = replay.page(writer, EventId(1), 10, message, "acct")
    assert status == 503 and body["error"] == "Service Unavailable" and "disk I/O error" in body["message"]
