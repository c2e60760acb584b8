"""The queue store when the disk is short (pigeon.queue.store rules 11 and 12): the intake
journal takes no space it does not have, mail then takes the queue files (452 when they
cannot be written either), and what the journals hold is listed by ``pigeon queue list``.

The free space the journal sees, and the queue files' failures, are set through the store's IO
seam (``FaultyIO.free``, ``FaultyIO.fail``; journal Rule 8 asks nothing but ``statvfs``). The
same roads on a really full file system are tests/integration/test_full_disk.py.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pigeon.control import queueops
from pigeon.clocks import FakeClock
from pigeon.durable.testing import FaultyIO
from pigeon.queue.store import QueueStore, QueueWriteError
from tests.unit.queue.test_queue_journal import BOB, BODY, CAROL, fast_commit, run, segments


@pytest.fixture
def fio() -> FaultyIO:
    fio = FaultyIO()
    fio.free = 0  # the file system is full, as the journal sees it
    return fio


@pytest.fixture
def store(tmp_path: Path, fio: FaultyIO) -> Iterator[QueueStore]:
    s = QueueStore(tmp_path / "queue", FakeClock(), journal=True, io=fio)
    yield s
    s.close()


def test_without_room_a_fast_commit_takes_the_queue_files(store: QueueStore) -> None:
    record = run(lambda: fast_commit(store))
    assert not store.in_journal(record.id)  # not journaled: the queue manager delivers it from msg/
    assert os.listdir(store.root / "active") == [record.id]
    assert (store.root / "msg" / record.id).read_bytes() == BODY
    assert segments(store.root) == []  # the journal took nothing
    assert not (store.root / "journal" / "main" / "spare").exists()


def test_without_room_and_with_the_queue_files_failing_the_answer_is_452(
        store: QueueStore, fio: FaultyIO) -> None:
    fio.fail("fsync", error=errno.ENOSPC, times=None)
    with pytest.raises(QueueWriteError) as err:
        run(lambda: fast_commit(store))
    fio.clear()
    assert str(err.value.reply).startswith("452 4.3.1")
    assert os.listdir(store.root / "active") == [] and os.listdir(store.root / "msg") == []
    assert segments(store.root) == []


def test_with_room_again_the_journal_takes_mail_again(store: QueueStore, fio: FaultyIO) -> None:
    first = run(lambda: fast_commit(store))
    assert not store.in_journal(first.id)
    fio.free = 1 << 40
    second = run(lambda: fast_commit(store))
    assert store.body(second.id).open().read() == BODY  # in the journal, for the fast lane
    assert segments(store.root) == ["main/seg.0000000000000001"]


def test_journal_messages_and_queue_list_show_what_the_journals_hold(
        tmp_path: Path) -> None:
    store = QueueStore(tmp_path / "queue", FakeClock(), journal=True)
    try:
        a = run(lambda: fast_commit(store, BODY, BOB))
        b = run(lambda: fast_commit(store, BODY, CAROL))
        run(lambda: store.spill(b))  # b is in active/ now; its done entry not written yet
        assert [r.id for r in store.journal_messages()] == [a.id]
        offline = QueueStore(tmp_path / "queue", FakeClock())  # `pigeon queue list`, server stopped
        try:
            listed = {m["id"]: m for m in queueops.list_queue(offline, 0.0)}  # type: ignore[index]
        finally:
            offline.close()
        assert listed[a.id]["state"] == "journal" and listed[b.id]["state"] == "active"
        held = a  # as the server's fast lane would describe it
        held.rcpts[0].status, held.rcpts[0].last_reply = "deferred", "452 4.3.1 held in the intake journal"
        (entry,) = [m for m in queueops.list_queue(store, 0.0, [held]) if m["id"] == a.id]  # type: ignore[index]
        assert entry["state"] == "journal"
        assert entry["recipients"][0]["last_reply"] == "452 4.3.1 held in the intake journal"  # type: ignore[index]
    finally:
        assert store.journal is not None
        store.journal.done(a.id)
        store.journal.done(b.id)
        store.close()


def test_a_start_that_cannot_move_the_journal_into_the_queue_keeps_it_and_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "queue"
    first = QueueStore(root, FakeClock(), journal=True)
    try:
        a = run(lambda: fast_commit(first, BODY, BOB))  # held when the server stopped
    finally:
        first.close()
    fio = FaultyIO()
    fio.fail("fsync", error=errno.ENOSPC, times=None)  # directories flush; file contents find no room
    second = QueueStore(root, FakeClock(), journal=True, io=fio)
    try:
        report = second.recover()  # does not raise: the server starts
        assert report.journal == [] and os.listdir(root / "active") == []
        assert [r.id for r in second.journal_messages()] == [a.id]  # kept, and listed
        assert any("stays there" in r.getMessage() for r in caplog.records)
    finally:
        second.close()
    third = QueueStore(root, FakeClock(), journal=True)  # a start with room
    try:
        assert third.recover().journal == [a.id]
        assert os.listdir(root / "active") == [a.id]
        assert segments(root) == []
    finally:
        third.close()
