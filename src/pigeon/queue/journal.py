"""The intake journal: fresh messages made durable by appending to one file, many per flush.

A message accepted on the fast path (small, every recipient local; see docs/queue.md "The
intake journal") is not written as two queue files with four fsyncs: its record and body are
appended, as one entry, to the current journal segment, and one ``fdatasync`` of that segment
covers every entry appended since the last one (group commit, ``store.groupsync``). That flush
is the commit point of these messages. Local delivery then takes them from memory; once a
message is delivered (or handed to the classic queue, "spilled"), a *done* entry is appended,
and a segment whose messages are all done is deleted.

Layout: ``queue/journal/seg.<16 digits>``, appended with ``O_APPEND``. Each entry::

    kind (1 byte: b"M" message, b"D" done) | crc32 (4) | header length (4) | body length (8)
    header (the record's JSON for M, the queue id for D) | body (M only)

(big-endian; the CRC covers header and body).

Rules:
1. ``append`` writes an entry with one ``writev`` on the caller's thread (the event loop). A
   write that fails or is short is cut back (``ftruncate`` to the last good end); if that
   fails too, the segment is abandoned for a new one, so a torn entry is only ever the last
   of its segment.
2. ``sync`` completes when everything appended before it is on disk (one ``fdatasync`` per
   batch for all callers; with a ``whole_fs`` group, the batch's one ``syncfs``, which also
   makes the segment's name durable and lets a retired segment close without a flush). A failed ``fdatasync`` fails every waiter of that batch, and the
   segment is abandoned: after a failed flush Linux may have dropped its pages, so nothing
   later may depend on it. The failed messages get a done entry in the new segment, so a
   recovery does not deliver what the client was told to send again (at most once more).
3. A segment is deleted when it is not the current one, none of its messages is live, and
   every older segment is deleted; the unlink and the directory fsync run in the sync thread,
   in order, so a crash can never bring back an older segment after a newer one is gone.
4. ``pending`` (recovery, at start-up, nothing else running) reads the segments in order and
   returns the messages without a done entry. Reading a segment stops at the first entry that
   is incomplete or fails its CRC: the tail of a crashed write, never acknowledged (Rule 1 and
   2). Later bytes in that segment are reported, not guessed at.
6. ``done`` entries are written at the end of the loop's turn, or with the next entry,
   whichever comes first: many per ``writev``. They need no flush of their own (a lost done
   entry means one more delivery after a crash, never a lost message).
5. Segments are at most ``SEGMENT_BYTES`` plus one entry; an entry's body is at most what the
   caller keeps in memory (``queue.store.MEMORY_BODY``).

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
    __slots__ = ("name", "path", "fd", "end", "live", "named", "broken")

    def __init__(self, name: str, path: Path, fd: int) -> None:
        self.name = name
        self.path = path
        self.fd = fd
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


class Journal:
    def __init__(self, root: Path, sync: GroupSync, *, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.root = root
        self._sync = sync
        self._segment_bytes = segment_bytes
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        existing = _list_segments(root)
        self._next_seq = existing[-1][0] + 1 if existing else 1
        self._segments: list[_Segment] = []  # oldest first; the last is the current one
        self._where: dict[QueueId, _Segment] = {}
        self._done_parts: list[bytes] = []  # done entries not yet written (Rule 6)
        self._done_scheduled = False
        self.appends = 0

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
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        seg = _Segment(name, path, fd)
        self._segments.append(seg)  # its name becomes durable with its first flush (_Segment.flush)
        return seg

    def _retire(self, seg: _Segment) -> None:
        """No more appends to ``seg``: flush and close it in the sync thread (after its waiters)."""
        fd, seg.fd = seg.fd, -1
        if fd < 0:
            return

        whole_fs = self._sync.whole_fs

        def close() -> None:
            try:
                if not whole_fs:  # else every waiter's syncfs covers it
                    os.fdatasync(fd)
            finally:
                os.close(fd)

        self._sync.sync(("close", fd), close).add_done_callback(_log_failure(f"closing {seg.name}"))
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
            written = os.writev(seg.fd, parts)
            if written != total:
                raise OSError(f"short write to the journal ({written} of {total} bytes)")
        except OSError:
            self._cut(seg)
            raise

    def _cut(self, seg: _Segment) -> None:
        try:
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
        if self._sync.whole_fs:
            # One syncfs for the batch (store.groupsync Rule 7) covers the data and, the first
            # time, the segment's name; a failure marks the segment broken, as below.
            fut = self._sync.flush_fs(self.root)
            fut.add_done_callback(partial(_mark_broken, seg))
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

    @property
    def live(self) -> int:
        return len(self._where)


def _mark_broken(seg: _Segment, fut: asyncio.Future[None]) -> None:
    if fut.cancelled() or fut.exception() is not None:
        seg.broken = True


def _log_failure(what: str) -> Callable[[asyncio.Future[None]], None]:
    def check(fut: asyncio.Future[None]) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            log.error("journal: %s failed: %s", what, fut.exception())

    return check


# -- recovery (start-up, blocking) -------------------------------------------------------------------

def _entries(data: bytes, name: str) -> Iterator[tuple[bytes, bytes, bytes]]:
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < _HEAD.size:
            log.warning("journal: %s ends in a torn entry at %d (%d bytes), ignored", name, pos, end - pos)
            return
        kind, crc, hlen, blen = _HEAD.unpack_from(data, pos)
        start = pos + _HEAD.size
        stop = start + hlen + blen
        bad = kind not in (MESSAGE, DONE) or hlen > MAX_HEADER or blen > MAX_BODY or stop > end
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


def remove_segments(root: Path) -> int:
    """After recovery moved every pending message into the queue: delete all segments."""
    if not root.is_dir():
        return 0
    names = _list_segments(root)
    for _, name in names:
        os.unlink(root / name)
    if names:
        fsync_dir(root)
    return len(names)
