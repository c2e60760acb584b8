"""The intake journal: fresh messages made durable by appending to one file, many per flush.

A message accepted on the fast path (small, every recipient local; see docs/queue.md "The
intake journal") is not written as two queue files with four fsyncs: its record and body are
appended, as one entry, to the current journal segment, and one ``fdatasync`` of that segment
covers every entry appended since the last one (group commit, ``durable.commit``). That flush
is the commit point of these messages. Segments are made ahead of time, zero-filled and
flushed, so that a commit overwrites blocks that already exist: its ``fdatasync`` writes the new
bytes and flushes the disk's cache, and no file-system metadata at all. Local delivery then
takes the messages from memory; once a message is delivered (or handed to the classic queue,
"spilled"), a *done* entry is appended, and a segment whose messages are all done is deleted.

Layout: ``queue/journal/<owner>/seg.<16 digits>``, plus at most one ``spare`` being made (Rule 7). Each
entry::

    kind (1 byte: b"M" message, b"D" done) | crc32 (4) | header length (4) | body length (8)
    header (the record's JSON for M, the queue id for D) | body (M only)

(big-endian; the CRC covers header and body). After the last entry, a made-ahead segment holds
zero bytes up to its end; a kind byte of zero is the clean end of a segment.

Rules:
1. ``append`` writes an entry with one ``writev`` (``pwritev`` at the end of the last entry in
   a made-ahead segment) on the caller's thread (the event loop). A write that fails or is
   short is cut back (``ftruncate`` to the last good end; zeros written over it in a made-ahead
   segment); if that fails too, the segment is abandoned for a new one, so a torn entry is only
   ever the last of its segment.
2. ``sync`` completes when everything appended before it is on disk: one ``fdatasync`` of the
   segment per batch for all callers, plus, the first time, an fsync of the directory for the
   segment's name. It is an ``fdatasync`` whatever the ``[queue] flush`` setting: it writes
   only this segment's new bytes, where a ``syncfs`` would also write every other dirty file of
   the file system and its metadata, for several times the latency (docs/benchmarks.md,
   "2026-11-27 10:34 — made-ahead journal segments"). A failed ``fdatasync`` fails every
   waiter of that batch, and the segment is abandoned: after a failed flush Linux may have
   dropped its pages, so nothing later may depend on it. The failed messages get a done entry
   in the new segment, so a recovery does not deliver what the client was told to send again
   (at most once more). This ``fdatasync`` is the commit point of every message on the fast
   path: the ``250`` waits for it. The directory ``fsync`` makes a new segment's name durable
   before the first commit that rests on it.
3. A segment is deleted when it is not the current one, none of its messages is live, and
   every older segment is deleted; the unlink and the directory fsync run in the engine's
   thread (``flushes.Unlink``), in order, so a crash can never bring back an older segment
   after a newer one is gone.
4. ``pending`` (recovery, at start-up, nothing else running; it lives in ``journal_read`` with
   the entry format, the journal's lock and ``remove_segments``) reads the segments in order and
   returns the messages without a done entry. Reading a segment stops at the first entry that
   is incomplete or fails its CRC: the tail of a crashed write, never acknowledged (Rule 1 and
   2). Later bytes in that segment are reported, not guessed at; zeros after the last entry
   are the clean end of a made-ahead segment (Rule 7), not reported, and a kind byte followed
   by zeros (no header length) is a torn head.
6. ``done`` entries are written at the end of the loop's turn, or with the next entry,
   whichever comes first: many per ``writev``. They need no flush of their own (a lost done
   entry means one more delivery after a crash, never a lost message).
5. Segments are at most ``SEGMENT_BYTES`` plus one entry; an entry's body is at most what the
   caller keeps in memory (``queue.store.MEMORY_BODY``).
7. With ``made_ahead`` (the server's journals), a thread of the journal's own makes the next
   segment while the current one fills: ``spare`` is created, zero-filled to ``SEGMENT_BYTES``,
   and ``fdatasync``ed, off the event loop (the first one as the journal is opened). A new
   segment is that file renamed to the next ``seg.`` name (its name becomes durable with its
   first flush, as for any new segment); if the spare is not ready yet, the new segment is an
   empty file that grows (correct, only slower: each flush then writes its size too). A
   ``spare`` left by a crash holds no entry: it is removed as the journal opens, and recovery
   never reads it. A spare that cannot be completed (``ENOSPC``, an I/O error) is removed at
   once, never left holding the disk, and no spare is tried again for ``SPARE_RETRY_FIRST``
   seconds, doubling up to ``SPARE_RETRY_MAX``.
8. The journal takes disk space only where it clearly has some (docs/queue.md "A full
   disk"): a spare is made, and a growing segment started or grown, only while the file system
   has ``ROOM_SEGMENTS`` segments' worth free (``statvfs``); an entry that fits in what a
   made-ahead segment already holds needs no room. ``admit`` says whether an entry may be
   appended now; when it may not, the caller commits the message to the queue files instead
   (which are given back message by message once delivered, and answer 452 when the disk is
   full), and a current segment that holds nothing live is retired, so that its file is
   deleted and its blocks freed.
9. ``body_location`` tells where a live message's body is, so that a message whose delivery
   must wait (the fast lane's held messages) need not be kept in memory: it is read back from
   its segment (``read_at``), which is not deleted while the message is live (Rule 3).
10. Every system call goes through the IO seam (``durable.io``): the engine's, unless the
   journal is given its own.

What can go wrong: ``OSError`` from ``append`` (disk full: the caller answers 452) and from
``sync`` (I/O error: 452); a corrupt segment at start-up (logged, readable entries kept).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from pigeon.core.queueid import QueueId
from pigeon.durable.commit import GroupCommit
from pigeon.durable.flushes import Close, Unlink
from pigeon.durable.io import FileIO, unlink_quietly
from pigeon.durable.journal_read import (
    _HEAD,
    DONE,
    MESSAGE,
    PREFIX,
    SEGMENT_BYTES,
    SPARE,
    JournalBusy,
    PendingEntry,
    _list_segments,
    _segment_name,
    lock_journal,
    pending,
    remove_segments,
)
from pigeon.durable.segments import ROOM_SEGMENTS, NoRoom, has_room, make_spare, read_at, write_zeros

log = logging.getLogger(__name__)

ENTRY_HEAD = _HEAD.size
# Rule 7: after a spare could not be made, wait this long before the next try (each try may
# write a whole segment), doubling up to the maximum.
SPARE_RETRY_FIRST = 60.0  # seconds
SPARE_RETRY_MAX = 3600.0  # seconds


class _Segment:
    __slots__ = ("name", "path", "fd", "end", "live", "named", "broken", "made_ahead")

    def __init__(self, name: str, path: Path, fd: int, *, made_ahead: bool = False) -> None:
        self.name = name
        self.path = path
        self.fd = fd
        self.made_ahead = made_ahead  # Rule 7: zero-filled to its size; written with pwritev
        self.end = 0  # the end of the last complete entry (Rule 1)
        self.live: set[QueueId] = set()
        self.named = False  # the directory entry is durable (set by the first flush)
        self.broken = False  # a flush failed (Rule 2)


class _SegmentFlush:
    """Rule 2, a flush kind of the engine (``durable.flushes.Flush``): the segment's data, and
    the first time its name too. ``fd`` is the one the request saw: the loop may retire the
    segment (fd -1) before this runs; its close is queued after this flush."""

    __slots__ = ("seg", "root", "fd", "key")

    def __init__(self, seg: _Segment, root: Path, fd: int) -> None:
        self.seg = seg
        self.root = root
        self.fd = fd
        self.key = ("fdatasync", fd)

    def run(self, io: FileIO) -> None:
        try:
            io.fdatasync(self.fd)
            if not self.seg.named:
                io.fsync_dir(self.root)
                self.seg.named = True
        except OSError:
            self.seg.broken = True
            raise


__all__ = ["DONE", "ENTRY_HEAD", "MESSAGE", "PREFIX", "SEGMENT_BYTES", "SPARE", "Journal", "JournalBusy",
           "NoRoom", "PendingEntry", "lock_journal", "pending", "read_at", "remove_segments"]


class Journal:
    def __init__(self, root: Path, sync: GroupCommit, *, io: FileIO | None = None,
                 segment_bytes: int = SEGMENT_BYTES, made_ahead: bool = False,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.root = root
        self._sync = sync
        self._io = io if io is not None else sync.io  # Rule 10
        self._segment_bytes = segment_bytes
        self._made_ahead = made_ahead  # Rule 7
        self._maker: ThreadPoolExecutor | None = None
        self._spare: Future[int] | None = None
        self._spare_pause = 0.0  # Rule 7: the back-off after a spare that could not be made
        self._spare_after = 0.0  # monotonic() before which no spare is tried
        self._monotonic = monotonic  # Rule 7's back-off (tests pass their own)
        self._declining = False  # Rule 8: admit said no last time (logged once per change)
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        if made_ahead:
            unlink_quietly(root / SPARE, self._io)  # Rule 7: one left by a crash holds no entry
        existing = _list_segments(root)
        self._next_seq = existing[-1][0] + 1 if existing else 1
        self._segments: list[_Segment] = []  # oldest first; the last is the current one
        self._where: dict[QueueId, _Segment] = {}
        self._bodies: dict[QueueId, tuple[int, int]] = {}  # Rule 9: (offset, length) in its segment
        self._done_parts: list[bytes] = []  # done entries not yet written (Rule 6)
        self._done_scheduled = False
        self.appends = 0
        self._make_spare()  # Rule 7: the first segment too, while the server starts

    # -- writing (the event loop) ----------------------------------------------------------------

    def _current(self) -> _Segment:
        if self._segments and self._segments[-1].fd >= 0 and self._segments[-1].end < self._segment_bytes:
            return self._segments[-1]
        return self._open_segment()

    def _open_segment(self) -> _Segment:
        if self._segments:
            self._retire(self._segments[-1])
        name = _segment_name(self._next_seq)
        self._next_seq += 1
        path = self.root / name
        seg = self._take_spare(name, path)
        if seg is None:
            fd = self._io.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
            seg = _Segment(name, path, fd)
        self._segments.append(seg)  # its name becomes durable with its first flush (_SegmentFlush)
        self._make_spare()
        return seg

    def _make_spare(self) -> None:
        """Rule 7: start making the next segment, unless one is being made or a failed one
        is too recent."""
        if not self._made_ahead or self._spare is not None or self._monotonic() < self._spare_after:
            return
        if self._maker is None:
            self._maker = ThreadPoolExecutor(1, thread_name_prefix="pigeon-journal-spare")
        self._spare = self._maker.submit(make_spare, self.root / SPARE, self._segment_bytes, self._io)

    def _spare_ready(self) -> bool:
        """Rule 7: the spare is made. A spare that failed is forgotten here (its file is gone
        already) and the back-off starts or doubles."""
        spare = self._spare
        if spare is None or not spare.done():
            return False
        exc = spare.exception()
        if exc is None:
            self._spare_pause = 0.0
            return True
        self._spare = None
        if isinstance(exc, NoRoom):
            log.info("journal: %s has %s; no segment is made ahead", self.root, exc.strerror)
            return False
        self._spare_pause = min(max(self._spare_pause * 2, SPARE_RETRY_FIRST), SPARE_RETRY_MAX)
        self._spare_after = self._monotonic() + self._spare_pause
        log.error("journal: cannot make the next segment ahead (%s); its file is removed and the "
                  "next try is in %.0f s", exc, self._spare_pause)
        return False

    def _take_spare(self, name: str, path: Path) -> _Segment | None:
        """Rule 7: the spare, renamed to ``name``, if it is ready; else None."""
        if not self._spare_ready():
            return None
        spare, self._spare = self._spare, None
        assert spare is not None
        fd = spare.result()
        try:
            self._io.rename(self.root / SPARE, path)
        except OSError as exc:
            self._io.close(fd)
            log.error("journal: cannot rename the spare segment to %s (%s); using a growing one", name, exc)
            return None
        return _Segment(name, path, fd, made_ahead=True)

    def admit(self, size: int) -> bool:
        """Rule 8: whether an entry of ``size`` bytes (record and body) may be appended now.
        When it may not, a current segment holding nothing live is retired (and deleted)."""
        need = ENTRY_HEAD + size
        seg = self._segments[-1] if self._segments else None
        if seg is not None and (seg.fd < 0 or seg.end >= self._segment_bytes):
            seg = None  # the next append opens a new segment
        if seg is not None and seg.made_ahead and seg.end + need <= self._segment_bytes:
            return True  # the blocks exist already: no room needed
        if (seg is None and self._spare_ready()) or has_room(self.root, self._segment_bytes, self._io):
            if self._declining:
                self._declining = False
                log.warning("journal: %s has room again; fresh local mail takes the journal", self.root)
            return True
        if not self._declining:
            self._declining = True
            log.warning("journal: %s has less than %d segments' worth of free space; fresh mail takes "
                        "the queue files until there is room", self.root, ROOM_SEGMENTS)
        current = self._segments[-1] if self._segments else None
        if current is not None and current.fd >= 0 and not current.live:
            self._retire(current)
        return False

    def body_location(self, qid: QueueId) -> tuple[Path, int, int]:
        """Rule 9: (segment path, offset, length) of a live message's body; KeyError when the
        message is not live here."""
        seg = self._where[qid]
        offset, length = self._bodies[qid]
        return seg.path, offset, length

    def _retire(self, seg: _Segment) -> None:
        """No more appends to ``seg``: close it in the engine's thread, after its waiters'
        flushes. It needs no flush of its own: every message entry's waiter asked for one before
        this (Rule 2), and what was written after the last of them is done entries (Rule 6)."""
        fd, seg.fd = seg.fd, -1
        if fd < 0:
            return
        self._sync.flush(Close(fd)).add_done_callback(_log_failure(f"closing {seg.name}"))
        self._collect()

    def _write(self, kind: bytes, header: bytes, body: bytes) -> tuple[_Segment, int]:
        """Append one entry (after any done entries waiting); returns its segment and where
        the entry starts in it."""
        seg = self._current()
        crc = zlib.crc32(body, zlib.crc32(header))
        parts = [_HEAD.pack(kind, crc, len(header), len(body)), header, body] if body else \
            [_HEAD.pack(kind, crc, len(header), 0), header]
        total = _HEAD.size + len(header) + len(body)
        done, self._done_parts = self._done_parts, []  # Rule 6: done entries ride along
        if done:
            parts = done + parts
            total += sum(len(d) for d in done)
        try:
            self._writev(seg, parts, total)
        except OSError:
            if done:
                log.error("journal: %d done entries lost with a failed write (those messages "
                          "would be delivered again after a crash)", len(done))
            raise
        start = seg.end + total - (_HEAD.size + len(header) + len(body))
        seg.end += total
        self.appends += 1
        return seg, start

    def _writev(self, seg: _Segment, parts: list[bytes], total: int) -> None:
        """One ``writev`` of whole entries; a failed or short one is cut back (Rule 1)."""
        try:
            if seg.made_ahead:
                written = self._io.pwritev(seg.fd, parts, seg.end)
            else:
                written = self._io.writev(seg.fd, parts)
            if written != total:
                raise OSError(f"short write to the journal ({written} of {total} bytes)")
        except OSError:
            self._cut(seg, total)
            raise

    def _cut(self, seg: _Segment, total: int) -> None:
        try:
            if seg.made_ahead:  # Rule 1: zeros, the clean end, over whatever reached the file
                write_zeros(seg.fd, seg.end, total, self._io)
            else:
                self._io.ftruncate(seg.fd, seg.end)
        except OSError as exc:
            log.error("journal: cannot cut %s back after a failed write (%s); starting a new segment",
                      seg.name, exc)
            self._open_segment()

    def append(self, qid: QueueId, record: bytes, body: bytes) -> None:
        """Append a message entry (Rule 1); durable once ``sync`` completes. Raises OSError."""
        seg, start = self._write(MESSAGE, record, body)
        seg.live.add(qid)
        self._where[qid] = seg
        self._bodies[qid] = (start + _HEAD.size + len(record), len(body))

    def sync(self) -> asyncio.Future[None]:
        """Rule 2: a future done when every entry appended so far is on disk."""
        seg = self._segments[-1] if self._segments else None
        if seg is None or seg.fd < 0:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            fut.set_result(None)
            return fut
        return self._sync.flush(_SegmentFlush(seg, self.root, seg.fd))

    def failed(self, qids: list[QueueId]) -> None:
        """A flush failed (Rule 2): abandon the segment (once, however many waiters it had),
        and mark these messages done."""
        if self._segments and self._segments[-1].fd >= 0 and self._segments[-1].broken:
            self._open_segment()
        for qid in qids:
            self.done(qid)

    def done(self, qid: QueueId) -> None:
        """The message is delivered or queued elsewhere: append its done entry (best effort:
        it rides with the next flush) and let its segment go when nothing in it is live."""
        seg = self._where.pop(qid, None)
        self._bodies.pop(qid, None)
        if seg is not None:
            seg.live.discard(qid)
        header = qid.encode("ascii")
        self._done_parts.append(_HEAD.pack(DONE, zlib.crc32(b"", zlib.crc32(header)), len(header), 0) + header)
        if not self._done_scheduled:  # else the write at the end of this turn takes it too
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.write_done()
            else:
                self._done_scheduled = True
                loop.call_soon(self.write_done)
        self._collect()

    def write_done(self) -> None:
        """Write the done entries not yet written (Rule 6)."""
        self._done_scheduled = False
        if not self._done_parts:
            return
        if not self._segments:
            self._done_parts = []  # this journal never held a message: nothing to mark
            return
        if self._segments[-1].fd < 0 and not self._where:
            # Retired by ``admit`` (Rule 8) and nothing live anywhere: every segment is being
            # deleted (Rule 3), so a new one is not made on a short disk just for these.
            self._done_parts = []
            return
        done, self._done_parts = self._done_parts, []
        total = sum(len(d) for d in done)
        try:
            seg = self._current()
            self._writev(seg, done, total)
        except OSError as exc:
            # Without the done entry a recovery delivers the message again: once more, not lost.
            log.error("journal: cannot write %d done entries: %s", len(done), exc)
            return
        seg.end += total

    def _collect(self) -> None:
        """Rule 3: delete leading segments that are retired and hold nothing live."""
        while self._segments and self._segments[0].fd < 0 and not self._segments[0].live:
            seg = self._segments.pop(0)
            self._sync.flush(Unlink(seg.path)).add_done_callback(_log_failure(f"deleting {seg.name}"))

    def close(self) -> None:
        """At shutdown, after the engine closed (it ran every pending flush): close the
        current segment (it stays on disk if it holds live messages; the next start's recovery
        takes them)."""
        self.write_done()
        for seg in self._segments:
            if seg.fd >= 0:
                try:
                    self._io.close(seg.fd)
                except OSError:
                    pass
                seg.fd = -1
        self._close_spare()

    def _close_spare(self) -> None:
        """Rule 7: wait for a spare being made, close it and remove the file."""
        spare, self._spare = self._spare, None
        if self._maker is not None:
            self._maker.shutdown(wait=True)
            self._maker = None
        if spare is None or spare.exception() is not None:
            return  # a spare that failed left no file (Rule 7)
        try:
            self._io.close(spare.result())
            self._io.unlink(self.root / SPARE)
        except OSError as exc:
            log.warning("journal: cannot remove the spare segment: %s", exc)

    @property
    def live(self) -> int:
        return len(self._where)

    @property
    def spare(self) -> Future[int] | None:
        """Rule 7: the next segment being made (tests wait for it), or None."""
        return self._spare


def _log_failure(what: str) -> Callable[[asyncio.Future[None]], None]:
    def check(fut: asyncio.Future[None]) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            log.error("journal: %s failed: %s", what, fut.exception())

    return check
