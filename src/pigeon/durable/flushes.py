"""What the group-commit engine can make durable: the flush kinds, each a small value.

A ``Flush`` names what it flushes (``key``) and knows how (``run``, through the IO seam). The
engine (``durable.commit``) runs each key once for every caller that asked while the previous
run was under way; so the key must say exactly what is covered: two requests with one key
are satisfied by one run.

The kinds, and where the project uses each (the call sites carry their own rule):

* ``FileSync(fd)`` — ``fsync`` of one file, data and inode. With ``close`` the descriptor is
  closed after it (the fast lane's Maildir files with ``[queue] flush = "file"``).
* ``DataSync(fd)`` — ``fdatasync``: the data and what is needed to read it back, not times.
* ``PathDataSync(path)`` — ``fdatasync`` of a file opened by path for the flush (the WAL of a
  mailbox index, ``store.mailbox.index`` Rule 2).
* ``DirSync(path)`` — ``fsync`` of a directory: the names created, renamed or removed in it.
  A rename is durable only once the directory holding the new name is flushed.
* ``FsSync`` — ``syncfs(2)`` of a whole file system, then an ``fsync`` of the directory it
  was opened on (Rule 2), made by ``FileSystems.of(path)``. One such flush covers every file
  and directory entry of the file system; the engine shares it among every request for that
  file system.
* ``Close(fd)`` and ``Unlink(path)`` are not flushes but steps that must come after the
  flushes requested before them, in the engine's thread: a descriptor closed only after its
  last flush, a file removed and the removal made durable (unlink, then ``fsync`` of its
  directory) in the order requested.

Rules:
1. ``syncfs`` is used only where it reports write-back errors (``durable.io`` Rule 3): Linux
   5.8 and later. Elsewhere, and with ``[queue] flush = "file"``, every file and directory is
   flushed on its own. ``wants_syncfs`` is that decision.
2. ``FsSync.run`` covers what ``fsync`` of each file and each directory would: file data,
   inodes and directory entries of the whole file system. It is followed by an ``fsync`` of
   the directory it was opened on, for the device cache: the kernel's ``sync_filesystem``
   flushes the cache (``sync_fs``) *before* its last step writes the block device's dirty
   buffers, and on a file system without a journal (ext2, ext4 without ``has_journal``, as on
   the test machines) those buffers are the inode tables and directory blocks; the ``fsync``
   issues the cache flush after them (with a journal it finds nothing left to do). A write-back
   error anywhere on the file system is reported, even for a file not ours (the caller then
   refuses or defers: conservative, never a lost message).
3. ``FileSystems`` keeps one descriptor per file system (by ``st_dev``), opened on the first
   directory that asks and kept open: its error cursor then reports every error since the
   previous ``syncfs``. It remembers at most ``MAX_PATHS`` directories (a few per mailbox
   delivered to), then forgets them all and looks each up again.

Why ``syncfs`` at all (docs/benchmarks.md has the numbers): each ``fsync`` ends in a flush of
the device's write cache; ``syncfs`` writes everything dirty and flushes once, so a batch of
Maildir files costs one flush instead of one per file. Its cost: it also writes what other
programs left dirty on the same file system (docs/queue.md).

What can go wrong: ``run`` raises the ``OSError`` of its system call; ``FileSystems.of``
raises ``OSError`` for a directory it cannot open.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Hashable
from pathlib import Path
from typing import Protocol

from pigeon.durable.io import FileIO, syncfs_reports_errors

log = logging.getLogger(__name__)

MAX_PATHS = 4096  # Rule 3


class Flush(Protocol):
    """Something the engine makes durable (or a step ordered after such flushes)."""

    @property
    def key(self) -> Hashable: ...

    def run(self, io: FileIO) -> None: ...


class FileSync:
    __slots__ = ("fd", "close", "key")

    def __init__(self, fd: int, *, close: bool = False) -> None:
        self.fd = fd
        self.close = close
        self.key: Hashable = ("fsync", fd)

    def run(self, io: FileIO) -> None:
        try:
            io.fsync(self.fd)
        finally:
            if self.close:
                io.close(self.fd)


class DataSync:
    __slots__ = ("fd", "key")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.key: Hashable = ("fdatasync", fd)

    def run(self, io: FileIO) -> None:
        io.fdatasync(self.fd)


class PathDataSync:
    """``fdatasync`` of the file at ``path``, opened for the flush (the caller holds no
    descriptor that could be closed under the engine: the mailbox index's WAL)."""

    __slots__ = ("path", "key")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.key: Hashable = ("fdatasync-path", str(path))

    def run(self, io: FileIO) -> None:
        fd = io.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            io.fdatasync(fd)
        finally:
            io.close(fd)


class DirSync:
    __slots__ = ("path", "key")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.key: Hashable = ("dir", str(path))

    def run(self, io: FileIO) -> None:
        io.fsync_dir(self.path)


class FsSync:
    """Rule 2: the whole file system of ``dev``, through the descriptor ``fd``."""

    __slots__ = ("fd", "dev", "key")

    def __init__(self, fd: int, dev: int) -> None:
        self.fd = fd
        self.dev = dev
        self.key: Hashable = ("syncfs", dev)

    def run(self, io: FileIO) -> None:
        io.syncfs(self.fd)
        io.fsync(self.fd)  # Rule 2: the device cache flushed after the metadata syncfs wrote last


class Close:
    __slots__ = ("fd", "key")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.key: Hashable = ("close", fd)

    def run(self, io: FileIO) -> None:
        io.close(self.fd)


class Unlink:
    """A removal made durable: unlink, then fsync of the directory that held the name."""

    __slots__ = ("path", "key")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.key: Hashable = ("unlink", str(path))

    def run(self, io: FileIO) -> None:
        io.unlink(self.path)
        io.fsync_dir(self.path.parent)


def wants_syncfs(setting: str) -> bool:
    """Rule 1: whether ``[queue] flush`` (``"filesystem"`` or ``"file"``) means ``syncfs`` here."""
    if setting != "filesystem":
        return False
    if not syncfs_reports_errors():
        log.info("queue: syncfs does not report write-back errors here (Linux >= 5.8 needed); "
                 "flushing every file on its own")
        return False
    return True


class FileSystems:
    """Rule 3: one ``FsSync`` per device, found by directory; safe from several threads."""

    def __init__(self, io: FileIO) -> None:
        self._io = io
        self._by_path: dict[str, FsSync] = {}
        self._by_dev: dict[int, FsSync] = {}
        self._lock = threading.Lock()

    def of(self, path: Path) -> FsSync:
        """The file system holding the directory ``path`` (opened once). Raises OSError."""
        key = str(path)
        fs = self._by_path.get(key)
        if fs is not None:
            return fs
        fd = self._io.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        with self._lock:
            if len(self._by_path) >= MAX_PATHS:
                self._by_path.clear()  # bounded memory: one Maildir per user would grow it forever
            dev = os.fstat(fd).st_dev
            fs = self._by_dev.get(dev)
            if fs is None:
                fs = self._by_dev[dev] = FsSync(fd, dev)
            else:
                self._io.close(fd)
            self._by_path[key] = fs
        return fs

    def close(self) -> None:
        with self._lock:
            for fs in self._by_dev.values():
                fd, fs.fd = fs.fd, -1
                if fd >= 0:
                    try:
                        self._io.close(fd)
                    except OSError as exc:
                        log.warning("closing the descriptor of file system %d: %s", fs.dev, exc)
            self._by_dev.clear()
            self._by_path.clear()
