"""One flush for a whole file system: ``syncfs(2)``, for group commit of many files at once.

Why: on the 2-core VM, creating 10 KiB files in batches of 10 with an ``fsync`` each reached
1,800–2,100 files/s at 0.28 ms of system CPU per file; the same batches with one ``syncfs`` per
batch reached 4,800–6,800 files/s at 0.12–0.25 ms, and batches of 50 reached 10,000–11,700/s at
0.07–0.08 ms (``bench/fsflush.py``). Each ``fsync`` ends in a flush of the device's write cache;
``syncfs`` writes everything that is dirty and then flushes once. The intake journal and the
fast lane's Maildir files are written on the event loop and flushed in batches
(``store.groupsync``), so one ``syncfs`` covers every message of a batch, whatever stage it is
in (journal entry, Maildir file, ``new/`` entry).

Rules:
1. ``syncfs`` is used only where it reports write-back errors: Linux ≥ 5.8, where the file
   system's write-back errors are recorded per super block and returned to the next ``syncfs``
   through each open descriptor (before 5.8 it always returned 0). Elsewhere, and when the
   operator sets ``[queue] flush = "file"``, every file is fsynced on its own as before.
2. ``syncfs`` covers what ``fsync`` of each file and of each directory would: file data, inodes
   and directory entries of the whole file system. It is followed by an ``fsync`` of the
   directory it was opened on, for the device cache: the kernel's ``sync_filesystem`` flushes
   the cache (``sync_fs``) *before* its last step writes the block device's dirty buffers,
   and on a file system without a journal (ext2, ext4 without ``has_journal``, as on the test
   machines) those buffers are the inode tables and directory blocks; the ``fsync`` issues the
   cache flush after them (with a journal, ``sync_fs`` already committed the metadata, and the
   extra flush finds nothing to do). A failure fails every caller of the batch; a write-back
   error anywhere on the file system is reported, even for a file not ours (we then refuse or
   defer: conservative, never a lost message).
3. One descriptor per file system (by ``st_dev``), opened on the first directory that asks and
   kept open: its error cursor then reports every error since the previous ``syncfs``.

Trade-off (docs/queue.md): ``syncfs`` also writes other programs' dirty data on the same file
system, so a flush can take longer when something else writes a lot there. A data directory on
its own file system, as usual for a mail server, avoids that; ``flush = "file"`` is the fallback.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import platform
import re
import threading
from collections.abc import Callable, Hashable
from pathlib import Path

log = logging.getLogger(__name__)

# How many directories ``FileSystems`` remembers (a few per mailbox delivered to); past that
# it forgets them all and looks each up again (an open and an fstat).
MAX_PATHS = 4096
MIN_KERNEL = (5, 8)  # Rule 1: syncfs returns write-back errors from Linux 5.8 on


def _kernel_version(release: str) -> tuple[int, int]:
    """(major, minor) from ``uname -r`` ("6.1.0-18-amd64", "6.1rc3"); (0, 0) if unreadable."""
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _load_syncfs() -> Callable[[int], int] | None:
    if platform.system() != "Linux" or _kernel_version(platform.release()) < MIN_KERNEL:
        return None
    try:
        fn: Callable[[int], int] = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    return fn


_syncfs = _load_syncfs()


def available() -> bool:
    """Whether ``syncfs`` can serve as a durable flush here (Rule 1)."""
    return _syncfs is not None


class FileSystem:
    """The file system holding a directory, flushed whole with ``syncfs`` (Rule 3)."""

    __slots__ = ("fd", "dev", "key")

    def __init__(self, fd: int, dev: int) -> None:
        self.fd = fd
        self.dev = dev
        self.key: Hashable = ("syncfs", dev)

    def flush(self) -> None:
        """Blocking: every dirty page, inode and directory entry of the file system on disk."""
        if _syncfs is None:  # pragma: no cover - only constructed where available()
            raise OSError(errno.ENOSYS, "syncfs is not available")
        if _syncfs(self.fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs: {os.strerror(err)}")
        os.fsync(self.fd)  # Rule 2: the device cache flushed after the metadata syncfs wrote last

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


class FileSystems:
    """One ``FileSystem`` per device, found by directory; safe from several threads."""

    def __init__(self) -> None:
        self._by_path: dict[str, FileSystem] = {}
        self._by_dev: dict[int, FileSystem] = {}
        self._lock = threading.Lock()

    def of(self, path: Path) -> FileSystem:
        """The file system holding the directory ``path`` (opened once). Raises OSError."""
        key = str(path)
        fs = self._by_path.get(key)
        if fs is not None:
            return fs
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        with self._lock:
            if len(self._by_path) >= MAX_PATHS:
                self._by_path.clear()  # bounded memory: one Maildir per user would grow it forever
            dev = os.fstat(fd).st_dev
            fs = self._by_dev.get(dev)
            if fs is None:
                fs = self._by_dev[dev] = FileSystem(fd, dev)
            else:
                os.close(fd)
            self._by_path[key] = fs
        return fs

    def close(self) -> None:
        with self._lock:
            for fs in self._by_dev.values():
                fs.close()
            self._by_dev.clear()
            self._by_path.clear()
