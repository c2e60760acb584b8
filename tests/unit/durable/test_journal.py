"""The intake journal on real files (pigeon.durable.journal): append, sync, done, rotation,
deletion order, torn and corrupt tails, failed flushes, write errors, recovery reading. Faults
go through the IO seam (``FaultyIO``), never by replacing functions of ``os``."""

from __future__ import annotations

import asyncio
import errno
import gc
import json
import os
import struct
import zlib
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from pigeon.core.queueid import QueueId
from pigeon.durable import journal as journal_mod
from pigeon.durable.commit import GroupCommit
from pigeon.durable.io import FileIO
from pigeon.durable.journal import Journal, PendingEntry, pending, remove_segments
from pigeon.durable.segments import ROOM_SEGMENTS
from pigeon.durable.testing import FaultyIO
from tests.unit.queueids import fresh_queue_id

T = TypeVar("T")
WAIT = 5.0  # seconds; every wait here normally takes milliseconds
HEAD = struct.Struct(">cIIQ")  # the entry head, as the module docstring specifies it


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "journal"


@pytest.fixture
def fio() -> FaultyIO:
    """The IO seam every call of these journals goes through; tests set faults on it."""
    return FaultyIO()


@pytest.fixture
def gs(fio: FaultyIO) -> Iterator[GroupCommit]:
    g = GroupCommit(fio, name="test-journal")
    yield g
    g.close()


class Barrier:
    key = ("barrier",)

    def run(self, io: FileIO) -> None:
        pass


def qid() -> QueueId:
    return fresh_queue_id()


def record(q: QueueId, extra: str = "") -> bytes:
    return json.dumps({"version": 1, "id": q, "extra": extra}).encode()


def segments(root: Path) -> list[str]:
    return sorted(n for n in os.listdir(root) if n.startswith("seg."))


def run(factory: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await asyncio.wait_for(factory(), WAIT)
    return asyncio.run(main())


async def barrier(gs: GroupCommit) -> None:
    """Everything queued in the engine's thread before this call has run when it returns."""
    await gs.flush(Barrier())


def entry_bytes(kind: bytes, header: bytes, body: bytes = b"") -> bytes:
    crc = zlib.crc32(body, zlib.crc32(header))
    return HEAD.pack(kind, crc, len(header), len(body)) + header + body


def by_id(entries: list[PendingEntry]) -> dict[str, tuple[bytes, bytes]]:
    return {e.id: (e.record, e.body) for e in entries}


# -- writing and reading back ---------------------------------------------------------------------

def test_append_and_sync_then_pending_returns_the_entries_exactly(root: Path, gs: GroupCommit) -> None:
    a, b = qid(), qid()
    body_a = b"Subject: a\r\n\r\nhello\r\n"
    body_b = bytes(range(256)) * 3  # any byte, including CR, LF and NUL

    async def go() -> None:
        j = Journal(root, gs)
        j.append(a, record(a), body_a)
        j.append(b, record(b), body_b)
        await j.sync()
        assert j.live == 2 and j.appends == 2
        j.close()

    run(go)
    found = pending(root)
    assert [e.id for e in found] == [a, b]  # oldest first
    assert found[0].record == record(a) and found[0].body == body_a
    assert found[1].record == record(b) and found[1].body == body_b
    assert {e.segment for e in found} == {"seg.0000000000000001"}
    # The file is exactly the two entries in the documented format.
    data = (root / "seg.0000000000000001").read_bytes()
    assert data == entry_bytes(b"M", record(a), body_a) + entry_bytes(b"M", record(b), body_b)


def test_an_empty_body_round_trips(root: Path, gs: GroupCommit) -> None:
    a = qid()

    async def go() -> None:
        j = Journal(root, gs)
        j.append(a, record(a), b"")
        await j.sync()
        j.close()

    run(go)
    assert by_id(pending(root)) == {a: (record(a), b"")}


def test_done_removes_the_message_from_pending(root: Path, gs: GroupCommit) -> None:
    a, b = qid(), qid()

    async def go() -> None:
        j = Journal(root, gs)
        j.append(a, record(a), b"A")
        j.append(b, record(b), b"B")
        await j.sync()
        j.done(a)
        assert j.live == 1
        await j.sync()
        j.close()

    run(go)
    assert by_id(pending(root)) == {b: (record(b), b"B")}
    data = (root / "seg.0000000000000001").read_bytes()
    assert data.endswith(entry_bytes(b"D", a.encode()))


def test_pending_of_a_missing_or_empty_journal(root: Path) -> None:
    assert pending(root) == []
    root.mkdir()
    assert pending(root) == []
    (root / "notes.txt").write_bytes(b"not a segment")  # foreign names are not read
    (root / "seg.12").write_bytes(b"garbage")  # not 16 digits
    assert pending(root) == []


def test_pending_skips_a_segment_deleted_between_listing_and_reading(
        root: Path, gs: GroupCommit, monkeypatch: pytest.MonkeyPatch) -> None:
    """journal_read Rule 1: the owner's flush thread may delete a drained segment while a
    reader (``pigeon queue list``, a test) walks the directory."""
    from pigeon.durable import journal_read

    a = qid()

    async def go() -> None:
        j = Journal(root, gs)
        j.append(a, record(a), b"A")
        await j.sync()
        j.close()

    run(go)
    listed = journal_read._list_segments(root)
    monkeypatch.setattr(journal_read, "_list_segments",
                        lambda r: [(0, "seg.0000000000000000")] + listed)  # listed, then gone
    assert by_id(pending(root)) == {a: (record(a), b"A")}


def test_a_new_journal_continues_after_the_existing_segments(root: Path, gs: GroupCommit) -> None:
    a, b = qid(), qid()

    async def go() -> None:
        j1 = Journal(root, gs)
        j1.append(a, record(a), b"A")
        await j1.sync()
        j1.close()
        j2 = Journal(root, gs)  # a restart without recovery must not overwrite seg 1
        j2.append(b, record(b), b"B")
        await j2.sync()
        j2.close()

    run(go)
    assert segments(root) == ["seg.0000000000000001", "seg.0000000000000002"]
    assert [(e.id, e.segment) for e in pending(root)] == [(a, "seg.0000000000000001"),
                                                        (b, "seg.0000000000000002")]


def test_sync_with_nothing_appended_or_after_close_completes(root: Path, gs: GroupCommit) -> None:
    async def go() -> None:
        j = Journal(root, gs)
        await j.sync()
        j.append(qid(), record(qid()), b"x")
        j.close()
        await j.sync()  # closed: nothing to flush (close comes after the last sync)
        await barrier(gs)

    run(go)
    assert gs.calls == 1  # the barrier: the new segment's name is fsynced by its first flush, and nothing was flushed


# -- rotation and deletion --------------------------------------------------------------------------

def test_rotation_and_segments_are_deleted_only_in_order(root: Path, gs: GroupCommit) -> None:
    m1, m2, m3 = qid(), qid(), qid()
    body = b"x" * 200  # every entry is bigger than the segment limit: one entry per segment

    async def go() -> None:
        j = Journal(root, gs, segment_bytes=100)
        for m in (m1, m2, m3):
            j.append(m, record(m), body)
            await j.sync()
        assert segments(root) == [f"seg.{n:016d}" for n in (1, 2, 3)]
        assert [e.segment for e in pending(root)] == [f"seg.{n:016d}" for n in (1, 2, 3)]

        j.done(m2)  # seg 2 holds nothing live, but seg 1 (older) holds m1: seg 2 must stay
        await j.sync()
        await barrier(gs)
        assert "seg.0000000000000002" in segments(root)
        assert "seg.0000000000000001" in segments(root)
        assert set(by_id(pending(root))) == {m1, m3}

        j.done(m1)  # now seg 1 and seg 2 go; seg 3 still holds m3
        await j.sync()
        await barrier(gs)
        names = segments(root)
        assert "seg.0000000000000001" not in names and "seg.0000000000000002" not in names
        assert "seg.0000000000000003" in names
        assert set(by_id(pending(root))) == {m3}

        j.done(m3)
        await j.sync()
        await barrier(gs)
        assert j.live == 0
        # Only the current segment (done entries, nothing live) may remain.
        assert len(segments(root)) <= 1
        assert pending(root) == []
        j.close()

    run(go)


def test_rotation_keeps_segments_near_the_limit(root: Path, gs: GroupCommit) -> None:
    ids = [qid() for _ in range(20)]
    body = b"y" * 50

    async def go() -> None:
        j = Journal(root, gs, segment_bytes=300)
        for m in ids:
            j.append(m, record(m), body)
        await j.sync()
        await barrier(gs)
        j.close()

    run(go)
    entry = len(entry_bytes(b"M", record(ids[0]), body))
    names = segments(root)
    assert len(names) > 1
    for name in names:
        assert (root / name).stat().st_size < 300 + entry  # Rule 5: the limit plus one entry
    assert [e.id for e in pending(root)] == ids  # nothing lost across segments, in order


# -- torn and corrupt tails (Rule 4) ------------------------------------------------------------------

def write_two(root: Path, gs: GroupCommit, a: QueueId, b: QueueId) -> Path:
    async def go() -> None:
        j = Journal(root, gs)
        j.append(a, record(a), b"first body")
        j.append(b, record(b), b"second body")
        await j.sync()
        j.close()

    run(go)
    return root / "seg.0000000000000001"


@pytest.mark.parametrize("cut", [1, HEAD.size - 1, HEAD.size + 5, -1])
def test_a_torn_tail_is_ignored(root: Path, gs: GroupCommit, cut: int) -> None:
    a, b = qid(), qid()
    seg = write_two(root, gs, a, b)
    first = len(entry_bytes(b"M", record(a), b"first body"))
    size = seg.stat().st_size
    os.truncate(seg, first + cut if cut > 0 else size + cut)
    assert by_id(pending(root)) == {a: (record(a), b"first body")}


def test_garbage_after_the_last_entry_is_ignored(root: Path, gs: GroupCommit) -> None:
    a, b = qid(), qid()
    seg = write_two(root, gs, a, b)
    with open(seg, "ab") as f:
        f.write(b"Mxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")
    assert by_id(pending(root)) == {a: (record(a), b"first body"), b: (record(b), b"second body")}


def test_a_huge_length_in_a_torn_head_is_not_trusted(root: Path, gs: GroupCommit) -> None:
    a, b = qid(), qid()
    seg = write_two(root, gs, a, b)
    with open(seg, "ab") as f:
        f.write(HEAD.pack(b"M", 0, 0xFFFFFFFF, 1 << 62))
    assert set(by_id(pending(root))) == {a, b}


def test_a_flipped_byte_fails_the_crc_and_stops_that_segment_only(root: Path, gs: GroupCommit) -> None:
    a, b, c, d = qid(), qid(), qid(), qid()

    async def go() -> None:
        j = Journal(root, gs, segment_bytes=1)  # one entry per segment after the first
        j.append(a, record(a), b"body of a")
        j.append(b, record(b), b"body of b")
        await j.sync()
        await barrier(gs)
        j.close()

    run(go)
    # Build segment 1 by hand with three entries, the second one damaged in its body.
    seg1 = root / "seg.0000000000000001"
    bad = bytearray(entry_bytes(b"M", record(c), b"body of c"))
    bad[-3] ^= 0x01
    seg1.write_bytes(entry_bytes(b"M", record(a), b"body of a") + bytes(bad)
                     + entry_bytes(b"M", record(d), b"body of d"))
    found = by_id(pending(root))
    # a before the damage; c (bad CRC) and d (after it, in the same segment) are not guessed at;
    # b, in the next segment, is read.
    assert found == {a: (record(a), b"body of a"), b: (record(b), b"body of b")}


def test_an_entry_without_a_readable_id_is_skipped(root: Path, gs: GroupCommit) -> None:
    a = qid()
    root.mkdir()
    (root / "seg.0000000000000001").write_bytes(
        entry_bytes(b"M", b"not json", b"1")
        + entry_bytes(b"M", json.dumps({"id": "../../etc/passwd"}).encode(), b"2")
        + entry_bytes(b"M", record(a), b"3"))
    assert by_id(pending(root)) == {a: (record(a), b"3")}


def test_a_done_entry_in_a_later_segment_counts(root: Path) -> None:
    a, b = qid(), qid()
    root.mkdir()
    (root / "seg.0000000000000001").write_bytes(entry_bytes(b"M", record(a), b"A")
                                                + entry_bytes(b"M", record(b), b"B"))
    (root / "seg.0000000000000002").write_bytes(entry_bytes(b"D", a.encode()))
    assert by_id(pending(root)) == {b: (record(b), b"B")}


# -- failures (Rules 1 and 2) ----------------------------------------------------------------------------

def test_failed_flush_fails_every_waiter_and_failed_abandons_the_segment(
        root: Path, gs: GroupCommit, fio: FaultyIO) -> None:
    a, b, c = qid(), qid(), qid()

    async def go() -> None:
        j = Journal(root, gs)
        j.append(a, record(a), b"A")
        j.append(b, record(b), b"B")
        fio.fail("fdatasync", error=errno.EIO)
        outcomes = await asyncio.gather(j.sync(), j.sync(), return_exceptions=True)
        assert all(isinstance(o, OSError) and o.errno == errno.EIO for o in outcomes)
        assert fio.calls["fdatasync"] == 1  # one flush for both waiters
        j.failed([a, b])
        assert j.live == 0
        j.append(c, record(c), b"C")  # goes to a fresh segment
        await j.sync()
        await barrier(gs)
        j.close()

    run(go)
    assert "seg.0000000000000001" not in segments(root)  # abandoned, nothing live: deleted
    found = pending(root)
    assert by_id(found) == {c: (record(c), b"C")}
    assert found[0].segment != "seg.0000000000000001"


def test_a_write_error_cuts_back_and_raises(root: Path, gs: GroupCommit, fio: FaultyIO) -> None:
    a, b, c = qid(), qid(), qid()

    async def go() -> None:
        j = Journal(root, gs)
        j.append(a, record(a), b"A")
        await j.sync()
        fio.fail("writev", error=errno.ENOSPC)
        with pytest.raises(OSError) as err:
            j.append(b, record(b), b"B")
        assert err.value.errno == errno.ENOSPC
        assert j.live == 1
        j.append(c, record(c), b"C")
        await j.sync()
        j.close()

    run(go)
    seg = root / "seg.0000000000000001"
    assert seg.read_bytes() == entry_bytes(b"M", record(a), b"A") + entry_bytes(b"M", record(c), b"C")
    assert by_id(pending(root)) == {a: (record(a), b"A"), c: (record(c), b"C")}


def test_a_short_write_is_cut_back_so_the_next_entry_is_readable(
        root: Path, gs: GroupCommit, fio: FaultyIO) -> None:
    a, b, c = qid(), qid(), qid()

    async def go() -> None:
        j = Journal(root, gs)
        j.append(a, record(a), b"A" * 100)
        await j.sync()
        fio.short("writev")  # half of it reaches the file
        with pytest.raises(OSError, match="short write"):
            j.append(b, record(b), b"B" * 100)
        assert (root / "seg.0000000000000001").stat().st_size == len(entry_bytes(b"M", record(a), b"A" * 100))
        j.append(c, record(c), b"C" * 100)
        await j.sync()
        j.close()

    run(go)
    assert by_id(pending(root)) == {a: (record(a), b"A" * 100), c: (record(c), b"C" * 100)}


def test_when_the_cut_fails_too_the_segment_is_abandoned(
        root: Path, gs: GroupCommit, fio: FaultyIO) -> None:
    a, b, c = qid(), qid(), qid()
    torn = len(entry_bytes(b"M", record(b), b"B")) // 2  # what the short write leaves

    async def go() -> None:
        j = Journal(root, gs)
        j.append(a, record(a), b"A")
        await j.sync()
        fio.short("writev")
        fio.fail("ftruncate", error=errno.EIO)
        with pytest.raises(OSError):
            j.append(b, record(b), b"B")
        j.append(c, record(c), b"C")  # in a new segment: the torn entry stays the last of seg 1
        await j.sync()
        await barrier(gs)
        j.close()

    run(go)
    assert segments(root) == ["seg.0000000000000001", "seg.0000000000000002"]
    seg1 = (root / "seg.0000000000000001").read_bytes()
    assert len(seg1) == len(entry_bytes(b"M", record(a), b"A")) + torn  # the torn half entry
    found = pending(root)
    assert [(e.id, e.body, e.segment) for e in found] == [(a, b"A", "seg.0000000000000001"),
                                                         (c, b"C", "seg.0000000000000002")]


def test_a_failed_done_entry_is_logged_not_raised(
        root: Path, gs: GroupCommit, fio: FaultyIO, caplog: pytest.LogCaptureFixture) -> None:
    a = qid()

    async def go() -> None:
        j = Journal(root, gs)
        j.append(a, record(a), b"A")
        await j.sync()
        fio.fail("writev", error=errno.ENOSPC)
        j.done(a)  # best effort: no exception
        await asyncio.sleep(0)  # done entries are written at the end of the loop's turn
        await asyncio.sleep(0)
        assert fio.calls["writev"] == 2
        assert j.live == 0
        j.close()

    with caplog.at_level("ERROR", logger="pigeon.durable.journal"):
        run(go)
    assert any("cannot write 1 done entries" in r.getMessage() for r in caplog.records)
    assert set(by_id(pending(root))) == {a}  # delivered again after a crash: once more, not lost


def test_a_failed_directory_fsync_of_a_new_segment_fails_its_first_sync(
        root: Path, gs: GroupCommit, fio: FaultyIO) -> None:
    a = qid()

    async def go() -> BaseException | None:
        fio.fail("fsync_dir", error=errno.EIO, times=None)
        j = Journal(root, gs)
        j.append(a, record(a), b"A")
        try:
            await j.sync()  # "its first flush does both" (journal._open_segment)
        except OSError as exc:
            return exc
        finally:
            j.close()
        return None

    outcome = run(go)
    # Today the dropped future is only reported when garbage-collected ("Future exception was
    # never retrieved"): collect it here, not in the middle of pytest's report.
    gc.collect()
    assert isinstance(outcome, OSError)


# -- removing ---------------------------------------------------------------------------------------------

def test_remove_segments(root: Path, gs: GroupCommit) -> None:
    assert remove_segments(root) == 0  # no directory yet

    async def go() -> None:
        j = Journal(root, gs, segment_bytes=1)
        for _ in range(3):
            m = qid()
            j.append(m, record(m), b"z")
        await j.sync()
        await barrier(gs)
        j.close()

    run(go)
    (root / "keep.txt").write_bytes(b"operator's note")
    assert len(segments(root)) == 3
    assert remove_segments(root) == 3
    assert segments(root) == []
    assert (root / "keep.txt").exists()
    assert pending(root) == []
    assert remove_segments(root) == 0


def test_remove_segments_removes_the_spare_only_when_asked(root: Path) -> None:
    root.mkdir()
    (root / "spare").write_bytes(bytes(100))
    (root / "seg.0000000000000001").write_bytes(bytes(100))
    assert remove_segments(root) == 1
    assert (root / "spare").exists()  # the journal of this process may be making it
    assert remove_segments(root, spare=True) == 0
    assert not (root / "spare").exists()  # a worker's journal, its owner gone


def test_done_entries_ride_with_the_next_message_in_one_write(
        root: Path, gs: GroupCommit, fio: FaultyIO) -> None:
    """Rule 6: done entries made in one turn of the loop go out together, with the next entry."""
    a, b, c = qid(), qid(), qid()
    writes: list[int] = []

    async def go() -> None:
        j = Journal(root, gs)
        j.append(a, record(a), b"A")
        j.append(b, record(b), b"B")
        await j.sync()
        before = fio.calls["writev"]
        j.done(a)
        j.done(b)
        j.append(c, record(c), b"C")  # same turn: one writev with both done entries first
        await j.sync()
        writes.append(fio.calls["writev"] - before)
        j.close()

    run(go)
    assert writes == [1]  # two done entries and the message in one writev
    data = (root / "seg.0000000000000001").read_bytes()
    assert data.endswith(entry_bytes(b"D", a.encode()) + entry_bytes(b"D", b.encode())
                         + entry_bytes(b"M", record(c), b"C"))
    assert set(by_id(pending(root))) == {c}


def test_done_entries_alone_are_written_at_the_end_of_the_turn(root: Path, gs: GroupCommit) -> None:
    a, b = qid(), qid()

    async def go() -> None:
        j = Journal(root, gs)
        j.append(a, record(a), b"A")
        j.append(b, record(b), b"B")
        await j.sync()
        j.done(a)
        j.done(b)
        assert set(by_id(pending(root))) == {a, b}  # not written yet
        await asyncio.sleep(0)
        assert pending(root) == []
        j.close()

    run(go)


# -- with a file-system flush (durable.commit Rule 8) -------------------------------------------------

def test_with_a_file_system_flush_engine_the_journal_still_commits_with_fdatasync(
        root: Path, fio: FaultyIO) -> None:
    """Rule 2: the file-system flush is for the Maildir files; the journal's commit writes only
    its own segment."""
    a, b = qid(), qid()
    fs_gs = GroupCommit(fio, name="test-journal-fs", whole_fs=True)

    async def go() -> None:
        j = Journal(root, fs_gs)
        j.append(a, record(a), b"A")
        j.append(b, record(b), b"B")
        await asyncio.gather(j.sync(), j.sync())
        j.close()

    try:
        run(go)
    finally:
        fs_gs.close()
    assert fio.calls["syncfs"] == 0
    assert fio.calls["fdatasync"] == 1  # one fdatasync for both waiters
    assert by_id(pending(root)) == {a: (record(a), b"A"), b: (record(b), b"B")}


# -- made-ahead segments (Rule 7) ------------------------------------------------------------------

SMALL = 64 * 1024  # a segment size for these tests: a few entries fill it


FILLER = b"f" * SMALL


async def next_made_ahead(j: Journal) -> QueueId:
    """Wait until the spare is made, then fill the current segment so the next append takes it;
    returns the filling message's id (left live)."""
    assert j.spare is not None
    await asyncio.wrap_future(j.spare)
    filler = qid()
    j.append(filler, record(filler), FILLER)
    await j.sync()
    return filler


def test_a_made_ahead_segment_is_overwritten_in_place(
        root: Path, gs: GroupCommit, fio: FaultyIO) -> None:
    a, b, c = qid(), qid(), qid()
    fillers: list[QueueId] = []
    flushed: list[str] = []

    async def go() -> None:
        j = Journal(root, gs, segment_bytes=SMALL, made_ahead=True)
        assert j.spare is not None  # the first one is made as the journal opens
        await asyncio.wrap_future(j.spare)
        j.append(a, record(a), b"A")
        await j.sync()
        assert (root / "seg.0000000000000001").stat().st_size == SMALL
        fillers.append(await next_made_ahead(j))
        j.append(b, record(b), b"B")
        await j.sync()
        seg2 = root / "seg.0000000000000002"
        assert seg2.stat().st_size == SMALL  # the spare, renamed: made to its full size
        assert j.spare is not None
        await asyncio.wrap_future(j.spare)  # the next spare's own fdatasync is not counted below
        before = len(fio.trace)
        j.append(c, record(c), b"C")
        await j.sync()
        assert seg2.stat().st_size == SMALL  # overwritten, not grown
        flushed.extend(w.rsplit("/", 1)[-1] for op, w in fio.trace[before:] if op in ("fdatasync", "fsync_dir"))
        assert flushed == ["seg.0000000000000002"]  # its data only: the name was made durable before
        j.close()

    run(go)
    data = (root / "seg.0000000000000002").read_bytes()
    entries = entry_bytes(b"M", record(b), b"B") + entry_bytes(b"M", record(c), b"C")
    assert data[:len(entries)] == entries and not data[len(entries):].strip(b"\0")
    filler = fillers[0]
    assert by_id(pending(root)) == {a: (record(a), b"A"), filler: (record(filler), FILLER),
                                    b: (record(b), b"B"), c: (record(c), b"C")}
    assert not (root / "spare").exists()  # close removed the next one


def test_zeros_after_the_last_entry_are_a_clean_end(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    a = qid()
    root.mkdir()
    (root / "seg.0000000000000001").write_bytes(entry_bytes(b"M", record(a), b"A") + bytes(5000))
    assert by_id(pending(root)) == {a: (record(a), b"A")}
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]


@pytest.mark.parametrize("torn", [b"M", b"M\x01\x02", b"D"])
def test_a_torn_head_before_the_zeros_is_ignored(root: Path, torn: bytes, caplog: pytest.LogCaptureFixture) -> None:
    a = qid()
    root.mkdir()
    (root / "seg.0000000000000001").write_bytes(entry_bytes(b"M", record(a), b"A") + torn + bytes(5000))
    assert by_id(pending(root)) == {a: (record(a), b"A")}
    assert any("unreadable entry" in r.getMessage() for r in caplog.records)


def test_a_spare_left_by_a_crash_is_never_read_and_is_replaced(root: Path, gs: GroupCommit) -> None:
    a, b = qid(), qid()
    root.mkdir()
    (root / "spare").write_bytes(entry_bytes(b"M", record(a), b"A"))  # never an entry's home
    assert pending(root) == []

    async def go() -> None:
        j = Journal(root, gs, segment_bytes=SMALL, made_ahead=True)
        j.append(b, record(b), b"B")
        await j.sync()
        assert j.spare is not None
        await asyncio.wrap_future(j.spare)
        assert (root / "spare").read_bytes() == bytes(SMALL)
        j.close()

    run(go)
    assert by_id(pending(root)) == {b: (record(b), b"B")}


def test_a_short_write_into_a_made_ahead_segment_is_zeroed_so_the_next_entry_is_readable(
        root: Path, gs: GroupCommit, fio: FaultyIO) -> None:
    a, b, c = qid(), qid(), qid()
    fillers: list[QueueId] = []

    async def go() -> None:
        j = Journal(root, gs, segment_bytes=SMALL, made_ahead=True)
        assert j.spare is not None
        await asyncio.wrap_future(j.spare)
        j.append(a, record(a), b"A" * 300)
        await j.sync()
        fillers.append(await next_made_ahead(j))
        fio.short("pwritev")  # b goes to the second, made ahead; half of it reaches the file
        with pytest.raises(OSError, match="short write"):
            j.append(b, record(b), b"B" * 100)
        j.append(c, record(c), b"C" * 50)  # shorter than the torn one: the zeros end it cleanly
        await j.sync()
        j.close()

    run(go)
    assert by_id(pending(root)) == {fillers[0]: (record(fillers[0]), FILLER),
                                    a: (record(a), b"A" * 300), c: (record(c), b"C" * 50)}
    data = (root / "seg.0000000000000002").read_bytes()
    good = entry_bytes(b"M", record(c), b"C" * 50)
    assert data[:len(good)] == good and not data[len(good):].strip(b"\0")


def test_a_spare_that_cannot_be_made_leaves_a_growing_segment_and_backs_off(
        root: Path, gs: GroupCommit, fio: FaultyIO, caplog: pytest.LogCaptureFixture) -> None:
    """Rule 7: a failed spare is not tried again at once (each try may write a whole segment
    onto a disk that is full): growing segments meanwhile, and the next try after the pause,
    which doubles when that one fails too."""
    a, b, c = qid(), qid(), qid()
    tries: list[float] = []
    now = [1000.0]

    fio.fail("pwrite", match="spare", error=errno.ENOSPC, times=None)  # every spare fails at its first write

    def spare_tries() -> int:
        return sum(op == "open" and w.endswith("/spare") for op, w in fio.trace)

    async def go() -> None:
        j = Journal(root, gs, segment_bytes=SMALL, made_ahead=True, monotonic=lambda: now[0])
        assert j.spare is not None
        with pytest.raises(OSError):
            await asyncio.wrap_future(j.spare)
        tries.append(now[0])
        j.append(a, record(a), b"A" * SMALL)  # the first segment, growing; fills it
        await j.sync()
        assert j.spare is None  # not tried again: the back-off
        now[0] += journal_mod.SPARE_RETRY_FIRST - 1
        j.append(b, record(b), b"B" * SMALL)  # a second segment, growing too
        await j.sync()
        assert j.spare is None and spare_tries() == 1
        now[0] += 1
        j.append(c, record(c), b"C" * SMALL)  # a third segment: the pause is over, one more try
        await j.sync()
        assert j.spare is not None
        with pytest.raises(OSError):
            await asyncio.wrap_future(j.spare)
        tries.append(now[0])
        assert spare_tries() == 2
        assert not (root / "spare").exists()  # a failed spare never holds the disk
        j.admit(1)  # the third segment is full: looking for the spare reads its failure
        j.close()

    run(go)
    assert tries == [1000.0, 1000.0 + journal_mod.SPARE_RETRY_FIRST]
    assert any("next try is in 120 s" in r.getMessage() for r in caplog.records)
    assert (root / "seg.0000000000000001").stat().st_size == len(entry_bytes(b"M", record(a), b"A" * SMALL))
    assert by_id(pending(root)) == {a: (record(a), b"A" * SMALL), b: (record(b), b"B" * SMALL),
                                    c: (record(c), b"C" * SMALL)}


# -- a full disk (Rules 7 and 8) ------------------------------------------------------------------

def test_a_spare_that_fails_half_way_is_removed(root: Path, gs: GroupCommit, fio: FaultyIO) -> None:
    """Rule 7: the partial file of a failed spare never stays on the disk (the full-disk probe
    found an 8 MiB partial spare holding an 8 MiB file system)."""
    fio.short("pwrite", match="spare")  # the disk is full half way

    async def go() -> None:
        j = Journal(root, gs, segment_bytes=SMALL, made_ahead=True)
        assert j.spare is not None
        with pytest.raises(OSError):
            await asyncio.wrap_future(j.spare)
        assert not (root / "spare").exists()
        j.close()

    run(go)
    assert fio.calls["pwrite"] >= 1  # it did start writing before the disk filled
    assert not (root / "spare").exists()


def test_no_spare_and_no_growing_segment_without_room(
        root: Path, gs: GroupCommit, fio: FaultyIO, caplog: pytest.LogCaptureFixture) -> None:
    """Rule 8: below ROOM_SEGMENTS segments free, no spare is written at all (not one byte),
    and ``admit`` declines an entry that would need new blocks."""
    fio.free = ROOM_SEGMENTS * SMALL - 1

    async def go() -> None:
        j = Journal(root, gs, segment_bytes=SMALL, made_ahead=True)
        assert j.spare is not None
        with pytest.raises(journal_mod.NoRoom):
            await asyncio.wrap_future(j.spare)
        assert not j.admit(100)
        assert not j.admit(100)
        fio.free = ROOM_SEGMENTS * SMALL
        assert j.admit(100)  # room again: a growing segment may start
        j.close()

    run(go)
    assert not (root / "spare").exists()
    assert segments(root) == []
    assert fio.calls["statvfs"] >= 3
    assert fio.calls["pwrite"] == 0
    messages = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert sum("fresh mail takes the queue files" in m for m in messages) == 1  # once, not per message
    assert sum("has room again" in m for m in messages) == 1


def test_a_made_ahead_segment_takes_entries_on_a_full_disk_until_it_is_full(
        root: Path, gs: GroupCommit, fio: FaultyIO) -> None:
    """Rule 8: an entry that fits in a made-ahead segment's blocks needs no room; one that
    does not, with no spare ready and no room, is declined, and the segment, once nothing in
    it is live, is retired and deleted: its blocks go back to the disk."""
    a = qid()

    async def go() -> None:
        j = Journal(root, gs, segment_bytes=SMALL, made_ahead=True)
        assert j.spare is not None
        await asyncio.wrap_future(j.spare)
        j.append(a, record(a), b"A")
        await j.sync()
        fio.free = 0  # the disk fills up
        assert j.admit(SMALL // 2)  # fits in what the segment holds
        assert not j.admit(SMALL)  # would grow the file: declined
        assert segments(root) == ["seg.0000000000000001"]  # a is live in it
        j.done(a)
        await asyncio.sleep(0)  # the done entry is written at the end of the turn
        assert not j.admit(SMALL)
        await barrier(gs)
        assert segments(root) == []  # retired and deleted
        j.close()

    run(go)
    assert pending(root) == []


def test_body_location_reads_a_live_body_back(root: Path, gs: GroupCommit) -> None:
    """Rule 9: where a live message's body is, also behind done entries written with it and
    in a made-ahead segment."""
    a, b, c = qid(), qid(), qid()
    body_b = bytes(range(256)) * 40

    async def go() -> None:
        j = Journal(root, gs, segment_bytes=SMALL, made_ahead=True)
        assert j.spare is not None
        await asyncio.wrap_future(j.spare)
        j.append(a, record(a), b"A" * 10)
        j.append(c, record(c), b"C")
        await j.sync()
        j.done(a)  # its done entry rides with b's entry, in the same write
        j.append(b, record(b), body_b)
        await j.sync()
        for q, body in ((b, body_b), (c, b"C")):
            path, offset, length = j.body_location(q)
            assert journal_mod.read_at(path, offset, length) == body
        with pytest.raises(KeyError):
            j.body_location(a)
        j.close()

    run(go)
