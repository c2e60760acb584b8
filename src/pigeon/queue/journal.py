"""The intake journal: fresh messages made durable by appending to one file, many per flush.

A message accepted on the fast path (small, every recipient local; see docs/queue.md "The
intake journal") is not written as two queue files with four fsyncs: its record and body are
appended, as one entry, to the current journal segment, and one ``fdatasync`` of that segment
covers every entry appended since the last one (group commit, ``store.groupsync``). That flush
is the commit point of these messages. Segments are made ahead of time, zero-filled and
flushed, so that a commit overwrites blocks that already exist: its ``fdatasync`` writes the new
bytes and flushes the disk's cache, and no file-system metadata at all. Local delivery then
takes the messages from memory; once a message is delivered (or handed to the classic queue,
"spilled"), a *done* entry is appended, and a segment whose messages are all done is deleted.

Layout: ``queue/journal/seg.<16 digits>``, plus at most one ``spare`` being made (Rule 7). Each
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
   (at most once more).
3. A segment is deleted when it is not the current one, none of its messages is live, and
   every older segment is deleted; the unlink and the directory fsync run in the sync thread,
   in order, so a crash can never bring back an older segment after a newer one is gone.
4. ``pending`` (recovery, at start-up, nothing else running) reads the segments in order and
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
   ``spare`` left by a crash holds no entry; the next one replaces it, and recovery never
   reads it.

What can go wrong: ``OSError`` from ``append`` (disk full: the caller answers 452) and from
``sync`` (I/O error: 452); a corrupt segment at start-up (logged, readable entries kept).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import logging
import os
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from pigeon.core.queueid import QueueId, is_queue_id
from pigeon.queue.syncer import fsync_dir
from pigeon.store.groupsync import GroupSync

log = logging.getLogger(__name__)

_HEAD = struct.Struct(">cIIQ")
MESSAGE, DONE = b"M", b"D"
SEGMENT_BYTES = 16 * 1024 * 1024
PREFIX = "seg."
SPARE = "spare"  # Rule 7
ZERO_CHUNK = 1 << 20  # Rule 7: a made-ahead segment is written a MiB at a time
MAX_HEADER = 16 * 1024 * 1024  # a record bigger than this is not a record (corruption)
MAX_BODY = 1 << 31


@dataclass(slots=True)
class PendingEntry:
    """A message found in the journal without a done entry (recovery)."""

    id: QueueId
    record: bytes  # the record's JSON (queue.record.encode_record)
    body: bytes
    segment: str


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

    def flush(self, root: Path, fd: int) -> None:
        """In the sync thread: the data, and the first time the segment's name too. ``fd`` is
        the one the request saw: the loop may retire the segment (fd -1) before this runs; its
        close is queued after this flush."""
        try:
            os.fdatasync(fd)
            if not self.named:
                fsync_dir(root)
                self.named = True
        except OSError:
            self.broken = True
            raise


def _segment_name(seq: int) -> str:
    return f"{PREFIX}{seq:016d}"


def _segment_seq(name: str) -> int | None:
    if not name.startswith(PREFIX):
        return None
    digits = name[len(PREFIX):]
    return int(digits) if len(digits) == 16 and digits.isdigit() else None


def _list_segments(root: Path) -> list[tuple[int, str]]:
    out = []
    for name in os.listdir(root):
        seq = _segment_seq(name)
        if seq is not None:
            out.append((seq, name))
    return sorted(out)


def _make_spare(path: Path, size: int) -> int:
    """Rule 7, in the journal's own thread: a zero-filled file of ``size`` bytes, on disk.
    Returns its descriptor (read-write, so that ``pwritev`` may overwrite it)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        _write_zeros(fd, 0, size)
        os.fdatasync(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


class Journal:
    def __init__(self, root: Path, sync: GroupSync, *, segment_bytes: int = SEGMENT_BYTES,
                 made_ahead: bool = False) -> None:
        self.root = root
        self._sync = sync
        self._segment_bytes = segment_bytes
        self._made_ahead = made_ahead  # Rule 7
        self._maker: ThreadPoolExecutor | None = None
        self._spare: Future[int] | None = None
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        existing = _list_segments(root)
        self._next_seq = existing[-1][0] + 1 if existing else 1
        self._segments: list[_Segment] = []  # oldest first; the last is the current one
        self._where: dict[QueueId, _Segment] = {}
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
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
            seg = _Segment(name, path, fd)
        self._segments.append(seg)  # its name becomes durable with its first flush (_Segment.flush)
        self._make_spare()
        return seg

    def _make_spare(self) -> None:
        """Rule 7: start making the next segment, unless one is being made."""
        if not self._made_ahead or self._spare is not None:
            return
        if self._maker is None:
            self._maker = ThreadPoolExecutor(1, thread_name_prefix="pigeon-journal-spare")
        self._spare = self._maker.submit(_make_spare, self.root / SPARE, self._segment_bytes)

    def _take_spare(self, name: str, path: Path) -> _Segment | None:
        """Rule 7: the spare, renamed to ``name``, if it is ready; else None."""
        spare = self._spare
        if spare is None or not spare.done():
            return None
        self._spare = None
        try:
            fd = spare.result()
        except OSError as exc:
            log.error("journal: cannot make the next segment ahead (%s); using a growing one", exc)
            return None
        try:
            os.rename(self.root / SPARE, path)
        except OSError as exc:
            os.close(fd)
            log.error("journal: cannot rename the spare segment to %s (%s); using a growing one", name, exc)
            return None
        return _Segment(name, path, fd, made_ahead=True)

    def _retire(self, seg: _Segment) -> None:
        """No more appends to ``seg``: close it in the sync thread, after its waiters' flushes.
        It needs no flush of its own: every message entry's waiter asked for one before this
        (Rule 2), and what was written after the last of them is done entries (Rule 6)."""
        fd, seg.fd = seg.fd, -1
        if fd < 0:
            return
        self._sync.sync(("close", fd), partial(os.close, fd)).add_done_callback(_log_failure(f"closing {seg.name}"))
        self._collect()

    def _write(self, kind: bytes, header: bytes, body: bytes) -> _Segment:
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
        seg.end += total
        self.appends += 1
        return seg

    def _writev(self, seg: _Segment, parts: list[bytes], total: int) -> None:
        """One ``writev`` of whole entries; a failed or short one is cut back (Rule 1)."""
        try:
            if seg.made_ahead:
                written = os.pwritev(seg.fd, parts, seg.end)
            else:
                written = os.writev(seg.fd, parts)
            if written != total:
                raise OSError(f"short write to the journal ({written} of {total} bytes)")
        except OSError:
            self._cut(seg, total)
            raise

    def _cut(self, seg: _Segment, total: int) -> None:
        try:
            if seg.made_ahead:  # Rule 1: zeros, the clean end, over whatever reached the file
                _write_zeros(seg.fd, seg.end, total)
            else:
                os.ftruncate(seg.fd, seg.end)
        except OSError as exc:
            log.error("journal: cannot cut %s back after a failed write (%s); starting a new segment",
                      seg.name, exc)
            self._open_segment()

    def append(self, qid: QueueId, record: bytes, body: bytes) -> None:
        """Append a message entry (Rule 1); durable once ``sync`` completes. Raises OSError."""
        seg = self._write(MESSAGE, record, body)
        seg.live.add(qid)
        self._where[qid] = seg

    def sync(self) -> asyncio.Future[None]:
        """Rule 2: a future done when every entry appended so far is on disk."""
        seg = self._segments[-1] if self._segments else None
        if seg is None or seg.fd < 0:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            fut.set_result(None)
            return fut
        return self._sync.sync(("fdatasync", seg.fd), partial(seg.flush, self.root, seg.fd))

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
            path = seg.path

            def unlink(path: Path = path) -> None:
                os.unlink(path)
                fsync_dir(self.root)

            self._sync.sync(("unlink", str(path)), unlink).add_done_callback(_log_failure(f"deleting {seg.name}"))

    def close(self) -> None:
        """At shutdown, after the sync thread closed (it ran every pending flush): close the
        current segment (it stays on disk if it holds live messages; the next start's recovery
        takes them)."""
        self.write_done()
        for seg in self._segments:
            if seg.fd >= 0:
                try:
                    os.close(seg.fd)
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
        if spare is None:
            return
        try:
            os.close(spare.result())
            os.unlink(self.root / SPARE)
        except OSError as exc:
            log.warning("journal: cannot remove the spare segment: %s", exc)

    @property
    def live(self) -> int:
        return len(self._where)

    @property
    def spare(self) -> Future[int] | None:
        """Rule 7: the next segment being made (tests wait for it), or None."""
        return self._spare


def _write_zeros(fd: int, offset: int, length: int) -> None:
    zeros = memoryview(bytes(min(length, ZERO_CHUNK)))  # not kept: no MiB held per process
    while length > 0:
        n = min(length, len(zeros))
        if os.pwrite(fd, zeros[:n], offset) != n:
            raise OSError(errno.EIO, "short write of zeros to the journal")
        offset += n
        length -= n


def _log_failure(what: str) -> Callable[[asyncio.Future[None]], None]:
    def check(fut: asyncio.Future[None]) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            log.error("journal: %s failed: %s", what, fut.exception())

    return check


# -- recovery (start-up, blocking) -------------------------------------------------------------------

def _entries(data: bytes, name: str) -> Iterator[tuple[bytes, bytes, bytes]]:
    pos, end = 0, len(data)
    used = len(data.rstrip(b"\0"))  # Rule 7: the zeros after the last entry are no entry
    while pos < used:
        if end - pos < _HEAD.size:
            log.warning("journal: %s ends in a torn entry at %d (%d bytes), ignored", name, pos, end - pos)
            return
        kind, crc, hlen, blen = _HEAD.unpack_from(data, pos)
        start = pos + _HEAD.size
        stop = start + hlen + blen
        # hlen 0: every entry has a header; a lone kind byte before zeros is a torn head (Rule 7)
        bad = kind not in (MESSAGE, DONE) or not 0 < hlen <= MAX_HEADER or blen > MAX_BODY or stop > end
        if not bad:
            header = data[start:start + hlen]
            body = data[start + hlen:stop]
            bad = zlib.crc32(body, zlib.crc32(header)) != crc
        if bad:
            log.warning("journal: %s: unreadable entry at %d; the %d bytes from there are ignored "
                        "(the tail of an interrupted write)", name, pos, end - pos)
            return
        yield kind, header, body
        pos = stop


def pending(root: Path) -> list[PendingEntry]:
    """Rule 4: the messages in the journal without a done entry, oldest first."""
    if not root.is_dir():
        return []
    found: dict[QueueId, PendingEntry] = {}
    for _, name in _list_segments(root):
        data = (root / name).read_bytes()
        for kind, header, body in _entries(data, name):
            if kind == DONE:
                found.pop(QueueId(header.decode("ascii", "replace")), None)
                continue
            qid = _record_id(header)
            if qid is None:
                log.error("journal: %s: a message entry without a readable queue id, skipped", name)
                continue
            found[qid] = PendingEntry(qid, header, body, name)
    return list(found.values())


def _record_id(header: bytes) -> QueueId | None:
    # Only the id is needed here; decoding the whole record is the caller's job.
    try:
        qid = json.loads(header).get("id")
    except (ValueError, AttributeError):
        return None
    return QueueId(qid) if isinstance(qid, str) and is_queue_id(qid) else None


class JournalBusy(OSError):
    """Another process still holds this journal (an SMTP worker still running)."""


LOCK_FILE = "lock"
LOCK_POLL = 0.1  # seconds between tries while waiting for a journal's lock


def lock_journal(root: Path, *, wait: float) -> int:
    """Take the exclusive lock of a journal directory (queue rule 10); returns the fd that
    holds it (close it to let go). Waits up to ``wait`` seconds, then raises JournalBusy."""
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise JournalBusy(errno.EBUSY, "the journal is in use by a running process", str(root)) from None
            time.sleep(LOCK_POLL)
        except OSError:
            os.close(fd)
            raise


def remove_segments(root: Path, *, spare: bool = False) -> int:
    """After recovery moved every pending message into the queue: delete all segments, and
    with ``spare`` the spare too (Rule 7; only when no process has this journal open: an SMTP
    worker's, under its lock, after the worker ended)."""
    if not root.is_dir():
        return 0
    if spare:
        try:
            os.unlink(root / SPARE)
        except FileNotFoundError:
            pass
    names = _list_segments(root)
    for _, name in names:
        os.unlink(root / name)
    if names:
        fsync_dir(root)
    return len(names)
