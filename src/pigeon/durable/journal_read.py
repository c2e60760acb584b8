"""Reading an intake journal back, and handing one over: the entry format, recovery's reader,
the journal's lock, and the deletion of drained segments (``durable.journal`` Rules 4 and 7;
queue.store rule 10).

The entry format (``durable.journal``): ``kind (1) | crc32 (4) | header length (4) | body length
(8) | header | body``, big-endian, the CRC over header and body; zeros after the last entry
are the clean end of a made-ahead segment.

Rules:
1. ``pending`` reads the segments in order and returns the messages without a done entry;
   reading a segment stops at the first entry that is incomplete or fails its CRC (journal
   Rule 4). ``quiet`` is for readers that run while the owner appends (``pigeon queue list``):
   the entry being written is not worth a warning there. A segment listed but gone when it is
   read was drained and deleted (or recycled) by the owner meanwhile: every message in it was
   done, so it is skipped (a reader racing the owner's flush thread, as ``pigeon queue list``).
2. ``lock_journal`` takes a journal directory's exclusive lock (``flock``), waiting at most
   ``wait`` seconds (``JournalBusy``); ``remove_segments`` deletes every segment after a drain,
   and the spare only when asked (its owner no longer runs).
3. ``remove_segments``' directory fsync: the deletions are durable before the caller goes on
   (recovery then accepts new mail into a fresh journal whose first segment number follows
   the highest left on disk; a deleted segment coming back after a crash would deliver its
   messages a second time). The caller made the drained messages durable in the queue files
   first (queue.store), so no order of crash loses them.

What can go wrong: ``OSError`` from reading, locking and deleting; a corrupt segment is
logged and its readable entries kept.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pigeon.core.queueid import QueueId, is_queue_id
from pigeon.durable.io import REAL, FileIO

log = logging.getLogger(__name__)

_HEAD = struct.Struct(">cIIQ")
MESSAGE, DONE = b"M", b"D"
SEGMENT_BYTES = 16 * 1024 * 1024
PREFIX = "seg."
SPARE = "spare"  # Rule 7
MAX_HEADER = 16 * 1024 * 1024  # a record bigger than this is not a record (corruption)
MAX_BODY = 1 << 31


@dataclass(slots=True)
class PendingEntry:
    """A message found in the journal without a done entry (recovery)."""

    id: QueueId
    record: bytes  # the record's JSON (queue.record.encode_record)
    body: bytes
    segment: str


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


def _entries(data: bytes, name: str, quiet: bool = False) -> Iterator[tuple[bytes, bytes, bytes]]:
    pos, end = 0, len(data)
    used = len(data.rstrip(b"\0"))  # Rule 7: the zeros after the last entry are no entry
    while pos < used:
        if end - pos < _HEAD.size:
            if not quiet:
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
            if not quiet:
                log.warning("journal: %s: unreadable entry at %d; the %d bytes from there are ignored "
                            "(the tail of an interrupted write)", name, pos, end - pos)
            return
        yield kind, header, body
        pos = stop


def pending(root: Path, *, quiet: bool = False) -> list[PendingEntry]:
    """Rule 4: the messages in the journal without a done entry, oldest first. ``quiet``
    (``pigeon queue list`` reading a journal its owner is appending to): a torn tail is the
    entry being written, not worth a warning."""
    if not root.is_dir():
        return []
    found: dict[QueueId, PendingEntry] = {}
    for _, name in _list_segments(root):
        try:
            data = (root / name).read_bytes()
        except FileNotFoundError:  # Rule 1: drained and deleted since the listing
            continue
        for kind, header, body in _entries(data, name, quiet):
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


def remove_segments(root: Path, *, spare: bool = False, io: FileIO = REAL) -> int:
    """After recovery moved every pending message into the queue: delete all segments (Rule 3),
    and with ``spare`` the spare too (journal Rule 7; only when no process has this journal
    open: an SMTP worker's, under its lock, after the worker ended)."""
    if not root.is_dir():
        return 0
    if spare:
        try:
            io.unlink(root / SPARE)
        except FileNotFoundError:
            pass
    names = _list_segments(root)
    for _, name in names:
        io.unlink(root / name)
    if names:
        io.fsync_dir(root)  # Rule 3
    return len(names)
