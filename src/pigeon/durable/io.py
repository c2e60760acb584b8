"""The file-IO seam: every call that a durability promise rests on goes through a ``FileIO``.

``FileIO`` is the small set of system calls the durable code makes: creating and writing files,
the flushes (``fsync``, ``fdatasync``, ``syncfs``, a directory's ``fsync``), and the name
changes whose order the promises depend on (``rename``, ``link``, ``unlink``, ``mkdir``). The
server uses ``REAL`` (``OsFileIO``, straight over ``os``); tests pass a
``pigeon.durable.testing.FaultyIO`` to inject ``ENOSPC``, ``EIO`` or a crash at the Nth call of
an operation, and to ask what a crash at that point would have left on the disk.

Rules:
1. Each method does one system call (``fsync_dir``: open, fsync, close of the directory) and
   raises the ``OSError`` it gets; nothing here retries or hides an error.
2. ``OsFileIO`` looks ``os`` up at call time, so the few older tests outside ``durable`` that
   replace ``os.fsync`` still reach it.
3. ``syncfs`` is a durable flush only where it reports write-back errors: Linux 5.8 and later
   (before that it always returned 0). ``syncfs_reports_errors()`` tells; elsewhere ``syncfs``
   raises ``ENOSYS`` and callers flush every file on its own.
4. ``rename_noreplace`` is ``renameat2(RENAME_NOREPLACE)`` (Linux 3.15, glibc 2.28): a rename
   that fails with ``EEXIST`` instead of replacing, i.e. ``link`` + ``unlink`` in one call. It
   answers False where the system or file system cannot, and the caller links instead.
5. The helpers below are the only copies of their kind in the project: ``unlink_quietly``
   (undoing a failed write, where the undo itself may fail), ``fsync_dir`` (a ``FileIO``
   method), ``makedirs_durable``, ``write_all``, ``FileWriter``, ``write_file_synced`` and
   ``fsync_path``.

What can go wrong: every method raises ``OSError``; the helpers say what they do with it.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import platform
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

StrPath = str | Path
Buffer = bytes | bytearray | memoryview

MIN_SYNCFS_KERNEL = (5, 8)  # Rule 3: syncfs returns write-back errors from Linux 5.8 on


class FileIO(Protocol):
    """What the durable code asks of the operating system (Rule 1)."""

    def open(self, path: StrPath, flags: int, mode: int = 0o600) -> int: ...
    def close(self, fd: int) -> None: ...
    def write(self, fd: int, data: Buffer) -> int: ...
    def writev(self, fd: int, buffers: Sequence[Buffer]) -> int: ...
    def pwrite(self, fd: int, data: Buffer, offset: int) -> int: ...
    def pwritev(self, fd: int, buffers: Sequence[Buffer], offset: int) -> int: ...
    def pread(self, fd: int, length: int, offset: int) -> bytes: ...
    def ftruncate(self, fd: int, length: int) -> None: ...
    def fsync(self, fd: int) -> None: ...
    def fdatasync(self, fd: int) -> None: ...
    def syncfs(self, fd: int) -> None: ...
    def fsync_dir(self, path: StrPath) -> None: ...
    def rename(self, src: StrPath, dst: StrPath) -> None: ...
    def rename_noreplace(self, src: StrPath, dst: StrPath) -> bool: ...
    def link(self, src: StrPath, dst: StrPath) -> None: ...
    def unlink(self, path: StrPath) -> None: ...
    def mkdir(self, path: StrPath, mode: int = 0o700) -> None: ...
    def statvfs(self, path: StrPath) -> os.statvfs_result: ...


class OsFileIO:
    """``FileIO`` over ``os`` (Rules 1-4)."""

    def open(self, path: StrPath, flags: int, mode: int = 0o600) -> int:
        return os.open(path, flags, mode)

    def close(self, fd: int) -> None:
        os.close(fd)

    def write(self, fd: int, data: Buffer) -> int:
        return os.write(fd, data)

    def writev(self, fd: int, buffers: Sequence[Buffer]) -> int:
        return os.writev(fd, buffers)

    def pwrite(self, fd: int, data: Buffer, offset: int) -> int:
        return os.pwrite(fd, data, offset)

    def pwritev(self, fd: int, buffers: Sequence[Buffer], offset: int) -> int:
        return os.pwritev(fd, buffers, offset)

    def pread(self, fd: int, length: int, offset: int) -> bytes:
        return os.pread(fd, length, offset)

    def ftruncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)

    def syncfs(self, fd: int) -> None:
        if _syncfs is None:
            raise OSError(errno.ENOSYS, "syncfs does not report write-back errors here (Linux >= 5.8 needed)")
        if _syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs: {os.strerror(err)}")

    def fsync_dir(self, path: StrPath) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def rename(self, src: StrPath, dst: StrPath) -> None:
        os.replace(src, dst)

    def rename_noreplace(self, src: StrPath, dst: StrPath) -> bool:
        global _renameat2
        fn = _renameat2
        if fn is None:
            return False
        if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return True
        err = ctypes.get_errno()
        if err in _UNSUPPORTED:
            _renameat2 = None  # not on this system: link() from now on
            log.info("renameat2(RENAME_NOREPLACE) unavailable (%s); linking instead", os.strerror(err))
            return False
        raise OSError(err, os.strerror(err), str(dst))

    def link(self, src: StrPath, dst: StrPath) -> None:
        os.link(src, dst)

    def unlink(self, path: StrPath) -> None:
        os.unlink(path)

    def mkdir(self, path: StrPath, mode: int = 0o700) -> None:
        os.mkdir(path, mode)

    def statvfs(self, path: StrPath) -> os.statvfs_result:
        return os.statvfs(path)


REAL: FileIO = OsFileIO()  # stateless: one is enough for the whole process


# -- helpers (Rule 5) ------------------------------------------------------------------------------

def unlink_quietly(path: StrPath, io: FileIO = REAL) -> bool:
    """Remove ``path`` while undoing or cleaning up; True when it was removed. A missing file is
    no error; any other failure is logged (the caller is already handling a failure, or the
    file is harmless where it stays) and answered False."""
    try:
        io.unlink(path)
        return True
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.warning("could not remove %s: %s", path, exc)
        return False


def write_all(io: FileIO, fd: int, data: Buffer) -> None:
    """Write all of ``data`` at the file's position; a write that makes no progress is
    ``ENOSPC`` (on Linux a short write at the end of the space is the last that succeeds)."""
    view = memoryview(data)
    while view:
        n = io.write(fd, view)
        if n <= 0:
            raise OSError(errno.ENOSPC, "short write (the disk is full)")
        view = view[n:]


class FileWriter:
    """Buffered writes to one descriptor through the seam: ``size`` bytes at a time (a typical
    message in one or two writes). ``flush`` writes what is left; the caller fsyncs."""

    __slots__ = ("_io", "_fd", "_size", "_buf")

    def __init__(self, io: FileIO, fd: int, size: int) -> None:
        self._io = io
        self._fd = fd
        self._size = size
        self._buf = bytearray()

    def write(self, data: Buffer) -> None:
        self._buf += data
        if len(self._buf) >= self._size:
            self.flush()

    def flush(self) -> None:
        buf, self._buf = self._buf, bytearray()
        if buf:
            write_all(self._io, self._fd, buf)


def write_file_synced(path: StrPath, data: Buffer, io: FileIO = REAL) -> None:
    """Create ``path`` (it must not exist), write ``data`` and fsync it. Removes it on failure."""
    fd = io.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            write_all(io, fd, data)
            io.fsync(fd)
        finally:
            io.close(fd)
    except OSError:
        unlink_quietly(path, io)
        raise


def makedirs_durable(path: Path, mode: int = 0o700, io: FileIO = REAL) -> bool:
    """Create ``path`` and any missing parents (``mode``), and fsync the parent of each
    directory created, so that the names survive a crash: what is later made durable inside
    them (a journal segment, a queue record) is reachable. True when something was created."""
    try:
        io.mkdir(path, mode)
    except FileExistsError:
        if not os.path.isdir(path):
            raise NotADirectoryError(errno.ENOTDIR, "exists and is not a directory", str(path)) from None
        return False
    except FileNotFoundError:
        if path.parent == path:
            raise
        makedirs_durable(path.parent, mode, io)
        return makedirs_durable(path, mode, io)  # another thread may have made it meanwhile
    io.fsync_dir(path.parent)
    return True


def fsync_path(path: StrPath, io: FileIO = REAL) -> None:
    """fsync a file someone else wrote (a certificate made by ``openssl``), by name."""
    fd = io.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        io.fsync(fd)
    finally:
        io.close(fd)


# -- the C calls behind Rules 3 and 4 ------------------------------------------------------------------

def kernel_version(release: str) -> tuple[int, int]:
    """(major, minor) from ``uname -r`` ("6.1.0-18-amd64", "6.1rc3"); (0, 0) if unreadable."""
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _load_syncfs() -> Callable[[int], int] | None:
    if platform.system() != "Linux" or kernel_version(platform.release()) < MIN_SYNCFS_KERNEL:
        return None
    try:
        fn: Callable[[int], int] = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    return fn


_syncfs = _load_syncfs()


def syncfs_reports_errors() -> bool:
    """Rule 3: whether ``syncfs`` can serve as a durable flush here."""
    return _syncfs is not None


_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP})


def _load_renameat2() -> Callable[..., int] | None:
    try:
        fn: Callable[..., int] = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    return fn


_renameat2: Callable[..., int] | None = _load_renameat2()
