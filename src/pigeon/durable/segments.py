"""Segment files of the intake journal: made ahead, zero-filled, and never on a full disk.

What lives here: making the spare segment (``durable.journal`` Rule 7), the free-space test
that decides whether the journal may take more of the disk (Rule 8), and reading a body back
from a segment (Rule 9). All of it blocks: the journal runs it in its own thread, the fast
lane in the queue's I/O threads. Every call goes through the IO seam (``durable.io``).

Rules:
1. ``make_spare`` writes nothing when ``has_room`` says the file system is short: it raises
   ``NoRoom`` (an ``OSError``, ``ENOSPC``). A spare it started and could not complete (a full
   disk, a short write, a failed ``fdatasync``) is removed before the error is raised, so a
   failed spare never holds the disk.
2. ``has_room`` counts what unprivileged writers may still use (``f_bavail``), not the
   blocks reserved for root: the server may run as root, but its users' mail does not.
3. A short write is an error (``ENOSPC``: on Linux a write that stops short at the end of the
   space is the last one to succeed).
4. The spare's ``fdatasync``: its zeros are on disk before it becomes a segment, so a commit
   into it overwrites blocks that exist and its own ``fdatasync`` writes no metadata (journal
   Rule 7). Its name needs no flush: a spare is never read, and a segment's name is made
   durable by the segment's first flush.

What can go wrong: ``OSError`` from every function here; ``has_room`` logs and answers False
when ``statvfs`` itself fails.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

from pigeon.durable.io import REAL, FileIO, unlink_quietly

log = logging.getLogger(__name__)

ZERO_CHUNK = 1 << 20  # a made-ahead segment is written a MiB at a time
# durable.journal Rule 8: room the file system must have left before the journal takes more of
# it: four segments (64 MiB by default). One is the spare being made; the rest is left for
# what a message needs after its 250 (Maildir files, queue files, the IMAP index), so the
# journal never takes the last of the disk. Below that, mail takes the queue files.
ROOM_SEGMENTS = 4


class NoRoom(OSError):
    """Rule 1: the file system has too little free space for the journal to take more."""


def has_room(root: Path, segment_bytes: int, io: FileIO = REAL) -> bool:
    """Rule 2: at least ``ROOM_SEGMENTS`` segments of ``segment_bytes`` free for unprivileged
    writers (journal Rule 8)."""
    try:
        st = io.statvfs(root)
    except OSError as exc:
        log.error("journal: cannot tell the free space of %s (%s); taking none", root, exc)
        return False
    return st.f_bavail * st.f_frsize >= ROOM_SEGMENTS * segment_bytes


def make_spare(path: Path, size: int, io: FileIO = REAL) -> int:
    """Journal Rule 7, in the journal's own thread: a zero-filled file of ``size`` bytes, on
    disk (Rule 4). Returns its descriptor (read-write, so that ``pwritev`` may overwrite it).
    Rule 1: NoRoom without writing anything when the file system is short; a file it could not
    complete is removed before the error is raised."""
    if not has_room(path.parent, size, io):
        raise NoRoom(errno.ENOSPC, f"less than {ROOM_SEGMENTS} segments' worth of free space", str(path.parent))
    fd = io.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        write_zeros(fd, 0, size, io)
        io.fdatasync(fd)  # Rule 4
    except BaseException:
        io.close(fd)
        unlink_quietly(path, io)  # never leave a partial spare holding the disk
        raise
    return fd


def read_at(path: Path, offset: int, length: int, io: FileIO = REAL) -> bytes:
    """Journal Rule 9: ``length`` bytes of a segment from ``offset``."""
    fd = io.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        parts = []
        while length > 0:
            chunk = io.pread(fd, length, offset)
            if not chunk:
                raise OSError(errno.EIO, f"{path.name} ends before the body it should hold")
            parts.append(chunk)
            offset += len(chunk)
            length -= len(chunk)
        return b"".join(parts)
    finally:
        io.close(fd)


def write_zeros(fd: int, offset: int, length: int, io: FileIO = REAL) -> None:
    """``length`` zero bytes at ``offset`` (a spare, or a failed entry cut back, journal Rule 1)."""
    zeros = memoryview(bytes(min(length, ZERO_CHUNK)))  # not kept: no MiB held per process
    while length > 0:
        n = min(length, len(zeros))
        if io.pwrite(fd, zeros[:n], offset) != n:
            raise OSError(errno.ENOSPC, "short write of zeros to the journal (the disk is full)")  # Rule 3
        offset += n
        length -= n
